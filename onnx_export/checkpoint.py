"""A local checkpoint as downloaded, read safely: config, tokenizer and weight files.

Never remote code, never a download. :func:`load_hf_config` and :func:`load_hf_tokenizer`
read ``config.json`` and the tokenizer (``tokenizer.json``, or a sentencepiece
``tokenizer.model`` converted and checked); :func:`load_pretrained` loads the model with a
transformers ``Auto*`` class. Weights are safetensors, or ``.bin`` as tensors only.

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
    "describe_checkpoint",
    "find_weights",
    "first_line",
    "load_bin",
    "load_hf_config",
    "load_hf_tokenizer",
    "load_pretrained",
    "pad_token_id",
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


# -- config, model and tokenizer ----------------------------------------------------------
def describe_checkpoint(hf_config: Any, model_dir: Path) -> str:
    """``"<dir name> (<architecture>)"``: the checkpoint as error messages name it."""
    archs = getattr(hf_config, "architectures", None) or [getattr(hf_config, "model_type", "?")]
    return f"{model_dir.name} ({archs[0]})"


def pad_token_id(hf_tok: Any) -> int:
    """The id written at padded positions (masked out; any in-vocabulary id works)."""
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(hf_tok, attr, None)
        if isinstance(value, int):
            return value
    return 0


def load_hf_config(model_dir: Path) -> Any:
    """The checkpoint's transformers config, from ``config.json`` only (no remote code).

    Raises:
        ModelLoadError: no ``config.json``, or transformers cannot read it.
    """
    import transformers

    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(
            f"{model_dir} has no config.json; pass the directory of a local transformers "
            "checkpoint (prm export never downloads)"
        )
    try:
        return transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True,
                                                       trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(
            f"transformers could not read {model_dir / 'config.json'} ({type(exc).__name__}: "
            f"{first_line(str(exc))}); a model_type this transformers ({transformers.__version__}) "
            "does not know needs a newer transformers (remote code is never run)"
        ) from exc


def load_pretrained(auto_class_name: str, model_dir: str | Path, dtype: Any, **kwargs: Any) -> Any:
    """Load a local checkpoint with a transformers ``Auto*`` class, never remote code.

    Weights are safetensors, or ``.bin`` files read as tensors only
    (``torch.load(weights_only=True)``, checked file by file before transformers reads
    them). The one checkpoint loader the wrappers share.

    Args:
        auto_class_name: e.g. ``"AutoModelForCausalLM"``.
        model_dir: the checkpoint directory (``config.json`` + weights).
        dtype: torch dtype to load the weights in.
        **kwargs: more ``from_pretrained`` arguments (``attn_implementation``, ...).

    Raises:
        ModelLoadError: no ``config.json``, no weights, a ``.bin`` that holds more than
            tensors, or any other failure of transformers' loader (one line, with the fix).
    """
    transformers = require("transformers", "export")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(
            f"{model_dir} has no config.json; pass the directory of a local transformers "
            "checkpoint (prm export never downloads)"
        )
    weights = find_weights(model_dir)
    if weights.kind == "bin":
        check_bin_files(model_dir)
    auto_cls = getattr(transformers, auto_class_name)
    try:
        return auto_cls.from_pretrained(
            str(model_dir), dtype=dtype, local_files_only=True, trust_remote_code=False,
            use_safetensors=weights.kind == "safetensors", weights_only=True, **kwargs,
        )
    except Exception as exc:
        raise ModelLoadError(
            f"transformers could not load {model_dir} as {auto_class_name} "
            f"({type(exc).__name__}: {first_line(str(exc))}); check that the directory is a "
            "complete download of the checkpoint and that --format names its family"
        ) from exc


def load_hf_tokenizer(model_dir: str | Path) -> Any:
    """The checkpoint's fast tokenizer, from local files only, never remote code.

    A checkpoint with ``tokenizer.json`` loads as it is. One with only a sentencepiece
    ``tokenizer.model`` (Mistral and Llama 2 checkpoints such as math-shepherd-mistral-7b-prm)
    is converted to a fast tokenizer with transformers' converter (needs ``sentencepiece``
    and ``protobuf``, both in the export extra), and the conversion is checked against
    sentencepiece itself on probe texts: the exported ``tokenizer.json`` must split text
    exactly as the model's own tokenizer does.

    Raises:
        MissingExtraError: ``tokenizer.model`` only and sentencepiece/protobuf missing.
        ModelLoadError: no tokenizer files, transformers cannot load them, the result is not
            a fast tokenizer, or the conversion splits text differently from sentencepiece.
    """
    transformers = require("transformers", "export")
    model_dir = Path(model_dir)
    has_json = (model_dir / "tokenizer.json").is_file()
    spm_file = model_dir / "tokenizer.model"
    if not has_json and not spm_file.is_file():
        found = sorted(p.name for p in model_dir.iterdir() if "token" in p.name.lower())
        raise ModelLoadError(
            f"{model_dir} has no tokenizer.json or sentencepiece tokenizer.model (found "
            f"{found or 'no tokenizer files'}); copy the checkpoint's tokenizer files into it"
        )
    if not has_json:
        require("sentencepiece", "export")
        require("google.protobuf", "export")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(
            str(model_dir), local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:
        what = "tokenizer.json" if has_json else "the sentencepiece tokenizer.model"
        raise ModelLoadError(
            f"transformers could not load {what} of {model_dir} ({type(exc).__name__}: "
            f"{first_line(str(exc))}); check the tokenizer files are complete and that "
            "tokenizer_config.json names a tokenizer class transformers has"
        ) from exc
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise ModelLoadError(
            f"the tokenizer in {model_dir} ({type(tok).__name__}) is not a fast tokenizer; "
            "prm export needs tokenizer.json, or a sentencepiece tokenizer.model it can convert"
        )
    if not has_json:
        _check_spm_conversion(tok, spm_file)
        logger.info("converted %s (sentencepiece) to a fast tokenizer", spm_file)
    return tok


#: Texts the converted tokenizer must split exactly as sentencepiece does. None starts with
#: a space: there Llama tokenizers with ``legacy: false`` differ from raw sentencepiece by
#: design (and the rendered chains start with the question's first word).
_SPM_PROBES = (
    "Step 1: Tom has 3 apples and buys 12 more, so 3 + 12 = 15. ки",
    "Step 2:  two  spaces,\ttab\nand a new line ки\nStep 3: 48 / 6 = 8 ки",
    "spaces:  inside,   and trailing ",
    "café × ÷ √2 ≈ 1.414, 😀 ки + -",
)


def _check_spm_conversion(tok: Any, spm_file: Path) -> None:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_file))
    for text in _SPM_PROBES:
        want = list(sp.encode(text))
        got = list(tok.encode(text, add_special_tokens=False))
        if got != want:
            raise ModelLoadError(
                f"the fast tokenizer converted from {spm_file} splits {text!r} into {got[:24]} "
                f"but sentencepiece gives {want[:24]}; the converted tokenizer.json would "
                "score different tokens than the model saw. Provide the checkpoint's "
                "tokenizer.json, or report this with the tokenizer files"
            )
