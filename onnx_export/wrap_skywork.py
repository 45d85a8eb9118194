"""Torch wrapper for ``skywork`` (Skywork-o1-Open-PRM).

Skywork's inference code reads ``sigmoid(v_head(last_hidden_state))`` at each step's
trailing ``"\\n"``; the graph outputs that value at every token, in float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prm_plugins.errors import require
from prm_plugins.onnx_export.heads import SkyworkPRMValueModel
from prm_plugins.onnx_export.wrappers import position_ids_from_mask

__all__ = ["SkyworkStepProbs", "build"]

torch: Any = require("torch", "export")
nn: Any = torch.nn


class SkyworkStepProbs(nn.Module):
    """``(input_ids, attention_mask) -> step_probs``: ``sigmoid(value)``.

    Args:
        prm: the loaded :class:`SkyworkPRMValueModel`.
    """

    def __init__(self, prm: SkyworkPRMValueModel) -> None:
        super().__init__()
        self.prm = prm

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        """Per-token probability that the step ending at that token is correct."""
        values = self.prm(input_ids, attention_mask, position_ids_from_mask(attention_mask))
        return torch.sigmoid(values.float())


def build(model_dir: Path, options: dict[str, Any], dtype: Any) -> SkyworkStepProbs:
    """Load a Skywork-o1-Open-PRM checkpoint from ``model_dir`` and wrap it.

    Args:
        model_dir: local checkpoint directory (``config.json`` + safetensors).
        options: the format's options (unused by the graph; the format renders tokens).
        dtype: torch dtype of the weights.
    """
    return SkyworkStepProbs(SkyworkPRMValueModel.from_pretrained(model_dir, dtype)).eval()
