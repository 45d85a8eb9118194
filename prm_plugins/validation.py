"""One copy of each option check shared by strategies, adapters and pipelines.

Each ``check_*`` function returns the value it accepts (normalised where it says so) or
raises :class:`~prm_plugins.errors.InvalidInputError` naming what was wrong, what was
received and how to fix it. Strategies, the LangChain and LlamaIndex adapters, the TRL
reward function and the labelling pipelines all call these, so one option is refused
with the same words everywhere.

Examples:
    >>> check_threshold(0.5), check_aggregate("min"), check_split("auto")
    (0.5, 'min', 'auto')
    >>> try:
    ...     check_threshold(1.5)
    ... except InvalidInputError as exc:
    ...     print(exc)
    threshold must be a number in [0, 1], got 1.5
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from prm_plugins.errors import InvalidInputError, PRMError
from prm_plugins.steps import SPLIT_MODES
from prm_plugins.types import AGGREGATIONS, Aggregation, Splitter, StepScores

__all__ = [
    "ASYNC_METHOD",
    "check_aggregate",
    "check_count",
    "check_generator",
    "check_max_concurrency",
    "check_question",
    "check_scorer",
    "check_seconds",
    "check_split",
    "check_step_scores",
    "check_threshold",
]

#: Generator methods and their async twins (see :mod:`prm_plugins.generators`).
ASYNC_METHOD: dict[str, str] = {
    "sample": "asample",
    "propose_next_steps": "apropose_next_steps",
    "revise": "arevise",
}


def check_aggregate(aggregate: object) -> Aggregation:
    """Return ``aggregate`` or raise :class:`InvalidInputError` for an unknown one."""
    if callable(aggregate) or aggregate in AGGREGATIONS:
        return aggregate
    raise InvalidInputError(
        f"unknown aggregate {aggregate!r}; use one of {', '.join(AGGREGATIONS)} or a callable "
        "that maps a list of step scores to a float"
    )


def check_split(split: object) -> Splitter:
    """Return ``split`` or raise :class:`InvalidInputError` for an unknown mode."""
    if callable(split) or (isinstance(split, str) and split in SPLIT_MODES and split != "regex"):
        return split
    raise InvalidInputError(
        f"unknown split {split!r}; use one of "
        f"{', '.join(repr(m) for m in SPLIT_MODES if m != 'regex')} or a callable "
        "text -> list of steps (e.g. functools.partial(split_steps, mode='regex', pattern=...))"
    )


def check_threshold(
    threshold: object, *, optional: bool = False, name: str = "threshold"
) -> float | None:
    """Return ``threshold`` as a float (``None`` allowed when ``optional``).

    A bool is refused: ``True`` is an int to Python, never a pass mark a user meant.
    ``name`` is how the message names the option (e.g. ``"--threshold"`` for a CLI flag).
    """
    if threshold is None and optional:
        return None
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0.0 <= float(threshold) <= 1.0
    ):
        raise InvalidInputError(f"{name} must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def check_question(question: object) -> str:
    """Return ``question`` or raise :class:`InvalidInputError` unless it is a non-blank str."""
    if not isinstance(question, str) or not question.strip():
        raise InvalidInputError(
            f"question must be a non-empty str; received {type(question).__name__} "
            f"{str(question)[:80]!r}"
        )
    return question


def check_count(value: object, name: str, *, minimum: int = 1, hint: str = "",
                optional: bool = False) -> int | None:
    """Return ``value`` if it is an int >= ``minimum`` (a bool is refused).

    Args:
        value: the option's value.
        name: the option's name, as the user wrote it.
        minimum: the smallest value allowed.
        hint: words put after the bound in the message, e.g. ``" (candidates to sample)"``.
        optional: ``None`` is accepted (and returned); the message then says "or None".

    Examples:
        >>> check_count(4, "n")
        4
        >>> try:
        ...     check_count(0, "max_rounds", minimum=1)
        ... except InvalidInputError as exc:
        ...     print(exc)
        max_rounds must be an int >= 1, got 0
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        alt = " or None" if optional else ""
        raise InvalidInputError(f"{name} must be an int >= {minimum}{hint}{alt}, got {value!r}")
    return value


