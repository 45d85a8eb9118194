"""The training objective: how batches are drawn and what loss a batch gives.

The shipped recipe is :class:`ClassWeightedLoss`: cross-entropy at every step's label
position, with the two classes weighted by inverse frequency (``--class-weight balanced``) or
not (``none``), over length-bucketed batches. Objectives that were tried and not shipped live
in :mod:`prm_plugins.experimental.training`; :func:`objective_for` loads that module only
when a run sets an ``--experimental-...`` flag.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any, Protocol

from prm_plugins.training.config import TrainConfig
from prm_plugins.training.data import IGNORE_INDEX, EncodedChain, length_bucketed_batches

__all__ = ["ClassWeightedLoss", "Objective", "objective_for"]

logger = logging.getLogger(__name__)


class Objective(Protocol):
    """What the optimisation loop needs from a training objective."""

    def batches(self, rng: random.Random) -> list[list[int]]:
        """One epoch of batches (indices into the training chains), drawn from ``rng``."""
        ...

    def loss(self, logits: Any, batch: dict[str, Any], idx: Sequence[int]) -> Any:
        """The loss (a scalar tensor) of a batch's logits ``[B, T, 2]``."""
        ...

    def data_info(self) -> dict[str, Any]:
        """Figures about the objective's view of the data for ``training.json``."""
        ...


class ClassWeightedLoss:
    """Cross-entropy at the labelled positions, classes weighted as ``--class-weight`` says.

    Args:
        config: the run's config (``class_weight``, ``batch_size``).
        chains: the training chains.
        device: where the loss runs.
        torch: the torch module.
    """

    def __init__(self, config: TrainConfig, chains: Sequence[EncodedChain], device: Any,
                 torch: Any) -> None:
        n_steps = sum(len(c.step_labels) for c in chains)
        n_pos = sum(sum(c.step_labels) for c in chains)
        n_neg = n_steps - n_pos
        if config.class_weight == "balanced":
            weight = torch.tensor([n_steps / (2 * n_neg), n_steps / (2 * n_pos)],
                                  dtype=torch.float)
        else:
            weight = torch.ones(2)
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=weight.to(device),
                                                 ignore_index=IGNORE_INDEX)
        self.batch_size = config.batch_size
        self.lengths = [len(c) for c in chains]

    def batches(self, rng: random.Random) -> list[list[int]]:
        """Length-bucketed batches (:func:`length_bucketed_batches`)."""
        return length_bucketed_batches(self.lengths, self.batch_size, rng)

    def loss(self, logits: Any, batch: dict[str, Any], idx: Sequence[int]) -> Any:
        """Weighted mean cross-entropy over the labelled tokens."""
        return self.loss_fn(logits.float().view(-1, 2), batch["labels"].view(-1))

    def data_info(self) -> dict[str, Any]:
        """``{"pairs": 0}``: this objective uses no chain pairs."""
        return {"pairs": 0}


def objective_for(config: TrainConfig, chains: Sequence[EncodedChain], device: Any,
                  torch: Any) -> Objective:
    """The objective ``config`` asks for (experimental ones only on an explicit flag)."""
    if config.uses_experimental():
        from prm_plugins.experimental.training import experimental_objective

        return experimental_objective(config, chains, device, torch)
    return ClassWeightedLoss(config, chains, device, torch)
