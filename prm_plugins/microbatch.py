"""Coalesce many concurrent async scoring requests into batched scorer calls.

A PRM in a server or an agent fleet gets many small requests at once: one chain each, from
many tasks. Scoring them one by one wastes the batched graph. :class:`MicroBatcher` queues
``await batcher.score(question, steps)`` calls and flushes the queue as one
``prm.score_batch`` call (run in one worker thread, so the event loop never blocks) when
``max_batch`` chains are waiting or the oldest has waited ``max_wait_ms``. Every caller gets
its own result or its own error; a bad chain in a batch fails only its caller (the batch is
retried chain by chain to find it). The queue is bounded (``max_queue``): past it, ``score``
waits for room, so memory stays bounded under overload.

Examples:
    >>> import asyncio
    >>> from prm_plugins import load_prm
    >>> async def main():  # doctest: +SKIP
    ...     async with MicroBatcher(load_prm(), max_batch=32, max_wait_ms=5) as batcher:
    ...         results = await asyncio.gather(*(batcher.score(q, s) for q, s in chains))
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

from prm_plugins.errors import InvalidInputError, PRMError
from prm_plugins.steps import validate_chain
from prm_plugins.types import StepScorer, StepScores

__all__ = ["MicroBatcher", "MicroBatcherStats"]


@dataclass
class MicroBatcherStats:
    """Counters of a :class:`MicroBatcher` (for logs and benchmarks).

    Attributes:
        requests: chains accepted.
        batches: ``score_batch`` calls made (isolation retries included).
        largest_batch: most chains in one call.
        failed: requests answered with an error.
        cancelled: requests whose caller cancelled before the answer.
    """

    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    failed: int = 0
    cancelled: int = 0
    batch_sizes: list[int] = field(default_factory=list, repr=False)


@dataclass
class _Request:
    question: str
    steps: list[str]
    future: asyncio.Future[StepScores]
    queued_at: float


class MicroBatcher:
    """Batch concurrent ``score`` calls into ``score_batch`` calls of one scorer.

    Args:
        prm: any :class:`~prm_plugins.StepScorer` (``score_batch`` is what gets called).
        max_batch: most chains per ``score_batch`` call.
        max_wait_ms: longest a request waits for others to join its batch.
        max_queue: most requests waiting; ``score`` waits for room past it.

    Use it as ``async with`` (or call :meth:`start` and :meth:`aclose`) inside one event
    loop. After :meth:`aclose`, waiting requests are answered and the worker thread is gone.
    """

    def __init__(self, prm: StepScorer, *, max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 4096) -> None:
        if not hasattr(prm, "score_batch"):
            raise InvalidInputError(
                f"MicroBatcher needs a scorer with score_batch, got {type(prm).__name__}"
            )
        for name, value, low in (("max_batch", max_batch, 1), ("max_queue", max_queue, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInputError(f"{name} must be an int >= {low}, got {value!r}")
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or \
                not 0 <= max_wait_ms <= 60_000:
            raise InvalidInputError(f"max_wait_ms must be a number in [0, 60000], "
                                    f"got {max_wait_ms!r}")
        self.prm = prm
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = MicroBatcherStats()
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> MicroBatcher:
        """Start the batching task and its worker thread (idempotent)."""
        if self._closing:
            raise PRMError("this MicroBatcher was closed; make a new one")
        if self._task is None:
            self._queue = asyncio.Queue(self.max_queue)
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="prm-microbatch")
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                 name="prm-microbatcher")
        return self

    async def aclose(self) -> None:
        """Answer what is queued, stop the task and shut the worker thread down."""
        if self._closing:
            return
        self._closing = True
        if self._task is not None and self._queue is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def __aenter__(self) -> MicroBatcher:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    # -- requests -----------------------------------------------------------------------------
    async def score(self, question: str, steps: Sequence[str]) -> StepScores:
        """Score one chain in the next batch; raises what scoring that chain raised.

        Raises:
            InvalidInputError: at once, before queueing, for input that no scorer takes (a
                question that is not text, empty or non-text steps, lone surrogates), so
                bad input never costs the other callers a batch. What only the model can
                judge (a chain over ``max_length``) fails in the batch, and then only its
                own caller.
            PRMError: the batcher is closed.
        """
        if self._closing:
            raise PRMError("this MicroBatcher is closed; make a new one")
        question, checked = validate_chain(question, steps)
        await self.start()
        assert self._queue is not None
        future: asyncio.Future[StepScores] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(question, checked, future, time.monotonic()))
        self.stats.requests += 1
        try:
            return await future
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            future.cancel()  # the batch skips it if it has not run yet
            raise

    # -- the batching task --------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            first = await queue.get()
            batch = [first]
            deadline = first.queued_at + self.max_wait
            while len(batch) < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    while len(batch) < self.max_batch and not queue.empty():
                        batch.append(queue.get_nowait())
                    break
                # Not asyncio.wait_for: on Python 3.11 it can drop an item that arrives just
                # as the timeout fires.
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter}, timeout=timeout)
                if getter in done:
                    batch.append(getter.result())
                    continue
                getter.cancel()
                try:
                    batch.append(await getter)  # it won the race with the cancel
                except asyncio.CancelledError:
                    pass
                break
            try:
                await self._flush(batch)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _flush(self, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.future.done()]  # skip cancelled callers
        if not live:
            return
        try:
            results = await self._in_worker(live)
        except Exception as exc:
            if len(live) == 1:
                self._fail(live[0], exc)
                return
            # One bad chain must not fail the others: score them one by one.
            for r in live:
                if r.future.done():
                    continue
                try:
                    (one,) = await self._in_worker([r])
                except Exception as exc_one:
                    self._fail(r, exc_one)
                else:
                    self._answer(r, one)
            return
        for r, s in zip(live, results, strict=True):
            self._answer(r, s)

    async def _in_worker(self, live: list[_Request]) -> list[StepScores]:
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(live))
        self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        items = [(r.question, r.steps) for r in live]
        loop = asyncio.get_running_loop()
        return list(await loop.run_in_executor(self._executor, self.prm.score_batch, items))

    @staticmethod
    def _answer(r: _Request, result: StepScores) -> None:
        if not r.future.done():
            r.future.set_result(result)

    def _fail(self, r: _Request, exc: BaseException) -> None:
        self.stats.failed += 1
        if not r.future.done():
            r.future.set_exception(exc)
