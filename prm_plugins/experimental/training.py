"""Training objectives that were tried for the default PRM and not shipped.

Kept so the model card's recorded experiments can be rerun (``prm_plugins/models/default/
MODEL_CARD.md``, "Training"), outside the stable API: anything here may change or go without
a deprecation period. Each is switched on by an ``--experimental-...`` flag of ``prm train``
(a :class:`~prm_plugins.training.TrainConfig` field of the same name), which makes
:func:`prm_plugins.training.objective.objective_for` build :func:`experimental_objective`.

- ``--experimental-position-balanced`` (with ``--class-weight none``): loss weights per step
  position and label, so a step's position is no evidence of its label. Tried: validation
  step AUROC 0.733 against 0.754 and best-of-N lower; not shipped.
- ``--experimental-pair-weight W``: a pairwise term that ranks each flawed chain's first
  wrong step below the same step of its question's correct chain, with a question's chains
  kept in one batch. Tried at W = 1: test step AUROC 0.755 against 0.756; not shipped.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from prm_plugins.errors import InvalidInputError
from prm_plugins.training.config import TrainConfig
from prm_plugins.training.data import IGNORE_INDEX, EncodedChain
from prm_plugins.training.objective import ClassWeightedLoss

__all__ = [
    "POSITION_BUCKETS",
    "ExperimentalLoss",
    "experimental_objective",
    "position_class_weights",
    "question_batches",
    "question_pairs",
    "token_weights",
]

logger = logging.getLogger(__name__)

#: Step positions weighted separately by ``--experimental-position-balanced`` (later steps
#: share the last).
POSITION_BUCKETS = 8


def question_pairs(chains: Sequence[EncodedChain]) -> dict[int, tuple[int, int, int]]:
    """Pairs for the pairwise loss: each flawed chain with its question's correct chain.

    Returns:
        ``{flawed index: (correct index, token position of the correct chain's step k,
        token position of the flawed chain's step k)}``, where k is the flawed chain's first
        wrong step; flawed chains whose question has no correct chain with more than k steps
        get no pair.

    Examples:
        >>> good = EncodedChain([1, 2, 3, 4], [-100] * 4, [1, 3], [1, 1], None, "q")
        >>> bad = EncodedChain([1, 2, 5, 6], [-100] * 4, [1, 3], [1, 0], "slip", "q")
        >>> question_pairs([good, bad])
        {1: (0, 3, 3)}
    """
    correct: dict[str, list[int]] = {}
    for i, c in enumerate(chains):
        if c.group is not None and all(c.step_labels):
            correct.setdefault(c.group, []).append(i)
    pairs: dict[int, tuple[int, int, int]] = {}
    for i, c in enumerate(chains):
        if c.group is None or all(c.step_labels):
            continue
        k = c.step_labels.index(0)
        for j in correct.get(c.group, []):
            if len(chains[j].step_positions) > k:
                pairs[i] = (j, chains[j].step_positions[k], c.step_positions[k])
                break
    return pairs


def question_batches(
    chains: Sequence[EncodedChain], batch_size: int, rng: random.Random, *, pool: int = 50
) -> list[list[int]]:
    """Like :func:`length_bucketed_batches`, but a question's chains stay in one batch.

    Questions are shuffled, cut into pools of about ``pool * batch_size`` chains, each pool
    sorted by its questions' longest chain and packed into batches of at least
    ``batch_size`` chains (a batch closes once it is full), and the batches shuffled.
    """
    groups: dict[str | None, list[int]] = {}
    singles: list[list[int]] = []
    for i, c in enumerate(chains):
        if c.group is None:
            singles.append([i])
        else:
            groups.setdefault(c.group, []).append(i)
    units = list(groups.values()) + singles
    rng.shuffle(units)
    batches: list[list[int]] = []
    start = 0
    while start < len(units):
        chunk, count = [], 0
        while start < len(units) and count < pool * batch_size:
            chunk.append(units[start])
            count += len(units[start])
            start += 1
        chunk.sort(key=lambda u: max(len(chains[i]) for i in u))
        current: list[int] = []
        for unit in chunk:
            current.extend(unit)
            if len(current) >= batch_size:
                batches.append(current)
                current = []
        if current:
            batches.append(current)
    rng.shuffle(batches)
    return batches


def position_class_weights(chains: Sequence[EncodedChain],
                           n_buckets: int = 8) -> list[list[float]]:
    """Loss weight per (step position, label): ``n_k / (2 * n_k,label)``.

    ``k`` is the step's index, with steps from ``n_buckets - 1`` on pooled. Within each
    position both labels then carry the same total weight, so the position of a step is no
    evidence of its label (verifier-labelled chains are bad from the first error on, so later
    steps are bad far more often: 9% at step 1 against 40% at step 4 in GSM8K train). A
    position with one label only gets weight 1 for it.

    Examples:
        >>> c = EncodedChain([0] * 4, [0] * 4, [1, 3], [1, 0])
        >>> d = EncodedChain([0] * 4, [0] * 4, [1, 3], [1, 1])
        >>> position_class_weights([c, d], n_buckets=2)
        [[1.0, 1.0], [1.0, 1.0]]
    """
    counts = [[0, 0] for _ in range(n_buckets)]
    for c in chains:
        for k, lab in enumerate(c.step_labels):
            counts[min(k, n_buckets - 1)][int(lab)] += 1
    table = []
    for neg, pos in counts:
        total = neg + pos
        if neg and pos:
            table.append([total / (2 * neg), total / (2 * pos)])
        else:
            table.append([1.0, 1.0])
    return table


def token_weights(chains: Sequence[EncodedChain], table: Sequence[Sequence[float]],
                  torch: Any) -> Any:
    """``[B, T]`` loss weights: ``table[k][label]`` at step k's position, 0 elsewhere.

    ``T`` is the longest chain (the padded batch's width); steps past the table's last row
    take its last row.
    """
    t = max(len(c) for c in chains)
    weights = torch.zeros((len(chains), t), dtype=torch.float)
    last = len(table) - 1
    for i, c in enumerate(chains):
        for k, (pos, lab) in enumerate(zip(c.step_positions, c.step_labels, strict=True)):
            weights[i, pos] = table[min(k, last)][int(lab)]
    return weights


class ExperimentalLoss(ClassWeightedLoss):
    """The shipped loss with the experimental terms the config switches on.

    Args:
        config: the run's config (``experimental_position_balanced``,
            ``experimental_pair_weight``).
        chains: the training chains.
        device: where the loss runs.
        torch: the torch module.

    Raises:
        InvalidInputError: ``--experimental-pair-weight`` on data where no question has both
            a correct and a flawed chain.
    """

    def __init__(self, config: TrainConfig, chains: Sequence[EncodedChain], device: Any,
                 torch: Any) -> None:
        super().__init__(config, chains, device, torch)
        self.chains, self.device, self.torch = chains, device, torch
        self.position_weights: list[list[float]] | None = None
        if config.experimental_position_balanced:
            self.position_weights = position_class_weights(chains, POSITION_BUCKETS)
            logger.info("position-balanced loss weights (bad, good) by step: %s",
                        [[round(w, 2) for w in row] for row in self.position_weights])
        self.pair_weight = config.experimental_pair_weight
        self.pairs = question_pairs(chains) if self.pair_weight > 0 else {}
        if self.pair_weight > 0:
            logger.info("pairwise loss (weight %g): %d flawed chains paired with their "
                        "question's correct chain", self.pair_weight, len(self.pairs))
            if not self.pairs:
                raise InvalidInputError(
                    "--experimental-pair-weight needs questions with both a correct chain (all "
                    "labels true) and a flawed one in the training data; none were found")

    def batches(self, rng: random.Random) -> list[list[int]]:
        """A question's chains in one batch when pairs are used, else length-bucketed."""
        if self.pairs:
            return question_batches(self.chains, self.batch_size, rng)
        return super().batches(rng)

    def loss(self, logits: Any, batch: dict[str, Any], idx: Sequence[int]) -> Any:
        """Cross-entropy (position-weighted or not), plus the weighted pairwise term."""
        torch = self.torch
        if self.position_weights is None:
            loss = super().loss(logits, batch, idx)
        else:  # weighted mean over the labelled tokens, as CrossEntropyLoss(weight=...) does
            per_token = torch.nn.functional.cross_entropy(
                logits.float().view(-1, 2), batch["labels"].view(-1),
                ignore_index=IGNORE_INDEX, reduction="none")
            w = token_weights([self.chains[i] for i in idx], self.position_weights,
                              torch).to(self.device).view(-1)
            loss = (per_token * w).sum() / w.sum().clamp_min(1e-8)
        pair_loss = self._pair_loss(logits, idx) if self.pairs else None
        if pair_loss is not None:
            loss = loss + self.pair_weight * pair_loss
        return loss

    def _pair_loss(self, logits: Any, idx: Sequence[int]) -> Any | None:
        torch, pairs = self.torch, self.pairs
        local = {g: n for n, g in enumerate(idx)}
        sel = [(local[pairs[i][0]], pairs[i][1], local[i], pairs[i][2])
               for i in idx if i in pairs and pairs[i][0] in local]
        if not sel:
            return None
        rows_g, pos_g, rows_b, pos_b = (torch.tensor(v, device=self.device)
                                        for v in zip(*sel, strict=True))
        margin = logits.float()[..., 1] - logits.float()[..., 0]
        # the correct chain's step k should score above the flawed chain's step k
        return torch.nn.functional.softplus(
            margin[rows_b, pos_b] - margin[rows_g, pos_g]).mean()

    def data_info(self) -> dict[str, Any]:
        """``{"pairs": number of flawed chains paired with a correct one}``."""
        return {"pairs": len(self.pairs)}


def experimental_objective(config: TrainConfig, chains: Sequence[EncodedChain], device: Any,
                           torch: Any) -> ExperimentalLoss:
    """The objective of a run that sets an ``--experimental-...`` flag."""
    return ExperimentalLoss(config, chains, device, torch)
