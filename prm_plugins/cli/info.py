"""``prm info``: show a model directory's manifest and check its files' hashes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prm_plugins.cli.output import OK, error, out

__all__ = ["make_parser", "run"]

VERB = "info"


def make_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``prm info`` to the ``prm`` sub-command parsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        VERB, help="show a model directory's manifest and check its files")
    p.set_defaults(run=run)
    p.add_argument("model_dir", nargs="?", default=None,
                   help="model directory (default: shipped PRM)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``prm info``; returns 0, or 2 when the manifest or a file does not check."""
    from dataclasses import asdict

    from prm_plugins.errors import PRMError
    from prm_plugins.manifest import Manifest, verify_files
    from prm_plugins.runtime import default_model_dir

    model_dir = Path(args.model_dir) if args.model_dir else default_model_dir()
    try:
        man = Manifest.read(model_dir)
        verify_files(model_dir, man)
    except PRMError as exc:
        return error(VERB, exc)
    if args.json:
        out(json.dumps({"model_dir": str(model_dir), "files_verified": True, **asdict(man)}))
        return OK
    out(f"model directory: {model_dir}")
    out(f"format: {man.format}  options: {json.dumps(man.format_options)}")
    out(f"max_length: {man.max_length}  dtype: {man.dtype}  opset: {man.opset}")
    for name, digest in man.files.items():
        out(f"file: {name}  sha256 {digest[:16]}...  (verified)")
    if man.parity:
        out(f"parity: {json.dumps(man.parity)}")
    if man.versions:
        out("versions: " + ", ".join(f"{k} {v}" for k, v in man.versions.items()))
    return OK
