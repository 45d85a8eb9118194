"""Torch wrapper for ``qwen-prm`` (Qwen2.5-Math-PRM-7B / -72B).

The model card reads ``softmax(logits)[..., 1]`` at every ``<extra_0>`` token; the graph
outputs that probability at every token, computed in float32, and the format picks the
``<extra_0>`` positions it inserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prm_plugins.errors import require
from prm_plugins.onnx_export.heads import QwenPRMForProcessReward
from prm_plugins.onnx_export.wrappers import position_ids_from_mask

__all__ = ["QwenPRMStepProbs", "build"]

torch: Any = require("torch", "export")
nn: Any = torch.nn


class QwenPRMStepProbs(nn.Module):
    """``(input_ids, attention_mask) -> step_probs``: ``softmax(score logits)[..., 1]``.

    Args:
        prm: the loaded :class:`QwenPRMForProcessReward`.
    """

    def __init__(self, prm: QwenPRMForProcessReward) -> None:
        super().__init__()
        self.prm = prm

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        """Per-token probability that the step ending at that token is correct."""
        logits = self.prm(input_ids, attention_mask, position_ids_from_mask(attention_mask))
        return logits.float().softmax(dim=-1)[..., 1]


def build(model_dir: Path, options: dict[str, Any], dtype: Any) -> QwenPRMStepProbs:
    """Load a Qwen2.5-Math-PRM checkpoint from ``model_dir`` and wrap it.

    Args:
        model_dir: local checkpoint directory (``config.json`` + safetensors).
        options: the format's options (unused by the graph; the format renders tokens).
        dtype: torch dtype of the weights.
    """
    return QwenPRMStepProbs(QwenPRMForProcessReward.from_pretrained(model_dir, dtype)).eval()
