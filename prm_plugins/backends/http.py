"""The retry policy of the HTTP scorers (:class:`~prm_plugins.VLLMPRM`, ``RemotePRM``).

One loop, built on tenacity, for every scorer that calls a server. What a second attempt can
cure is retried: connection errors and timeouts (any ``httpx.TransportError``) and the answers
HTTP 429 (rate limited), 502, 503 and 504 (:data:`RETRY_STATUSES`: a proxy, or an overloaded
or restarting server). Every other answer is handed back to the client at once, for it to read
or to turn into its own error. The wait before retry ``k`` (1-based) is
``min(backoff_initial * 2 ** (k - 1), backoff_max)``, unless the answer carried a
``Retry-After`` header (delta-seconds or an HTTP date): then it is what the server asked, up
to ``max_retry_after``. After the last attempt the client's own error is raised, built by the
``give_up`` callable from a short reason (``"HTTP 503: ..."``, ``"ConnectError: ..."``).

``httpx`` (the ``[remote]`` extra) is imported only when a request is sent.

Examples:
    >>> policy = HTTPRetry(max_attempts=4, backoff_initial=0.5, backoff_max=2.0)
    >>> [policy.wait(k) for k in (1, 2, 3)]
    [0.5, 1.0, 2.0]
    >>> policy.wait(1, retry_after=30.0), policy.wait(1, retry_after=3600.0)
    (30.0, 60.0)
    >>> parse_retry_after("3"), parse_retry_after(None), parse_retry_after("soon")
    (3.0, None, None)
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prm_plugins.errors import InvalidInputError, require
from prm_plugins.validation import check_count

__all__ = ["RETRY_STATUSES", "HTTPRetry", "RetryingClient", "parse_retry_after"]

logger = logging.getLogger(__name__)

#: HTTP statuses retried: rate limited, bad gateway, unavailable, gateway timeout.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date).

    Args:
        value: the header's value, or ``None`` when there is none.
        now: the current time (seconds since the epoch) an HTTP date is measured from;
            ``None``: :func:`time.time`.

    Returns:
        The seconds to wait (``0.0`` for a date in the past or a negative number), or
        ``None`` for no header or one that cannot be read.

    Examples:
        >>> parse_retry_after("120"), parse_retry_after("-5"), parse_retry_after("nan")
        (120.0, 0.0, None)
        >>> parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now=1_700_000_000.0)
        20.0
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


class _Transient(Exception):
    """An attempt worth repeating; ``retry_after`` is the server's wish, in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _check_wait(value: object, name: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0):
        raise InvalidInputError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class HTTPRetry:
    """When and how an HTTP scorer repeats a request (tenacity under the hood).

    Attributes:
        max_attempts: attempts per request, the first one included (``1``: no retry).
        backoff_initial: seconds before the first retry; the wait doubles each time.
        backoff_max: longest wait without a ``Retry-After`` header.
        max_retry_after: longest wait a ``Retry-After`` header is honoured for (a longer
            wish is cut to this).
        statuses: the HTTP statuses retried (default :data:`RETRY_STATUSES`).
        sleep: how the sync loop waits (default :func:`time.sleep`); a test may record the
            waits instead.
        async_sleep: how the async loop waits (default :func:`asyncio.sleep`).

    Raises:
        InvalidInputError: an attempt count below 1 or a wait that is not a finite number of
            seconds >= 0.

    Examples:
        >>> HTTPRetry().max_attempts, sorted(HTTPRetry().statuses)
        (4, [429, 502, 503, 504])
        >>> HTTPRetry(max_attempts=0)
        Traceback (most recent call last):
        ...
        prm_plugins.errors.InvalidInputError: max_attempts must be an int >= 1, got 0
    """

    max_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    max_retry_after: float = 60.0
    statuses: frozenset[int] = RETRY_STATUSES
    sleep: Callable[[float], Any] = time.sleep
    async_sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    def __post_init__(self) -> None:
        check_count(self.max_attempts, "max_attempts")
        for name in ("backoff_initial", "backoff_max", "max_retry_after"):
            object.__setattr__(self, name, _check_wait(getattr(self, name), name))
        object.__setattr__(self, "statuses", frozenset(self.statuses))

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based).

        Args:
            attempt: the attempt that failed, counted from 1.
            retry_after: the seconds the server's ``Retry-After`` asked, if any.

        Returns:
            ``min(retry_after, max_retry_after)`` when the server asked, else the backoff
            ``min(backoff_initial * 2 ** (attempt - 1), backoff_max)``.
        """
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return min(self.backoff_initial * 2.0 ** (attempt - 1), self.backoff_max)

    # -- the loops -------------------------------------------------------------------------
    def _tenacity_wait(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return self.wait(state.attempt_number, getattr(exc, "retry_after", None))

    def _retrying(self, asynchronous: bool) -> Any:
        import tenacity

        def log(state: Any) -> None:
            logger.warning(
                "PRM server call failed (attempt %d of %d): %s; retrying in %.2f s",
                state.attempt_number, self.max_attempts,
                state.outcome.exception() if state.outcome is not None else None,
                state.next_action.sleep if state.next_action is not None else 0.0)

        if asynchronous:
            return tenacity.AsyncRetrying(
                stop=tenacity.stop_after_attempt(self.max_attempts), wait=self._tenacity_wait,
                sleep=self.async_sleep, before_sleep=log, reraise=True,
                retry=tenacity.retry_if_exception_type(_Transient))
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts), wait=self._tenacity_wait,
            sleep=self.sleep, before_sleep=log, reraise=True,
            retry=tenacity.retry_if_exception_type(_Transient))

    def _check(self, response: Any) -> Any:
        status = response.status_code
        if status in self.statuses:
            raise _Transient(f"HTTP {status}: {response.text[:300]}",
                             parse_retry_after(response.headers.get("retry-after")))
        return response

    @staticmethod
    def _transport(exc: BaseException) -> _Transient:
        return _Transient(f"{type(exc).__name__}: {exc or 'no detail'}")

    def send(self, request: Callable[[], Any],
             give_up: Callable[[str], BaseException]) -> Any:
        """Call ``request`` until it answers something other than a transient failure.

        Args:
            request: sends the request once and returns its ``httpx.Response``.
            give_up: builds the error raised after the last attempt, from the reason the
                last one failed (e.g. ``"HTTP 503: loading"``, ``"ConnectError: ..."``).

        Returns:
            The first response whose status is not in :attr:`statuses` (a 4xx or 5xx
            included: reading it is the caller's business).

        Raises:
            BaseException: what ``give_up`` builds, once every attempt failed transiently
                (chained from the last transport error, if that is what failed).
        """
        httpx = require("httpx", "remote")
        try:
            for attempt in self._retrying(asynchronous=False):
                with attempt:
                    try:
                        response = request()
                    except httpx.TransportError as exc:
                        raise self._transport(exc) from exc
                    return self._check(response)
        except _Transient as exc:
            raise give_up(str(exc)) from exc.__cause__
        raise AssertionError("unreachable")  # pragma: no cover

    async def asend(self, request: Callable[[], Awaitable[Any]],
                    give_up: Callable[[str], BaseException]) -> Any:
        """Async :meth:`send`: ``request`` is awaited, waits use :attr:`async_sleep`."""
        httpx = require("httpx", "remote")
        try:
            async for attempt in self._retrying(asynchronous=True):
                with attempt:
                    try:
                        response = await request()
                    except httpx.TransportError as exc:
                        raise self._transport(exc) from exc
                    return self._check(response)
        except _Transient as exc:
            raise give_up(str(exc)) from exc.__cause__
        raise AssertionError("unreachable")  # pragma: no cover


class RetryingClient:
    """Base of the HTTP scorers (:class:`~prm_plugins.backends.vllm.VLLMPRM`,
    ``prm_plugins.adapters.ray.RemotePRM``): their retry settings, read from the
    :class:`HTTPRetry` they keep in ``retry`` (read-only; replace ``retry`` to change them).
    """

    retry: HTTPRetry

    @property
    def max_attempts(self) -> int:
        """Attempts per request, the first one included (:attr:`retry`'s)."""
        return self.retry.max_attempts

    @property
    def backoff_initial(self) -> float:
        """First wait between attempts, in seconds (:attr:`retry`'s)."""
        return self.retry.backoff_initial

    @property
    def backoff_max(self) -> float:
        """Longest wait between attempts without a ``Retry-After`` (:attr:`retry`'s)."""
        return self.retry.backoff_max

    @property
    def max_retry_after(self) -> float:
        """Longest wait a ``Retry-After`` header is honoured for (:attr:`retry`'s)."""
        return self.retry.max_retry_after
