"""``prm score``: score each step of chains, from a JSONL file or one chain on the command line.

Files go through :mod:`prm_plugins.jsonl` (one bad line costs only itself, the output is
written under a ``.partial`` name and renamed at the end); ``--ray`` hands the file to
:mod:`prm_plugins.adapters.ray.data`, imported only then.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import IO, Any

from prm_plugins.cli.output import (
    DATA,
    OK,
    comparison_digits,
    error,
    error_text,
    out,
    plural,
    quiet_onnxruntime,
)
from prm_plugins.cli.signals import SIGNALS

__all__ = ["make_parser", "run"]

VERB = "score"
_CHUNK_ROWS = 256
_SPLITS = ("auto", "newlines", "blank_lines", "step_markers", "regex")


def make_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``prm score`` to the ``prm`` sub-command parsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        VERB,
        help="score each step of chains with a PRM",
        description=(
            "Score chains. Either --input IN.jsonl (rows {\"question\": str, \"steps\": [str]}; "
            "out: the same rows plus \"step_scores\"), or one chain given by --question with "
            "--steps or --solution. Without MODEL_DIR the shipped default PRM is used. In "
            "text output and messages steps are numbered from 1 (the Python API, and "
            "\"first_error\" in --json, count from 0)."
        ),
        epilog=(
            "Files: each non-blank input line gives one output line, in input order; a bad "
            "line gives a row with \"line\" and \"error\" (exit status 1) and costs only "
            "itself. --output never overwrites the input: rows are written to OUT.partial "
            "and renamed to OUT when the run completes. Interrupted (Ctrl-C or SIGTERM): the "
            "rows already written stay in OUT.partial (OUT.partial.2, ... if that name is "
            "taken), in input order; prm prints how many and the --skip N that continues the "
            "run (write the rest to another file and append it). Exit status 130 (SIGINT) "
            "or 143 (SIGTERM)."
        ),
    )
    p.set_defaults(run=run)
    p.add_argument("model_dir", nargs="?", default=None,
                   help="model directory (default: shipped PRM)")
    p.add_argument("--input", "-i", help="JSONL file of {question, steps} rows ('-' for stdin)")
    p.add_argument("--output", "-o",
                   help="JSONL output file (default: stdout); written as OUT.partial, renamed "
                        "to OUT at the end")
    p.add_argument("--skip", type=int, default=0, metavar="N",
                   help="skip the first N non-blank input lines (to continue an interrupted "
                        "run); line numbers in errors stay those of the input")
    p.add_argument("--question", "-q", help="the question, for scoring one chain")
    p.add_argument("--steps", nargs="+", help="the steps of one chain")
    p.add_argument("--solution", help="a whole solution, split into steps the way the model's "
                                      "own code does (its format's convention), or with --split")
    p.add_argument("--split", default=None, choices=_SPLITS,
                   help="split --solution generically instead (default: the model's "
                        "convention); regex splits at each match of --split-pattern")
    p.add_argument("--split-pattern", default=None, metavar="REGEX",
                   help="with --split regex: the separator between steps (the match is "
                        "dropped), e.g. '\\s*;;\\s*'")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--long-chains", default="error", choices=["error", "window"],
                   help="over-long chains: raise (default) or score in windows")
    p.add_argument("--threshold", type=float, default=0.5, help="flag steps below this score")
    p.add_argument("--no-checks", action="store_true",
                   help="model scores only: skip the step checks the model's manifest "
                        "recommends (the default PRM's calculator check)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from prm_plugins.cli.score_ray import add_ray_arguments

    add_ray_arguments(p)
    return p


def report_interrupt(args: argparse.Namespace, exc: KeyboardInterrupt, written: int,
                     partial: Path | None) -> int:
    """Say what an interruption left and how to continue; the exit status (128 + signal)."""
    signum = int(getattr(exc, "signum", signal.SIGINT))
    name = signal.Signals(signum).name
    rows = plural(written, "row")
    if args.output:
        where = (f"kept, in input order, in {partial}" if partial is not None
                 else "none were written")
        sys.stderr.write(f"prm score: interrupted by {name}: {rows} written, {where}; "
                         f"{args.output} was not written\n")
    else:
        sys.stderr.write(f"prm score: interrupted by {name}: {rows} written to stdout\n")
    skip = int(getattr(args, "skip", 0) or 0) + written
    if partial is None:
        hint = f"to continue, rerun the same command with --skip {skip}"
    else:
        rest = partial.with_name(Path(args.output).name + ".rest")
        hint = (f"to continue, rerun the same command with --skip {skip} --output {rest}, "
                f"then join: cat {partial} {rest} > {args.output}")
    sys.stderr.write(f"prm score: {hint}\n")
    return 128 + signum


def _quiet_stdout() -> None:
    """After the reader of stdout went away: no second error when Python flushes it at exit."""
    import os

    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _check_paths(args: argparse.Namespace) -> str | None:
    """Why ``--input``/``--output`` cannot be used (before the model is loaded), or None."""
    from prm_plugins.errors import PRMError
    from prm_plugins.jsonl import refuse_same_file

    if args.input != "-":
        path = Path(args.input)
        if path.is_dir():
            return f"--input {str(path)!r} is a folder; give a JSONL file"
        if not path.is_file():
            return f"--input file {str(path)!r} not found"
    if args.output:
        dst = Path(args.output)
        try:
            if args.input != "-":
                refuse_same_file(args.input, dst)
            if dst.is_dir():
                return f"--output {str(dst)!r} is a folder; give a file path to write"
            parent = dst.parent if str(dst.parent) else Path(".")
            if not parent.is_dir():
                return (f"cannot write --output {str(dst)!r}: folder {str(parent)!r} does "
                        "not exist; create it first")
        except PRMError as exc:
            return str(exc)
    return None


def _progress_bar(args: argparse.Namespace) -> Any:
    """A tqdm bar over the input's chains (with a total for a regular file), or None."""
    if not args.output or args.no_progress:
        return None
    from tqdm import tqdm

    from prm_plugins.jsonl import count_lines

    total = None if args.input == "-" else count_lines(args.input)
    if total is not None:
        total = max(0, total - int(args.skip or 0))
    return tqdm(total=total, unit="chain", desc="scoring", file=sys.stderr)


