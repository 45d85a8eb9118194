"""Daemon threads that run blocking scorer calls one at a time for an event loop.

What :class:`~prm_plugins.microbatch.MicroBatcher` runs its ``score_batch`` calls in. A
thread cannot be interrupted, so a call that hangs is left in its thread (the caller stops
waiting for its future and moves on to a fresh :class:`WorkerThread`). The code here holds
no reference to its user, so that a forgotten user can be garbage collected and its
finalizer (:func:`stop_workers`) can end the threads.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from prm_plugins.errors import PRMError

__all__ = ["Job", "WorkerThread", "stop_workers"]

logger = logging.getLogger(__name__)


class Job:
    """One call submitted to a :class:`WorkerThread`; ``future`` settles on its loop."""

    __slots__ = ("fn", "arg", "loop", "future", "finished")

    def __init__(self, fn: Callable[[Any], Any], arg: Any, loop: asyncio.AbstractEventLoop,
                 future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.arg = arg
        self.loop = loop
        self.future = future
        self.finished = threading.Event()


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # timed out or closed meanwhile: nobody waits for it
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _work(jobs: queue.SimpleQueue[Job | None]) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        ok = False
        value: Any
        try:
            value = job.fn(job.arg)
            ok = True
        except Exception as exc:
            value = exc
        except BaseException as exc:  # SystemExit & co. in a worker: an error for its callers
            value = PRMError(f"the scorer raised {type(exc).__name__}: {exc}; these requests "
                             f"were not scored")
            value.__cause__ = exc
        job.arg = None  # do not keep the last batch alive
        job.finished.set()
        try:
            job.loop.call_soon_threadsafe(_settle, job.future, ok, value)
        except RuntimeError:  # its event loop is closed: nobody is waiting any more
            logger.debug("worker thread: dropped a scorer result that came after its loop closed")
        del job, value


class WorkerThread:
    """One daemon thread running scorer calls one at a time.

    Examples:
        >>> async def double(x):
        ...     worker = WorkerThread("demo")
        ...     job = worker.submit(lambda n: n * 2, x, asyncio.get_running_loop())
        ...     try:
        ...         return await job.future
        ...     finally:
        ...         worker.stop()
        >>> asyncio.run(double(21))
        42
    """

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=_work, args=(self.jobs,), name=name, daemon=True)
        self.thread.start()
        self.current: Job | None = None

    def submit(self, fn: Callable[[Any], Any], arg: Any,
               loop: asyncio.AbstractEventLoop) -> Job:
        """Run ``fn(arg)`` in the thread; the returned job's future settles on ``loop``."""
        job = Job(fn, arg, loop, loop.create_future())
        self.current = job
        self.jobs.put(job)
        return job

    def busy(self) -> bool:
        """Whether a submitted call is still running."""
        return self.current is not None and not self.current.finished.is_set()

    def stop(self) -> None:
        """End the thread once its current call returns."""
        self.jobs.put(None)  # ends the thread once its current call returns


def stop_workers(workers: list[WorkerThread]) -> None:
    """Tell each worker thread to end once its current call returns."""
    for w in workers:
        w.stop()
