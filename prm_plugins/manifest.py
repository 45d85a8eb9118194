"""``prm.json``: the model directory's manifest, and file-hash checks.

A model directory holds ``model.onnx`` (plus ``model.onnx.data`` past 2 GB),
``tokenizer.json`` and ``prm.json``. The manifest names the format and its options,
``max_length``, dtype, opset, the sha256 of every file, the parity figures measured at
export, and the versions that wrote it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prm_plugins.errors import ManifestVersionError, ModelIntegrityError, ModelLoadError

__all__ = ["MANIFEST_NAME", "MANIFEST_VERSION", "Manifest", "sha256_file", "verify_files"]

MANIFEST_NAME = "prm.json"
#: Bumped on incompatible changes; a reader refuses manifests newer than it knows.
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Manifest:
    """Contents of ``prm.json``.

    Attributes:
        format: registered format name, e.g. ``"token-classification"``.
        format_options: the format's options (separator, special token ids, ...).
        max_length: longest rendered chain, in tokens, the model accepts.
        dtype: ``"fp32"``, ``"fp16"`` or ``"int8"`` (dynamic quantisation).
        opset: ONNX opset of the graph.
        files: file name -> sha256 for every file of the model directory.
        parity: figures measured at export (max |Δp|, tolerance, chains, ...).
        versions: package versions that wrote the model.
        source: where the model came from (checkpoint path, architecture, ...).
        model_file: name of the ONNX graph.
        tokenizer_file: name of the tokenizer.
        manifest_version: manifest schema version.
        extra: anything else (model card pointers, training figures).
        fusion: how the graph was optimised: ``{"mode": "plain"}``, or for ``prm export
            --optimize fused`` the fused op counts (``fused_ops``: op type -> count), the
            rules that fired, op counts before/after and the parity per dtype. Empty in
            manifests written before this field existed (they still load).
    """

    format: str
    format_options: dict[str, Any] = field(default_factory=dict)
    max_length: int = 512
    dtype: str = "fp32"
    opset: int | None = None
    files: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    model_file: str = "model.onnx"
    tokenizer_file: str = "tokenizer.json"
    manifest_version: int = MANIFEST_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    fusion: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, model_dir: str | Path) -> Manifest:
        """Read and validate ``model_dir/prm.json``.

        Raises:
            ModelLoadError: missing or unreadable manifest, or a missing required key.
            ManifestVersionError: written by a newer manifest version.
        """
        path = Path(model_dir) / MANIFEST_NAME
        if not path.is_file():
            raise ModelLoadError(
                f"{path} not found: a model directory needs {MANIFEST_NAME}, the ONNX graph and "
                "tokenizer.json. Make one with `prm export CHECKPOINT_DIR OUT_DIR --format F`"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{path} is not valid JSON ({exc}); re-export the model") from exc
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path} must hold a JSON object, got {type(data).__name__}")
        version = data.get("manifest_version", MANIFEST_VERSION)
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise ManifestVersionError(
                f"{path} has manifest_version {version!r}, newer than this prm-plugins reads "
                f"({MANIFEST_VERSION}); upgrade with `pip install -U prm-plugins`"
            )
        if "format" not in data:
            raise ModelLoadError(f"{path} has no 'format' key; re-export the model")
        known = set(cls.__dataclass_fields__)
        unknown = {k: v for k, v in data.items() if k not in known}
        kwargs = {k: v for k, v in data.items() if k in known}
        man = cls(**kwargs)
        if unknown:
            man.extra = {**man.extra, **unknown}
        return man

    def write(self, model_dir: str | Path) -> Path:
        """Write ``prm.json`` into ``model_dir`` and return its path."""
        path = Path(model_dir) / MANIFEST_NAME
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=False) + "\n",
                        encoding="utf-8")
        return path

    def hash_files(self, model_dir: str | Path, names: list[str]) -> None:
        """Record the sha256 of each named file of ``model_dir``."""
        self.files = {name: sha256_file(Path(model_dir) / name) for name in sorted(names)}


def verify_files(model_dir: str | Path, manifest: Manifest) -> None:
    """Check every file listed in the manifest against its sha256.

    Raises:
        ModelLoadError: a listed file is missing, or the graph/tokenizer is not listed.
        ModelIntegrityError: a file's hash differs from the manifest's.
    """
    model_dir = Path(model_dir)
    for required in (manifest.model_file, manifest.tokenizer_file):
        if required not in manifest.files:
            raise ModelLoadError(
                f"{model_dir / MANIFEST_NAME} lists no sha256 for {required!r}; every file must "
                "be hashed. Re-export the model"
            )
    for name, expected in manifest.files.items():
        path = model_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ModelLoadError(f"manifest file name {name!r} escapes the model directory")
        if not path.is_file():
            raise ModelLoadError(f"{path} is listed in {MANIFEST_NAME} but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"{path} does not match its sha256 in {MANIFEST_NAME}: expected {expected}, "
                f"got {actual}. The file is truncated, altered or from another export; "
                "re-export or re-download the model directory"
            )