def check_seconds(value: object, name: str, *, optional: bool = False) -> float | None:
    """Return ``value`` as a float if it is a finite number of seconds > 0.

    A bool is refused; ``None`` is accepted (and returned) when ``optional``.

    Examples:
        >>> check_seconds(2, "seconds")
        2.0
        >>> try:
        ...     check_seconds(0, "Budget.seconds", optional=True)
        ... except InvalidInputError as exc:
        ...     print(exc)
        Budget.seconds must be a finite number of seconds > 0 or None, got 0
    """
    if value is None and optional:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not value > 0):
        alt = " or None" if optional else ""
        raise InvalidInputError(
            f"{name} must be a finite number of seconds > 0{alt}, got {value!r}")
    return float(value)


def check_max_concurrency(max_concurrency: object) -> int:
    """Return ``max_concurrency`` unless it is not an int >= 1."""
    checked = check_count(max_concurrency, "max_concurrency")
    assert checked is not None
    return checked


def check_scorer(prm: object) -> None:
    """Raise :class:`InvalidInputError` unless ``prm`` has ``score_batch``."""
    if not callable(getattr(prm, "score_batch", None)):
        raise InvalidInputError(
            f"prm must implement the StepScorer protocol (score, score_batch, ascore); "
            f"received {type(prm).__name__}. Load one with prm_plugins.load_prm()."
        )


def check_generator(generator: object, methods: Sequence[str], *, use_async: bool) -> None:
    """Raise :class:`InvalidInputError` unless ``generator`` has what a strategy calls.

    Args:
        generator: the generator object.
        methods: sync method names the strategy calls (``"sample"``, ...).
        use_async: the async form accepts the async twin (``asample``) or the sync method.
    """
    for name in methods:
        async_name = ASYNC_METHOD[name]
        has_sync = callable(getattr(generator, name, None))
        has_async = callable(getattr(generator, async_name, None))
        if use_async and not (has_sync or has_async):
            raise InvalidInputError(
                f"this strategy needs the generator to have {name}() or {async_name}(); "
                f"received {type(generator).__name__}, which has neither. Implement the "
                "prm_plugins.generators.Generator or AsyncGenerator protocol."
            )
        if not use_async and not has_sync:
            hint = (
                f" It has {async_name}(): call the strategy's async form (arun / the a-prefixed "
                "function) instead."
                if has_async
                else " Implement the prm_plugins.generators.Generator protocol."
            )
            raise InvalidInputError(
                f"this strategy needs the generator to have {name}(); received "
                f"{type(generator).__name__}, which has no such method.{hint}"
            )


def check_step_scores(
    scored: object, steps: Sequence[str], *, scorer: object = None
) -> StepScores:
    """Return ``scored`` if it holds one finite probability in [0, 1] per step of ``steps``.

    A scorer's answer is checked before any strategy ranks by it: ``min`` over
    ``[nan, 0.9]`` is ``nan`` but over ``[0.9, nan]`` is ``0.9``, so an unchecked NaN picks
    silently and at random.

    Raises:
        PRMError: naming the scorer, the step and the value received.

    Examples:
        >>> try:
        ...     check_step_scores(StepScores(["a"], [float("nan")]), ["a"])
        ... except PRMError as exc:
        ...     print(str(exc)[:39])
        the scorer returned nan for step 1 of 1
    """
    who = "the scorer" if scorer is None else f"the scorer {type(scorer).__name__}"
    if not isinstance(scored, StepScores):
        raise PRMError(f"{who} returned {type(scored).__name__} {str(scored)[:80]!r} for a "
                       "chain; a StepScorer returns one StepScores per chain")
    if len(scored.scores) != len(steps):
        raise PRMError(f"{who} returned {len(scored.scores)} step scores for a chain of "
                       f"{len(steps)} steps; a StepScorer returns one score per step")
    for i, s in enumerate(scored.scores):
        if (isinstance(s, bool) or not isinstance(s, numbers.Real)
                or not math.isfinite(s) or not 0.0 <= s <= 1.0):
            raise PRMError(
                f"{who} returned {s!r} for step {i + 1} of {len(steps)}; step scores must be "
                "finite probabilities in [0, 1] (a model that outputs NaN, or logits instead "
                "of probabilities?)"
            )
    return scored
