"""A local checkpoint's weight files, read safely: safetensors, or ``.bin`` as tensors only.

Published PRMs come in both layouts: Qwen2.5-Math-PRM and RLHFlow ship safetensors, while
Skywork-o1-Open-PRM ships a single ``pytorch_model.bin`` and math-shepherd-mistral-7b-prm
ships ``pytorch_model-0000x-of-0000y.bin`` shards with ``pytorch_model.bin.index.json``.
A ``.bin`` file is a pickle; it is only ever opened with ``torch.load(weights_only=True)``,
which unpickles tensors, containers and plain values and refuses anything that would import
or call code. Every file is checked that way here before transformers reads it.

Examples:
    >>> weights = find_weights("ckpt/")  # doctest: +SKIP
    >>> weights.kind, weights.files  # doctest: +SKIP
    ('bin', ('pytorch_model.bin',))
    >>> read_tensors("ckpt/", ["v_head.summary.weight"], what="Skywork")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prm_plugins.errors import ModelLoadError, require

__all__ = [
    "WeightFiles",
    "check_bin_files",
    "count_params",
    "find_weights",
    "first_line",
    "load_bin",
    "read_tensors",
    "tensor_names",
]

logger = logging.getLogger(__name__)

_SAFE_INDEX = "model.safetensors.index.json"
_BIN_INDEX = "pytorch_model.bin.index.json"
#: Weight files transformers would look for, safest first. Other ``.bin`` files of a
#: checkpoint directory (``training_args.bin``, optimizer states) are never opened.
_LAYOUTS = (("safetensors", _SAFE_INDEX, "model*.safetensors"),
            ("bin", _BIN_INDEX, "pytorch_model*.bin"))


@dataclass(frozen=True)
class WeightFiles:
    """Where a checkpoint's tensors are.

    Attributes:
        kind: ``"safetensors"`` or ``"bin"``.
        files: the weight files, relative to the checkpoint directory.
        weight_map: tensor name -> file, from the shard index (empty without one).
    """

    kind: str
    files: tuple[str, ...]
    weight_map: dict[str, str] = field(default_factory=dict)


def find_weights(model_dir: str | Path) -> WeightFiles:
    """The checkpoint's weight files: safetensors when there are any, else ``.bin``.

    Raises:
        ModelLoadError: no weight file, or a shard index that is unreadable or names a
            missing file.
    """
    model_dir = Path(model_dir)
    for kind, index_name, pattern in _LAYOUTS:
        index = model_dir / index_name
        if index.is_file():
            weight_map = _read_index(index)
            files = tuple(sorted(set(weight_map.values())))
            missing = [f for f in files if not (model_dir / f).is_file()]
            if missing:
                raise ModelLoadError(
                    f"{index} names shard(s) {missing[:3]} that are not in {model_dir}; the "
                    "download is incomplete: fetch every shard the index lists"
                )
            return WeightFiles(kind, files, weight_map)
        files = tuple(sorted(p.name for p in model_dir.glob(pattern) if p.is_file()))
        if files:
            return WeightFiles(kind, files)
    present = sorted(p.name for p in model_dir.iterdir())[:12] if model_dir.is_dir() else []
    raise ModelLoadError(
        f"{model_dir} holds no weights (model*.safetensors, or pytorch_model*.bin read as "
        f"tensors only); found "
        f"{present or 'nothing'}. Pass the directory of a downloaded checkpoint"
    )


def _read_index(index: Path) -> dict[str, str]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "/" not in v and v not in ("", "..")
            for k, v in weight_map.items()
        ):
            raise TypeError("weight_map must map tensor names to file names in the directory")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(
            f"{index} is not a valid shard index ({exc}); re-download it"
        ) from exc
    return weight_map


def load_bin(path: str | Path) -> dict[str, Any]:
    """A ``.bin`` state dict, read with ``torch.load(weights_only=True)`` (memory-mapped).

    Raises:
        ModelLoadError: the file holds more than tensors (pickled code or objects, refused
            unexecuted), or is not a PyTorch weights file at all.
    """
    torch: Any = require("torch", "export")
    path = Path(path)
    mmap = zipfile.is_zipfile(path)  # only the zip format (torch >= 1.6) can be mapped
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        text = str(exc)
        if "GLOBAL" in text or "Unsupported global" in text:
            what = next((line.strip() for line in text.splitlines() if "GLOBAL" in line
                         or "Unsupported global" in line), "")
            raise ModelLoadError(
                f"{path} was refused: it is a pickle that holds more than tensors, and would "
                f"import or call code when loaded ({what[:200]}); prm export reads .bin files "
                "with torch.load(weights_only=True) only. Use safetensors weights from a "
                "source you trust"
            ) from exc
        # torch's own advice ("re-run with weights_only=False") is not ours to give.
        lines = [line.strip() for line in text.splitlines() if line.strip()
                 and not line.startswith(("Weights only load failed", "Please file",
                                          "Check the documentation"))]
        raise ModelLoadError(
            f"{path} is not a readable PyTorch weights file ({type(exc).__name__}: "
            f"{first_line(chr(10).join(lines) or text)}); re-download it, or use the "
            "safetensors weights"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint's weights
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelLoadError(
            f"{path} holds a {type(state).__name__}, not a state dict of named tensors; save "
            "the model with save_pretrained"
        )
    return state


def first_line(text: str, limit: int = 300) -> str:
    """The first non-empty line of an exception's text, shortened: one-line error messages."""
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line[:limit] + ("..." if len(line) > limit else "")


