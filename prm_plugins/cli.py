"""The ``prm`` command line: ``prm score``, ``prm info``, ``prm export``, ``prm train``, ...

Each verb imports what it needs when it runs, so ``prm --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
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
    )
    p.add_argument("model_dir", nargs="?", default=None,
                   help="model directory (default: shipped PRM)")
    p.add_argument("--input", "-i", help="JSONL file of {question, steps} rows ('-' for stdin)")
    p.add_argument("--output", "-o", help="JSONL output file (default: stdout)")
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


def _iter_rows(fh: IO[bytes]) -> Iterator[tuple[int, dict[str, Any] | None, str | None, str]]:
    """(line number, row or None, error or None, raw line) for each non-blank line.

    Lines are decoded one by one, so invalid UTF-8 costs only its own line.
    """
    for lineno, raw_bytes in enumerate(fh, start=1):
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield lineno, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", repr(
                raw_bytes[:200])
            continue
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield lineno, None, f"not valid JSON ({exc.msg} at column {exc.colno})", raw
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


def _json_line(row: dict[str, Any], default: Any = None) -> str:
    """One JSONL line; text that UTF-8 cannot hold (lone surrogates) is written escaped."""
    text = json.dumps(row, ensure_ascii=False, default=default)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # "\ud800" escapes round-trip in JSON
        text = json.dumps(row, ensure_ascii=True, default=default)
    return text + "\n"


def _score_file(prm: Any, args: argparse.Namespace) -> int:
    from prm_plugins.errors import PRMError

    src: IO[bytes]
    if args.input == "-":
        src = sys.stdin.buffer
    else:
        path = Path(args.input)
        if not path.is_file():
            _err(f"error: input file {path} not found")
            return 2
        src = open(path, "rb")  # noqa: SIM115
    dst: IO[str] = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    n_ok = n_bad = 0
    progress = None
    if args.output and not args.no_progress:
        try:
            from tqdm import tqdm

            progress = tqdm(unit="chain", desc="scoring", file=sys.stderr)
        except ImportError:  # pragma: no cover - tqdm is a base dependency
            progress = None

    def flush(chunk: list[tuple[int, dict[str, Any] | None, str | None, str]]) -> None:
        nonlocal n_ok, n_bad
        good = [(i, r) for i, (_, r, e, _) in enumerate(chunk) if e is None and r is not None]
        scored: dict[int, list[float] | str] = {}
        try:
            res = prm.score_batch([(r["question"], r["steps"]) for _, r in good])
            scored = {i: s.scores for (i, _), s in zip(good, res, strict=True)}
        except PRMError:  # isolate the bad rows; the others are still scored
            for i, r in good:
                try:
                    scored[i] = prm.score(r["question"], r["steps"]).scores
                except PRMError as exc:
                    scored[i] = str(exc)
        for i, (lineno, row, error, raw) in enumerate(chunk):
            result = scored.get(i, error)
            if isinstance(result, list):
                out = {**(row or {}), "step_scores": [round(float(x), 6) for x in result]}
                n_ok += 1
            else:
                msg = str(result)
                _err(f"line {lineno}: {msg}")
                out = {**(row or {"raw": raw.rstrip("\n")}), "line": lineno, "error": msg}
                n_bad += 1
            dst.write(_json_line(out))
        if progress is not None:
            progress.update(len(chunk))

    try:
        chunk: list[tuple[int, dict[str, Any] | None, str | None, str]] = []
        for item in _iter_rows(src):
            chunk.append(item)
            if len(chunk) >= _CHUNK_ROWS:
                flush(chunk)
                chunk = []
        flush(chunk)
    finally:
        if progress is not None:
            progress.close()
        if src is not sys.stdin.buffer:
            src.close()
        if dst is not sys.stdout:
            dst.close()
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
    if args.verbose == 0:  # Ray Data logs every execution plan at INFO
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        n_ok, n_bad = ray_data.score_file(
            args.input, args.output, args.model_dir, num_actors=num_actors,
            batch_size=batch_size, num_gpus=num_gpus,
            load_kwargs={"device": args.device, "long_chains": args.long_chains,
                         "checks": () if args.no_checks else None},
            progress=bool(args.output) and not args.no_progress, report=_err)
    except PRMError as exc:
        _err(f"error: {exc}")
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
    if args.verb in _RUNNERS:
        return _RUNNERS[args.verb](args)
    return int(importlib.import_module(_PLUGGED_VERBS[args.verb]).run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
