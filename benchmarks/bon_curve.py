"""Best-of-N accuracy vs N on GSM8K-test candidate sets: process vs outcome supervision.

The seed result of process supervision (Lightman et al., "Let's Verify Step by Step"): picking
the best of N solutions by a PRM's step scores (``min``, ``prod``) beats picking by an
outcome reward model (ORM), and the gap widens with N. Compared here: the default PRM's
aggregations, the PRM's own last-step score (outcome-style), and, with ``--orm DIR``, a real
ORM: the same architecture, data and budget trained with ``prm train --supervision outcome``
(every step labelled with the chain's outcome, as in Uesato et al. 2022), scored by its last
step. Candidate sets are built here, with no LLM:

- for each GSM8K-test question (``--questions``, in file order) a simulated generator has a
  pass rate ``p`` drawn from Beta(``--beta``); each of its ``--n-max`` samples is, with
  probability ``p``, the reference solution (checked by the verifier labeller), otherwise one
  of the question's perturbed chains (drawn with replacement, so a wrong answer can recur
  the way a generator repeats a mistake). The perturbed chains come from the labeller
  (``prm_plugins.labeling.build_verifier_dataset``, every kind, seeds ``--perturb-seeds``,
  none of them the training seed), which writes realistic reasoning errors that carry on
  consistently to a wrong final answer.
- every candidate, correct or wrong, is then restyled on its own
  (:func:`restyle.restyle_steps`, ``benchmarks/restyle.py``: spacing, multiplication sign, operand
  order, connectives, the final-answer wording; meaning, arithmetic and answer unchanged), so
  no two samples are the same text, as with a real sampler (``--no-restyle`` turns it off).
- ``prm eval bon``'s engine (:func:`prm_plugins.evaluation.evaluate_best_of_n`) then scores
  every candidate once and averages the pick over ``--permutations`` random orders for each
  N: PRM-min, PRM-prod, PRM-mean, last-step (outcome-style), majority vote over final
  answers, the PRM-weighted votes (``weighted_min``, ``weighted_last``), random pick and the
  oracle (any correct).

Each model scores every candidate once; it is evaluated alone (``checks=()``) and with the
arithmetic check the default manifest recommends (the shipped configuration), applied to
the same scores; the PRM also with the opt-in ``coverage`` check added. Limits, stated in
the results: correct candidates are restyled copies of
the reference solution (a real generator would also plan differently), and wrong ones are
the labeller's perturbation kinds, which the models were trained on (other seeds, other
questions: the training data is GSM8K *train*).

Writes ``benchmarks/results/bon_curve.md``, ``bon_curve.json`` and one ``bon.png`` per
configuration under ``benchmarks/results/bon_curve_<config>/``::

    nice -n 10 .venv/bin/python benchmarks/bon_curve.py [--orm runs/orm_L3_onnx]  # ~5 min per model
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from restyle import restyle_steps  # benchmarks/restyle.py, beside this script

from prm_plugins.answers import answers_match
from prm_plugins.checks import HybridPRM
from prm_plugins.evaluation import evaluate_best_of_n
from prm_plugins.evaluation.bon import paired_difference
from prm_plugins.labeling.gsm8k import read_gsm8k_jsonl
from prm_plugins.labeling.verifier import build_verifier_dataset
from prm_plugins.runtime import default_model_dir, load_prm
from prm_plugins.types import StepScorer, StepScores

logger = logging.getLogger("bon_curve")

ROOT = Path(__file__).resolve().parents[1]
GSM8K_TEST = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


class _ScoreOnce:
    """A scorer that remembers its answers, so the arithmetic check reuses the model's scores."""

    def __init__(self, prm: StepScorer) -> None:
        self.prm = prm
        self.memo: dict[tuple[str, tuple[str, ...]], StepScores] = {}

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score_batch([(question, steps)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        keys = [(q, tuple(s)) for q, s in items]
        todo = list(dict.fromkeys(k for k in keys if k not in self.memo))
        if todo:
            for k, r in zip(todo, self.prm.score_batch(list(todo)), strict=True):
                self.memo[k] = r
        return [self.memo[k] for k in keys]


def build_candidates(gsm8k: Path, questions: int, n_max: int, beta: tuple[float, float],
                     perturb_seeds: list[int], seed: int, restyle: bool = True
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Candidate rows for ``evaluate_best_of_n`` and counts describing them."""
    rows = []
    for i, row in enumerate(read_gsm8k_jsonl(gsm8k)):
        if i >= questions:
            break
        rows.append({**row, "id": f"gsm8k-test-{i}"})
    pools: dict[str, dict[str, Any]] = {}
    for s in perturb_seeds:
        for rec in build_verifier_dataset(rows, seed=s, n_perturbed_per_problem=6):
            qid = rec["id"].split("/")[0]
            pool = pools.setdefault(qid, {"question": rec["prompt"], "gold": rec["gold_answer"],
                                          "reference": None, "wrong": {}})
            if rec["perturbation"] is None:
                pool["reference"] = rec["completions"]
            elif not answers_match(rec["answer"], rec["gold_answer"]):
                pool["wrong"]["\n".join(rec["completions"])] = rec["perturbation"]
    rng = np.random.default_rng(seed)
    style_rng = random.Random(seed)

    def text(steps: list[str]) -> str:
        return "\n".join(restyle_steps(steps, style_rng) if restyle else steps)

    out, n_correct, n_total, kinds = [], 0, 0, {}
    skipped = 0
    for qid, pool in pools.items():
        wrong = sorted(pool["wrong"])  # joined texts of the question's perturbed chains
        if pool["reference"] is None or not wrong:
            skipped += 1
            continue
        p = float(rng.beta(*beta))
        cands = []
        for _ in range(n_max):
            if rng.random() < p:
                cands.append({"solution": text(pool["reference"]), "is_correct": True,
                              "kind": "correct"})
            else:
                chosen = wrong[int(rng.integers(len(wrong)))]
                kinds[pool["wrong"][chosen]] = kinds.get(pool["wrong"][chosen], 0) + 1
                cands.append({"solution": text(chosen.split("\n")), "is_correct": False,
                              "kind": pool["wrong"][chosen]})
        n_correct += sum(c["is_correct"] for c in cands)
        n_total += len(cands)
        out.append({"id": qid, "question": pool["question"], "answer": pool["gold"],
                    "candidates": cands})
    info = {"questions": len(out), "questions_skipped_no_perturbation": skipped,
            "candidates": n_total, "correct_fraction": n_correct / max(n_total, 1),
            "wrong_by_kind": dict(sorted(kinds.items())),
            "distinct_texts_per_question": float(np.mean(
                [len({c["solution"] for c in r["candidates"]}) for r in out])) if out else 0.0,
            "distinct_wrong_chains_per_question": float(np.mean(
                [len(p["wrong"]) for p in pools.values() if p["wrong"]]))}
    return out, info


def _by_kind(rows: list[dict[str, Any]], scorer: StepScorer) -> dict[str, dict[str, float]]:
    """Mean chain score (min over steps) and step count of the candidates of each kind."""
    acc: dict[str, list[tuple[float, int]]] = {}
    items = [(r["question"], c["solution"].split("\n"), c["kind"])
             for r in rows for c in r["candidates"]]
    for start in range(0, len(items), 64):
        chunk = items[start:start + 64]
        for (_, steps, kind), res in zip(
                chunk, scorer.score_batch([(q, s) for q, s, _ in chunk]), strict=True):
            acc.setdefault(kind, []).append((min(res.scores), len(steps)))
    return {k: {"candidates": len(v), "mean_min": float(np.mean([m for m, _ in v])),
                "mean_steps": float(np.mean([n for _, n in v]))}
            for k, v in sorted(acc.items())}


def _table(results: dict[str, dict[str, Any]], ns: list[int]) -> list[str]:
    show = [n for n in ns if n in (1, 2, 4, 8, 16, 32, 64) or n == ns[-1]]
    lines = []
    for name, res in results.items():
        acc = res["accuracy"]
        lines += [f"**{name}** (best-of-N accuracy, mean over permutations)", "",
                  "| method | " + " | ".join(f"N={n}" for n in show) + " |",
                  "|---|" + "---:|" * len(show)]
        orm = name.startswith("ORM")
        methods = (("last", "weighted_last") if orm else
                   ("min", "prod", "mean", "last", "weighted_min", "weighted_last"))
        for method in (*methods, "majority", "random", "oracle"):
            vals = [acc[method][res["n"].index(n)] for n in show]
            label = {"min": "PRM-min", "prod": "PRM-prod", "mean": "PRM-mean",
                     "last": "ORM (last step)" if orm else "last step (outcome-style)",
                     "weighted_min": "PRM-min-weighted vote",
                     "weighted_last": ("ORM-weighted vote" if orm
                                       else "last-step-weighted vote")}.get(method, method)
            lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
        if not orm:
            gap = [acc["min"][res["n"].index(n)] - acc["last"][res["n"].index(n)] for n in show]
            lines.append("| *PRM-min − last* | " + " | ".join(f"{g:+.3f}" for g in gap) + " |")
        lines.append("")
    return lines


#: N at which the paired differences are reported.
PAIRED_NS = (2, 4, 8, 16)


def _paired(results: dict[str, dict[str, Any]], ns: list[int]) -> dict[str, dict[str, Any]]:
    """Paired bootstrap differences: PRM-min vs the ORM (process vs outcome supervision,
    same checks), the PRM-weighted vote vs majority, PRM-min vs random."""
    pairs = []
    for tag in ("model alone", "model + arithmetic check"):
        if f"ORM, {tag}" in results:
            pairs.append((f"PRM-min − ORM (last step), {tag}", f"PRM, {tag}", "min",
                          f"ORM, {tag}", "last"))
    shipped = "PRM, model + arithmetic check"
    pairs += [("PRM-min-weighted vote − majority, shipped", shipped, "weighted_min", shipped,
               "majority"),
              ("PRM-min − random, shipped", shipped, "min", shipped, "random"),
              ("PRM-min − own last step, model alone", "PRM, model alone", "min",
               "PRM, model alone", "last")]
    return {label: {f"N={n}": paired_difference(results[a], ma, results[b], mb, n)
                    for n in PAIRED_NS if n <= ns[-1]}
            for label, a, ma, b, mb in pairs}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=default_model_dir(),
                   help="model directory (default: the shipped default PRM)")
    p.add_argument("--gsm8k", type=Path, default=GSM8K_TEST)
    p.add_argument("--questions", type=int, default=400)
    p.add_argument("--n-max", type=int, default=16)
    p.add_argument("--beta", type=float, nargs=2, default=(1.0, 2.0),
                   help="Beta(a, b) of the per-question pass rate (default 1 2: a weak "
                        "generator, mean 1/3)")
    p.add_argument("--perturb-seeds", type=int, nargs="+", default=[101, 102])
    p.add_argument("--permutations", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--orm", type=Path, default=None,
                   help="an exported outcome reward model (prm train --supervision outcome, "
                        "then prm export) to compare with: the seed result's baseline")
    p.add_argument("--no-restyle", dest="restyle", action="store_false",
                   help="use the chains' texts as labelled (correct candidates are then "
                        "identical copies of the reference)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for model in (args.model, args.orm):
        if model is not None and not (model / "prm.json").is_file():
            logger.error("%s is not a model directory (no prm.json); pass an exported model",
                         model)
            return 2
    if not args.gsm8k.is_file():
        logger.error("GSM8K test file %s not found; pass --gsm8k PATH", args.gsm8k)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows, info = build_candidates(args.gsm8k, args.questions, args.n_max, tuple(args.beta),
                                  args.perturb_seeds, args.seed, restyle=args.restyle)
    cands = args.out / "bon_curve_candidates.jsonl"
    with cands.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    logger.info("candidates: %s", info)
    results: dict[str, dict[str, Any]] = {}
    session = {} if args.threads is None else {"intra_op_num_threads": args.threads}
    models = [("PRM", "", args.model)] + ([] if args.orm is None else [("ORM", "orm_", args.orm)])
    for kind, prefix, model in models:
        once = _ScoreOnce(load_prm(model, device="cpu", checks=(), **session))
        configs = [(f"{kind}, model alone", once, "model"),
                   (f"{kind}, model + arithmetic check", HybridPRM(once), "hybrid")]
        if kind == "PRM":  # the opt-in coverage check (prm_plugins.checks), on the same scores
            configs.append((f"{kind}, model + arithmetic and coverage checks",
                            HybridPRM(once, checks=("arithmetic", "coverage")), "coverage"))
        for name, scorer, tag in configs:
            t = time.perf_counter()
            res = evaluate_best_of_n(scorer, cands, args.out / f"bon_curve_{prefix}{tag}",
                                     split="newlines", permutations=args.permutations,
                                     seed=args.seed, config={"model": str(model),
                                                             "checks": tag})
            res["seconds"] = round(time.perf_counter() - t, 1)
            if kind == "PRM":  # from the scores already computed (memoised): no extra scoring
                res["by_kind"] = _by_kind(rows, scorer)
            results[name] = res
            logger.info("%s: N=%d min %.3f last %.3f majority %.3f (%.0f s)", name,
                        res["n"][-1], res["accuracy"]["min"][-1], res["accuracy"]["last"][-1],
                        res["accuracy"]["majority"][-1], res["seconds"])
    cands.unlink()  # rebuilt deterministically by the command below; not worth keeping
    ns = next(iter(results.values()))["n"]
    manifest = json.loads((args.model / "prm.json").read_text())
    command = "python benchmarks/bon_curve.py " + shlex.join(argv if argv is not None
                                                            else sys.argv[1:])
    record = {"command": command.strip(), "model": str(args.model),
              "model_sha256": manifest.get("files", {}),
              "orm": None if args.orm is None else str(args.orm),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()},
              "config": {k: (str(v) if isinstance(v, Path) else v)
                         for k, v in vars(args).items()},
              "candidates": info, "seconds": round(time.perf_counter() - t0, 1),
              "results": {k: {kk: vv for kk, vv in v.items() if kk not in ("config", "per_row")}
                          for k, v in results.items()},
              "paired": _paired(results, ns)}
    (args.out / "bon_curve.json").write_text(json.dumps(record, indent=1) + "\n")
    md = ["# Best-of-N accuracy vs N: process (PRM) vs outcome scoring", "",
          f"Command: `{record['command']}` ({record['seconds']} s on {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}). PRM: `{args.model}`"
          + ("" if args.orm is None else f"; ORM: `{args.orm}`") + ".", "",
          f"Candidates: {info['questions']} GSM8K-test questions x {args.n_max} samples of a "
          f"simulated generator (pass rate ~ Beta{tuple(args.beta)}); "
          f"{info['correct_fraction']:.1%} of candidates correct; wrong candidates are the "
          f"labeller's perturbed chains ({info['distinct_wrong_chains_per_question']:.1f} "
          f"distinct per question on average; by kind: {info['wrong_by_kind']}); "
          + ("every candidate restyled on its own "
             f"({info['distinct_texts_per_question']:.1f} distinct texts per question)."
             if args.restyle else "no restyling: correct candidates are identical copies."),
          "", *_table(results, ns)]
    paired = record["paired"]
    md += ["**Paired differences** in accuracy, mean over questions with a paired bootstrap "
           "95% interval (10,000 resamples of the questions; an interval that excludes 0 is "
           "a difference the question sample supports)", "",
           "| comparison | " + " | ".join(f"N={n}" for n in PAIRED_NS if n <= ns[-1]) + " |",
           "|---|" + "---:|" * sum(n <= ns[-1] for n in PAIRED_NS)]
    for label, per_n in paired.items():
        md.append(f"| {label} | " + " | ".join(
            f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" for d in per_n.values())
            + " |")
    md.append("")
    md += ["**Where the PRM's single picks go wrong**: mean chain score (min over steps) of the "
           "candidates of each kind, and their mean step count",  "",
           "| kind | candidates | mean steps | " + " | ".join(
               k.replace("PRM, ", "") for k in results if k.startswith("PRM")) + " |",
           "|---|---:|---:|" + "---:|" * sum(k.startswith("PRM") for k in results)]
    prm_results = [v for k, v in results.items() if k.startswith("PRM")]
    for kind_name, first in prm_results[0]["by_kind"].items():
        md.append(f"| {kind_name} | {first['candidates']} | {first['mean_steps']:.2f} | "
                  + " | ".join(f"{r['by_kind'][kind_name]['mean_min']:.3f}"
                               for r in prm_results) + " |")
    md += ["", "Plots: `bon_curve_*/bon.png`.", "",
           "Limits: correct candidates are restyled copies of one reference solution (the "
           "same plan in other words; a real generator also finds other plans), and the wrong "
           "ones use the perturbation kinds the models were trained on (other questions and "
           "seeds). Read the figures against random and majority, not as what to expect on "
           "real LLM samples (benchmarks/bon_real_samples.py has those)."]
    (args.out / "bon_curve.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