class _FileRun:
    """The state of one ``prm score --input`` run: counts, sink and progress bar."""

    def __init__(self, prm: Any, progress: Any) -> None:
        self.prm = prm
        self.progress = progress
        self.n_ok = self.n_bad = self.written = 0

    def flush(self, chunk: list[Any], dst: IO[str]) -> None:
        """Score a chunk of lines and write their rows, whole (signals wait)."""
        from prm_plugins.jsonl import dumps_line, result_row, score_pairs

        good = [i for i, line in enumerate(chunk) if line.error is None and line.row is not None]
        results = score_pairs(self.prm, [(chunk[i].row["question"], chunk[i].row["steps"])
                                         for i in good], describe=error_text)
        scored: dict[int, list[float] | str] = dict(zip(good, results, strict=True))
        lines: list[tuple[str, str | None]] = []
        for i, line in enumerate(chunk):
            row, msg = result_row(line, scored.get(i))
            lines.append((dumps_line(row), None if msg is None else f"line {line.lineno}: {msg}"))
        with SIGNALS.deferred():  # a chunk is written whole, and counted exactly
            for text, problem in lines:
                dst.write(text)
                self.written += 1
                if problem is None:
                    self.n_ok += 1
                else:
                    self.n_bad += 1
                    sys.stderr.write(f"prm score: {problem}\n")
            dst.flush()
        if self.progress is not None:
            self.progress.update(len(chunk))


def _score_file(prm: Any, args: argparse.Namespace) -> int:
    from prm_plugins.errors import PRMError
    from prm_plugins.jsonl import AtomicOutput, atomic_output, read_chain_lines

    sink: AtomicOutput | None = None
    try:
        if args.output:
            sink = atomic_output(args.output)
        src: IO[bytes] = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    except (PRMError, OSError) as exc:
        return error(VERB, exc)
    state = _FileRun(prm, _progress_bar(args))
    try:
        with sink if sink is not None else contextlib.nullcontext(sys.stdout) as dst:
            chunk: list[Any] = []
            for item in read_chain_lines(src, int(args.skip or 0)):
                chunk.append(item)
                if len(chunk) >= _CHUNK_ROWS:
                    state.flush(chunk, dst)
                    chunk = []
            state.flush(chunk, dst)
    except KeyboardInterrupt as exc:
        if state.progress is not None:
            state.progress.close()
            state.progress = None
        return report_interrupt(args, exc, state.written,
                                sink.partial_path if sink is not None else None)
    except PRMError as exc:  # the partial file cannot be created (no permission)
        return error(VERB, exc)
    except OSError as exc:  # disk full, a closed pipe, ...
        if sink is None and isinstance(exc, BrokenPipeError):  # prm score ... | head
            _quiet_stdout()
            return DATA
        kept = f"; the {plural(state.written, 'row')} written are in {sink.partial_path}" if (
            sink is not None and sink.partial_path is not None) else ""
        return error(VERB, f"cannot write {args.output or 'stdout'}: {exc}{kept}")
    finally:
        if state.progress is not None:
            state.progress.close()
        if src is not sys.stdin.buffer:
            src.close()
    sys.stderr.write(f"prm score: scored {plural(state.n_ok, 'chain')}, "
                     f"{plural(state.n_bad, 'bad row')}\n")
    return OK if state.n_bad == 0 else DATA


