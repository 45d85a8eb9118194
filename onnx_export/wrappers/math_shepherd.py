"""Torch wrapper for ``math-shepherd`` PRMs (causal LMs scored by ``+``/``-`` at each tag).

Math-Shepherd's published inference reads the LM's logits of the ``good_token`` and
``bad_token`` at every step tag and takes ``softmax([logit(+), logit(-)])[0]``. The wrapper
computes the base model's hidden states and projects them onto those two ``lm_head`` rows
only, so the graph never holds full-vocabulary logits.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, missing_extra
from prm_plugins.onnx_export.checkpoint import load_pretrained
from prm_plugins.onnx_export.wrappers import position_ids_from_mask

__all__ = ["TwoTokenStepProbs", "build", "two_token_head"]

logger = logging.getLogger(__name__)

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("torch", "export") from exc


def two_token_head(lm: Any, token_ids: list[int]) -> Any:
    """A ``Linear(hidden, len(token_ids))`` made of the LM head's rows for ``token_ids``.

    Args:
        lm: a transformers causal LM.
        token_ids: vocabulary ids whose logits are needed.

    Raises:
        InvalidInputError: an id is outside the LM head's vocabulary.
    """
    head = lm.get_output_embeddings()
    weight = head.weight
    vocab = int(weight.shape[0])
    bad = [t for t in token_ids if not 0 <= int(t) < vocab]
    if bad:
        raise InvalidInputError(
            f"token ids {bad} are outside the LM head's vocabulary of {vocab}; check the "
            "good_token_id/bad_token_id options"
        )
    bias = getattr(head, "bias", None)
    proj = nn.Linear(weight.shape[1], len(token_ids), bias=bias is not None,
                     dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        proj.weight.copy_(weight[list(token_ids)])
        if bias is not None:
            proj.bias.copy_(bias[list(token_ids)])
    return proj


class TwoTokenStepProbs(nn.Module):
    """``(input_ids, attention_mask) -> step_probs``: P(good) from two LM-head rows.

    Args:
        lm: a transformers causal LM; only its base model and two head rows are kept.
        good_token_id: vocabulary id of the "correct" token.
        bad_token_id: vocabulary id of the "incorrect" token.
    """

    def __init__(self, lm: Any, good_token_id: int, bad_token_id: int) -> None:
        super().__init__()
        self.body = lm.base_model
        self.head = two_token_head(lm, [int(good_token_id), int(bad_token_id)])
        cap = getattr(lm.config, "final_logit_softcapping", None)
        self.softcap = float(cap) if cap else None

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        """Per-token ``softmax([logit(good), logit(bad)])[0]``."""
        hidden = self.body(
            input_ids=input_ids, attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask), use_cache=False,
        ).last_hidden_state
        logits = self.head(hidden).float()
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits.softmax(dim=-1)[..., 0]


def build(model_dir: Path, options: dict[str, Any], dtype: Any) -> TwoTokenStepProbs:
    """Load a Math-Shepherd-style causal LM from ``model_dir`` and wrap it.

    Args:
        model_dir: local checkpoint directory.
        options: the format's options; needs ``good_token_id`` and ``bad_token_id``
            (``MathShepherdFormat.options_from_hf`` fills them in).
        dtype: torch dtype of the weights.
    """
    good, bad = options.get("good_token_id"), options.get("bad_token_id")
    if not isinstance(good, int) or not isinstance(bad, int):
        raise InvalidInputError(
            "math-shepherd needs integer good_token_id and bad_token_id options, got "
            f"{good!r} and {bad!r}; let MathShepherdFormat.options_from_hf fill them in, or "
            "pass --option good_token_id=N --option bad_token_id=M"
        )
    lm = load_pretrained("AutoModelForCausalLM", model_dir, dtype)
    logger.info("loaded %s from %s (%s); scoring tokens %d/%d",
                type(lm).__name__, model_dir, dtype, good, bad)
    return TwoTokenStepProbs(lm, good, bad).eval()
