"""The ``prm`` command line: ``prm score``, ``prm info``, ``prm export``, ``prm train``, ...

Each verb imports what it needs when it runs, so ``prm --help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

__all__ = ["main"]

logger = logging.getLogger("prm_plugins.cli")

#: verb -> module with ``add_parser(subparsers)`` and ``run(args) -> int``; optional verbs
#: whose module is missing are simply not offered.
_PLUGGED_VERBS = {
    "export": "prm_plugins.cli_export",
    "train": "prm_plugins.cli_train",
    "label": "prm_plugins.labeling.cli",
    "eval": "prm_plugins.evaluation.cli",
    "calibrate": "prm_plugins.cli_calibrate",
}

_CHUNK_ROWS = 256


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


# -- Ctrl-C and SIGTERM ------------------------------------------------------------------------
class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM reached ``prm``; ``signum`` says which.

    A ``KeyboardInterrupt``, so every ``except KeyboardInterrupt`` path (and every
    ``finally``) runs for SIGTERM exactly as for Ctrl-C.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """SIGINT and SIGTERM raised as :class:`Interrupted`, held back inside :meth:`deferred`.

    Holding them back while a chunk of rows is written keeps the output a whole number of
    rows, and the count of rows written exact.
    """

    def __init__(self) -> None:
        self._saved: dict[int, Any] = {}
        self._depth = 0
        self._pending: int | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._depth:
            self._pending = self._pending or signum
            return
        raise Interrupted(signum)

    def install(self, *, force: bool = False) -> None:
        """Take over SIGINT and SIGTERM, unless they are ignored (``nohup``, a background job)
        or set by the host program; ``force`` retakes them from a library (Ray) that set its
        own."""
        if threading.current_thread() is not threading.main_thread():
            return
        defaults = (signal.default_int_handler, signal.SIG_DFL, self._handler)
        for sig in (signal.SIGINT, signal.SIGTERM):
            current = signal.getsignal(sig)
            if force and sig in self._saved:
                signal.signal(sig, self._handler)
            elif current in defaults and sig not in self._saved:
                self._saved[sig] = current
                signal.signal(sig, self._handler)

    def restore(self) -> None:
        """Give the signals back as they were."""
        for sig, handler in self._saved.items():
            with contextlib.suppress(ValueError, TypeError):  # not the main thread
                signal.signal(sig, handler)
        self._saved.clear()
        self._depth, self._pending = 0, None

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Inside this block a signal waits; it is raised when the block ends."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending is not None:
                signum, self._pending = self._pending, None
                raise Interrupted(signum)


_SIGNALS = _Signals()


# -- prm score -------------------------------------------------------------------------------
def _add_score(sub: Any) -> None:
    p = sub.add_parser(
        "score",
        help="score each step of chains with a PRM",
        description=(
            "Score chains. Either --input IN.jsonl (rows {\"question\": str, \"steps\": [str]}; "
            "out: the same rows plus \"step_scores\"), or one chain given by --question with "
            "--steps or --solution. Without MODEL_DIR the shipped default PRM is used."
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
    p.add_argument("--split", default=None,
                   help="split --solution generically instead: auto, newlines, blank_lines, "
                        "step_markers (default: the model's convention)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--long-chains", default="error", choices=["error", "window"],
                   help="over-long chains: raise (default) or score in windows")
    p.add_argument("--threshold", type=float, default=0.5, help="flag steps below this score")
    p.add_argument("--no-checks", action="store_true",
                   help="model scores only: skip the step checks the model's manifest "
                        "recommends (the default PRM's calculator check)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray = p.add_argument_group(
        "Ray", "score --input on a Ray cluster with a pool of actors (pip install "
        "\"prm-plugins[ray]\"); JSONL or Parquet in and out, chosen by the file suffix "
        "(.parquet/.pq); every row comes out once, in input order")
    ray.add_argument("--ray", action="store_true", help="score the --input file with Ray Data")
    ray.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="Ray cluster to join, e.g. ray://head:10001 or auto (default: "
                          "RAY_ADDRESS, else start a local cluster)")
    ray.add_argument("--num-actors", type=int, default=None, metavar="K",
                     help="scoring actors, each loads the model once (default 2)")
    ray.add_argument("--batch-size", type=int, default=None, metavar="B",
                     help="chains per score_batch call in an actor (default 64)")
    ray.add_argument("--num-gpus", type=float, default=None, metavar="G",
                     help="GPUs per actor, fractions share a GPU (default 0)")


#: (line number, row or None, error or None, raw line excerpt) of one non-blank input line.
Entry = tuple[int, "dict[str, Any] | None", "str | None", str]

#: characters of a bad line kept in its error row's "raw" field.
_RAW_EXCERPT = 200


def _excerpt(text: str) -> str:
    text = text.rstrip("\r\n")
    if len(text) <= _RAW_EXCERPT:
        return text
    return f"{text[:_RAW_EXCERPT]}... ({len(text)} characters)"


def _iter_rows(fh: IO[bytes], skip: int = 0) -> Iterator[Entry]:
    """One :data:`Entry` for each non-blank line of ``fh``, after the first ``skip`` of them.

    Lines are read one by one through :func:`prm_plugins.jsonl.loads_line`, so a line that
    is not UTF-8 or not JSON, or is nested too deeply, costs only itself.
    """
    from prm_plugins.jsonl import JSONLineError, loads_line

    seen = 0
    for lineno, raw_bytes in enumerate(fh, start=1):
        try:
            text: str | None = raw_bytes.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and not text.strip():
            continue
        seen += 1
        if seen <= skip:
            continue
        raw = _excerpt(text) if text is not None else repr(raw_bytes[:_RAW_EXCERPT])
        try:
            row = loads_line(raw_bytes if text is None else text)
        except JSONLineError as exc:
            yield lineno, None, str(exc), raw
            continue
        if not isinstance(row, dict):
            yield lineno, None, f"expected a JSON object, got {type(row).__name__}", raw
            continue
        q, steps = row.get("question"), row.get("steps")
        if not isinstance(q, str):
            yield lineno, row, f"'question' must be a string, got {type(q).__name__}", raw
        elif not isinstance(steps, list):
            yield lineno, row, f"'steps' must be a list of strings, got {type(steps).__name__}", raw
        else:
            yield lineno, row, None, raw


def _finite(scores: Sequence[float]) -> list[float] | str:
    """The scores, or an error message when one is NaN or infinite (never written as such)."""
    out = [float(x) for x in scores]
    for i, x in enumerate(out):
        if not math.isfinite(x):
            return (f"the model returned a non-finite score ({x}) for step {i + 1}; the model "
                    "or its export is broken (check it with prm info and its parity figures)")
    return out


def _score_pairs(prm: Any, pairs: Sequence[Any]) -> list[list[float] | str]:
    """Score ``(question, steps)`` pairs; each entry is its scores or its error message.

    The pairs are scored as one ``score_batch`` call; when that fails, pair by pair, so that
    only the rows that cannot be scored carry an error. An unexpected exception (not a
    :class:`~prm_plugins.errors.PRMError`) also costs only its row: one hostile chain never
    ends a run. Non-finite scores become that row's error.
    """
    from prm_plugins.errors import PRMError

    if not pairs:
        return []
    results: list[list[float] | str]
    try:
        batch = list(prm.score_batch(list(pairs)))
        if len(batch) != len(pairs):
            raise RuntimeError(f"score_batch returned {len(batch)} results for {len(pairs)} "
                               "chains")
        results = [list(s.scores) for s in batch]
    except Exception:  # isolate the bad rows; the others are still scored
        results = []
        for question, steps in pairs:
            try:
                results.append(list(prm.score(question, steps).scores))
            except PRMError as exc:
                results.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - a hostile row must fail alone
                logger.debug("scoring one row failed", exc_info=True)
                results.append(f"scoring failed: {type(exc).__name__}: {exc}")
    return [r if isinstance(r, str) else _finite(r) for r in results]


def _result_row(entry: Entry,
                result: list[float] | str | None) -> tuple[dict[str, Any], str | None]:
    """The output row of one input line, and its error message (``None`` when scored).

    Keys a previous run wrote (``step_scores``; ``error`` with its ``line``) are dropped
    from the input row, so an output row never carries a stale score or error.
    """
    lineno, row, error, raw = entry
    base = dict(row or {})
    base.pop("step_scores", None)
    if "error" in base:
        base.pop("error")
        base.pop("line", None)
    if isinstance(result, list):
        return {**base, "step_scores": [round(x, 6) for x in result]}, None
    msg = str(result if result is not None else error)
    if row is None:
        base = {"raw": raw}
    return {**base, "line": lineno, "error": msg}, msg


def _continue_hint(args: argparse.Namespace, done: int, partial: Path | None) -> str:
    skip = int(getattr(args, "skip", 0) or 0) + done
    if partial is None:
        return f"to continue, rerun the same command with --skip {skip}"
    rest = partial.with_name(Path(args.output).name + ".rest")
    return (f"to continue, rerun the same command with --skip {skip} --output {rest}, then "
            f"join: cat {partial} {rest} > {args.output}")


def _report_interrupt(args: argparse.Namespace, exc: KeyboardInterrupt, written: int,
                      partial: Path | None) -> int:
    """Say what an interruption left and how to continue; the exit status (128 + signal)."""
    signum = int(getattr(exc, "signum", signal.SIGINT))
    name = signal.Signals(signum).name
    if args.output:
        where = (f"kept, in input order, in {partial}" if partial is not None
                 else "none were written")
        _err(f"interrupted by {name}: {written} row(s) written, {where}; {args.output} was "
             "not written")
    else:
        _err(f"interrupted by {name}: {written} row(s) written to stdout")
    _err(_continue_hint(args, written, partial))
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
            return f"input {str(path)!r} is a folder; give a JSONL file"
        if not path.is_file():
            return f"input file {path} not found"
    if args.output:
        out = Path(args.output)
        try:
            if args.input != "-":
                refuse_same_file(args.input, out)
            if out.is_dir():
                return f"--output {str(out)!r} is a folder; give a file path to write"
            parent = out.parent if str(out.parent) else Path(".")
            if not parent.is_dir():
                return (f"cannot write --output {str(out)!r}: folder {str(parent)!r} does "
                        "not exist; create it first")
        except PRMError as exc:
            return str(exc)
    return None


def _score_file(prm: Any, args: argparse.Namespace) -> int:
    from prm_plugins.errors import PRMError
    from prm_plugins.jsonl import AtomicOutput, atomic_output, dumps_line

    skip = int(getattr(args, "skip", 0) or 0)
    sink: AtomicOutput | None = None
    try:
        if args.output:
            sink = atomic_output(args.output)
        src: IO[bytes] = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    except (PRMError, OSError) as exc:
        _err(f"error: {exc}")
        return 2
    n_ok = n_bad = written = 0
    progress = None
    if args.output and not args.no_progress:
        try:
            from tqdm import tqdm

            progress = tqdm(unit="chain", desc="scoring", file=sys.stderr)
        except ImportError:  # pragma: no cover - tqdm is a base dependency
            progress = None

    def flush(chunk: list[Entry], dst: IO[str]) -> None:
        nonlocal n_ok, n_bad, written
        good = [i for i, (_, r, e, _) in enumerate(chunk) if e is None and r is not None]
        results = _score_pairs(prm, [(chunk[i][1]["question"], chunk[i][1]["steps"])  # type: ignore[index]
                                     for i in good])
        scored: dict[int, list[float] | str] = dict(zip(good, results, strict=True))
        lines: list[tuple[str, str | None]] = []
        for i, entry in enumerate(chunk):
            out, msg = _result_row(entry, scored.get(i))
            lines.append((dumps_line(out), None if msg is None else f"line {entry[0]}: {msg}"))
        with _SIGNALS.deferred():  # a chunk is written whole, and counted exactly
            for line, problem in lines:
                dst.write(line)
                written += 1
                if problem is None:
                    n_ok += 1
                else:
                    n_bad += 1
                    _err(problem)
            dst.flush()
        if progress is not None:
            progress.update(len(chunk))

    try:
        with sink if sink is not None else contextlib.nullcontext(sys.stdout) as dst:
            chunk: list[Entry] = []
            for item in _iter_rows(src, skip):
                chunk.append(item)
                if len(chunk) >= _CHUNK_ROWS:
                    flush(chunk, dst)
                    chunk = []
            flush(chunk, dst)
    except KeyboardInterrupt as exc:
        if progress is not None:
            progress.close()
            progress = None
        return _report_interrupt(args, exc, written,
                                 sink.partial_path if sink is not None else None)
    except PRMError as exc:  # the partial file cannot be created (no permission)
        _err(f"error: {exc}")
        return 2
    except OSError as exc:  # disk full, a closed pipe, ...
        if sink is None and isinstance(exc, BrokenPipeError):  # prm score ... | head
            _quiet_stdout()
            return 1
        kept = f"; the {written} row(s) written are in {sink.partial_path}" if (
            sink is not None and sink.partial_path is not None) else ""
        _err(f"error: cannot write {args.output or 'stdout'}: {exc}{kept}")
        return 2
    finally:
        if progress is not None:
            progress.close()
        if src is not sys.stdin.buffer:
            src.close()
    _err(f"scored {n_ok} chain(s), {n_bad} bad row(s)")
    return 0 if n_bad == 0 else 1


def _score_file_ray(args: argparse.Namespace) -> int:
    """``prm score --ray``: the --input file scored by a Ray Data actor pool."""
    from prm_plugins.errors import PRMError

    num_actors = 2 if args.num_actors is None else args.num_actors
    batch_size = 64 if args.batch_size is None else args.batch_size
    num_gpus = 0.0 if args.num_gpus is None else args.num_gpus
    if num_actors < 1 or batch_size < 1 or num_gpus < 0:
        _err(f"error: --num-actors and --batch-size must be >= 1 and --num-gpus >= 0; got "
             f"{num_actors}, {batch_size} and {num_gpus}")
        return 2
    try:
        ray_data = importlib.import_module("prm_plugins.adapters.ray.data")
    except ImportError as exc:
        _err(f"error: --ray needs Ray, which is not installed here ({exc}). Install it with: "
             'pip install "prm-plugins[ray]"')
        return 2
    if args.model_dir is not None:
        from prm_plugins.manifest import Manifest

        try:  # fail here, clearly, rather than in every actor
            Manifest.read(Path(args.model_dir))
        except PRMError as exc:
            _err(f"error: {exc}")
            return 2
    import ray

    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=args.ray_address, include_dashboard=False,
                     logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = args.ray_address or "RAY_ADDRESS / a new local cluster"
            _err(f"error: cannot start or join the Ray cluster ({where}): {exc}. Check "
                 "--ray-address (e.g. auto on a cluster node, or ray://HEAD:10001)")
            return 2
        started = True
        _SIGNALS.install(force=True)  # ray.init turns SIGTERM into sys.exit: take it back
    if args.verbose == 0:  # Ray Data logs every execution plan at INFO
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    status: dict[str, Any] = {}
    try:
        n_ok, n_bad = ray_data.score_file(
            args.input, args.output, args.model_dir, num_actors=num_actors,
            batch_size=batch_size, num_gpus=num_gpus,
            load_kwargs={"device": args.device, "long_chains": args.long_chains,
                         "checks": () if args.no_checks else None},
            progress=bool(args.output) and not args.no_progress, report=_err,
            skip=args.skip, status=status)
    except PRMError as exc:
        _err(f"error: {exc}")
        return 2
    except KeyboardInterrupt as exc:
        return _report_interrupt(args, exc, int(status.get("written", 0)),
                                 status.get("partial"))
    except OSError as exc:
        kept = (f"; the {status.get('written', 0)} row(s) written are in {status['partial']}"
                if status.get("partial") else "")
        _err(f"error: cannot write {args.output or 'stdout'}: {exc}{kept}")
        return 2
    finally:
        if started:
            ray.shutdown()
    _err(f"scored {n_ok} chain(s), {n_bad} bad row(s)")
    return 0 if n_bad == 0 else 1


def _run_score(args: argparse.Namespace) -> int:
    from prm_plugins.errors import PRMError
    from prm_plugins.runtime import load_prm
    from prm_plugins.steps import split_steps

    single = args.question is not None or args.steps is not None or args.solution is not None
    if args.input and single:
        _err("error: give either --input or --question with --steps/--solution, not both")
        return 2
    if not args.input and not single:
        _err("error: nothing to score: give --input IN.jsonl, or --question with --steps "
             "or --solution")
        return 2
    if args.skip < 0:
        _err(f"error: --skip counts input lines to skip; it must be >= 0, got {args.skip}")
        return 2
    if args.skip and not args.input:
        _err("error: --skip applies to --input files")
        return 2
    if args.input:
        problem = _check_paths(args)
        if problem is not None:
            _err(f"error: {problem}")
            return 2
    ray_only = [flag for flag, value in (("--ray-address", args.ray_address),
                                         ("--num-actors", args.num_actors),
                                         ("--batch-size", args.batch_size),
                                         ("--num-gpus", args.num_gpus)) if value is not None]
    if args.ray or ray_only:
        if not args.ray:
            _err(f"error: {', '.join(ray_only)} only apply with --ray")
            return 2
        if not args.input:
            _err("error: --ray scores a file: give --input IN.jsonl or IN.parquet")
            return 2
        return _score_file_ray(args)
    try:
        prm = load_prm(args.model_dir, device=args.device, long_chains=args.long_chains,
                       checks=() if args.no_checks else None)
    except PRMError as exc:
        _err(f"error: {exc}")
        return 2
    if args.input:
        return _score_file(prm, args)
    if args.question is None or (args.steps is None) == (args.solution is None):
        _err("error: one chain needs --question and exactly one of --steps or --solution")
        return 2
    try:
        if args.steps is not None:
            steps = args.steps
        elif args.split is None:
            steps = prm.format.split_solution(args.solution)
        else:
            steps = split_steps(args.solution, args.split)
        result = prm.score(args.question, steps)
        first = result.first_error(args.threshold)
    except PRMError as exc:
        _err(f"error: {exc}")
        return 2
    if args.json:
        _out(json.dumps({**result.to_dict(), "min": result.min, "prod": result.prod,
                         "first_error": first, "provider": prm.provider}, ensure_ascii=False))
        return 0
    checks = f", checks: {', '.join(prm.checks)}" if prm.checks else ""
    _out(f"model: {prm.model_dir} ({prm.manifest.format}, {prm.provider}{checks})")
    _out(f"question: {args.question}")
    arithmetic = result.meta.get("arithmetic") or [None] * len(result.steps)
    for i, (step, s, calc) in enumerate(zip(result.steps, result.scores, arithmetic,
                                            strict=True)):
        flag = "  <-- below threshold" if s < args.threshold else ""
        if calc == "wrong":
            flag += " (written arithmetic is wrong)"
        _out(f"  step {i + 1}  {s:.3f}  {step}{flag}")
    verdict = "all steps pass" if first is None else f"first weak step: {first + 1}"
    _out(f"chain score: min {result.min:.3f}  prod {result.prod:.3f}  ({verdict}, "
         f"threshold {args.threshold})")
    return 0


# -- prm info --------------------------------------------------------------------------------
def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="show a model directory's manifest and check its files")
    p.add_argument("model_dir", nargs="?", default=None,
                   help="model directory (default: shipped PRM)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _run_info(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from prm_plugins.errors import PRMError
    from prm_plugins.manifest import Manifest, verify_files
    from prm_plugins.runtime import default_model_dir

    model_dir = Path(args.model_dir) if args.model_dir else default_model_dir()
    try:
        man = Manifest.read(model_dir)
        verify_files(model_dir, man)
    except PRMError as exc:
        _err(f"error: {exc}")
        return 2
    if args.json:
        _out(json.dumps({"model_dir": str(model_dir), "files_verified": True, **asdict(man)}))
        return 0
    _out(f"model directory: {model_dir}")
    _out(f"format: {man.format}  options: {json.dumps(man.format_options)}")
    _out(f"max_length: {man.max_length}  dtype: {man.dtype}  opset: {man.opset}")
    for name, digest in man.files.items():
        _out(f"file: {name}  sha256 {digest[:16]}...  (verified)")
    if man.parity:
        _out(f"parity: {json.dumps(man.parity)}")
    if man.versions:
        _out("versions: " + ", ".join(f"{k} {v}" for k, v in man.versions.items()))
    return 0


# -- entry point -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``prm`` argument parser with every available verb."""
    parser = argparse.ArgumentParser(
        prog="prm", description="Process reward models on ONNX Runtime"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    _add_score(sub)
    _add_info(sub)
    for module in _PLUGGED_VERBS.values():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # verb not part of this build
            raise
        mod.add_parser(sub)
    return parser


_RUNNERS = {"score": _run_score, "info": _run_info}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prm`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    if args.verb is None:
        parser.print_help()
        return 2
    _SIGNALS.install()  # SIGTERM takes Ctrl-C's path: finally blocks run, partial rows stay
    try:
        if args.verb in _RUNNERS:
            return _RUNNERS[args.verb](args)
        return int(importlib.import_module(_PLUGGED_VERBS[args.verb]).run(args))
    except KeyboardInterrupt as exc:
        signum = int(getattr(exc, "signum", signal.SIGINT))
        _err(f"prm {args.verb}: interrupted by {signal.Signals(signum).name}")
        return 128 + signum
    finally:
        _SIGNALS.restore()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
