"""``prm score --ray``: the ``--input`` file scored by a Ray Data actor pool.

The Ray adapter (:mod:`prm_plugins.adapters.ray.data`) is imported only when ``--ray`` is
given, so ``prm score`` never needs Ray otherwise.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from prm_plugins.cli.output import DATA, OK, error, error_text, plural
from prm_plugins.cli.signals import SIGNALS

__all__ = ["add_ray_arguments", "ray_flags_problem", "score_file_ray"]

VERB = "score"


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """The ``Ray`` group of ``prm score``'s flags."""
    ray = p.add_argument_group(
        "Ray", "score --input on a Ray cluster with a pool of actors (pip install "
        "\".[ray]\" in a checkout; \"prm-plugins[ray]\" once published); JSONL or Parquet in "
        "and out, chosen by the file suffix "
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


def ray_flags_problem(args: argparse.Namespace) -> str | None:
    """Why the Ray flags cannot be used as given, or None."""
    ray_only = [flag for flag, value in (("--ray-address", args.ray_address),
                                         ("--num-actors", args.num_actors),
                                         ("--batch-size", args.batch_size),
                                         ("--num-gpus", args.num_gpus)) if value is not None]
    if ray_only and not args.ray:
        return f"{', '.join(ray_only)} only apply with --ray"
    if args.ray and not args.input:
        return "--ray scores a file: give --input IN.jsonl or IN.parquet"
    return None


def _start_ray(args: argparse.Namespace) -> tuple[Any, bool] | int:
    """``(ray module, started here)``, or the exit status of a failure (already reported)."""
    from prm_plugins.errors import PRMError

    try:
        import ray
    except ImportError as exc:
        return error(VERB, f"--ray needs Ray, which is not installed here ({exc}). Install "
                           'it with: pip install ".[ray]" in a prm-plugins checkout (once '
                           'published: pip install "prm-plugins[ray]")')
    if args.model_dir is not None:
        from prm_plugins.manifest import Manifest

        try:  # fail here, clearly, rather than in every actor
            Manifest.read(Path(args.model_dir))
        except PRMError as exc:
            return error(VERB, exc)
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=args.ray_address, include_dashboard=False,
                 logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = args.ray_address or "RAY_ADDRESS / a new local cluster"
        return error(VERB, f"cannot start or join the Ray cluster ({where}): {exc}. Check "
                           "--ray-address (e.g. auto on a cluster node, or ray://HEAD:10001)")
    SIGNALS.install(force=True)  # ray.init turns SIGTERM into sys.exit: take it back
    return ray, True


def score_file_ray(args: argparse.Namespace) -> int:
    """Run ``prm score --ray``; returns the exit status."""
    from prm_plugins.cli.score import report_interrupt
    from prm_plugins.errors import PRMError

    num_actors = 2 if args.num_actors is None else args.num_actors
    batch_size = 64 if args.batch_size is None else args.batch_size
    num_gpus = 0.0 if args.num_gpus is None else args.num_gpus
    if num_actors < 1 or batch_size < 1 or num_gpus < 0:
        return error(VERB, f"--num-actors and --batch-size must be >= 1 and --num-gpus >= 0; "
                           f"got {num_actors}, {batch_size} and {num_gpus}")
    try:
        import prm_plugins.adapters.ray.data as ray_data
    except ImportError as exc:
        return error(VERB, f"--ray needs Ray, which is not installed here ({exc}). Install "
                           'it with: pip install ".[ray]" in a prm-plugins checkout (once '
                           'published: pip install "prm-plugins[ray]")')
    started = _start_ray(args)
    if isinstance(started, int):
        return started
    ray, owned = started
    if int(getattr(args, "verbose", 0) or 0) == 0:  # Ray Data logs every plan at INFO
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    status: dict[str, Any] = {}
    try:
        n_ok, n_bad = ray_data.score_file(
            args.input, args.output, args.model_dir, num_actors=num_actors,
            batch_size=batch_size, num_gpus=num_gpus,
            load_kwargs={"device": args.device, "long_chains": args.long_chains,
                         "checks": () if args.no_checks else None},
            progress=bool(args.output) and not args.no_progress,
            report=lambda msg: _note(msg), skip=args.skip, status=status,
            write_guard=SIGNALS.deferred, describe_error=error_text)
    except PRMError as exc:
        return error(VERB, exc)
    except KeyboardInterrupt as exc:
        return report_interrupt(args, exc, int(status.get("written", 0)),
                                status.get("partial"))
    except OSError as exc:
        written = int(status.get("written", 0))
        kept = (f"; the {plural(written, 'row')} written are in {status['partial']}"
                if status.get("partial") else "")
        return error(VERB, f"cannot write {args.output or 'stdout'}: {exc}{kept}")
    finally:
        if owned:
            ray.shutdown()
    _note(f"scored {plural(n_ok, 'chain')}, {plural(n_bad, 'bad row')}")
    return OK if n_bad == 0 else DATA


def _note(text: str) -> None:
    import sys

    sys.stderr.write(f"prm score: {text}\n")
