"""Core result types: :class:`StepScores` and chain-score aggregation."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from prm_plugins.errors import InvalidInputError

__all__ = ["AGGREGATIONS", "Aggregation", "StepScores", "StepScorer", "aggregate_scores"]

Aggregation = Literal["min", "prod", "mean", "last", "geomean"]
AGGREGATIONS: tuple[str, ...] = ("min", "prod", "mean", "last", "geomean")

#: Floor used by the geometric mean so that one zero does not give log(0).
_EPS = 1e-12


def aggregate_scores(
    scores: Sequence[float], how: Aggregation | Callable[[Sequence[float]], float] = "min"
) -> float:
    """Reduce per-step probabilities to one chain score.

    Args:
        scores: per-step probabilities in [0, 1]; must not be empty.
        how: ``"min"``, ``"prod"``, ``"mean"``, ``"last"``, ``"geomean"`` or a callable
            that maps the list of scores to a float.

    Returns:
        The chain score.

    Raises:
        InvalidInputError: if ``scores`` is empty or ``how`` is unknown.

    Examples:
        >>> aggregate_scores([0.9, 0.5, 0.8], "min")
        0.5
        >>> round(aggregate_scores([0.9, 0.5], "prod"), 3)
        0.45
    """
    if len(scores) == 0:
        raise InvalidInputError("cannot aggregate an empty list of step scores")
    if callable(how):
        return float(how(list(scores)))
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    if how == "mean":
        return float(sum(scores) / len(scores))
    if how == "last":
        return float(scores[-1])
    if how == "geomean":
        return float(math.exp(sum(math.log(max(s, _EPS)) for s in scores) / len(scores)))
    raise InvalidInputError(
        f"unknown aggregation {how!r}; use one of {', '.join(AGGREGATIONS)} or a callable"
    )


@dataclass(frozen=True)
class StepScores:
    """Per-step probabilities that each step of a chain is correct.

    Attributes:
        steps: the steps as given (after splitting, before any neutralising).
        scores: one probability per step, in the same order.
        question: the question the chain answers.
        meta: free-form details from the scorer (model name, windows used, ...). The ONNX
            scorer records there what rendering did to the text: see
            ``PRMFormat.step_notes`` (``neutralised_steps``, ``tagged_steps``,
            ``upstream_steps`` for Skywork's multi-line steps).

    Examples:
        >>> s = StepScores(steps=["a", "b", "c"], scores=[0.9, 0.2, 0.7])
        >>> s.min, s.last, s.first_error(0.5), s.weakest_step
        (0.2, 0.7, 1, 1)
    """

    steps: list[str]
    scores: list[float]
    question: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.scores):
            raise InvalidInputError(
                f"StepScores needs one score per step: got {len(self.steps)} steps and "
                f"{len(self.scores)} scores"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def min(self) -> float:
        """The lowest step score (the usual PRM chain score)."""
        return aggregate_scores(self.scores, "min")

    @property
    def prod(self) -> float:
        """The product of step scores."""
        return aggregate_scores(self.scores, "prod")

    @property
    def mean(self) -> float:
        """The mean step score."""
        return aggregate_scores(self.scores, "mean")

    @property
    def last(self) -> float:
        """The last step's score (outcome-style scoring)."""
        return aggregate_scores(self.scores, "last")

    @property
    def geomean(self) -> float:
        """The geometric mean of the step scores."""
        return aggregate_scores(self.scores, "geomean")

    def aggregate(
        self, how: Aggregation | Callable[[Sequence[float]], float] = "min"
    ) -> float:
        """Chain score under ``how``; see :func:`aggregate_scores`."""
        return aggregate_scores(self.scores, how)

    def first_error(self, threshold: float = 0.5) -> int | None:
        """Index (0-based) of the first step scored below ``threshold``, or ``None``.

        Raises:
            InvalidInputError: if ``threshold`` is outside [0, 1].
        """
        _check_threshold(threshold)
        for i, s in enumerate(self.scores):
            if s < threshold:
                return i
        return None

    @property
    def weakest_step(self) -> int:
        """Index (0-based) of the lowest-scored step; the first one on ties."""
        if not self.scores:
            raise InvalidInputError("an empty chain has no weakest step")
        return min(range(len(self.scores)), key=self.scores.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: question, steps and step_scores."""
        return {"question": self.question, "steps": list(self.steps),
                "step_scores": [float(s) for s in self.scores]}


def _check_threshold(threshold: float) -> None:
    if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
        raise InvalidInputError(f"threshold must be a number in [0, 1], got {threshold!r}")


@runtime_checkable
class StepScorer(Protocol):
    """What strategies and adapters need from a PRM: the scorer contract."""

    def score(self, question: str, steps: Sequence[str]) -> StepScores: ...

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]: ...

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores: ...
