"""Quality benchmark of the default PRM: perturbed GSM8K-test chains and PRMBench.

(a) step AUROC per perturbation kind on ``data/gsm8k_test_stepwise_seed1.jsonl`` (TRL
stepwise rows; perturbations made by the project's labeller), and (b) PRMBench (real PRM800K
chains with GPT-4o-injected reasoning errors, every class) from ``../shared/data/prmbench``,
scored the way the official harness does (see ``prm_plugins.evaluation.steps``).

Writes ``benchmarks/results/default_prm_eval.md`` and ``.json`` with the command, the model,
the machine and the timings. Run it niced when the CPU is shared::

    nice -n 10 .venv/bin/python benchmarks/eval_default_prm.py --limit-per-class 100

``--wait-minutes`` polls for the model directory while it is still being trained.
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

from prm_plugins.evaluation.steps import evaluate_steps
from prm_plugins.runtime import default_model_dir, load_prm

logger = logging.getLogger("eval_default_prm")

ROOT = Path(__file__).resolve().parents[1]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _table(groups: dict[str, dict[str, Any]], overall: dict[str, Any],
           cols: list[tuple[str, str]], head: str) -> list[str]:
    lines = [f"| {head} | " + " | ".join(label for _, label in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for name, vals in [*groups.items(), ("**overall**", overall)]:
        lines.append(f"| {name} | " + " | ".join(_fmt(vals.get(k)) for k, _ in cols) + " |")
    return lines


def _wait_for_model(model: Path, minutes: float) -> bool:
    deadline = time.monotonic() + 60 * minutes
    while not (model / "prm.json").is_file():
        if time.monotonic() >= deadline:
            return False
        logger.info("waiting for %s/prm.json ...", model)
        time.sleep(30)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=default_model_dir(),
                   help="model directory (default: the shipped default PRM)")
    p.add_argument("--stepwise", type=Path,
                   default=ROOT / "data" / "gsm8k_test_stepwise_seed1.jsonl")
    p.add_argument("--prmbench", type=Path, default=ROOT.parent / "shared" / "data" / "prmbench")
    p.add_argument("--limit-per-class", type=int, default=None,
                   help="PRMBench samples per class (default: all)")
    p.add_argument("--stepwise-limit", type=int, default=None, help="stepwise rows (default all)")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--wait-minutes", type=float, default=0.0,
                   help="poll this long for the model directory to appear")
    p.add_argument("--out", type=Path, default=None,
                   help="output path without suffix (.md and .json are written); default "
                        "benchmarks/results/default_prm_eval, or ..._model_alone with "
                        "--no-checks")
    p.add_argument("--skip", choices=["stepwise", "prmbench"], action="append", default=[])
    p.add_argument("--no-checks", action="store_true",
                   help="the model alone: turn off the step checks its manifest recommends")
    args = p.parse_args(argv)
    if args.out is None:  # the two configurations never overwrite each other's results
        args.out = ROOT / "benchmarks" / "results" / (
            "default_prm_eval_model_alone" if args.no_checks else "default_prm_eval")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if not _wait_for_model(args.model, args.wait_minutes):
        logger.error("no model at %s (prm.json missing); train/export it first or pass --model",
                     args.model)
        return 2
    prm = load_prm(args.model, device="cpu", long_chains="window",
                   intra_op_num_threads=args.threads, **({"checks": ()} if args.no_checks else {}))
    man = prm.manifest
    command = "python " + " ".join(shlex.quote(a) for a in
                                   [os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    niceness = os.nice(0) if hasattr(os, "nice") else 0
    if niceness:
        command = f"nice -n {niceness} {command}"
    result: dict[str, Any] = {
        "command": command,
        "model": {"dir": str(args.model), "format": man.format, "max_length": man.max_length,
                  "dtype": man.dtype, "model_sha256": man.files.get(man.model_file),
                  "provider": prm.provider, "checks": list(prm.checks),
                  "calibration": prm.calibration.to_dict() if prm.calibration else None},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "niceness": niceness},
        "threshold": args.threshold,
    }
    if "stepwise" not in args.skip:
        if args.stepwise.is_file():
            logger.info("stepwise: %s", args.stepwise)
            result["stepwise"] = evaluate_steps(prm, args.stepwise, "stepwise",
                                                threshold=args.threshold,
                                                limit=args.stepwise_limit,
                                                batch_size=args.batch_size, progress=True)
        else:
            logger.warning("stepwise data %s not found; skipped", args.stepwise)
    if "prmbench" not in args.skip:
        if args.prmbench.exists():
            logger.info("prmbench: %s", args.prmbench)
            result["prmbench"] = evaluate_steps(prm, args.prmbench, "prmbench",
                                                threshold=args.threshold,
                                                limit=args.limit_per_class,
                                                batch_size=args.batch_size, progress=True)
        else:
            logger.warning("PRMBench data %s not found; skipped", args.prmbench)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n",
                                             encoding="utf-8")
    args.out.with_suffix(".md").write_text(_markdown(result) + "\n", encoding="utf-8")
    logger.info("wrote %s.md and .json", args.out)
    return 0


def _markdown(r: dict[str, Any]) -> str:
    m = r["model"]
    lines = [
        "# Default PRM: step-level evaluation",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Model: `{m['dir']}` (format {m['format']}, {m['dtype']}, max_length "
        f"{m['max_length']}, model.onnx sha256 {str(m['model_sha256'])[:16]}...), "
        f"{m['provider']}, step checks {m.get('checks') or 'none (model alone)'}, "
        f"calibration {m.get('calibration') or 'none'}; "
        f"machine: {r['machine']['cpus']} CPU(s), {r['machine']['platform']}, "
        f"niceness {r['machine']['niceness']}. Threshold {r['threshold']} (a step scoring below "
        "it is predicted erroneous). Chains longer than max_length are scored in windows.",
    ]
    sw = r.get("stepwise")
    if sw:
        o = sw["overall"]
        lines += [
            "", "## (a) Perturbed GSM8K-test chains (stepwise)", "",
            f"`{sw['data']}`: {sw['n_scored']} chains, {o['n_steps']} steps "
            f"({o['n_error_steps']} erroneous), {sw['seconds']:.0f} s "
            f"({sw['n_scored'] / max(sw['seconds'], 1e-9):.1f} chains/s).",
            "Per kind, `AUROC` ranks that kind's erroneous steps against every correct step of "
            "the set; `AUROC_1st` ranks only each chain's first erroneous step that way (error "
            "detection where the error happens; the later bad steps of a chain are easier, by "
            "position and by the error before them); `AUROC_in` uses that kind's rows only; "
            "`1st_err` is exact first-error accuracy (-1 for a correct chain).", "",
            *_table(sw["groups"], o, [("n_samples", "chains"), ("n_error_steps", "neg steps"),
                                      ("step_auroc", "AUROC"),
                                      ("first_error_auroc", "AUROC_1st"),
                                      ("within_rows_auroc", "AUROC_in"),
                                      ("first_error_acc", "1st_err")], "perturbation"),
            "",
            f"ProcessBench-style on these chains: accuracy on erroneous chains "
            f"{_fmt(o['error_acc'])}, on correct chains {_fmt(o['correct_acc'])}, "
            f"F1 {_fmt(o['f1'])}.",
        ]
        if sw["skipped"]:
            lines.append(f"Skipped: {len(sw['skipped'])} (first: {sw['skipped'][0]}).")
    pb = r.get("prmbench")
    if pb:
        o = pb["overall"]
        limit = (f"first {pb['limit']} samples per class" if pb["limit"] else "every sample")
        lines += [
            "", "## (b) PRMBench (PRMBench_Preview, all classes)", "",
            f"`{pb['data']}`, {limit}: {pb['n_scored']} chains, {o['n_steps']} steps "
            f"(overall row: {o['n_error_steps']} erroneous), {pb['seconds']:.0f} s "
            f"({pb['n_scored'] / max(pb['seconds'], 1e-9):.1f} chains/s).",
            "Official-harness convention: `modified_process` against `modified_question`, "
            "1-based `error_steps` are the negatives, each `redundency` row's "
            "`original_process` is also a fully correct sample (class `correct`, left out of "
            "the overall row). F1_neg/F1_pos: F1 of the erroneous/correct steps at the "
            "threshold; PRMScore = their mean (the defined one alone for classes with one kind "
            "of step); `1st_err`: share of chains whose first erroneous step is flagged.", "",
            *_table(pb["groups"], o, [("n_samples", "chains"), ("n_steps", "steps"),
                                      ("step_auroc", "AUROC"), ("negative_f1", "F1_neg"),
                                      ("positive_f1", "F1_pos"), ("prm_score", "PRMScore"),
                                      ("first_error_acc", "1st_err")], "class"),
            "",
            f"Mean PRMScore over the classes (without `correct`): "
            f"{_fmt(o['mean_class_prm_score'])}. Error-step indices out of range (ignored, as "
            f"in the harness): {o['error_steps_out_of_range']}; empty steps left out: "
            f"{pb['empty_steps']}.",
        ]
        if pb["skipped"]:
            lines.append(f"Skipped: {len(pb['skipped'])} (first: {pb['skipped'][0]}).")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
