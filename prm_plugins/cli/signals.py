"""Ctrl-C and SIGTERM for ``prm``: both raised as :class:`Interrupted`, held back while a
chunk of rows is written, so an output is always a whole number of rows and its count exact.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["SIGNALS", "Interrupted", "Signals"]


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM reached ``prm``; ``signum`` says which.

    A ``KeyboardInterrupt``, so every ``except KeyboardInterrupt`` path (and every
    ``finally``) runs for SIGTERM exactly as for Ctrl-C.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """SIGINT and SIGTERM raised as :class:`Interrupted`, held back inside :meth:`deferred`.

    Holding them back while a chunk of rows is written keeps the output a whole number of
    rows, and the count of rows written exact.
    """

    def __init__(self) -> None:
        self._saved: dict[int, Any] = {}
        self._depth = 0
        self._pending: int | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._depth:
            self._pending = self._pending or signum
            return
        raise Interrupted(signum)

    def install(self, *, force: bool = False) -> None:
        """Take over SIGINT and SIGTERM, unless they are ignored (``nohup``, a background job)
        or set by the host program; ``force`` retakes them from a library (Ray) that set its
        own."""
        if threading.current_thread() is not threading.main_thread():
            return
        defaults = (signal.default_int_handler, signal.SIG_DFL, self._handler)
        for sig in (signal.SIGINT, signal.SIGTERM):
            current = signal.getsignal(sig)
            if force and sig in self._saved:
                signal.signal(sig, self._handler)
            elif current in defaults and sig not in self._saved:
                self._saved[sig] = current
                signal.signal(sig, self._handler)

    def restore(self) -> None:
        """Give the signals back as they were."""
        for sig, handler in self._saved.items():
            with contextlib.suppress(ValueError, TypeError):  # not the main thread
                signal.signal(sig, handler)
        self._saved.clear()
        self._depth, self._pending = 0, None

    @contextlib.contextmanager
    def kept_from_new_threads(self) -> Iterator[None]:
        """Threads started inside this block (ONNX Runtime's pools) never take SIGINT/SIGTERM.

        A signal sent to the process goes to any thread that does not block it; one taken by
        a worker thread leaves the main thread blocked in a read (of a stdin pipe) until EOF,
        and Ctrl-C seems ignored. New threads inherit the creating thread's signal mask, so
        the signals are blocked while they start, then unblocked in the main thread.
        """
        if (not hasattr(signal, "pthread_sigmask")
                or threading.current_thread() is not threading.main_thread()):
            yield
            return
        sigs = {signal.SIGINT, signal.SIGTERM}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Inside this block a signal waits; it is raised when the block ends."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending is not None:
                signum, self._pending = self._pending, None
                raise Interrupted(signum)


#: The one instance ``prm`` installs while a verb runs.
SIGNALS = Signals()
