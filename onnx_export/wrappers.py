"""Torch wrappers: a family's checkpoint as ``(input_ids, attention_mask) -> step_probs``.

Each family has a module ``prm_plugins.onnx_export.wrap_<family>`` with a function
``build(model_dir: Path, options: dict, dtype: torch.dtype) -> torch.nn.Module`` whose
``forward(input_ids [B,T] int64, attention_mask [B,T] int64)`` returns ``step_probs [B,T]``
float32 and derives position ids from the mask (``cumsum - 1``) so both paddings score right.
A third-party format can provide the same as a ``build_torch_model`` classmethod.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from prm_plugins.errors import UnknownFormatError, require
from prm_plugins.formats import get_format

__all__ = ["build_step_prob_model", "load_hf_tokenizer", "position_ids_from_mask"]

_BUILDERS: dict[str, str] = {
    "token-classification": "prm_plugins.onnx_export.wrap_token_classification",
    "math-shepherd": "prm_plugins.onnx_export.wrap_math_shepherd",
    "qwen-prm": "prm_plugins.onnx_export.wrap_qwen_prm",
    "rlhflow": "prm_plugins.onnx_export.wrap_rlhflow",
    "skywork": "prm_plugins.onnx_export.wrap_skywork",
}


def position_ids_from_mask(attention_mask: Any) -> Any:
    """``cumsum(mask) - 1`` clamped at 0: positions that ignore left padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def load_hf_tokenizer(model_dir: str | Path) -> Any:
    """The checkpoint's fast tokenizer, from local files only, never remote code."""
    transformers = require("transformers", "export")
    tok = transformers.AutoTokenizer.from_pretrained(
        str(model_dir), local_files_only=True, trust_remote_code=False
    )
    if not getattr(tok, "is_fast", False):
        raise UnknownFormatError(
            f"the tokenizer in {model_dir} is not a fast tokenizer; prm export needs "
            "tokenizer.json (convert it with transformers' AutoTokenizer.save_pretrained)"
        )
    return tok


def build_step_prob_model(
    format_name: str, model_dir: str | Path, options: dict[str, Any], dtype: Any
) -> Any:
    """The torch module for ``format_name`` loaded from ``model_dir``, in eval mode."""
    fmt_cls = get_format(format_name)
    custom = getattr(fmt_cls, "build_torch_model", None)
    if callable(custom):
        model = custom(Path(model_dir), options, dtype)
    elif format_name in _BUILDERS:
        model = importlib.import_module(_BUILDERS[format_name]).build(
            Path(model_dir), options, dtype
        )
    else:
        raise UnknownFormatError(
            f"format {format_name!r} has no torch wrapper; give its PRMFormat class a "
            "build_torch_model(model_dir, options, dtype) classmethod"
        )
    return model.eval()
