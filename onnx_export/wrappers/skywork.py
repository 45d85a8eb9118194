"""``skywork`` (Skywork-o1-Open-PRM): the value head and the torch wrapper.

:class:`SkyworkPRMValueModel` implements Skywork-o1-Open-PRM (``Qwen2ForPrmModel``, a
TRL-style value-head wrapper) in the project, so the checkpoint loads without
``trust_remote_code``: the causal LM's trunk and ``v_head.summary = Linear(h, 1)``; weights
``model.*``, ``v_head.summary.weight``, ``v_head.summary.bias`` (``lm_head.weight`` is not
needed: the value head reads the last hidden state). Skywork ships a ``.bin``, read with
``torch.load(weights_only=True)`` (:mod:`prm_plugins.onnx_export.checkpoint`).

Skywork's inference code reads ``sigmoid(v_head(last_hidden_state))`` at each step's
trailing ``"\\n"``; the graph outputs that value at every token, in float32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prm_plugins.errors import require
from prm_plugins.onnx_export.checkpoint import read_tensors
from prm_plugins.onnx_export.wrappers import position_ids_from_mask
from prm_plugins.onnx_export.wrappers.trunk import check_head_shape, forward_trunk, load_trunk

__all__ = ["SkyworkPRMValueModel", "SkyworkStepProbs", "SkyworkValueHead", "build"]

logger = logging.getLogger(__name__)

torch: Any = require("torch", "export")
nn: Any = torch.nn


class SkyworkValueHead(nn.Module):
    """Skywork's ``ValueHead``: ``summary = Linear(hidden, 1)`` (its dropout is off in eval)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states: Any) -> Any:
        """Per-token value ``[B, T, 1]``, computed in the head's dtype as Skywork does."""
        return self.summary(hidden_states.to(self.summary.weight.dtype))


class SkyworkPRMValueModel(nn.Module):
    """Skywork-o1-Open-PRM: causal-LM trunk + value head; forward gives values ``[B, T]``.

    Args:
        trunk: the causal LM's base model (``Qwen2Model``).
        hidden_size: the trunk's hidden size.
    """

    head_names = ("v_head.summary.weight", "v_head.summary.bias")

    def __init__(self, trunk: Any, hidden_size: int) -> None:
        super().__init__()
        self.model = trunk
        self.v_head = SkyworkValueHead(hidden_size)

    def forward(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None) -> Any:
        """Per-token value before the sigmoid."""
        hidden = forward_trunk(self.model, input_ids, attention_mask, position_ids)
        return self.v_head(hidden).squeeze(-1)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, dtype: Any) -> SkyworkPRMValueModel:
        """Load a Skywork-o1-Open-PRM checkpoint (local safetensors or ``.bin``) in ``dtype``.

        Examples:
            >>> prm = SkyworkPRMValueModel.from_pretrained(  # doctest: +SKIP
            ...     "Skywork-o1-Open-PRM-Qwen-2.5-1.5B", torch.float32)
        """
        model_dir = Path(model_dir)
        what = "Skywork-o1-Open-PRM (v_head value head)"
        head = read_tensors(model_dir, cls.head_names, what=what)
        trunk = load_trunk(model_dir, dtype, what=what, head_prefixes=("v_head.",))
        h = int(trunk.config.hidden_size)
        check_head_shape("v_head.summary.weight", head["v_head.summary.weight"], (1, h), model_dir)
        check_head_shape("v_head.summary.bias", head["v_head.summary.bias"], (1,), model_dir)
        model = cls(trunk, h)
        model.v_head.load_state_dict(
            {k.removeprefix("v_head."): v for k, v in head.items()}, strict=True
        )
        model.v_head.to(dtype)
        logger.info("loaded Skywork PRM (%s, hidden %d) from %s",
                    type(trunk).__name__, h, model_dir)
        return model.eval()


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
