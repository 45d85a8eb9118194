"""PRM heads implemented in the project, so checkpoints load without ``trust_remote_code``.

* :class:`QwenPRMForProcessReward`: Qwen2.5-Math-PRM (``Qwen2ForProcessRewardModel``): the
  Qwen2 trunk and ``score = Sequential(Linear(h, h), ReLU(), Linear(h, 2))``; weights
  ``model.*``, ``score.0.weight``, ``score.0.bias``, ``score.2.weight``, ``score.2.bias``.
* :class:`SkyworkPRMValueModel`: Skywork-o1-Open-PRM (``Qwen2ForPrmModel``, a TRL-style
  value-head wrapper): the causal LM's trunk and ``v_head.summary = Linear(h, 1)``; weights
  ``model.*``, ``v_head.summary.weight``, ``v_head.summary.bias`` (``lm_head.weight`` is not
  needed: the value head reads the last hidden state).

The trunk loads with transformers' own class for the checkpoint's ``model_type`` (local
files, no remote code); the head's tensors are read from the same weight files by name:
safetensors, or ``.bin`` as Skywork-o1-Open-PRM ships it, read with
``torch.load(weights_only=True)`` (:mod:`prm_plugins.onnx_export.checkpoint`). A missing or
misshapen head tensor is an error, never a random init.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prm_plugins.errors import ModelLoadError, require
from prm_plugins.onnx_export.checkpoint import read_tensors
from prm_plugins.onnx_export.wrap_token_classification import load_pretrained

__all__ = [
    "QwenPRMForProcessReward",
    "SkyworkPRMValueModel",
    "SkyworkValueHead",
    "load_trunk",
    "read_safetensors",
]

logger = logging.getLogger(__name__)

torch: Any = require("torch", "export")
nn: Any = torch.nn


def read_safetensors(model_dir: str | Path, names: Sequence[str], *, what: str) -> dict[str, Any]:
    """Read the named head tensors from the checkpoint (safetensors or tensors-only ``.bin``).

    Kept under its old name; the reader is
    :func:`prm_plugins.onnx_export.checkpoint.read_tensors`, which handles both layouts,
    sharded or not.

    Raises:
        ModelLoadError: no weights, an unsafe ``.bin``, or a named tensor is missing.
    """
    return read_tensors(model_dir, names, what=what)


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


def _check_shape(name: str, tensor: Any, shape: tuple[int, ...], model_dir: Path) -> None:
    if tuple(tensor.shape) != shape:
        raise ModelLoadError(
            f"{model_dir}: head tensor {name} has shape {tuple(tensor.shape)}, expected {shape} "
            "for this trunk's hidden size; the checkpoint does not match the format"
        )


def _forward_trunk(trunk: Any, input_ids: Any, attention_mask: Any, position_ids: Any) -> Any:
    return trunk(input_ids=input_ids, attention_mask=attention_mask,
                 position_ids=position_ids, use_cache=False).last_hidden_state


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
        return self.score(_forward_trunk(self.model, input_ids, attention_mask, position_ids))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, dtype: Any) -> QwenPRMForProcessReward:
        """Load a Qwen2.5-Math-PRM checkpoint (local safetensors or ``.bin``) in ``dtype``.

        Examples:
            >>> prm = QwenPRMForProcessReward.from_pretrained(  # doctest: +SKIP
            ...     "Qwen2.5-Math-PRM-7B", torch.bfloat16)
        """
        model_dir = Path(model_dir)
        what = "Qwen2.5-Math-PRM (score head)"
        head = read_safetensors(model_dir, cls.head_names, what=what)
        trunk = load_trunk(model_dir, dtype, what=what, head_prefixes=("score.",))
        h = int(trunk.config.hidden_size)
        _check_shape("score.0.weight", head["score.0.weight"], (h, h), model_dir)
        _check_shape("score.0.bias", head["score.0.bias"], (h,), model_dir)
        n = int(head["score.2.weight"].shape[0])
        if n != 2:
            raise ModelLoadError(
                f"{model_dir}: score.2.weight has {n} output classes; the qwen-prm format needs "
                "2 (P(correct) = softmax[1])"
            )
        _check_shape("score.2.weight", head["score.2.weight"], (2, h), model_dir)
        _check_shape("score.2.bias", head["score.2.bias"], (2,), model_dir)
        model = cls(trunk, h)
        model.score.load_state_dict(
            {k.removeprefix("score."): v for k, v in head.items()}, strict=True
        )
        model.score.to(dtype)
        logger.info("loaded Qwen2.5-Math-PRM (%s, hidden %d) from %s",
                    type(trunk).__name__, h, model_dir)
        return model.eval()


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
        hidden = _forward_trunk(self.model, input_ids, attention_mask, position_ids)
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
        head = read_safetensors(model_dir, cls.head_names, what=what)
        trunk = load_trunk(model_dir, dtype, what=what, head_prefixes=("v_head.",))
        h = int(trunk.config.hidden_size)
        _check_shape("v_head.summary.weight", head["v_head.summary.weight"], (1, h), model_dir)
        _check_shape("v_head.summary.bias", head["v_head.summary.bias"], (1,), model_dir)
        model = cls(trunk, h)
        model.v_head.load_state_dict(
            {k.removeprefix("v_head."): v for k, v in head.items()}, strict=True
        )
        model.v_head.to(dtype)
        logger.info("loaded Skywork PRM (%s, hidden %d) from %s",
                    type(trunk).__name__, h, model_dir)
        return model.eval()
