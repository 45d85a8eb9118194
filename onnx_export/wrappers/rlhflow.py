"""Torch wrapper for ``rlhflow`` (RLHFlow Llama3.1-8B-PRM and look-alikes).

RLHFlow's evaluation code reads ``softmax(logits[[id("+"), id("-")]])[0]`` at the token
before each assistant ``"+"``. The graph computes the causal LM's last hidden states and
projects them onto the ``"+"`` and ``"-"`` rows of ``lm_head`` only (never the full
vocabulary), giving P("+") at every token; the format picks the positions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError
from prm_plugins.onnx_export.checkpoint import load_pretrained
from prm_plugins.onnx_export.wrappers.math_shepherd import TwoTokenStepProbs

__all__ = ["build"]

logger = logging.getLogger(__name__)


def build(model_dir: Path, options: dict[str, Any], dtype: Any) -> TwoTokenStepProbs:
    """Load an RLHFlow-style causal LM from ``model_dir`` and wrap it.

    Args:
        model_dir: local checkpoint directory (``config.json`` + safetensors).
        options: the format's options; needs ``good_token_id`` and ``bad_token_id``
            (``RLHFlowFormat.options_from_hf`` fills them in as ``tokenizer.encode("+")[-1]``).
        dtype: torch dtype of the weights.
    """
    good, bad = options.get("good_token_id"), options.get("bad_token_id")
    if not isinstance(good, int) or not isinstance(bad, int):
        raise InvalidInputError(
            "rlhflow needs integer good_token_id and bad_token_id options, got "
            f"{good!r} and {bad!r}; let RLHFlowFormat.options_from_hf fill them in, or "
            "pass --option good_token_id=N --option bad_token_id=M"
        )
    lm = load_pretrained("AutoModelForCausalLM", model_dir, dtype)
    logger.info("loaded %s from %s (%s); scoring tokens %d/%d",
                type(lm).__name__, model_dir, dtype, good, bad)
    return TwoTokenStepProbs(lm, good, bad).eval()
