"""``prm.json``: the model directory's manifest, and file-hash checks.

A model directory holds ``model.onnx`` (plus ``model.onnx.data`` past 2 GB),
``tokenizer.json`` and ``prm.json``. The manifest names the format and its options,
``max_length``, dtype, opset, the sha256 of every file, the parity figures measured at
export, and the versions that wrote it.

This module is also the one home of the exported graph's contract, which every format follows
and which export, parity checks and the runtime all read from here: inputs
:data:`INPUT_IDS` and :data:`ATTENTION_MASK` (``[B, T] int64``, in :data:`GRAPH_INPUTS`
order), output :data:`GRAPH_OUTPUT` (``[B, T] float32``, the probability that the step ending
at that token is correct). Position ids are not an input: the graph derives them from the mask
(``cumsum - 1``), so left and right padding score alike.

:meth:`Manifest.read` validates every field's type and range by hand (no schema library) and
raises one :class:`~prm_plugins.errors.ManifestError` that names each bad field, what it
holds and how to fix it. :func:`read_verified` reads a file of the directory once and checks
the sha256 of exactly those bytes, so what is checked is what is used; files (and
``prm.json``) that are symlinks leading out of the directory are refused.
:func:`external_data_files` lists the external-data files an ONNX graph reads, from the
protobuf wire format itself (the ``onnx`` package is an export extra, not a runtime need).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import posixpath
import re
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from prm_plugins.errors import (
    ManifestError,
    ManifestVersionError,
    ModelIntegrityError,
    ModelLoadError,
)

__all__ = [
    "ATTENTION_MASK",
    "GRAPH_INPUTS",
    "GRAPH_OUTPUT",
    "INPUT_IDS",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "KNOWN_DTYPES",
    "MAX_LENGTH_LIMIT",
    "MMAP_THRESHOLD",
    "Manifest",
    "external_data_files",
    "read_verified",
    "safe_relative_name",
    "sha256_file",
    "verify_files",
]

#: The graph contract (see the module docstring): input names, in order, and the output name.
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
GRAPH_INPUTS: tuple[str, str] = (INPUT_IDS, ATTENTION_MASK)
GRAPH_OUTPUT = "step_probs"

MANIFEST_NAME = "prm.json"
#: dtypes ``prm export`` writes (``int8``: quantised; ``bf16-weights``: bf16 weights, fp32
#: compute); ``int8-weights`` is accepted as a spelling of a weight-only quantised graph.
KNOWN_DTYPES: tuple[str, ...] = ("fp32", "fp16", "bf16", "bf16-weights", "int8", "int8-weights")
#: Bumped on incompatible changes; a reader refuses manifests newer than it knows.
MANIFEST_VERSION = 1
#: Largest ``max_length`` a manifest may declare (ids and positions stay far inside int64).
MAX_LENGTH_LIMIT = 1 << 20
#: Largest token id a manifest may name before the tokenizer is known (the vocabulary check
#: against the real tokenizer happens in :class:`prm_plugins.runtime.OnnxPRM`).
MAX_TOKEN_ID = (1 << 31) - 1
#: Files larger than this are memory-mapped instead of read into a ``bytes`` object (see
#: :func:`read_verified`).
MMAP_THRESHOLD = 1 << 30
_MAX_MANIFEST_BYTES = 16 << 20
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
        dtype: one of :data:`KNOWN_DTYPES`: ``"fp32"``, ``"fp16"``, ``"bf16"`` (CUDA only),
            ``"bf16-weights"`` (bf16 weights, fp32 compute) or ``"int8"`` (quantised).
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
        check_inside(model_dir, MANIFEST_NAME)
        if path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise ModelLoadError(
                f"{path} is {path.stat().st_size} bytes, more than a manifest ever needs "
                f"({_MAX_MANIFEST_BYTES}); it is not a prm-plugins manifest. Re-export the model"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            # ValueError covers JSONDecodeError and integers past Python's digit limit.
            raise ModelLoadError(f"{path} is not valid JSON ({exc}); re-export the model") from exc
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path} must hold a JSON object, got {type(data).__name__}")
        version = data.get("manifest_version", MANIFEST_VERSION)
        if _is_int(version) and version > MANIFEST_VERSION:
            raise ManifestVersionError(
                f"{path} has manifest_version {version!r}, newer than this prm-plugins reads "
                f"({MANIFEST_VERSION}); upgrade with `pip install -U prm-plugins`"
            )
        if "format" not in data:
            raise ModelLoadError(f"{path} has no 'format' key; re-export the model")
        problems = validate_manifest_data(data)
        if problems:
            raise ManifestError(
                f"{path} is not a valid manifest:\n" + "\n".join(f"  - {p}" for p in problems)
                + f"\nFix the field(s) in {MANIFEST_NAME}, or re-export the model with "
                "`prm export`"
            )
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


def verify_files(model_dir: str | Path, manifest: Manifest, *,
                 skip: Collection[str] = ()) -> None:
    """Check every file listed in the manifest against its sha256.

    Args:
        model_dir: the model directory.
        manifest: its manifest.
        skip: names already verified by :func:`read_verified` (not hashed twice).

    Raises:
        ModelLoadError: a listed file is missing, the graph/tokenizer is not listed, or a
            file is a symlink that leads out of the directory.
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
        if name in skip:
            continue
        path = model_dir / safe_relative_name(name, "files")
        if not path.is_file():
            raise ModelLoadError(f"{path} is listed in {MANIFEST_NAME} but missing")
        check_inside(model_dir, name)
        _compare(path, expected, sha256_file(path))


