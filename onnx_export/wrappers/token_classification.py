"""Torch wrapper for ``token-classification`` PRMs (TRL ``PRMTrainer`` checkpoints).

``AutoModelForTokenClassification`` with two labels; the graph outputs
``P(correct) = softmax(logits)[..., 1]`` at every token, computed in float32.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, missing_extra
from prm_plugins.onnx_export.checkpoint import load_pretrained
from prm_plugins.onnx_export.wrappers import position_ids_from_mask

__all__ = ["TokenClassificationStepProbs", "build"]

logger = logging.getLogger(__name__)

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("torch", "export") from exc


class TokenClassificationStepProbs(nn.Module):
    """``(input_ids, attention_mask) -> step_probs``: softmax over the two labels, index 1.

    Args:
        model: a transformers token-classification model with two labels.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        params = inspect.signature(model.forward).parameters
        self._takes_position_ids = "position_ids" in params
        self._takes_token_type_ids = "token_type_ids" in params

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        """Per-token probability that the step ending at that token is correct."""
        kwargs: dict[str, Any] = {}
        if self._takes_position_ids:
            kwargs["position_ids"] = position_ids_from_mask(attention_mask)
        if self._takes_token_type_ids:
            kwargs["token_type_ids"] = torch.zeros_like(input_ids)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        return logits.float().softmax(dim=-1)[..., 1]


def build(model_dir: Path, options: dict[str, Any], dtype: Any) -> TokenClassificationStepProbs:
    """Load a two-label token classifier from ``model_dir`` and wrap it.

    Args:
        model_dir: local checkpoint directory.
        options: the format's options (unused by the graph; the format renders tokens).
        dtype: torch dtype of the weights.

    Raises:
        InvalidInputError: the checkpoint does not have exactly two labels.
    """
    model = load_pretrained("AutoModelForTokenClassification", model_dir, dtype)
    n_labels = int(getattr(model.config, "num_labels", 0))
    if n_labels != 2:
        raise InvalidInputError(
            f"{model_dir} is a token classifier with {n_labels} labels; the token-classification "
            "format needs 2 (0 = incorrect step, 1 = correct step, as TRL PRMTrainer trains)"
        )
    logger.info("loaded %s from %s (%s)", type(model).__name__, model_dir, dtype)
    return TokenClassificationStepProbs(model).eval()
