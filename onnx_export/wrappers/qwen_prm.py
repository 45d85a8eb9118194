"""``qwen-prm`` (Qwen2.5-Math-PRM-7B / -72B): the score head and the torch wrapper.

:class:`QwenPRMForProcessReward` implements Qwen2.5-Math-PRM (``Qwen2ForProcessRewardModel``)
in the project, so the checkpoint loads without ``trust_remote_code``: the Qwen2 trunk and
``score = Sequential(Linear(h, h), ReLU(), Linear(h, 2))``; weights ``model.*``,
``score.0.weight``, ``score.0.bias``, ``score.2.weight``, ``score.2.bias``.

The model card reads ``softmax(logits)[..., 1]`` at every ``<extra_0>`` token; the graph
outputs that probability at every token, computed in float32, and the format picks the
``<extra_0>`` positions it inserted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prm_plugins.errors import ModelLoadError, require
from prm_plugins.onnx_export.checkpoint import read_tensors
from prm_plugins.onnx_export.wrappers import position_ids_from_mask
from prm_plugins.onnx_export.wrappers.trunk import check_head_shape, forward_trunk, load_trunk

__all__ = ["QwenPRMForProcessReward", "QwenPRMStepProbs", "build"]

logger = logging.getLogger(__name__)

torch: Any = require("torch", "export")
nn: Any = torch.nn


class QwenPRMForProcessReward(nn.Module):
    """Qwen2.5-Math-PRM: Qwen2 trunk + 2-class score MLP; forward gives logits ``[B, T, 2]``.

    Args:
        trunk: the Qwen2 base model (``Qwen2Model``).
        hidden_size: the trunk's hidden size.
        num_labels: classes of the head (2: incorrect, correct).
    """

    head_names = ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")

    def __init__(self, trunk: Any, hidden_size: int, num_labels: int = 2) -> None:
        super().__init__()
        self.model = trunk
        self.score = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_labels)
        )

    def forward(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None) -> Any:
        """Per-token class logits."""
        return self.score(forward_trunk(self.model, input_ids, attention_mask, position_ids))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, dtype: Any) -> QwenPRMForProcessReward:
        """Load a Qwen2.5-Math-PRM checkpoint (local safetensors or ``.bin``) in ``dtype``.

        Examples:
            >>> prm = QwenPRMForProcessReward.from_pretrained(  # doctest: +SKIP
            ...     "Qwen2.5-Math-PRM-7B", torch.bfloat16)
        """
        model_dir = Path(model_dir)
        what = "Qwen2.5-Math-PRM (score head)"
        head = read_tensors(model_dir, cls.head_names, what=what)
        trunk = load_trunk(model_dir, dtype, what=what, head_prefixes=("score.",))
        h = int(trunk.config.hidden_size)
        check_head_shape("score.0.weight", head["score.0.weight"], (h, h), model_dir)
        check_head_shape("score.0.bias", head["score.0.bias"], (h,), model_dir)
        n = int(head["score.2.weight"].shape[0])
        if n != 2:
            raise ModelLoadError(
                f"{model_dir}: score.2.weight has {n} output classes; the qwen-prm format needs "
                "2 (P(correct) = softmax[1])"
            )
        check_head_shape("score.2.weight", head["score.2.weight"], (2, h), model_dir)
        check_head_shape("score.2.bias", head["score.2.bias"], (2,), model_dir)
        model = cls(trunk, h)
        model.score.load_state_dict(
            {k.removeprefix("score."): v for k, v in head.items()}, strict=True
        )
        model.score.to(dtype)
        logger.info("loaded Qwen2.5-Math-PRM (%s, hidden %d) from %s",
                    type(trunk).__name__, h, model_dir)
        return model.eval()


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