def _compare(path: Path, expected: str, actual: str) -> None:
    if actual != expected:
        raise ModelIntegrityError(
            f"{path} does not match its sha256 in {MANIFEST_NAME}: expected {expected}, "
            f"got {actual}. The file is truncated, altered or from another export; "
            "re-export or re-download the model directory"
        )


def safe_relative_name(name: object, field_name: str) -> str:
    """``name`` if it is a relative path that stays inside the model directory.

    Raises:
        ModelLoadError: not a string, empty, absolute, or climbing out with ``..``.
    """
    problem = _name_problem(name)
    if problem:
        raise ModelLoadError(f"{field_name} names {name!r}, which {problem}; every file of a "
                             "model must sit inside its directory")
    return str(name)


def check_inside(model_dir: str | Path, name: str) -> Path:
    """The resolved path of ``model_dir/name``, refused if a symlink leads out of the directory.

    Raises:
        ModelLoadError: the file (or a folder on its way) is a symlink to a place outside
            ``model_dir``.
    """
    root = Path(model_dir).resolve()
    path = Path(model_dir) / name
    target = path.resolve()
    if target != root and root not in target.parents:
        raise ModelLoadError(
            f"{path} is a symlink to {target}, outside the model directory {root}: a model "
            "directory must hold its own files (a link could be repointed after the hash "
            f"check). Copy the file in instead of linking it, e.g. `cp --remove-destination "
            f"{target} {path}`"
        )
    return target


