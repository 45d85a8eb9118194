"""``prm eval``: step-level evaluation (``prm eval steps``) and best-of-N (``prm eval bon``).

Each sub-verb has one config dataclass (:class:`StepsEvalConfig`, :class:`BonEvalConfig`)
whose fields are its flags (``batch_size`` -> ``--batch-size``), and the config that ran is
written into the report. Stdlib only at import, so ``prm --help`` stays instant.

Exit codes: 0 all rows used; 1 figures were produced but some rows were skipped (each one is
named on stderr with its line number), or the plot could not be drawn; 2 nothing could be
evaluated (bad arguments, missing file, no usable row, model not loadable).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from prm_plugins.cli.output import (
    DATA,
    OK,
    USAGE,
    error,
    output_problem,
    plural,
    quiet_onnxruntime,
    say,
)
from prm_plugins.cli.output import out as _out

__all__ = ["BonEvalConfig", "StepsEvalConfig", "add_parser", "make_parser", "run"]

_KINDS = ("processbench", "prmbench", "stepwise")


VERB = "eval"
_STEPS = "eval steps"
_BON = "eval bon"


@dataclass
class _ScorerOptions:
    """Options shared by both sub-verbs: which model and how it runs."""

    model_dir: str | None = field(default=None, metadata={
        "help": "model directory (default: the shipped PRM)", "positional": True})
    device: str = field(default="auto", metadata={
        "help": "where ONNX Runtime runs", "choices": ("auto", "cpu", "cuda")})
    long_chains: str = field(default="window", metadata={
        "help": "chains longer than the model's max length: score them in windows, so no "
                "sample is lost, or skip them as errors", "choices": ("window", "error")})
    batch_size: int = field(default=32, metadata={"help": "chains per scoring call"})
    json: bool = field(default=False, metadata={"help": "print the figures as JSON"})
    no_progress: bool = field(default=False, metadata={"help": "no progress bar"})

    def validate(self) -> None:
        """Raise :class:`~prm_plugins.errors.InvalidInputError` naming a bad value."""
        from prm_plugins.errors import InvalidInputError

        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise InvalidInputError(f"--{_flag(f.name)} must be one of {list(choices)}, "
                                        f"got {value!r}")
        for name in ("batch_size", "limit", "permutations"):
            value = getattr(self, name, 1)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise InvalidInputError(f"--{_flag(name)} must be a positive integer, got "
                                        f"{value!r}")


@dataclass
class StepsEvalConfig(_ScorerOptions):
    """``prm eval steps``: step-level figures on labelled chains.

    Examples:
        >>> StepsEvalConfig(data="pb.jsonl", kind="processbench", threshold=0.4).threshold
        0.4
    """

    data: str = field(default="", metadata={
        "help": "JSONL file, or a folder of JSONL files", "required": True})
    kind: str = field(default="", metadata={
        "help": "data layout", "choices": _KINDS, "required": True})
    threshold: float = field(default=0.5, metadata={
        "help": "a step scored below this is predicted erroneous"})
    limit: int | None = field(default=None, metadata={
        "help": "most rows to use (prmbench: most samples per class)"})
    output: str | None = field(default=None, metadata={
        "help": "also write the JSON report to this file"})

    def validate(self) -> None:
        """Raise :class:`~prm_plugins.errors.InvalidInputError` naming a bad value."""
        from prm_plugins.validation import check_threshold

        super().validate()
        check_threshold(self.threshold, name="--threshold")


@dataclass
class BonEvalConfig(_ScorerOptions):
    """``prm eval bon``: best-of-N accuracy against N.

    Examples:
        >>> BonEvalConfig(data="cands.jsonl", out="out", permutations=16).seed
        0
    """

    data: str = field(default="", metadata={"help": "candidates JSONL file", "required": True})
    out: str = field(default="", metadata={
        "help": "output folder for bon.json and bon.png", "required": True})
    split: str = field(default="auto", metadata={
        "help": "how solutions are split into steps",
        "choices": ("auto", "newlines", "blank_lines", "step_markers")})
    permutations: int = field(default=8, metadata={
        "help": "random candidate orders averaged at each N"})
    seed: int = field(default=0, metadata={"help": "seed of those orders"})
    limit: int | None = field(default=None, metadata={"help": "most rows to use"})
    no_plot: bool = field(default=False, metadata={"help": "write bon.json only"})
    per_row: bool = field(default=False, metadata={
        "help": "also write each question's accuracy per method and N to bon.json (and "
                "--json), for paired comparisons between runs"})


def _flag(name: str) -> str:
    return name.replace("_", "-")


def make_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``eval`` verb (sub-verbs ``steps`` and ``bon``) to ``prm``."""
    from prm_plugins.cli.options import add_dataclass_arguments

    p: argparse.ArgumentParser = subparsers.add_parser(
        VERB, help="evaluate a PRM: step-level benchmarks and best-of-N",
        description="Evaluate a PRM on step-labelled data (steps) or on best-of-N selection "
                    "among candidate solutions (bon).",
    )
    sub = p.add_subparsers(dest="eval_verb", metavar="SUBVERB")
    s = sub.add_parser(
        "steps", help="step-level figures on ProcessBench, PRMBench or TRL stepwise data",
        description=(
            "processbench: rows {problem, steps, label} (label = first error index, -1 none); "
            "reports accuracy on erroneous and on correct samples and their harmonic mean F1. "
            "prmbench: PRMBench JSONL (a file or a folder); per class step AUROC, negative/"
            "positive F1 and PRMScore, following the official harness. stepwise: TRL rows "
            "{prompt, completions, labels[, perturbation]}; step AUROC overall and per "
            "perturbation, and first-error accuracy."
        ),
    )
    add_dataclass_arguments(s, StepsEvalConfig)
    b = sub.add_parser(
        "bon", help="best-of-N accuracy vs N for PRM aggregations, majority vote, random, oracle",
        description=(
            'Rows {"question", "answer", "candidates": [{"solution", "is_correct"}]}. Writes '
            "OUT/bon.json and OUT/bon.png (accuracy against N, one line per method)."
        ),
    )
    add_dataclass_arguments(b, BonEvalConfig)
    p.set_defaults(_eval_parser=p, run=run)
    return p