def check_bin_files(model_dir: str | Path) -> None:
    """Open every ``.bin`` weight file with ``weights_only=True`` before transformers does.

    Memory-mapped, so this costs one pass over each file's pickle, not its tensors.

    Raises:
        ModelLoadError: see :func:`load_bin`.
    """
    weights = find_weights(model_dir)
    if weights.kind != "bin":
        return
    for name in weights.files:
        load_bin(Path(model_dir) / name)


def tensor_names(model_dir: str | Path) -> set[str]:
    """Every tensor name of the checkpoint (from headers and indexes where there are any).

    Raises:
        ModelLoadError: see :func:`find_weights` and :func:`load_bin`.
    """
    model_dir = Path(model_dir)
    weights = find_weights(model_dir)
    if weights.weight_map:
        return set(weights.weight_map)
    names: set[str] = set()
    for file in weights.files:
        if weights.kind == "safetensors":
            names |= set(_safetensors_header(model_dir / file))
        else:
            names |= set(load_bin(model_dir / file))
    return names


def _safetensors_header(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > 100_000_000:
                raise ValueError(f"header of {size} bytes")
            header: dict[str, Any] = json.loads(fh.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise ModelLoadError(
            f"{path} is not a readable safetensors file ({exc}); re-download it"
        ) from exc
    header.pop("__metadata__", None)
    return header


def read_tensors(model_dir: str | Path, names: Sequence[str], *, what: str) -> dict[str, Any]:
    """Read the named tensors (e.g. a head's) from the checkpoint, whatever its layout.

    Sharded checkpoints are resolved through their index; only the files holding the named
    tensors are opened.

    Args:
        model_dir: checkpoint directory.
        names: tensor names, e.g. ``["v_head.summary.weight", "v_head.summary.bias"]``.
        what: the model being loaded, for the error message.

    Raises:
        ModelLoadError: no weights, an unsafe or unreadable ``.bin``, or a named tensor is
            missing (the message lists the related names the checkpoint does hold).
    """
    model_dir = Path(model_dir)
    weights = find_weights(model_dir)
    files = weights.files
    if weights.weight_map:
        files = tuple(sorted({weights.weight_map[n] for n in names if n in weights.weight_map}))
    out: dict[str, Any] = {}
    for file in files:
        path = model_dir / file
        if weights.kind == "safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                keys = set(fh.keys())
                for name in names:
                    if name in keys and name not in out:
                        out[name] = fh.get_tensor(name)
        else:
            state = load_bin(path)
            for name in names:
                if name in state and name not in out:
                    out[name] = state[name].clone()  # off the memory map
    missing = [n for n in names if n not in out]
    if missing:
        available = tensor_names(model_dir)
        prefixes = {n.split(".")[0] for n in names}
        near = sorted(k for k in available if k.split(".")[0] in prefixes)[:20]
        top = sorted({k.split(".")[0] for k in available})
        raise ModelLoadError(
            f"{model_dir} is not a {what} checkpoint: head tensor(s) {missing} are missing "
            f"(found {near or 'no tensors under ' + str(sorted(prefixes))}; top-level names: "
            f"{top}). Check --format, or that the checkpoint holds the trained head"
        )
    return out


def count_params(model_dir: str | Path) -> int:
    """Number of parameters stored in the checkpoint (headers only for safetensors)."""
    model_dir = Path(model_dir)
    weights = find_weights(model_dir)
    total = 0
    for file in weights.files:
        if weights.kind == "safetensors":
            for info in _safetensors_header(model_dir / file).values():
                n = 1
                for dim in info["shape"]:
                    n *= int(dim)
                total += n
        else:
            total += sum(int(t.numel()) for t in load_bin(model_dir / file).values())
    return total
