"""Best-of-N accuracy vs N on GSM8K-test candidate sets: process vs outcome supervision.

The seed result of process supervision (Lightman et al., "Let's Verify Step by Step"): picking
the best of N solutions by a PRM's step scores (``min``, ``prod``) beats picking by an
outcome-style score (here the PRM's score of the last step, ``last``), and the gap widens
with N. Reproduced with the default PRM on candidate sets built here, with no LLM:

- for each GSM8K-test question (``--questions``, in file order) a simulated generator has a
  pass rate ``p`` drawn from Beta(``--beta``); each of its ``--n-max`` samples is, with
  probability ``p``, the reference solution (checked by the verifier labeller), otherwise one
  of the question's perturbed chains (drawn with replacement, so a wrong answer can recur
  the way a generator repeats a mistake). The perturbed chains come from the labeller
  (``prm_plugins.labeling.build_verifier_dataset``, every kind, seeds ``--perturb-seeds``,
  none of them the training seed), which writes realistic reasoning errors that carry on
  consistently to a wrong final answer.
- ``prm eval bon``'s engine (:func:`prm_plugins.evaluation.evaluate_best_of_n`) then scores
  every candidate once and averages the pick over ``--permutations`` random orders for each
  N: PRM-min, PRM-prod, PRM-mean, last-step (outcome-style), majority vote over final
  answers, random pick and the oracle (any correct).

It runs twice: the model alone (``checks=()``) and the model with the arithmetic check its
manifest recommends (the shipped configuration). Limits, stated in the results: correct
candidates are the reference text itself (a real generator would paraphrase), and wrong ones
are the labeller's perturbation kinds, which the default PRM was trained on (other seeds,
other questions: the training data is GSM8K *train*).

Writes ``benchmarks/results/bon_curve.md``, ``bon_curve.json`` and one ``bon.png`` per
configuration under ``benchmarks/results/bon_curve_<config>/``::

    nice -n 10 .venv/bin/python benchmarks/bon_curve.py            # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from prm_plugins.evaluation import evaluate_best_of_n
from prm_plugins.evaluation.answers import answers_match
from prm_plugins.labeling.gsm8k import read_gsm8k_jsonl
from prm_plugins.labeling.verifier import build_verifier_dataset
from prm_plugins.runtime import default_model_dir, load_prm

logger = logging.getLogger("bon_curve")

ROOT = Path(__file__).resolve().parents[1]
GSM8K_TEST = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def build_candidates(gsm8k: Path, questions: int, n_max: int, beta: tuple[float, float],
                     perturb_seeds: list[int], seed: int) -> tuple[list[dict[str, Any]],
                                                                    dict[str, Any]]:
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
    out, n_correct, n_total, kinds = [], 0, 0, {}
    skipped = 0
    for qid, pool in pools.items():
        wrong = sorted(pool["wrong"])
        if pool["reference"] is None or not wrong:
            skipped += 1
            continue
        p = float(rng.beta(*beta))
        cands = []
        for _ in range(n_max):
            if rng.random() < p:
                cands.append({"solution": "\n".join(pool["reference"]), "is_correct": True})
            else:
                text = wrong[int(rng.integers(len(wrong)))]
                kinds[pool["wrong"][text]] = kinds.get(pool["wrong"][text], 0) + 1
                cands.append({"solution": text, "is_correct": False})
        n_correct += sum(c["is_correct"] for c in cands)
        n_total += len(cands)
        out.append({"id": qid, "question": pool["question"], "answer": pool["gold"],
                    "candidates": cands})
    info = {"questions": len(out), "questions_skipped_no_perturbation": skipped,
            "candidates": n_total, "correct_fraction": n_correct / max(n_total, 1),
            "wrong_by_kind": dict(sorted(kinds.items())),
            "distinct_wrong_chains_per_question": float(np.mean(
                [len(p["wrong"]) for p in pools.values() if p["wrong"]]))}
    return out, info


def _table(results: dict[str, dict[str, Any]], ns: list[int]) -> list[str]:
    show = [n for n in ns if n in (1, 2, 4, 8, 16, 32, 64) or n == ns[-1]]
    lines = []
    for name, res in results.items():
        acc = res["accuracy"]
        lines += [f"**{name}** (best-of-N accuracy, mean over permutations)", "",
                  "| method | " + " | ".join(f"N={n}" for n in show) + " |",
                  "|---|" + "---:|" * len(show)]
        for method in ("min", "prod", "mean", "last", "majority", "random", "oracle"):
            vals = [acc[method][res["n"].index(n)] for n in show]
            label = {"min": "PRM-min", "prod": "PRM-prod", "mean": "PRM-mean",
                     "last": "last step (outcome-style)"}.get(method, method)
            lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
        gap = [acc["min"][res["n"].index(n)] - acc["last"][res["n"].index(n)] for n in show]
        lines.append("| *PRM-min − last* | " + " | ".join(f"{g:+.3f}" for g in gap) + " |")
        lines.append("")
    return lines


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
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (args.model / "prm.json").is_file():
        logger.error("%s is not a model directory (no prm.json); pass --model DIR", args.model)
        return 2
    if not args.gsm8k.is_file():
        logger.error("GSM8K test file %s not found; pass --gsm8k PATH", args.gsm8k)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows, info = build_candidates(args.gsm8k, args.questions, args.n_max, tuple(args.beta),
                                  args.perturb_seeds, args.seed)
    cands = args.out / "bon_curve_candidates.jsonl"
    with cands.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    logger.info("candidates: %s", info)
    results: dict[str, dict[str, Any]] = {}
    session = {} if args.threads is None else {"intra_op_num_threads": args.threads}
    for name, checks in (("model alone", ()), ("model + arithmetic check", ("arithmetic",))):
        prm = load_prm(args.model, device="cpu", checks=checks, **session)
        tag = "model" if not checks else "hybrid"
        t = time.perf_counter()
        res = evaluate_best_of_n(prm, cands, args.out / f"bon_curve_{tag}", split="newlines",
                                 permutations=args.permutations, seed=args.seed,
                                 config={"checks": list(checks)})
        res["seconds"] = round(time.perf_counter() - t, 1)
        results[name] = res
        logger.info("%s: N=%d min %.3f last %.3f majority %.3f (%.0f s)", name, res["n"][-1],
                    res["accuracy"]["min"][-1], res["accuracy"]["last"][-1],
                    res["accuracy"]["majority"][-1], res["seconds"])
    cands.unlink()  # rebuilt deterministically by the command below; not worth keeping
    ns = next(iter(results.values()))["n"]
    manifest = json.loads((args.model / "prm.json").read_text())
    command = "python benchmarks/bon_curve.py " + shlex.join(argv if argv is not None
                                                            else sys.argv[1:])
    record = {"command": command.strip(), "model": str(args.model),
              "model_sha256": manifest.get("files", {}),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()},
              "config": {k: (str(v) if isinstance(v, Path) else v)
                         for k, v in vars(args).items()},
              "candidates": info, "seconds": round(time.perf_counter() - t0, 1),
              "results": {k: {kk: vv for kk, vv in v.items() if kk != "config"}
                          for k, v in results.items()}}
    (args.out / "bon_curve.json").write_text(json.dumps(record, indent=1) + "\n")
    md = ["# Best-of-N accuracy vs N: PRM step scores vs last-step (outcome-style) scoring", "",
          f"Command: `{record['command']}` ({record['seconds']} s on {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}). Model: `{args.model.name}`.", "",
          f"Candidates: {info['questions']} GSM8K-test questions x {args.n_max} samples of a "
          f"simulated generator (pass rate ~ Beta{tuple(args.beta)}); "
          f"{info['correct_fraction']:.1%} of candidates correct; wrong candidates are the "
          f"labeller's perturbed chains ({info['distinct_wrong_chains_per_question']:.1f} "
          f"distinct per question on average; by kind: {info['wrong_by_kind']}).", "",
          *_table(results, ns),
          "Plots: `bon_curve_model/bon.png`, `bon_curve_hybrid/bon.png`.", "",
          "Limits: correct candidates are copies of one reference text, so they share one "
          "score, while the wrong ones come in several distinct versions per question; as N "
          "grows the best of many distinct wrong chains outranks that single score unless "
          "the PRM separates them cleanly (a winner's curse), and majority vote gains from "
          "the identical correct copies. Wrong chains use the perturbation kinds the default "
          "PRM was trained on (other questions and seeds). Read the figures against random "
          "and majority, not as what to expect on real LLM samples "
          "(benchmarks/bon_real_samples.py has those)."]
    (args.out / "bon_curve.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
