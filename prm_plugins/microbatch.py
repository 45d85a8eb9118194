"""Coalesce many concurrent async scoring requests into batched scorer calls.

A PRM in a server or an agent fleet gets many small requests at once: one chain each, from
many tasks. Scoring them one by one wastes the batched graph. :class:`MicroBatcher` queues
``await batcher.score(question, steps)`` calls and flushes the queue as one
``prm.score_batch`` call (run in a worker thread, so the event loop never blocks) when
``max_batch`` chains are waiting or the oldest has waited ``max_wait_ms``. The queue is
bounded (``max_queue``): past it, ``score`` waits for room, so memory stays bounded under
overload.

Every caller gets its own result or its own error, whatever the scorer does:

- a bad chain in a batch fails only its caller (the batch is retried chain by chain to find
  it);
- a scorer that returns the wrong number of results, or something that is not a list, fails
  that batch's callers with :class:`ScorerOutputError` (naming the scorer and the counts); a
  result that is not a :class:`~prm_plugins.StepScores` with one finite probability in
  [0, 1] per step fails its own caller the same way;
- a scorer call that does not return within ``batch_timeout_s`` (60 s by default) fails its
  callers with :class:`ScorerTimeoutError`. A thread cannot be interrupted, so the stuck call
  is left running in its (daemon) thread and the next batch goes to a fresh worker thread;
  once ``max_stuck_calls`` calls are stuck at the same time the batcher closes itself and
  says why (:class:`MicroBatcherClosedError`);
- :meth:`MicroBatcher.aclose` returns within its ``timeout`` (``batch_timeout_s`` by
  default) plus at most about a second, even over a hung scorer; what it could not answer
  in time gets :class:`MicroBatcherClosedError`.

A batcher belongs to the event loop it was started in: asyncio queues and futures are bound
to one loop, so use from another running loop raises :class:`MicroBatcherLoopError` at once
(make one batcher per loop; they can share one scorer). Once that loop is closed (a second
``asyncio.run``), the batcher moves to the new loop. Worker threads are daemon threads and
stop when the batcher is closed or garbage collected, so a forgotten batcher never keeps the
process alive.

There is no synchronous API: call the scorer's own ``score``/``score_batch`` from
synchronous code.

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
import itertools
import logging
import math
import numbers
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from prm_plugins.errors import (
    InvalidInputError,
    MicroBatcherClosedError,
    MicroBatcherLoopError,
    PRMError,
    ScorerOutputError,
    ScorerTimeoutError,
)
from prm_plugins.scoring import ascore_isolated
from prm_plugins.steps import validate_chain
from prm_plugins.types import StepScorer, StepScores
from prm_plugins.validation import check_count
from prm_plugins.worker_threads import WorkerThread, stop_workers

__all__ = [
    "MicroBatcher",
    "MicroBatcherStats",
    "MicroBatcherClosedError",
    "MicroBatcherLoopError",
    "ScorerOutputError",
    "ScorerTimeoutError",
]

logger = logging.getLogger(__name__)

_DEFAULT_BATCH_TIMEOUT_S = 60.0
_THREAD_EXIT_WAIT_S = 1.0  # how long aclose waits for an idle worker thread to end
_ids = itertools.count(1)
#: Errors of a one-chain call that answer the rest of the batch too (the scorer hangs).
_HUNG = (ScorerTimeoutError, MicroBatcherClosedError)


#: How many recent batch sizes :class:`MicroBatcherStats` keeps.
BATCH_SIZE_HISTORY = 10_000


@dataclass
class MicroBatcherStats:
    """Counters of a :class:`MicroBatcher` (for logs and benchmarks).

    Attributes:
        requests: chains accepted.
        batches: ``score_batch`` calls made (isolation retries included).
        largest_batch: most chains in one call.
        failed: requests answered with an error.
        cancelled: requests whose caller cancelled before the answer.
        timed_out: requests answered with :class:`ScorerTimeoutError`.
        bad_results: requests answered with :class:`ScorerOutputError`.
        batch_sizes: chains per ``score_batch`` call, for the most recent
            :data:`BATCH_SIZE_HISTORY` calls (bounded, so a long-running server's stats do
            not grow without end).
    """

    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    failed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    bad_results: int = 0
    batch_sizes: deque[int] = field(
        default_factory=lambda: deque(maxlen=BATCH_SIZE_HISTORY), repr=False)


@dataclass(eq=False)
class _Request:
    question: str
    steps: list[str]
    future: asyncio.Future[StepScores]
    queued_at: float
    owner: asyncio.Task[None] | None = None  # the batching task that answers it


# -- the batcher ------------------------------------------------------------------------------

class MicroBatcher:
    """Batch concurrent ``score`` calls into ``score_batch`` calls of one scorer.

    Args:
        prm: any :class:`~prm_plugins.StepScorer` (``score_batch`` is what gets called).
        max_batch: most chains per ``score_batch`` call.
        max_wait_ms: longest a request waits for others to join its batch.
        max_queue: most requests waiting; ``score`` waits for room past it.
        batch_timeout_s: longest one ``score_batch`` call may take before its callers get
            :class:`ScorerTimeoutError` (default 60 s; ``None`` waits forever, which lets a
            hung scorer hang its callers). Raise it for slow remote scorers.
        max_stuck_calls: how many timed-out scorer calls may still be running at once before
            the batcher closes itself (each one holds a thread). ``1`` closes it at the first
            timeout.

    Use it as ``async with`` (or call :meth:`start` and :meth:`aclose`) inside one event
    loop. After :meth:`aclose`, every request has been answered and the worker thread is
    gone (or, if the scorer hung, left to end on its own as a daemon thread).

    Thread-safety: the scorer is called from one worker thread at a time, except that a
    timed-out call that later returns may overlap the next batch on a fresh worker.
    """

    def __init__(self, prm: StepScorer, *, max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 4096,
                 batch_timeout_s: float | None = _DEFAULT_BATCH_TIMEOUT_S,
                 max_stuck_calls: int = 2) -> None:
        if not callable(getattr(prm, "score_batch", None)):
            raise InvalidInputError(
                f"MicroBatcher needs a scorer with score_batch, got {type(prm).__name__}"
            )
        for name, value, low in (("max_batch", max_batch, 1), ("max_queue", max_queue, 1),
                                 ("max_stuck_calls", max_stuck_calls, 1)):
            check_count(value, name, minimum=low)
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or \
                not 0 <= max_wait_ms <= 60_000:
            raise InvalidInputError(f"max_wait_ms must be a number in [0, 60000], "
                                    f"got {max_wait_ms!r}")
        if batch_timeout_s is not None and not _positive_seconds(batch_timeout_s):
            raise InvalidInputError(f"batch_timeout_s must be a finite number of seconds > 0 "
                                    f"(or None for no limit), got {batch_timeout_s!r}")
        self.prm = prm
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.batch_timeout_s = None if batch_timeout_s is None else float(batch_timeout_s)
        self.max_stuck_calls = max_stuck_calls
        self.stats = MicroBatcherStats()
        self._name = f"prm-microbatch-{next(_ids)}"
        self._scorer_name = f"{type(prm).__qualname__}.score_batch"
        self._lock = threading.Lock()  # guards binding to a loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = ""
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiting: set[_Request] = set()
        self._worker: WorkerThread | None = None
        self._workers: list[WorkerThread] = []  # all live ones; shared with the finalizer
        self._stuck: list[WorkerThread] = []
        self._closed = False  # by aclose
        self._broken = ""  # why the batcher closed itself (a hung scorer), or ""
        self._finalizer = weakref.finalize(self, stop_workers, self._workers)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> MicroBatcher:
        """Start the batching task in the running loop (idempotent).

        Raises:
            MicroBatcherClosedError: the batcher is closed.
            MicroBatcherLoopError: it is running in another event loop.
        """
        self._check_open()
        self._ensure_started(asyncio.get_running_loop())
        return self

    async def aclose(self, timeout: float | None = None) -> None:
        """Answer what is queued, stop the batching task and the worker thread.

        Args:
            timeout: most seconds to wait for queued and running requests to be answered;
                default ``batch_timeout_s`` (60 s when that is None). Requests still
                unanswered then get :class:`MicroBatcherClosedError`. The call returns
                within ``timeout`` plus about one second, even when the scorer hangs (a
                hung scorer call is left to end in its daemon thread).

        Raises:
            InvalidInputError: ``timeout`` is not a number of seconds >= 0.
            MicroBatcherLoopError: called from another loop while its own still runs.
        """
        if timeout is not None and not (_positive_seconds(timeout) or (
                not isinstance(timeout, bool) and timeout == 0)):
            raise InvalidInputError(f"aclose timeout must be a finite number of seconds >= 0 "
                                    f"(or None for batch_timeout_s), got {timeout!r}")
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop and self._loop_in_use():
            raise self._loop_error("aclose")
        self._closed = True
        bound = timeout if timeout is not None else (self.batch_timeout_s or
                                                     _DEFAULT_BATCH_TIMEOUT_S)
        task = self._task
        if self._loop is loop and task is not None and not task.done():
            deadline = time.monotonic() + bound
            while True:
                pending = [r.future for r in self._waiting if not r.future.done()]
                left = deadline - time.monotonic()
                if not pending or left <= 0 or task.done():
                    break
                await asyncio.wait(pending, timeout=left)
        for r in list(self._waiting):
            self._fail(r, MicroBatcherClosedError(
                f"the MicroBatcher was closed before this request was answered (aclose "
                f"waited {bound:g} s); it was not scored. Give aclose a longer timeout to "
                f"let queued requests finish."))
        if task is not None and not task.done() and not task.get_loop().is_closed():
            task.cancel()
            if self._loop is loop:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._stop_all_workers()

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
            ScorerOutputError: the scorer returned the wrong number of results, or a bad
                result for this chain.
            ScorerTimeoutError: the scorer call for this chain's batch took longer than
                ``batch_timeout_s``.
            MicroBatcherClosedError: the batcher is closed, or was closed before answering.
            MicroBatcherLoopError: the batcher runs in another event loop.
        """
        self._check_open()
        question, checked = validate_chain(question, steps)
        loop = asyncio.get_running_loop()
        queue_ = self._ensure_started(loop)
        req = _Request(question, checked, loop.create_future(), time.monotonic(), self._task)
        self._waiting.add(req)
        self.stats.requests += 1
        try:
            if not queue_.full():
                queue_.put_nowait(req)
            else:  # wait for room, unless the request is answered (closed) meanwhile
                putter = asyncio.ensure_future(queue_.put(req))
                either: set[asyncio.Future[Any]] = {putter, req.future}
                try:
                    await asyncio.wait(either,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not putter.done():
                        putter.cancel()
            return await req.future
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            req.future.cancel()  # the batch skips it if it has not run yet
            raise
        finally:
            self._waiting.discard(req)

    # -- binding to a loop --------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._broken:
            raise self._broken_error()
        if self._closed:
            raise MicroBatcherClosedError("this MicroBatcher is closed; make a new one")

    def _loop_in_use(self) -> bool:
        """Whether the loop this batcher belongs to may still use it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        return loop.is_running() or (self._task is not None and not self._task.done())

    def _loop_error(self, what: str) -> MicroBatcherLoopError:
        return MicroBatcherLoopError(
            f"MicroBatcher.{what} was called from another event loop than the one this "
            f"batcher runs in (started in thread {self._loop_thread!r}, still open); asyncio "
            f"queues and futures belong to one loop. Make one MicroBatcher per event loop "
            f"(they can share one scorer), or submit to its loop from other threads with "
            f"asyncio.run_coroutine_threadsafe(batcher.score(...), loop).")

    def _ensure_started(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[_Request]:
        with self._lock:
            if self._loop is not loop:
                if self._loop_in_use():
                    raise self._loop_error("score")
                # The old loop is gone (closed, or idle with no batching task): move here.
                self._loop, self._task, self._queue = loop, None, None
                self._loop_thread = threading.current_thread().name
                self._waiting.clear()
            if self._task is None or self._task.done():
                self._queue = asyncio.Queue(self.max_queue)
                self._task = loop.create_task(self._run(self._queue), name="prm-microbatcher")
                self._task.add_done_callback(self._on_task_done)
            assert self._queue is not None
            return self._queue

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """The batching task ended: answer whoever it leaves behind (no caller waits forever)."""
        if task.cancelled():
            reason = "was cancelled"
        else:
            exc = task.exception()
            reason = f"failed ({exc!r})" if exc is not None else "ended"
        if not self._closed:
            logger.warning("MicroBatcher batching task %s; the next score() restarts it",
                           reason)
        for r in [r for r in self._waiting if r.owner is task]:
            self._fail(r, PRMError(
                f"the MicroBatcher's batching task {reason} before this request was answered; "
                f"it was not scored. Calling score() again restarts the batcher."))

    # -- the batching task --------------------------------------------------------------------
    async def _run(self, queue_: asyncio.Queue[_Request]) -> None:
        while True:
            # When this task is cancelled, _on_task_done answers every request it leaves.
            batch = await self._collect(queue_)
            try:
                await self._flush(batch)
            except Exception as exc:  # a bug here must not strand the callers
                logger.exception("MicroBatcher: unexpected error flushing a batch")
                for r in batch:
                    self._fail(r, PRMError(f"MicroBatcher failed to answer this request: "
                                           f"{exc!r}"))
            finally:
                for _ in batch:
                    queue_.task_done()

    async def _collect(self, queue_: asyncio.Queue[_Request]) -> list[_Request]:
        first = await queue_.get()
        batch = [first]
        deadline = first.queued_at + self.max_wait
        while len(batch) < self.max_batch:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                while len(batch) < self.max_batch and not queue_.empty():
                    batch.append(queue_.get_nowait())
                break
            # Not asyncio.wait_for: on Python 3.11 it can drop an item that arrives just
            # as the timeout fires.
            getter = asyncio.ensure_future(queue_.get())
            try:
                done, _ = await asyncio.wait({getter}, timeout=timeout)
            except asyncio.CancelledError:
                getter.cancel()
                raise
            if getter in done:
                batch.append(getter.result())
                continue
            getter.cancel()
            try:
                batch.append(await getter)  # it won the race with the cancel
            except asyncio.CancelledError:
                pass
            break
        return batch

    async def _flush(self, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.future.done()]  # skip cancelled callers
        if not live:
            return
        if self._broken:  # drain what was queued before the scorer hung
            for r in live:
                self._fail(r, self._broken_error())
            return
        try:
            scored = await ascore_isolated(
                self._call_scorer, live, score_one=self._call_one,
                propagate=(ScorerOutputError, ScorerTimeoutError, MicroBatcherClosedError),
                stop_on=_HUNG, skip=lambda r: r.future.done(),
                on_answer=lambda i, one: self._answer_alone(live[i], one))
        except (ScorerOutputError, ScorerTimeoutError, MicroBatcherClosedError) as exc:
            for r in live:  # each caller gets its own exception object
                self._fail(r, _copy_error(exc))
            return
        if not scored.isolated:  # else each chain was answered alone, as soon as scored
            for i, (r, s) in enumerate(zip(live, scored.results, strict=True)):
                self._answer_checked(r, s, i, len(live))

    def _answer_alone(self, r: _Request, one: Any) -> None:
        """Answer a chain scored on its own after its batch failed (or a one-chain batch)."""
        if isinstance(one, _HUNG):  # the rest are not waited out once per chain:
            self._fail(r, _copy_error(one))  # each caller gets its own copy
        elif isinstance(one, BaseException):
            self._fail(r, one)
        else:
            self._answer_checked(r, one, 0, 1)

    async def _call_one(self, r: _Request) -> Any:
        (one,) = await self._call_scorer([r])
        return one

    async def _call_scorer(self, live: list[_Request]) -> list[Any]:
        """One ``score_batch`` call in the worker thread, bounded by ``batch_timeout_s``.

        Returns the results as a list of the right length (each still to be checked).
        """
        if self._broken:
            raise self._broken_error()
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(live))
        self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        items = [(r.question, r.steps) for r in live]
        worker = self._worker
        if worker is None:
            worker = self._worker = WorkerThread(self._name)
            self._workers.append(worker)
        job = worker.submit(self.prm.score_batch, items, asyncio.get_running_loop())
        try:
            done, _ = await asyncio.wait({job.future}, timeout=self.batch_timeout_s)
        except asyncio.CancelledError:
            job.future.cancel()
            raise
        if not done:
            job.future.cancel()
            self._abandon(worker)
            raise ScorerTimeoutError(
                f"{self._scorer_name} did not return within batch_timeout_s="
                f"{self.batch_timeout_s:g} s for a batch of {len(live)} chains; this request "
                f"was not scored. The call cannot be interrupted, so it is left running in "
                f"its thread and later batches go to a fresh one ({len(self._stuck)} of "
                f"max_stuck_calls={self.max_stuck_calls} calls stuck now). If the scorer is "
                f"only slow, raise batch_timeout_s.")
        raw = job.future.result()  # raises what the scorer raised
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
            raise ScorerOutputError(
                f"{self._scorer_name} returned {type(raw).__name__}, not a list of StepScores, "
                f"for {len(live)} chains; a scorer must return one StepScores per chain. "
                f"Fix the scorer; later requests are still served.")
        results = list(raw)
        if len(results) != len(live):
            raise ScorerOutputError(
                f"{self._scorer_name} returned {len(results)} results for {len(live)} chains; "
                f"a scorer must return one StepScores per chain, in order. No chain of this "
                f"batch was answered; fix the scorer (later requests are still served).")
        return results

    def _abandon(self, worker: WorkerThread) -> None:
        """Leave a stuck worker behind; use a fresh one, or close if too many are stuck."""
        worker.stop()
        self._worker = None
        self._stuck = [w for w in self._stuck if w.busy()] + [worker]
        logger.warning("MicroBatcher: %s exceeded batch_timeout_s=%s s; %d call(s) stuck",
                       self._scorer_name, self.batch_timeout_s, len(self._stuck))
        if len(self._stuck) >= self.max_stuck_calls:
            # Requests already queued are answered by the batching task as it drains.
            self._broken = (
                f"{len(self._stuck)} calls of {self._scorer_name} are stuck past "
                f"batch_timeout_s={self.batch_timeout_s:g} s (max_stuck_calls="
                f"{self.max_stuck_calls}); the scorer looks hung")
            logger.error("MicroBatcher closed itself: %s", self._broken)

    def _broken_error(self) -> MicroBatcherClosedError:
        return MicroBatcherClosedError(
            f"this MicroBatcher closed itself: {self._broken}. The request was not scored; "
            f"make a new MicroBatcher over a working scorer.")

    async def _stop_all_workers(self) -> None:
        self._worker = None
        self._finalizer()  # tells every worker thread to end; never runs twice
        deadline = time.monotonic() + _THREAD_EXIT_WAIT_S
        idle = [w for w in self._workers if not w.busy()]
        while any(w.thread.is_alive() for w in idle) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        for w in self._workers:
            if w.thread.is_alive():
                logger.warning("MicroBatcher: worker thread %s is still inside %s; left to "
                               "end on its own (daemon thread)", w.thread.name,
                               self._scorer_name)

    # -- answers ------------------------------------------------------------------------------
    def _answer_checked(self, r: _Request, result: Any, index: int, n: int) -> None:
        problem = _result_problem(result, len(r.steps))
        if problem is None:
            if not r.future.done():
                r.future.set_result(result)
            return
        self._fail(r, ScorerOutputError(
            f"{self._scorer_name} returned {problem} for chain {index} of a batch of {n}; "
            f"a scorer must return a StepScores with one finite probability in [0, 1] per "
            f"step. This request was not scored; fix the scorer."))

    def _fail(self, r: _Request, exc: BaseException) -> None:
        if r.future.done() or r.future.get_loop().is_closed():
            return
        self.stats.failed += 1
        if isinstance(exc, ScorerTimeoutError):
            self.stats.timed_out += 1
        elif isinstance(exc, ScorerOutputError):
            self.stats.bad_results += 1
        r.future.set_exception(exc)


def _positive_seconds(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and value > 0)


def _copy_error(exc: BaseException) -> BaseException:
    """A fresh exception of the same type and message (a traceback belongs to one caller)."""
    try:
        copy = type(exc)(*exc.args)
    except Exception:  # an unusual constructor: share the original
        return exc
    copy.__cause__ = exc.__cause__
    return copy


def _result_problem(result: Any, n_steps: int) -> str | None:
    """What is wrong with one scorer result for a chain of ``n_steps`` steps, or None."""
    if not isinstance(result, StepScores):
        return f"a {type(result).__name__}, not StepScores,"
    scores = result.scores
    if len(scores) != n_steps:
        return f"{len(scores)} scores for {n_steps} steps"
    for i, v in enumerate(scores):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return f"the score {v!r} at step {i}"
        f = float(v)
        if not (math.isfinite(f) and 0.0 <= f <= 1.0):
            return f"the score {f!r} at step {i}"
    return None
