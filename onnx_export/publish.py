"""Writing the model directory: staging, files, hashes, manifest, and the move into place.

Everything is built in a hidden staging directory beside ``out_dir`` (:func:`staging_dir`)
and moved into place at the end by :func:`publish`, ``prm.json`` last: a failed export
leaves ``out_dir`` as it was. :func:`check_out_dir` refuses an ``out_dir`` whose files the
export would lose; :func:`versions` and :func:`source` are the manifest's provenance.

Examples:
    >>> with staging_dir(Path("out")) as staging:  # doctest: +SKIP
    ...     ...  # write model.onnx, tokenizer.json and prm.json into staging
    ...     publish(staging, Path("out"), ["model.onnx", "tokenizer.json", "prm.json"])
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError
from prm_plugins.formats import PRMFormat
from prm_plugins.manifest import MANIFEST_NAME, Manifest
from prm_plugins.onnx_export.checkpoint import count_params, find_weights

__all__ = [
    "check_out_dir",
    "publish",
    "save_tokenizer",
    "source",
    "staging_dir",
    "versions",
]

logger = logging.getLogger(__name__)


def check_out_dir(out_dir: Path, model_dir: Path, overwrite: bool) -> None:
    """Refuse an out_dir whose files the export would lose.

    Raises:
        InvalidInputError: ``out_dir`` is a file, the checkpoint directory, a non-empty
            directory without ``overwrite``, or (with it) not an earlier model directory.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInputError(f"out_dir {str(out_dir)!r} exists and is not a directory")
    if out_dir.exists() and out_dir.resolve() == model_dir.resolve():
        raise InvalidInputError(
            f"out_dir {str(out_dir)!r} is the checkpoint directory; write the model directory "
            "somewhere else (its tokenizer.json would be replaced)"
        )
    if not out_dir.is_dir():
        return
    present = sorted(p.name for p in out_dir.iterdir())
    if not present:
        return
    if not overwrite:
        raise InvalidInputError(
            f"out_dir {str(out_dir)!r} is not empty (holds {present[:6]}"
            f"{' ...' if len(present) > 6 else ''}); choose a new directory, or pass "
            "--overwrite to replace the model files of an earlier export"
        )
    if MANIFEST_NAME not in present:
        raise InvalidInputError(
            f"--overwrite replaces an earlier export, but {str(out_dir)!r} has no "
            f"{MANIFEST_NAME} (holds {present[:6]}); refusing to write into a directory that "
            "is not a model directory. Choose a new or empty directory"
        )


@contextlib.contextmanager
def staging_dir(out_dir: Path) -> Iterator[Path]:
    """A hidden directory beside ``out_dir`` to build the export in; removed on exit."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial",
                                    dir=out_dir.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_tokenizer(hf_tok: Any, path: Path, fmt_cls: type[PRMFormat],
                   options: dict[str, Any]) -> PRMFormat:
    """Write the fast tokenizer as ``tokenizer.json``; the format as the runtime builds it."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    tok.save(str(path))
    runtime_tok = Tokenizer.from_file(str(path))
    return fmt_cls(runtime_tok, options)


def publish(staging: Path, out_dir: Path, names: list[str]) -> None:
    """Move the staged files into ``out_dir``, ``prm.json`` last.

    An earlier export's manifest is removed first (so no manifest ever vouches for a mix of
    old and new files), then its files the new export does not write.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    old_manifest = out_dir / MANIFEST_NAME
    stale: list[str] = []
    if old_manifest.is_file():
        try:
            stale = list(Manifest.read(out_dir).files)
        except Exception:  # an unreadable old manifest still goes
            stale = []
        old_manifest.unlink()
    for name in stale:
        target = out_dir / name
        if name not in names and target.parent == out_dir:
            target.unlink(missing_ok=True)
    for name in names:
        if name != MANIFEST_NAME:
            os.replace(staging / name, out_dir / name)
    os.replace(staging / MANIFEST_NAME, out_dir / MANIFEST_NAME)


def versions() -> dict[str, str]:
    """Versions of prm-plugins, Python and the export stack, for ``prm.json``."""
    from importlib import metadata

    import onnxruntime

    import prm_plugins

    found = {"prm-plugins": prm_plugins.__version__, "python": platform.python_version(),
             "onnxruntime": onnxruntime.__version__}
    for dist in ("torch", "transformers", "onnx", "onnxscript", "tokenizers"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover
            continue
    return found


def source(model_dir: Path, hf_config: Any, model: Any) -> dict[str, Any]:
    """The checkpoint the graph was exported from, for ``prm.json``."""
    archs = getattr(hf_config, "architectures", None) or []
    return {
        "model_dir": str(model_dir.resolve()),
        "architecture": archs[0] if archs else None,
        "model_type": getattr(hf_config, "model_type", None),
        "weights": find_weights(model_dir).kind,
        "num_params": count_params(model_dir),
        "num_params_exported": int(sum(p.numel() for p in model.parameters())),
    }
