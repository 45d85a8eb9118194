"""The shared vocabulary: :class:`StepScores`, the :class:`StepScorer` contract, and the
:data:`Aggregation` and :data:`Splitter` option types.

One name per idea. Two older names stay as aliases for one release: ``Aggregate`` (from
``prm_plugins.strategies.verify``) is :data:`Aggregation`, and ``RewardSplitter`` (from
``prm_plugins.rewards``) is :data:`Splitter`. The keyword that takes a :data:`Splitter` is
``split=`` in strategies and the LangChain/LlamaIndex adapters, and ``splitter=`` in
:mod:`prm_plugins.rewards` and the TRL reward function; new code uses ``split=``, and the
reward functions keep ``splitter=`` working (renaming a keyword would break callers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from prm_plugins.errors import InvalidInputError

__all__ = [
    "AGGREGATIONS",
    "Aggregate",
    "Aggregation",
    "AggregationName",
    "Splitter",
    "StepScores",
    "StepScorer",
    "aggregate_scores",
]

#: The built-in chain-score aggregations, by name.
AggregationName = Literal["min", "prod", "mean", "last", "geomean"]
AGGREGATIONS: tuple[str, ...] = ("min", "prod", "mean", "last", "geomean")

#: How step scores become one chain score: a name from :data:`AGGREGATIONS` or a callable
#: that maps the list of step scores to a float. (Until 0.1 this name meant only the
#: names, now :data:`AggregationName`; strings are checked at run time either way.)
Aggregation = str | Callable[[Sequence[float]], float]
#: Old name of :data:`Aggregation` (``prm_plugins.strategies.verify.Aggregate``); kept as an
#: alias for one release. New code writes ``Aggregation``.
Aggregate = Aggregation

#: How answer text is cut into steps: a :func:`prm_plugins.split_steps` mode or a callable
#: ``text -> steps``. Passed as ``split=`` (strategies, adapters) or ``splitter=`` (reward
#: functions; ``prm_plugins.rewards.RewardSplitter`` is an alias of this type).
Splitter = str | Callable[[str], Sequence[str]]

#: Floor used by the geometric mean so that one zero does not give log(0).
_EPS = 1e-12


def aggregate_scores(scores: Sequence[float], how: Aggregation = "min") -> float:
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

    def aggregate(self, how: Aggregation = "min") -> float:
        """Chain score under ``how``; see :func:`aggregate_scores`."""
        return aggregate_scores(self.scores, how)

    def first_error(self, threshold: float = 0.5) -> int | None:
        """Index (0-based) of the first step scored below ``threshold``, or ``None``.

        Raises:
            InvalidInputError: if ``threshold`` is outside [0, 1].
        """
        from prm_plugins.validation import check_threshold  # validation imports this module

        check_threshold(threshold)
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


@runtime_checkable
class StepScorer(Protocol):
    """What strategies and adapters need from a PRM: the scorer contract.

    Every scorer (the ONNX one, the hybrid calculator scorer, the remote Ray client)
    implements all four methods. ``score_batch`` returns one :class:`StepScores` per chain,
    in order, with one finite probability in [0, 1] per step.
    """

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        """Score one chain."""
        ...

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """Score several ``(question, steps)`` chains; one result per chain, in order."""
        ...

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        """Async :meth:`score`."""
        ...

    async def ascore_batch(
        self, items: Sequence[tuple[str, Sequence[str]]]
    ) -> list[StepScores]:
        """Async :meth:`score_batch`."""
        ...
