"""The transformer trunk under a project-implemented head (``qwen_prm``, ``skywork``).

The trunk loads with transformers' own class for the checkpoint's ``model_type`` (local
files, no remote code); the head's tensors are read from the same weight files by name
(:func:`prm_plugins.onnx_export.checkpoint.read_tensors`). A missing or misshapen head
tensor is an error, never a random init.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prm_plugins.errors import ModelLoadError, require
from prm_plugins.onnx_export.checkpoint import load_pretrained

__all__ = ["check_head_shape", "forward_trunk", "load_trunk"]

logger = logging.getLogger(__name__)


def load_trunk(
    model_dir: str | Path, dtype: Any, *, what: str, head_prefixes: Sequence[str] = ()
) -> Any:
    """The transformer trunk (``AutoModel`` for the ``model_type``), all weights present.

    transformers' load report (which lists the head's tensors as "unexpected") is silenced;
    missing trunk weights are an error here, and unexpected tensors other than the head's
    and ``lm_head``'s are logged.

    Args:
        model_dir: checkpoint directory.
        dtype: torch dtype of the weights.
        what: the model being loaded, for messages.
        head_prefixes: name prefixes of the head's tensors (read separately).

    Raises:
        ModelLoadError: trunk weights are missing from the checkpoint.
    """
    transformers: Any = require("transformers", "export")
    hf_logging = transformers.utils.logging
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        trunk, info = load_pretrained("AutoModel", model_dir, dtype, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ModelLoadError(
            f"{model_dir}: {len(missing)} trunk weight(s) of {type(trunk).__name__} are missing "
            f"from the checkpoint (first: {missing[:5]}); it is not a complete {what} checkpoint"
        )
    known = (*head_prefixes, "lm_head.")
    extra = sorted(k for k in info.get("unexpected_keys") or [] if not k.startswith(known))
    if extra:
        logger.warning("%s: %d checkpoint tensor(s) not used by the %s wrapper (first: %s)",
                       model_dir, len(extra), what, extra[:5])
    return trunk.eval()


def check_head_shape(name: str, tensor: Any, shape: tuple[int, ...], model_dir: Path) -> None:
    """Refuse a head tensor whose shape does not fit the trunk's hidden size."""
    if tuple(tensor.shape) != shape:
        raise ModelLoadError(
            f"{model_dir}: head tensor {name} has shape {tuple(tensor.shape)}, expected {shape} "
            "for this trunk's hidden size; the checkpoint does not match the format"
        )


def forward_trunk(trunk: Any, input_ids: Any, attention_mask: Any, position_ids: Any) -> Any:
    """The trunk's last hidden states ``[B, T, hidden]`` (no KV cache)."""
    return trunk(input_ids=input_ids, attention_mask=attention_mask,
                 position_ids=position_ids, use_cache=False).last_hidden_state
