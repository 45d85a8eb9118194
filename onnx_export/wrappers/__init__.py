"""Torch wrappers: a family's checkpoint as ``(input_ids, attention_mask) -> step_probs``.

One module per family, its head beside it: ``token_classification``, ``math_shepherd``,
``rlhflow``, ``qwen_prm`` (the Qwen2.5-Math-PRM score head), ``skywork`` (the Skywork
value head); ``trunk`` holds what the head families share. Each family module has a function
``build(model_dir: Path, options: dict, dtype: torch.dtype) -> torch.nn.Module`` whose
``forward(input_ids [B,T] int64, attention_mask [B,T] int64)`` returns ``step_probs [B,T]``
float32 and derives position ids from the mask (``cumsum - 1``) so both paddings score right.
A third-party format can provide the same as a ``build_torch_model`` classmethod.

Importing this package imports no torch; a family module does, when it is built.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from prm_plugins.errors import UnknownFormatError
from prm_plugins.formats import get_format
from prm_plugins.onnx_export.checkpoint import load_hf_tokenizer

__all__ = ["BUILDERS", "build_step_prob_model", "load_hf_tokenizer", "position_ids_from_mask"]

logger = logging.getLogger(__name__)

#: The built-in families' wrapper modules, by format name.
BUILDERS: dict[str, str] = {
    "token-classification": "prm_plugins.onnx_export.wrappers.token_classification",
    "math-shepherd": "prm_plugins.onnx_export.wrappers.math_shepherd",
    "qwen-prm": "prm_plugins.onnx_export.wrappers.qwen_prm",
    "rlhflow": "prm_plugins.onnx_export.wrappers.rlhflow",
    "skywork": "prm_plugins.onnx_export.wrappers.skywork",
}


def position_ids_from_mask(attention_mask: Any) -> Any:
    """``cumsum(mask) - 1`` clamped at 0: positions that ignore left padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def build_step_prob_model(
    format_name: str, model_dir: str | Path, options: dict[str, Any], dtype: Any
) -> Any:
    """The torch module for ``format_name`` loaded from ``model_dir``, in eval mode."""
    fmt_cls = get_format(format_name)
    custom = getattr(fmt_cls, "build_torch_model", None)
    if callable(custom):
        model = custom(Path(model_dir), options, dtype)
    elif format_name in BUILDERS:
        model = importlib.import_module(BUILDERS[format_name]).build(
            Path(model_dir), options, dtype
        )
    else:
        raise UnknownFormatError(
            f"format {format_name!r} has no torch wrapper; give its PRMFormat class a "
            "build_torch_model(model_dir, options, dtype) classmethod"
        )
    return model.eval()
