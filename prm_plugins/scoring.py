"""Score a batch, and when the batch fails, score its items one by one.

One hostile chain (too long, text the tokenizer refuses, a scorer bug it triggers) must not
fail the other chains that happened to share its batch. :func:`score_isolated` (and its
async twin :func:`ascore_isolated`) is the one place that logic lives: the strategies'
plan runners, the :class:`~prm_plugins.microbatch.MicroBatcher`, the Ray Serve deployment
and the ``prm score`` command all call it, each saying which errors it isolates and what a
failed item reports.

The rules:

1. The batch is scored with one call. When it returns, its results are handed back as they
   are (:attr:`IsolatedScores.batch_error` is ``None``); checking them is the caller's job.
2. An error of a type in ``propagate`` is raised as it is: it concerns the whole batch
   (e.g. a scorer that broke its contract, or the caller's own validation error).
3. Any other :class:`Exception` is the batch's error. With one item, it is that item's
   answer. With more, each item is scored alone (``score_one``), and its result or error
   is its answer; an item for which ``skip`` says so is not scored (its answer is
   ``None``), and an error of a type in ``stop_on`` answers its item and every item after
   it (a scorer that hangs is not waited out once per item).

Examples:
    >>> def score_batch(items):
    ...     if "bad" in items:
    ...         raise ValueError("cannot score 'bad'")
    ...     return [len(s) for s in items]
    >>> score_isolated(score_batch, ["ab", "abc"]).results
    [2, 3]
    >>> out = score_isolated(score_batch, ["ab", "bad", "c"])
    >>> out.results[0], type(out.results[1]).__name__, out.results[2], out.isolated
    (2, 'ValueError', 1, True)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prm_plugins.errors import ScorerOutputError

__all__ = ["IsolatedScores", "ascore_isolated", "score_isolated"]

T = TypeVar("T")
R = TypeVar("R")

#: Exception types, as the ``propagate`` and ``stop_on`` arguments take them.
Errors = tuple[type[BaseException], ...]


@dataclass
class IsolatedScores(Generic[R]):
    """What :func:`score_isolated` found.

    Attributes:
        results: when the batch call returned, its results as they are; after a failed
            batch, one entry per item: its result, its exception, or ``None`` for an item
            that ``skip`` left out.
        batch_error: what the batch call raised, or ``None`` when it returned.
    """

    results: list[Any]
    batch_error: BaseException | None = None

    @property
    def isolated(self) -> bool:
        """Whether the batch failed (so :attr:`results` holds one answer per item)."""
        return self.batch_error is not None


def _only(results: Iterable[R]) -> R:
    got = list(results)
    if len(got) != 1:
        raise ScorerOutputError(
            f"the scorer's score_batch returned {len(got)} results for 1 chain; a StepScorer "
            "must return one StepScores per chain"
        )
    return got[0]


def _tell(on_answer: Callable[[int, Any], None] | None, index: int, answer: Any) -> None:
    if on_answer is not None:
        on_answer(index, answer)


def _stop(results: list[Any], n: int, exc: Exception,
          on_answer: Callable[[int, Any], None] | None) -> None:
    """``exc`` answers the item that raised it and every item after it."""
    first = len(results) - 1
    results.extend([exc] * (n - len(results)))
    for index in range(first, n):
        _tell(on_answer, index, exc)


def score_isolated(
    score_batch: Callable[[list[T]], Iterable[R]],
    items: Sequence[T],
    *,
    score_one: Callable[[T], R] | None = None,
    propagate: Errors = (),
    stop_on: Errors = (),
    skip: Callable[[T], bool] | None = None,
    on_batch_error: Callable[[BaseException, int], None] | None = None,
    on_answer: Callable[[int, Any], None] | None = None,
) -> IsolatedScores[R]:
    """Score ``items`` in one call; if it fails, score them one by one (rules: module docs).

    Args:
        score_batch: scores a list of items (e.g. ``prm.score_batch``).
        items: what to score; an empty sequence is never passed to ``score_batch``.
        score_one: scores one item after a failed batch; default: the only result of
            ``score_batch([item])`` (a :class:`~prm_plugins.errors.ScorerOutputError` when
            it does not return exactly one).
        propagate: batch errors raised as they are, not isolated.
        stop_on: item errors that also answer every later item.
        skip: items not scored again after a failed batch (answered ``None``).
        on_batch_error: called with the batch's error and the number of items before
            they are scored one by one (for logging).
        on_answer: after a failed batch, called with ``(index, answer)`` as soon as an
            item's answer (result or exception) is known, so a caller can hand it on
            before the other items are scored (not called for skipped items).

    Returns:
        An :class:`IsolatedScores`.
    """
    if not items:
        return IsolatedScores([])
    batch = list(items)
    try:
        return IsolatedScores(list(score_batch(batch)))
    except propagate:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad item must not sink the others
        if on_batch_error is not None:
            on_batch_error(exc, len(batch))
        if len(batch) == 1:
            _tell(on_answer, 0, exc)
            return IsolatedScores([exc], exc)
        one = score_one or (lambda item: _only(score_batch([item])))
        results: list[Any] = []
        for item in batch:
            if skip is not None and skip(item):
                results.append(None)
                continue
            try:
                results.append(one(item))
            except Exception as exc_one:  # noqa: BLE001 - that item's own answer
                results.append(exc_one)
                if isinstance(exc_one, stop_on):
                    _stop(results, len(batch), exc_one, on_answer)
                    break
            _tell(on_answer, len(results) - 1, results[-1])
        return IsolatedScores(results, exc)


async def ascore_isolated(
    score_batch: Callable[[list[T]], Awaitable[Iterable[R]]],
    items: Sequence[T],
    *,
    score_one: Callable[[T], Awaitable[R]] | None = None,
    propagate: Errors = (),
    stop_on: Errors = (),
    skip: Callable[[T], bool] | None = None,
    on_batch_error: Callable[[BaseException, int], None] | None = None,
    on_answer: Callable[[int, Any], None] | None = None,
) -> IsolatedScores[R]:
    """Async :func:`score_isolated`: ``score_batch`` and ``score_one`` are awaited.

    Items are scored one at a time after a failed batch (in order, as the sync form does).

    Examples:
        >>> import asyncio
        >>> async def score_batch(items):
        ...     if len(items) > 1:
        ...         raise RuntimeError("batch failed")
        ...     return [items[0] * 2]
        >>> asyncio.run(ascore_isolated(score_batch, [1, 2])).results
        [2, 4]
    """
    if not items:
        return IsolatedScores([])
    batch = list(items)
    try:
        return IsolatedScores(list(await score_batch(batch)))
    except propagate:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad item must not sink the others
        if on_batch_error is not None:
            on_batch_error(exc, len(batch))
        if len(batch) == 1:
            _tell(on_answer, 0, exc)
            return IsolatedScores([exc], exc)
        results: list[Any] = []
        for item in batch:
            if skip is not None and skip(item):
                results.append(None)
                continue
            try:
                if score_one is None:
                    results.append(_only(await score_batch([item])))
                else:
                    results.append(await score_one(item))
            except Exception as exc_one:  # noqa: BLE001 - that item's own answer
                results.append(exc_one)
                if isinstance(exc_one, stop_on):
                    _stop(results, len(batch), exc_one, on_answer)
                    break
            _tell(on_answer, len(results) - 1, results[-1])
        return IsolatedScores(results, exc)