#: The name the verb modules had before ``prm_plugins.cli`` became a package.
add_parser = make_parser


def _load(cfg: _ScorerOptions, verbose: int = 0) -> Any:
    from prm_plugins.runtime import load_prm

    quiet_onnxruntime(verbose)
    return load_prm(cfg.model_dir, device=cfg.device,  # type: ignore[arg-type]
                    long_chains=cfg.long_chains)


def _report_skipped(verb: str, skipped: list[str]) -> None:
    for line in skipped:
        say(verb, f"skipped {line}")


def _run_steps(cfg: StepsEvalConfig) -> int:
    from prm_plugins.errors import PRMError
    from prm_plugins.evaluation.steps import (
        evaluate_loaded,
        format_steps_report,
        load_step_items,
    )

    t0 = time.perf_counter()
    problem = output_problem("--output", cfg.output)
    if problem is not None:
        return error(_STEPS, problem)
    try:
        cfg.validate()
        items, issues, n_rows = load_step_items(cfg.data, cfg.kind, limit=cfg.limit)
    except PRMError as exc:
        return error(_STEPS, exc)
    _report_skipped(_STEPS, [str(i) for i in issues])
    if not items:
        return error(_STEPS, f"no usable {cfg.kind} row in {cfg.data} ({plural(n_rows, 'row')} "
                             f"read, {len(issues)} bad); check that --kind matches the file")
    try:
        prm = _load(cfg)
        summary, score_issues = evaluate_loaded(
            prm, items, cfg.kind, threshold=cfg.threshold, batch_size=cfg.batch_size,
            progress=not cfg.no_progress)
    except PRMError as exc:
        return error(_STEPS, exc)
    _report_skipped(_STEPS, [str(i) for i in score_issues])
    skipped = [str(i) for i in [*issues, *score_issues]]
    report = {
        "kind": cfg.kind, "data": str(cfg.data), "model": str(prm.model_dir),
        "threshold": cfg.threshold, "limit": cfg.limit, "n_rows": n_rows,
        "n_samples": len(items), "n_scored": summary.pop("n_scored"),
        "empty_steps": summary.pop("empty_steps"), "skipped": skipped, **summary,
        "seconds": round(time.perf_counter() - t0, 3), "config": asdict(cfg),
    }
    if cfg.output:
        from prm_plugins.jsonl import atomic_output

        try:
            with atomic_output(cfg.output) as fh:
                json.dump(report, fh, indent=2)
                fh.write("\n")
        except (PRMError, OSError) as exc:
            return error(_STEPS, f"cannot write --output {cfg.output!r}: {exc}")
    if cfg.json:
        _out(json.dumps(report))
    else:
        _out(format_steps_report(report))
    if skipped:
        say(_STEPS, f"{len(skipped)} {'row or sample' if len(skipped) == 1 else 'rows or samples'}"
                    f" skipped; the figures use the other {report['n_scored']}")
    return DATA if skipped else OK


def _run_bon(cfg: BonEvalConfig) -> int:
    from prm_plugins.errors import MissingExtraError, PRMError
    from prm_plugins.evaluation.bon import METHODS, evaluate_best_of_n, result_as_json

    try:
        cfg.validate()
        prm = _load(cfg)
        result = evaluate_best_of_n(
            prm, cfg.data, cfg.out, split=cfg.split, permutations=cfg.permutations,
            seed=cfg.seed, limit=cfg.limit, batch_size=cfg.batch_size,
            progress=not cfg.no_progress, plot=not cfg.no_plot, config=asdict(cfg),
            per_row=cfg.per_row)
    except MissingExtraError as exc:
        return error(_BON, exc, DATA)
    except PRMError as exc:
        return error(_BON, exc)
    _report_skipped(_BON, result["skipped"])
    if cfg.json:
        _out(json.dumps(result_as_json(result, per_row=cfg.per_row)))
    else:
        c = result["counts"]
        _out(f"best-of-N on {cfg.data}: {c['rows']} questions, {c['candidates']} candidates "
             f"({c['scored_candidates']} scored), {c['permutations']} permutations")
        shown = sorted({1, 2, 4, 8, 16, 32, 64, 128, result["n"][-1]} & set(result["n"]))
        _out(f"{'method':<14}" + "".join(f"{'N=' + str(n):>8}" for n in shown))
        for m in METHODS:
            accs = result["accuracy"][m]
            _out(f"{m:<14}" + "".join(
                f"{'-' if accs[n - 1] is None else format(accs[n - 1], '.3f'):>8}"
                for n in shown))
        _out(f"wrote {cfg.out}/bon.json" + ("" if cfg.no_plot else " and bon.png"))
    return DATA if result["skipped"] else OK


def run(args: argparse.Namespace) -> int:
    """Run ``prm eval steps`` or ``prm eval bon``; returns the exit code."""
    from prm_plugins.cli.options import dataclass_from_args

    if args.eval_verb == "steps":
        return _run_steps(dataclass_from_args(StepsEvalConfig, args))
    if args.eval_verb == "bon":
        return _run_bon(dataclass_from_args(BonEvalConfig, args))
    args._eval_parser.print_help(sys.stderr)
    return USAGE
