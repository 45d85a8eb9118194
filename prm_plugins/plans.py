"""How strategies call generators and scorers: retries, concurrency, sync and async drivers.

Every strategy is written once, as a *plan*: a Python generator function that yields
requests (:class:`GenerateCalls`, :class:`ScoreChains`) and receives their results. Two
drivers run a plan: :class:`SyncRunner` (threads for concurrent generator calls) and
:class:`AsyncRunner` (asyncio tasks; a sync-only generator or scorer runs in worker threads
of a per-call pool). So the sync and async forms of a strategy cannot drift apart, and the
retry policy, the concurrency limit and the clean-up on cancellation live in one place.

Generator calls are retried with tenacity on transient errors only
(:class:`TransientGeneratorError`, :class:`TimeoutError`, :class:`ConnectionError`, or what
:attr:`RetryPolicy.retry_on` says), with exponential backoff capped at
:attr:`RetryPolicy.max_wait`, and each attempt has a deadline
(:data:`DEFAULT_GENERATOR_TIMEOUT` unless the policy says otherwise), so a generator that
hangs fails its candidate instead of the whole call. Scorer calls are not retried: a local
ONNX scorer does not fail transiently, and a remote one should retry inside itself. A chain
the scorer cannot score (it raises, or answers something that is not one finite probability
per step, such as NaN) fails alone; the other chains of the batch are scored one by one.

A runner may hold a :class:`~prm_plugins.budget.BudgetMeter`: it then counts every
generator call issued, every text generated and every chain sent to the scorer, and answers
requests beyond the budget without calling anything (a :class:`CallOutcome` or a chain
result that is a :class:`~prm_plugins.errors.BudgetExhaustedError`). Plans that want no
such failures ask the meter first (``meter.can_generate(n)``, ``meter.can_score(n)``) and
request only what fits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

from prm_plugins.budget import BudgetMeter
from prm_plugins.errors import (
    AllCandidatesFailedError,
    BudgetExhaustedError,
    EmptyGenerationsError,
    GeneratorTimeoutError,
    InvalidInputError,
    PRMError,
    TransientGeneratorError,
)
from prm_plugins.scoring import score_isolated
from prm_plugins.types import StepScorer
from prm_plugins.validation import ASYNC_METHOD, check_step_scores

__all__ = [
    "DEFAULT_GENERATOR_TIMEOUT",
    "TRANSIENT_ERRORS",
    "AllCandidatesFailedError",
    "AsyncRunner",
    "BudgetExhaustedError",
    "CallOutcome",
    "EmptyGenerationsError",
    "GenerateCalls",
    "GeneratorTimeoutError",
    "Plan",
    "RetryPolicy",
    "ScoreChains",
    "SyncRunner",
    "TransientGeneratorError",
    "describe_error",
    "summarize_failures",
]

logger = logging.getLogger(__name__)

R = TypeVar("R")
T = TypeVar("T")


#: Exceptions retried by default.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientGeneratorError,
    TimeoutError,
    ConnectionError,
)

#: Seconds one generator attempt may take by default (:attr:`RetryPolicy.timeout`).
#: Generous for what one attempt is (one sampled solution, or one proposed step): SmolLM2
#: on this project's CPU writes about 25 tokens/s, so a 500-token GSM8K solution takes
#: 20 s, and hosted chat APIs answer such a request in seconds; a 7B model on a laptop CPU
#: (3-5 tokens/s) needs up to about 100 s for the same. Past 120 s a call is far more
#: likely hung (a dead connection, a stuck server) than slow, and without a deadline one
#: hung call would hang the whole strategy forever. Raise it (or pass ``timeout=None``)
#: for slower generators, e.g. long reasoning-model outputs.
DEFAULT_GENERATOR_TIMEOUT = 120.0


@dataclass(frozen=True)
class RetryPolicy:
    """When and how generator calls are retried (tenacity under the hood).

    The wait before retry ``k`` (1-based) is ``min(initial_wait * exp_base ** (k - 1),
    max_wait)`` plus a uniform random jitter in ``[0, jitter]``.

    Attributes:
        max_attempts: attempts per call, the first one included (``1`` = no retry).
        initial_wait: seconds before the first retry.
        max_wait: cap on one wait, in seconds (jitter excluded).
        exp_base: growth factor of the wait.
        jitter: most random seconds added to each wait.
        retry_on: exception types that are retried; anything else fails the call at once.
        timeout: seconds one attempt may take; default :data:`DEFAULT_GENERATOR_TIMEOUT`
            (120 s, see there why), ``None`` for no limit. An attempt past it fails with
            :class:`GeneratorTimeoutError`, which is retried like any
            :class:`TimeoutError`; so with the defaults a generator that always hangs fails
            its candidate after about 3 x 120 s, and the strategy goes on without it. An
            async attempt is cancelled; a blocking (sync) call cannot be interrupted, so it
            runs in a daemon thread (with the caller's context variables) and is
            abandoned at the deadline: the thread ends when the call returns, and its late
            answer is dropped.

    Examples:
        >>> RetryPolicy().max_attempts, RetryPolicy().timeout
        (3, 120.0)
        >>> fast = RetryPolicy.no_wait(max_attempts=5)  # for tests: retries without sleeping
        >>> fast.initial_wait, fast.jitter
        (0.0, 0.0)
    """

    max_attempts: int = 3
    initial_wait: float = 0.5
    max_wait: float = 8.0
    exp_base: float = 2.0
    jitter: float = 0.25
    retry_on: tuple[type[BaseException], ...] = TRANSIENT_ERRORS
    timeout: float | None = DEFAULT_GENERATOR_TIMEOUT

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or (
            self.max_attempts < 1
        ):
            raise InvalidInputError(
                f"RetryPolicy.max_attempts must be an int >= 1, got {self.max_attempts!r}"
            )
        for name in ("initial_wait", "max_wait", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise InvalidInputError(
                    f"RetryPolicy.{name} must be a number of seconds >= 0, got {value!r}"
                )
        if self.timeout is not None and (
            isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float))
            or not self.timeout > 0
        ):
            raise InvalidInputError(
                f"RetryPolicy.timeout must be a number of seconds > 0 or None, "
                f"got {self.timeout!r}"
            )
        if not isinstance(self.exp_base, (int, float)) or self.exp_base < 1:
            raise InvalidInputError(f"RetryPolicy.exp_base must be >= 1, got {self.exp_base!r}")
        if not isinstance(self.retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on
        ):
            raise InvalidInputError(
                f"RetryPolicy.retry_on must be a tuple of exception types, got {self.retry_on!r}"
            )

    @classmethod
    def no_wait(
        cls, max_attempts: int = 3, timeout: float | None = DEFAULT_GENERATOR_TIMEOUT
    ) -> RetryPolicy:
        """Retries without sleeping (tests, or generators that back off themselves)."""
        return cls(max_attempts=max_attempts, initial_wait=0.0, max_wait=0.0, jitter=0.0,
                   timeout=timeout)

    @classmethod
    def check(cls, policy: object) -> RetryPolicy | None:
        """Return ``policy`` unless it is neither a :class:`RetryPolicy` nor ``None``.

        Examples:
            >>> RetryPolicy.check(None) is None
            True
        """
        if policy is not None and not isinstance(policy, RetryPolicy):
            raise InvalidInputError(f"retry must be a RetryPolicy or None, got {policy!r}")
        return policy

    def backoff(self, retry_number: int) -> float:
        """Seconds waited before retry ``retry_number`` (1-based), jitter excluded.

        Examples:
            >>> [RetryPolicy(initial_wait=0.5, max_wait=3).backoff(k) for k in (1, 2, 3, 4)]
            [0.5, 1.0, 2.0, 3]
        """
        return min(self.initial_wait * self.exp_base ** (retry_number - 1), self.max_wait)

    def _wait(self) -> tenacity.wait.wait_base:
        base = tenacity.wait_exponential(
            multiplier=self.initial_wait, exp_base=self.exp_base, min=0, max=self.max_wait
        )
        return base + tenacity.wait_random(0, self.jitter) if self.jitter else base

    def _tenacity_kwargs(self, what: str) -> dict[str, Any]:
        def log_retry(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "%s failed on attempt %d of %d (%s: %s); retrying in %.2f s",
                what, state.attempt_number, self.max_attempts, type(exc).__name__, exc, wait,
            )

        return {
            "stop": tenacity.stop_after_attempt(self.max_attempts),
            "wait": self._wait(),
            "retry": tenacity.retry_if_exception_type(self.retry_on),
            "reraise": True,
            "before_sleep": log_retry,
        }

    def call(self, fn: Callable[..., T], *args: Any, what: str = "generator call",
             started: threading.Event | None = None) -> CallOutcome:
        """Run ``fn(*args)`` under this policy; never raises an :class:`Exception`.

        ``started``, when given, is set just before the first attempt enters ``fn`` (the
        sync runner uses it to start concurrent calls in order).
        """
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            if self.timeout is None:
                if started is not None:
                    started.set()
                return fn(*args)
            return _call_with_deadline(fn, args, self.timeout, what, started)

        try:
            value = tenacity.Retrying(**self._tenacity_kwargs(what))(attempt)
        except Exception as exc:  # reported on the candidate, not fatal
            return CallOutcome(error=exc, attempts=attempts)
        return CallOutcome(value=value, attempts=attempts)

    async def acall(
        self, fn: Callable[..., Awaitable[T]], *args: Any, what: str = "generator call"
    ) -> CallOutcome:
        """Await ``fn(*args)`` under this policy; never raises an :class:`Exception`.

        Waits between attempts are ``asyncio.sleep`` calls, so cancelling the task stops
        the retries at once.
        """
        attempts = 0

        async def attempt() -> T:
            nonlocal attempts
            attempts += 1
            if self.timeout is None:
                return await fn(*args)
            try:
                return await asyncio.wait_for(fn(*args), self.timeout)
            except asyncio.TimeoutError as exc:  # TimeoutError itself from Python 3.11
                raise GeneratorTimeoutError(
                    f"{what} did not answer within {self.timeout:g} s"
                ) from exc

        try:
            value: Any = await tenacity.AsyncRetrying(**self._tenacity_kwargs(what))(attempt)
        except Exception as exc:
            return CallOutcome(error=exc, attempts=attempts)
        return CallOutcome(value=value, attempts=attempts)


def _call_with_deadline(
    fn: Callable[..., T], args: tuple[Any, ...], timeout: float, what: str,
    started: threading.Event | None = None,
) -> T:
    """``fn(*args)`` in a daemon thread; :class:`GeneratorTimeoutError` past ``timeout``."""
    box: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()  # callbacks and tracing see the caller's context

    def target() -> None:
        try:
            if started is not None:
                started.set()
            box["value"] = context.run(fn, *args)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="prm-generator-call", daemon=True).start()
    if not done.wait(timeout):
        raise GeneratorTimeoutError(
            f"{what} did not answer within {timeout:g} s (the call was abandoned; its "
            "thread ends when it returns)"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


@dataclass(frozen=True)
class CallOutcome:
    """Result of one generator call after retries: its value or its last error."""

    value: Any = None
    error: Exception | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


# -- plans -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateCalls:
    """Request: call ``generator.<method>(*args)`` once per entry of ``calls``.

    The runner answers with one :class:`CallOutcome` per call, in order.
    """

    method: str
    calls: list[tuple[Any, ...]]


@dataclass(frozen=True)
class ScoreChains:
    """Request: score these ``(question, steps)`` chains in one ``score_batch`` call.

    The runner answers with one :class:`StepScores` or exception per chain, in order. When
    the batch raises (e.g. one chain is too long, or the scorer fails on one hostile
    chain), the chains are scored one by one so that only the offending ones fail; a result
    that is not one finite probability in [0, 1] per step (NaN, a logit) is a
    :class:`~prm_plugins.errors.PRMError` for that chain.
    """

    items: list[tuple[str, list[str]]]


Request = GenerateCalls | ScoreChains
Plan = Generator[Request, Any, R]


def _score_sync(prm: StepScorer, items: list[tuple[str, list[str]]]) -> list[Any]:
    """One :class:`StepScores` (checked) or exception per chain; never raises for a chain.

    Raises:
        PRMError: the batch call returned the wrong number of results (a scorer that
            breaks its contract for every chain).
    """
    def log(exc: BaseException, n: int) -> None:
        if n > 1:
            logger.warning("batched scoring failed (%s: %s); scoring the %d chains one by one",
                           type(exc).__name__, exc, n)

    scored = score_isolated(prm.score_batch, items, on_batch_error=log)
    if not scored.isolated and len(scored.results) != len(items):
        raise PRMError(
            f"the scorer's score_batch returned {len(scored.results)} results for "
            f"{len(items)} chains; a StepScorer must return one StepScores per chain"
        )
    return [_as_scoring_error(r, prm) if scored.isolated and isinstance(r, Exception)
            else _checked(r, item, prm) for r, item in zip(scored.results, items, strict=True)]


def _as_scoring_error(exc: Exception, prm: object) -> Exception:
    """``exc`` itself for the project's errors; others are logged with their traceback."""
    if not isinstance(exc, PRMError):
        logger.error("the scorer %s failed on a chain with an unexpected %s: %s",
                     type(prm).__name__, type(exc).__name__, exc, exc_info=exc)
    return exc


def _checked(result: Any, item: tuple[str, list[str]], prm: object) -> Any:
    """``result`` if it is valid step scores for ``item``, else a :class:`PRMError`."""
    try:
        return check_step_scores(result, item[1], scorer=prm)
    except PRMError as exc:
        logger.warning("%s", exc)
        return exc


def _granted(meter: BudgetMeter | None, n: int, what: str) -> tuple[int, list[Exception]]:
    """How many of ``n`` requests the budget grants (charged), and errors for the rest."""
    if meter is None:
        return n, []
    k = meter.take_calls(n) if what == "generator call" else meter.take_chains(n)
    return k, [meter.refusal(f"{what} not made") for _ in range(n - k)]


#: Longest a concurrent generator call waits for the call before it to begin.
_ORDER_WAIT_S = 5.0


class SyncRunner:
    """Runs a plan with blocking calls; concurrent generator calls use a thread pool.

    Args:
        generator: the generator the plan calls.
        prm: the scorer, or ``None`` for plans that never score.
        retry: the retry policy for generator calls.
        max_concurrency: most generator calls in flight at once.
        meter: counts what the run spends and refuses requests past its budget (module
            docs); ``None`` for neither.
    """

    def __init__(
        self, generator: Any, prm: StepScorer | None, *, retry: RetryPolicy,
        max_concurrency: int, meter: BudgetMeter | None = None,
    ) -> None:
        self.generator = generator
        self.prm = prm
        self.retry = retry
        self.max_concurrency = max_concurrency
        self.meter = meter

    def run(self, plan: Plan[R]) -> R:
        pool: concurrent.futures.ThreadPoolExecutor | None = None
        try:
            request = next(plan)
            while True:
                if isinstance(request, GenerateCalls):
                    k, refused = _granted(self.meter, len(request.calls), "generator call")
                    fit = GenerateCalls(request.method, request.calls[:k])
                    if pool is None and self.max_concurrency > 1 and k > 1:
                        pool = concurrent.futures.ThreadPoolExecutor(
                            self.max_concurrency, thread_name_prefix="prm-strategy"
                        )
                    outcomes = self._generate(fit, pool) if k else []
                    if self.meter is not None:
                        self.meter.charge_outputs(o.value for o in outcomes)
                    response: Any = outcomes + [CallOutcome(error=e) for e in refused]
                else:
                    assert self.prm is not None, "this plan was run without a scorer"
                    k, unscored = _granted(self.meter, len(request.items), "chain scoring")
                    items = request.items[:k]
                    response = (_score_sync(self.prm, items) if k else []) + unscored
                request = plan.send(response)
        except StopIteration as stop:
            return stop.value
        finally:
            plan.close()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _generate(
        self, request: GenerateCalls, pool: concurrent.futures.ThreadPoolExecutor | None
    ) -> list[CallOutcome]:
        fn = getattr(self.generator, request.method)
        what = f"generator.{request.method}()"
        if pool is None:
            return [self.retry.call(fn, *args, what=what) for args in request.calls]
        # Calls enter the generator in submission order (each waits until the one before
        # has begun), as they did without the deadline thread: a generator that numbers its
        # calls (seeds, scripted answers) then gives the same candidates run after run.
        began = [threading.Event() for _ in request.calls]

        def one(k: int, args: tuple[Any, ...]) -> CallOutcome:
            try:
                if k:
                    began[k - 1].wait(_ORDER_WAIT_S)
                return self.retry.call(fn, *args, what=what, started=began[k])
            finally:
                began[k].set()

        # each call runs in a copy of the caller's context (callbacks, tracing)
        futures = [pool.submit(contextvars.copy_context().run, one, k, args)
                   for k, args in enumerate(request.calls)]
        return [f.result() for f in futures]


class AsyncRunner:
    """Runs a plan on the event loop.

    Async generator methods (``asample``...) are awaited as tasks, at most
    ``max_concurrency`` at once; sync-only methods, and the scorer's ``score_batch`` (the
    scorer protocol has no async batch method), run in a thread pool owned by this run.
    ``meter`` is as for :class:`SyncRunner`. When the awaiting task is cancelled, the child
    tasks are cancelled and awaited and the pool is shut down (queued work dropped) before
    the cancellation propagates; a blocking call already running in a worker thread cannot
    be interrupted, and its thread exits as soon as that call returns.
    """

    def __init__(
        self, generator: Any, prm: StepScorer | None, *, retry: RetryPolicy,
        max_concurrency: int, meter: BudgetMeter | None = None,
    ) -> None:
        self.generator = generator
        self.prm = prm
        self.retry = retry
        self.max_concurrency = max_concurrency
        self.meter = meter
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    async def run(self, plan: Plan[R]) -> R:
        try:
            request = next(plan)
            while True:
                if isinstance(request, GenerateCalls):
                    k, refused = _granted(self.meter, len(request.calls), "generator call")
                    fit = GenerateCalls(request.method, request.calls[:k])
                    outcomes = await self._generate(fit) if k else []
                    if self.meter is not None:
                        self.meter.charge_outputs(o.value for o in outcomes)
                    response: Any = outcomes + [CallOutcome(error=e) for e in refused]
                else:
                    k, unscored = _granted(self.meter, len(request.items), "chain scoring")
                    items = request.items[:k]
                    response = (await self._score(items) if k else []) + unscored
                request = plan.send(response)
        except StopIteration as stop:
            return stop.value
        finally:
            plan.close()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    def _in_thread(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.max_concurrency, thread_name_prefix="prm-strategy"
            )
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # as asyncio.to_thread does
        return loop.run_in_executor(self._pool, functools.partial(context.run, fn, *args))

    async def _generate(self, request: GenerateCalls) -> list[CallOutcome]:
        async_fn = getattr(self.generator, ASYNC_METHOD[request.method], None)
        what = f"generator.{request.method}()"
        if callable(async_fn):
            call: Callable[..., Awaitable[Any]] = async_fn
        else:
            sync_fn = getattr(self.generator, request.method)

            def call(*args: Any) -> Awaitable[Any]:
                return self._in_thread(sync_fn, *args)

        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def one(args: tuple[Any, ...]) -> CallOutcome:
            async with semaphore:
                return await self.retry.acall(call, *args, what=what)

        tasks = [asyncio.ensure_future(one(args)) for args in request.calls]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _score(self, items: list[tuple[str, list[str]]]) -> list[Any]:
        assert self.prm is not None, "this plan was run without a scorer"
        if not items:
            return []
        return await self._in_thread(_score_sync, self.prm, items)


def describe_error(exc: BaseException) -> str:
    """``"TypeName: message"`` for an exception, as shown on failed candidates."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def summarize_failures(errors: Sequence[str], limit: int = 5) -> str:
    """``"3x TimeoutError: ...; 1x empty generation"``: distinct errors with counts."""
    counts: dict[str, int] = {}
    for e in errors:
        counts[e] = counts.get(e, 0) + 1
    parts = [f"{n}x {e}" for e, n in list(counts.items())[:limit]]
    if len(counts) > limit:
        parts.append(f"... and {len(counts) - limit} more distinct errors")
    return "; ".join(parts)
