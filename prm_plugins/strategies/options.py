"""The options of each strategy, validated once, without a generator or a scorer.

Each strategy keeps its options in one frozen dataclass: :class:`BestOfNOptions`,
:class:`AdaptiveBestOfNOptions`, :class:`SelfCritiqueOptions`, :class:`SearchOptions`.
Building one checks every option and raises :class:`~prm_plugins.errors.InvalidInputError`
naming the bad one, so an adapter can refuse a bad option when it is configured (before any
model is called) and then hand the options to the strategy
(``BestOfN.from_options(generator, prm, options)``) instead of restating them.

Examples:
    >>> opts = BestOfNOptions(n=8, threshold=0.9)
    >>> opts.n, opts.threshold, opts.retry_policy.max_attempts
    (8, 0.9, 3)
    >>> try:
    ...     SelfCritiqueOptions(max_rounds=-1)
    ... except InvalidInputError as exc:
    ...     print(exc)
    max_rounds must be an int >= 0, got -1
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from prm_plugins.budget import Budget
from prm_plugins.errors import InvalidInputError
from prm_plugins.plans import RetryPolicy
from prm_plugins.types import Aggregation, Splitter
from prm_plugins.validation import (
    check_aggregate,
    check_count,
    check_max_concurrency,
    check_split,
    check_threshold,
)

__all__ = [
    "SELECTIONS",
    "AdaptiveBestOfNOptions",
    "BestOfNOptions",
    "RedoFrom",
    "SearchOptions",
    "SelfCritiqueOptions",
    "Selection",
]

#: How :class:`~prm_plugins.strategies.BestOfN` picks among scored candidates.
Selection = Literal["auto", "weighted_vote", "top_score"]
SELECTIONS: tuple[str, ...] = ("auto", "weighted_vote", "top_score")
#: Where :class:`~prm_plugins.strategies.SelfCritique` redoes a failing solution from.
RedoFrom = Literal["first_failing", "weakest"]


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # normalise a field of a frozen dataclass


@dataclass(frozen=True)
class BestOfNOptions:
    """Options of :class:`~prm_plugins.strategies.BestOfN` (see there for each one).

    ``threshold`` becomes a float, ``retry=None`` the default :class:`RetryPolicy`.
    """

    n: int = 4
    aggregate: Aggregation = "min"
    threshold: float | None = None
    max_concurrency: int = 4
    split: Splitter = "auto"
    retry: RetryPolicy | None = None
    selection: Selection = "auto"
    budget: Budget | None = None

    @property
    def retry_policy(self) -> RetryPolicy:
        """:attr:`retry`, never ``None`` (it is set to ``RetryPolicy()`` when not given)."""
        return self.retry or RetryPolicy()

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise InvalidInputError(
                f"selection must be one of {', '.join(map(repr, SELECTIONS))}; "
                f"got {self.selection!r}"
            )
        check_count(self.n, "n", hint=" (candidates to sample)")
        _set(self, "aggregate", check_aggregate(self.aggregate))
        _set(self, "threshold", check_threshold(self.threshold, optional=True))
        check_max_concurrency(self.max_concurrency)
        _set(self, "split", check_split(self.split))
        _set(self, "retry", RetryPolicy.check(self.retry) or RetryPolicy())
        Budget.check(self.budget)


@dataclass(frozen=True)
class SelfCritiqueOptions:
    """Options of :class:`~prm_plugins.strategies.SelfCritique` (see there for each one).

    ``threshold`` becomes a float, ``retry=None`` the default :class:`RetryPolicy`.
    """

    threshold: float = 0.5
    max_rounds: int = 2
    aggregate: Aggregation = "min"
    split: Splitter = "auto"
    redo_from: RedoFrom = "first_failing"
    return_best: bool = True
    retry: RetryPolicy | None = None
    budget: Budget | None = None

    @property
    def retry_policy(self) -> RetryPolicy:
        """:attr:`retry`, never ``None`` (it is set to ``RetryPolicy()`` when not given)."""
        return self.retry or RetryPolicy()

    def __post_init__(self) -> None:
        check_count(self.max_rounds, "max_rounds", minimum=0)
        if self.redo_from not in ("first_failing", "weakest"):
            raise InvalidInputError(
                f"redo_from must be 'first_failing' or 'weakest', got {self.redo_from!r}"
            )
        _set(self, "retry", RetryPolicy.check(self.retry) or RetryPolicy())
        _set(self, "threshold", check_threshold(self.threshold))
        _set(self, "aggregate", check_aggregate(self.aggregate))
        _set(self, "split", check_split(self.split))
        Budget.check(self.budget)


@dataclass(frozen=True)
class SearchOptions:
    """Options of :class:`~prm_plugins.strategies.StepBeamSearch` and
    :class:`~prm_plugins.strategies.DVTS` (see there for each one).

    ``retry=None`` becomes the default :class:`RetryPolicy`; ``is_complete=None`` stays
    ``None`` (the strategy then uses :func:`~prm_plugins.strategies.has_final_answer`).
    """

    n: int = 8
    beam_width: int = 2
    max_steps: int = 10
    aggregate: Aggregation = "last"
    is_complete: Callable[[str], bool] | None = None
    max_concurrency: int = 4
    retry: RetryPolicy | None = None
    budget: Budget | None = None

    @property
    def retry_policy(self) -> RetryPolicy:
        """:attr:`retry`, never ``None`` (it is set to ``RetryPolicy()`` when not given)."""
        return self.retry or RetryPolicy()

    def __post_init__(self) -> None:
        n, beam_width = self.n, self.beam_width
        for name, value in (("n", n), ("beam_width", beam_width),
                            ("max_steps", self.max_steps)):
            check_count(value, name)
        if beam_width > n:
            raise InvalidInputError(
                f"beam_width ({beam_width}) must not exceed n ({n}): each of the n // beam_width "
                "beams proposes beam_width next steps. Lower beam_width or raise n."
            )
        if n % beam_width:
            raise InvalidInputError(
                f"n ({n}) must be a multiple of beam_width ({beam_width}) so that the n "
                f"candidates split into n // beam_width beams; e.g. n={n - n % beam_width} "
                f"or n={n - n % beam_width + beam_width}."
            )
        if self.is_complete is not None and not callable(self.is_complete):
            raise InvalidInputError(
                f"is_complete must be a callable step -> bool, got {self.is_complete!r}"
            )
        _set(self, "retry", RetryPolicy.check(self.retry) or RetryPolicy())
        _set(self, "aggregate", check_aggregate(self.aggregate))
        check_max_concurrency(self.max_concurrency)
        Budget.check(self.budget)


@dataclass(frozen=True)
class AdaptiveBestOfNOptions:
    """Options of :class:`~prm_plugins.strategies.AdaptiveBestOfN` (see there for each one).

    ``confidence`` becomes a float, ``retry=None`` the default :class:`RetryPolicy`;
    ``extractor=None`` stays ``None`` (the strategy then uses
    :func:`prm_plugins.answers.extract_answer`).

    Examples:
        >>> AdaptiveBestOfNOptions(max_n=16, round_size=4).round_size
        4
        >>> try:
        ...     AdaptiveBestOfNOptions(max_n=4, round_size=8)
        ... except InvalidInputError as exc:
        ...     print(str(exc)[:46])
        round_size (8) must not exceed max_n (4): a ro
    """

    max_n: int = 16
    round_size: int = 4
    confidence: float | None = None
    min_votes: int = 4
    aggregate: Aggregation = "min"
    extractor: Callable[[str], str | None] | None = None
    max_concurrency: int = 4
    split: Splitter = "auto"
    retry: RetryPolicy | None = None
    budget: Budget | None = None

    @property
    def retry_policy(self) -> RetryPolicy:
        """:attr:`retry`, never ``None`` (it is set to ``RetryPolicy()`` when not given)."""
        return self.retry or RetryPolicy()

    def __post_init__(self) -> None:
        check_count(self.max_n, "max_n", hint=" (most candidates to sample)")
        check_count(self.round_size, "round_size", hint=" (candidates per round)")
        check_count(self.min_votes, "min_votes")
        if self.round_size > self.max_n:
            raise InvalidInputError(
                f"round_size ({self.round_size}) must not exceed max_n ({self.max_n}): a round "
                "draws round_size candidates and at most max_n are drawn in all"
            )
        if self.confidence is not None:
            c = self.confidence
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.5 < c <= 1.0:
                raise InvalidInputError(
                    f"confidence must be a number in (0.5, 1] (the leader's share of the vote "
                    f"weight that stops sampling) or None, got {c!r}"
                )
            _set(self, "confidence", float(c))
        if self.extractor is not None and not callable(self.extractor):
            raise InvalidInputError(
                f"extractor must be a callable text -> answer or None, got {self.extractor!r}"
            )
        _set(self, "aggregate", check_aggregate(self.aggregate))
        check_max_concurrency(self.max_concurrency)
        _set(self, "split", check_split(self.split))
        _set(self, "retry", RetryPolicy.check(self.retry) or RetryPolicy())
        Budget.check(self.budget)