def read_verified(model_dir: str | Path, manifest: Manifest, name: str, *,
                  verify: bool = True) -> bytes | mmap.mmap:
    """The contents of ``model_dir/name``, read once, its sha256 checked on those very bytes.

    Build whatever uses the file (ONNX Runtime session, tokenizer) from the returned object,
    never from the path again, so a file swapped after the check is never used. Files larger
    than :data:`MMAP_THRESHOLD` (ONNX external data of multi-GB models) are memory-mapped
    read-only instead of copied into memory; the hash is taken over the mapping. Replacing such
    a file (a new inode, as ``cp``/``mv``/downloads do) cannot reach an open mapping; rewriting
    it in place while the model loads could. That window is documented and left open, since
    reading 15 GB into RAM before ONNX Runtime copies it again is not an option.

    Args:
        model_dir: the model directory.
        manifest: its manifest (``files`` holds the expected digests).
        name: the file's name inside the directory.
        verify: check the sha256 (``False`` only reads).

    Raises:
        ModelLoadError: missing, not listed in ``files`` (with ``verify``), or a symlink
            leading out of the directory.
        ModelIntegrityError: the bytes do not match the manifest's sha256.
    """
    model_dir = Path(model_dir)
    path = model_dir / safe_relative_name(name, "a model file name")
    if not path.is_file():
        listed = f"is listed in {MANIFEST_NAME} but " if name in manifest.files else "is "
        raise ModelLoadError(f"{path} {listed}missing; copy the whole model directory, or "
                             "re-export the model")
    target = check_inside(model_dir, name)
    expected = manifest.files.get(name)
    if verify and expected is None:
        raise ModelLoadError(
            f"{model_dir / MANIFEST_NAME} lists no sha256 for {name!r}; every file the model "
            "reads must be hashed. Re-export the model, or add the file's sha256 to 'files'"
        )
    data: bytes | mmap.mmap
    with open(target, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MMAP_THRESHOLD:
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        else:
            data = fh.read()
    if verify and expected is not None:
        _compare(path, expected, hashlib.sha256(data).hexdigest())
    return data


# -- manifest schema ------------------------------------------------------------------------------
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _name_problem(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        return "is not a non-empty string"
    if "\x00" in name:
        return "holds a NUL character"
    posix = name.replace("\\", "/")
    if posix.startswith("/") or PurePosixPath(posix).is_absolute() or re.match(r"[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "climbs out of the model directory with '..'"
    return ""


def _token_id_problem(value: object) -> str:
    if value is None:
        return ""
    if not _is_int(value) or not 0 <= value <= MAX_TOKEN_ID:  # type: ignore[operator]
        return f"expected a token id (an int >= 0) or null, got {_show(value)}"
    return ""


def validate_manifest_data(data: dict[str, Any]) -> list[str]:
    """Problems with a parsed ``prm.json`` object, one line per bad field (empty if none).

    Checks types and ranges only; token ids against the real vocabulary are checked once the
    tokenizer is loaded (:class:`prm_plugins.runtime.OnnxPRM`).
    """
    problems: list[str] = []

    def bad(name: str, expected: str, value: object, fix: str = "") -> None:
        problems.append(f"{name}: expected {expected}, got {_show(value)}"
                        + (f"; {fix}" if fix else ""))

    fmt = data.get("format")
    if not isinstance(fmt, str) or not fmt.strip():
        bad("format", "a format name (a non-empty string) such as 'token-classification'", fmt,
            "re-export the model with `prm export`, which writes it")
    max_length = data.get("max_length", 512)
    if not _is_int(max_length) or not 1 <= max_length <= MAX_LENGTH_LIMIT:
        bad("max_length", f"an int from 1 to {MAX_LENGTH_LIMIT}", max_length,
            "write the model's longest input in tokens, e.g. 512")
    dtype = data.get("dtype", "fp32")
    if not isinstance(dtype, str) or dtype not in KNOWN_DTYPES:
        bad("dtype", f"one of {', '.join(repr(d) for d in KNOWN_DTYPES)}", dtype,
            "write the dtype the model was exported in")
    opset = data.get("opset")
    if opset is not None and (not _is_int(opset) or not 1 <= opset <= 1000):
        bad("opset", "null or the graph's ONNX opset (an int such as 17)", opset)
    version = data.get("manifest_version", MANIFEST_VERSION)
    if not _is_int(version) or version < 1:
        bad("manifest_version", f"an int from 1 to {MANIFEST_VERSION}", version)
    for key in ("model_file", "tokenizer_file"):
        if key in data:
            problem = _name_problem(data[key])
            if problem:
                problems.append(f"{key}: {data[key]!r} {problem}; name a file inside the model "
                                "directory, e.g. 'model.onnx'")
    for key in ("format_options", "files", "parity", "versions", "source", "extra", "fusion"):
        if key in data and not isinstance(data[key], dict):
            bad(key, "a JSON object (a map of names to values)", data[key],
                "use {} when there is nothing to say")
    files = data.get("files")
    if isinstance(files, dict):
        for name, digest in files.items():
            problem = _name_problem(name)
            if problem:
                problems.append(f"files: the file name {name!r} {problem}")
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                bad(f"files[{name!r}]", "a sha256 (64 lowercase hex digits)", digest,
                    "re-export the model, or write the file's sha256sum")
    options = data.get("format_options")
    if isinstance(options, dict):
        for key, value in options.items():
            if key.endswith("token_id") and _token_id_problem(value):
                problems.append(f"format_options.{key}: {_token_id_problem(value)}")
            elif not key.endswith("token_id") and not isinstance(
                    value, (str, bool, int, float, type(None))):
                bad(f"format_options.{key}", "a string, number, boolean or null", value)
    extra = data.get("extra")
    if isinstance(extra, dict):
        if _token_id_problem(extra.get("pad_token_id")):
            problems.append(f"extra.pad_token_id: {_token_id_problem(extra['pad_token_id'])}")
        checks = extra.get("checks")
        if checks is not None and (not isinstance(checks, list)
                                   or not all(isinstance(c, str) for c in checks)):
            bad("extra.checks", "a list of step check names such as [\"arithmetic\"]", checks)
        calibration = extra.get("calibration")
        if calibration is not None and not isinstance(calibration, dict):
            bad("extra.calibration", 'an object {"method": "platt", "a": ..., "b": ...}',
                calibration, "rerun `prm calibrate`, or remove it with `prm calibrate "
                "MODEL_DIR --remove`")
    return problems


# -- external data of an ONNX graph, read from the protobuf wire format ---------------------------
class _Malformed(Exception):
    pass


# Field numbers of onnx.proto (stable since ONNX 1.0): ModelProto.graph 7, .functions 25;
# GraphProto.node 1, .initializer 5, .sparse_initializer 15; FunctionProto.node 7;
# NodeProto.attribute 5; AttributeProto.t 5, .g 6, .tensors 10, .graphs 11,
# .sparse_tensor 22, .sparse_tensors 23; SparseTensorProto.values 1, .indices 2;
# TensorProto.external_data 13 (StringStringEntryProto: key 1, value 2).
_MODEL = {7: "graph", 25: "function"}
_GRAPH = {1: "node", 5: "tensor", 15: "sparse"}
_FUNCTION = {7: "node"}
_NODE = {5: "attribute"}
_ATTRIBUTE = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"}
_SPARSE = {1: "tensor", 2: "tensor"}
_KINDS = {"model": _MODEL, "graph": _GRAPH, "function": _FUNCTION, "node": _NODE,
          "attribute": _ATTRIBUTE, "sparse": _SPARSE}
_MAX_DEPTH = 64


def _varint(buf: bytes | mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes | mmap.mmap, start: int, end: int
            ) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end) of each field; varints give (value, -1)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, -1
        elif wire == 1:
            pos += 8
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise _Malformed
            yield number, wire, pos, pos + size
            pos += size
        elif wire == 5:
            pos += 4
        else:
            raise _Malformed
    if pos != end:
        raise _Malformed


def _string(buf: bytes | mmap.mmap, start: int, end: int) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed from None


def _walk(buf: bytes | mmap.mmap, kind: str, start: int, end: int, depth: int,
          found: set[str]) -> None:
    if depth > _MAX_DEPTH:
        raise _Malformed
    if kind == "tensor":
        for number, wire, s, e in _fields(buf, start, end):
            if number == 13 and wire == 2:  # one StringStringEntryProto
                entry = {k: _string(buf, ks, ke) for k, w, ks, ke in _fields(buf, s, e)
                         if w == 2 and k in (1, 2)}
                if entry.get(1) == "location":
                    if 2 not in entry:
                        raise _Malformed
                    found.add(entry[2])
        return
    table = _KINDS[kind]
    for number, wire, s, e in _fields(buf, start, end):
        child = table.get(number)
        if child is not None and wire == 2:
            _walk(buf, child, s, e, depth + 1, found)


def external_data_files(model: bytes | mmap.mmap) -> set[str]:
    """Locations of the external-data files an ONNX model's tensors read, as written in it.

    Reads the protobuf wire format directly (initializers, sparse initializers, tensors in
    node attributes, subgraphs and functions), so no ``onnx`` package is needed at runtime and
    no tensor data is loaded.

    Raises:
        ModelLoadError: the bytes are not a well-formed ONNX model.
    """
    found: set[str] = set()
    try:
        _walk(model, "model", 0, len(model), 0, found)
    except _Malformed:
        raise ModelLoadError(
            "the graph file is not an ONNX model (its protobuf encoding is malformed or "
            "nested too deep); re-export the model"
        ) from None
    return found


def normalise_location(location: str) -> str:
    """An external-data location as a manifest file name (``./w.bin`` -> ``w.bin``)."""
    return posixpath.normpath(location.replace("\\", "/"))