def _usage_problem(args: argparse.Namespace) -> str | None:
    """Why the flags cannot work together (before anything is loaded), or None."""
    single = args.question is not None or args.steps is not None or args.solution is not None
    if args.input and single:
        return "give either --input or --question with --steps/--solution, not both"
    if not args.input and not single:
        return ("nothing to score: give --input IN.jsonl, or --question with --steps or "
                "--solution")
    if args.skip < 0:
        return f"--skip counts input lines to skip; it must be >= 0, got {args.skip}"
    if args.skip and not args.input:
        return "--skip applies to --input files"
    if args.split == "regex" and args.split_pattern is None:
        return "--split regex needs --split-pattern REGEX (the separator between steps)"
    if args.split_pattern is not None and args.split != "regex":
        return (f"--split-pattern only applies with --split regex (got --split "
                f"{args.split or 'unset'})")
    if (args.split is not None or args.split_pattern is not None) and args.solution is None:
        return "--split and --split-pattern apply to --solution"
    if args.input:
        return _check_paths(args)
    return None


def run(args: argparse.Namespace) -> int:
    """Run ``prm score``; returns the exit status (0 all scored, 1 bad rows, 2 usage)."""
    from prm_plugins.errors import PRMError
    from prm_plugins.runtime import load_prm

    problem = _usage_problem(args)
    if problem is not None:
        return error(VERB, problem)
    from prm_plugins.cli.score_ray import ray_flags_problem, score_file_ray

    problem = ray_flags_problem(args)
    if problem is not None:
        return error(VERB, problem)
    if args.ray:
        return score_file_ray(args)
    quiet_onnxruntime(int(getattr(args, "verbose", 0) or 0))
    try:
        with SIGNALS.kept_from_new_threads():  # Ctrl-C reaches the main thread, never ORT's
            prm = load_prm(args.model_dir, device=args.device, long_chains=args.long_chains,
                           checks=() if args.no_checks else None)
    except PRMError as exc:
        return error(VERB, exc)
    if args.input:
        return _score_file(prm, args)
    if args.question is None or (args.steps is None) == (args.solution is None):
        return error(VERB, "one chain needs --question and exactly one of --steps or "
                           "--solution")
    return _score_one(prm, args)


def _score_one(prm: Any, args: argparse.Namespace) -> int:
    """One chain from the command line, as a table (steps from 1) or JSON."""
    from prm_plugins.errors import PRMError
    from prm_plugins.steps import split_steps

    try:
        if args.steps is not None:
            steps = args.steps
        elif args.split is None:
            steps = prm.format.split_solution(args.solution)
        else:
            steps = split_steps(args.solution, args.split, pattern=args.split_pattern)
        result = prm.score(args.question, steps)
        first = result.first_error(args.threshold)
    except PRMError as exc:
        return error(VERB, exc)
    if args.json:
        out(json.dumps({**result.to_dict(), "min": result.min, "prod": result.prod,
                        "first_error": first, "provider": prm.provider}, ensure_ascii=False))
        return OK
    _print_table(prm, args, result, first)
    return OK


def _print_table(prm: Any, args: argparse.Namespace, result: Any, first: int | None) -> None:
    threshold = args.threshold
    k = comparison_digits([*result.scores, result.min, result.prod], threshold)
    checks = f", checks: {', '.join(prm.checks)}" if prm.checks else ""
    out(f"model: {prm.model_dir} ({prm.manifest.format}, {prm.provider}{checks})")
    out(f"question: {args.question}")
    arithmetic = result.meta.get("arithmetic") or [None] * len(result.steps)
    for i, (step, s, calc) in enumerate(zip(result.steps, result.scores, arithmetic,
                                            strict=True)):
        flag = f"  <-- below threshold {threshold:.{k}f}" if s < threshold else ""
        if calc == "wrong":
            flag += " (written arithmetic is wrong)"
        out(f"  step {i + 1}  {s:.{k}f}  {step}{flag}")
    verdict = "all steps pass" if first is None else f"first weak step: {first + 1}"
    out(f"chain score: min {result.min:.{k}f}  prod {result.prod:.{k}f}  ({verdict}, "
        f"threshold {threshold:.{k}f}; steps numbered from 1)")

