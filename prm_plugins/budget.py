"""Compute budgets for strategies: what a run may spend, and what it spent.

A :class:`Budget` caps four costs of a strategy run: tokens generated, generator calls,
chains sent to the scorer, and wall time. Every strategy takes ``budget=`` and reports
what it spent as ``result.budget`` (a :class:`BudgetSpent`; ``None`` for a run without a
budget: pass ``Budget()`` to measure without limits), so strategies can be compared at
equal compute. Inside a run a :class:`BudgetMeter` does the accounting; the runners of
:mod:`prm_plugins.plans` charge it, and plans ask it what still fits.

**When a limit is checked.** Every limit is checked *before* a request is issued, never
by interrupting one in flight:

* ``generator_calls`` and ``prm_calls`` are exact: a request that would exceed them is
  trimmed to what fits (:meth:`BudgetMeter.can_generate`, :meth:`BudgetMeter.can_score`),
  so they are never exceeded. A call counts once however many retries it took (as
  ``result.generator_calls`` does); a failed call counts too. Each chain sent to the scorer
  is one PRM call, however many chains share one ``score_batch``.
* ``generated_tokens`` is checked before each round of generator calls: a round is issued
  only while the tokens spent are under the limit, since a request's tokens are known only
  once it answers. A run can therefore overshoot the limit by at most one round's tokens;
  :attr:`BudgetSpent.token_overshoot` says by how much.
* ``seconds`` is wall time from the strategy's start (the meter's creation), checked before
  each round of generator calls. A request already running is not cut short (a generator
  call is bounded by :attr:`~prm_plugins.plans.RetryPolicy.timeout`), and what a round
  generated is still scored (throwing it away would waste it), so a run can end later than
  the limit by up to one round.

When the budget runs out a strategy stops and returns the best it has, with
:attr:`BudgetSpent.exhausted` naming the limit; when it has nothing at all it raises
:class:`~prm_plugins.errors.BudgetExhaustedError`.

**Counting tokens.** Generated text is counted with ``Budget.count_tokens``; by default
:func:`estimate_tokens`, a cheap tokenizer-free estimate (words, numbers and punctuation
marks). For exact counts pass your model's tokenizer, e.g.
``count_tokens=lambda text: len(tokenizer.encode(text))``.

Examples:
    >>> budget = Budget(generator_calls=3, generated_tokens=100)
    >>> meter = BudgetMeter(budget)
    >>> meter.can_generate(5)  # trimmed to the 3 calls that fit
    3
    >>> meter.charge_calls(3)
    >>> meter.charge_generation(["3 * 4 = 12", "The answer is 12."])
    10
    >>> meter.can_generate(1), meter.exhausted()
    (0, 'generator_calls')
    >>> meter.spent().to_dict()["generated_tokens"]
    10
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, Literal

from prm_plugins.errors import BudgetExhaustedError, InvalidInputError
from prm_plugins.validation import check_count, check_seconds

__all__ = [
    "LIMITS",
    "Budget",
    "BudgetMeter",
    "BudgetSpent",
    "Limit",
    "estimate_tokens",
]

#: The names of the limits, in the order :meth:`BudgetMeter.exhausted` checks them.
Limit = Literal["generator_calls", "generated_tokens", "prm_calls", "seconds"]
LIMITS: tuple[str, ...] = ("generator_calls", "generated_tokens", "prm_calls", "seconds")

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """A cheap token count: words, numbers and punctuation marks, each one token.

    ``"12.5"`` and ``"1,000"`` are one token, ``"don't"`` three (``don``, ``'``, ``t``).
    It undercounts subword tokenizers, which split long words and numbers: on the steps of
    ``data/gsm8k_test_stepwise_seed1.jsonl`` it counts 0.80 of what the shipped PRM's
    WordPiece tokenizer counts (177,262 against 222,117 tokens), and tokenizers that split
    numbers into single digits count more still. Pass a real tokenizer's length as
    :attr:`Budget.count_tokens` when exact counts matter.

    Examples:
        >>> estimate_tokens("3 * 4 = 12, so the answer is 12.")
        12
        >>> estimate_tokens("")
        0
    """
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class Budget:
    """What one strategy run may spend; ``None`` leaves a cost unlimited.

    See the module docs for when each limit is checked (call limits are exact; the token
    limit may be overshot by one round; wall time counts from the strategy's start).

    Attributes:
        generated_tokens: most tokens generated (every text a generator call returns,
            counted with ``count_tokens``).
        generator_calls: most generator calls (retries of a call not counted).
        prm_calls: most chains sent to the scorer (each chain is one call).
        seconds: most wall-clock seconds from the strategy's start.
        count_tokens: ``text -> int``; default :func:`estimate_tokens`. Pass e.g.
            ``lambda t: len(tokenizer.encode(t))`` for your generator's real count.

    Raises:
        InvalidInputError: a limit that is not a positive int (a positive number for
            ``seconds``) or ``None``, or a ``count_tokens`` that is not callable.

    Examples:
        >>> Budget(generated_tokens=2000, seconds=30).generated_tokens
        2000
        >>> try:
        ...     Budget(generator_calls=0)
        ... except InvalidInputError as exc:
        ...     print(exc)
        Budget.generator_calls must be an int >= 1 or None, got 0
    """

    generated_tokens: int | None = None
    generator_calls: int | None = None
    prm_calls: int | None = None
    seconds: float | None = None
    count_tokens: Callable[[str], int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("generated_tokens", "generator_calls", "prm_calls"):
            check_count(getattr(self, name), f"Budget.{name}", optional=True)
        object.__setattr__(self, "seconds",
                           check_seconds(self.seconds, "Budget.seconds", optional=True))
        if self.count_tokens is not None and not callable(self.count_tokens):
            raise InvalidInputError(
                f"Budget.count_tokens must be a callable text -> int (e.g. "
                f"lambda t: len(tokenizer.encode(t))) or None, got {self.count_tokens!r}"
            )

    @property
    def unlimited(self) -> bool:
        """Whether no limit is set (the budget only measures)."""
        return all(getattr(self, name) is None for name in LIMITS)

    def limits(self) -> dict[str, float | int | None]:
        """The four limits by name (``None`` for unlimited)."""
        return {name: getattr(self, name) for name in LIMITS}

    @classmethod
    def check(cls, budget: object) -> Budget | None:
        """Return ``budget`` unless it is neither a :class:`Budget` nor ``None``.

        Examples:
            >>> Budget.check(None) is None
            True
        """
        if budget is not None and not isinstance(budget, Budget):
            raise InvalidInputError(
                f"budget must be a prm_plugins.budget.Budget or None, got "
                f"{type(budget).__name__} {str(budget)[:80]!r}"
            )
        return budget


@dataclass(frozen=True)
class BudgetSpent:
    """What a strategy run spent, and which limit (if any) stopped it.

    Attributes:
        generated_tokens: tokens of every text the generator returned.
        generator_calls: generator calls issued (retries not counted).
        prm_calls: chains sent to the scorer.
        seconds: wall time from the strategy's start to its result.
        exhausted: the limit that ran out and stopped (or trimmed) the run, or ``None``
            when the run ended on its own.
        token_overshoot: tokens generated past ``generated_tokens`` (at most one round's;
            see the module docs), 0 when within it or unlimited.
        limits: the budget's limits (``None`` = unlimited).
    """

    generated_tokens: int = 0
    generator_calls: int = 0
    prm_calls: int = 0
    seconds: float = 0.0
    exhausted: str | None = None
    token_overshoot: int = 0
    limits: dict[str, float | int | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict.

        Examples:
            >>> BudgetSpent(generated_tokens=5, generator_calls=1).to_dict()["exhausted"] is None
            True
        """
        return {
            "generated_tokens": self.generated_tokens,
            "generator_calls": self.generator_calls,
            "prm_calls": self.prm_calls,
            "seconds": self.seconds,
            "exhausted": self.exhausted,
            "token_overshoot": self.token_overshoot,
            "limits": dict(self.limits),
        }


class BudgetMeter:
    """The accounting of one strategy run against a :class:`Budget` (or none).

    Create one when the run starts (the wall clock starts then). Runners charge it for
    every generator call, generated text and scored chain; plans ask it what still fits
    before each request. Without a budget every ``can_*`` answers the full request and
    nothing is ever exhausted, but costs are still counted, so ``spent()`` always reports
    them. Thread-safe.

    Args:
        budget: the limits, or ``None`` for none.
        clock: seconds as a float, monotonic; default :func:`time.monotonic` (looked up
            when the meter is made, so a test can patch ``prm_plugins.budget.monotonic``).

    Examples:
        >>> meter = BudgetMeter(Budget(prm_calls=4))
        >>> meter.can_score(6)
        4
        >>> meter.charge_scoring(4)
        >>> meter.exhausted()
        'prm_calls'
    """

    def __init__(
        self, budget: Budget | None = None, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.given = Budget.check(budget) is not None
        self.budget = budget or Budget()
        self._count = self.budget.count_tokens or estimate_tokens
        self._clock = clock or monotonic
        self._start = self._clock()
        self._lock = threading.Lock()
        self._tokens = 0
        self._calls = 0
        self._prm = 0
        self._hit: str | None = None

    # -- what is left ---------------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return max(0.0, self._clock() - self._start)

    def remaining_generator_calls(self) -> int | None:
        """Generator calls still allowed (``None`` when unlimited)."""
        limit = self.budget.generator_calls
        return None if limit is None else max(0, limit - self._calls)

    def remaining_prm_calls(self) -> int | None:
        """Chains the scorer may still be sent (``None`` when unlimited)."""
        limit = self.budget.prm_calls
        return None if limit is None else max(0, limit - self._prm)

    def remaining_tokens(self) -> int | None:
        """Tokens under the token limit (``None`` when unlimited; 0 once reached)."""
        limit = self.budget.generated_tokens
        return None if limit is None else max(0, limit - self._tokens)

    def _reached(self) -> str | None:
        b = self.budget
        if b.generator_calls is not None and self._calls >= b.generator_calls:
            return "generator_calls"
        if b.generated_tokens is not None and self._tokens >= b.generated_tokens:
            return "generated_tokens"
        if b.prm_calls is not None and self._prm >= b.prm_calls:
            return "prm_calls"
        if b.seconds is not None and self.elapsed() >= b.seconds:
            return "seconds"
        return None

    def exhausted(self) -> str | None:
        """The first limit reached (in :data:`LIMITS` order), or ``None``.

        Ask it when about to do more work: a limit found reached is recorded as the one
        that stopped the run (:attr:`BudgetSpent.exhausted`).
        """
        with self._lock:
            reached = self._reached()
            if reached is not None and self._hit is None:
                self._hit = reached
            return reached

    def _stop(self, limit: str) -> None:
        if self._hit is None:
            self._hit = limit

    def can_generate(self, n: int) -> int:
        """How many of ``n`` generator calls may be issued now (0 .. ``n``).

        0 once the call, token or time limit is reached; else ``n`` trimmed to the calls
        left. A trim records the call limit as exhausted. It does not charge: call
        :meth:`charge_calls` for the calls issued.
        """
        with self._lock:
            b = self.budget
            for limit, reached in (
                ("generator_calls", b.generator_calls is not None
                 and self._calls >= b.generator_calls),
                ("generated_tokens", b.generated_tokens is not None
                 and self._tokens >= b.generated_tokens),
                ("seconds", b.seconds is not None and self.elapsed() >= b.seconds),
            ):
                if reached and n > 0:
                    self._stop(limit)
                    return 0
            if b.generator_calls is not None and n > b.generator_calls - self._calls:
                self._stop("generator_calls")
                return b.generator_calls - self._calls
            return max(0, n)

    def can_score(self, n: int) -> int:
        """How many of ``n`` chains may be sent to the scorer now (0 .. ``n``).

        ``n`` trimmed to the PRM calls left (a trim records ``"prm_calls"``). Wall time is
        not checked here: the chains a round generated are scored even past ``seconds``
        (module docs). It does not charge: call :meth:`charge_scoring`.
        """
        with self._lock:
            b = self.budget
            if b.prm_calls is not None and n > b.prm_calls - self._prm:
                self._stop("prm_calls")
                return max(0, b.prm_calls - self._prm)
            return max(0, n)

    # -- charging -------------------------------------------------------------------------
    def charge_calls(self, n: int) -> None:
        """Count ``n`` generator calls as issued."""
        with self._lock:
            self._calls += n

    def charge_generation(self, texts: Iterable[str]) -> int:
        """Count the tokens of generated ``texts``; returns the tokens charged.

        Raises:
            InvalidInputError: ``Budget.count_tokens`` raised or returned something other
                than an int >= 0 (the message names the text's start).
        """
        total = 0
        for text in texts:
            try:
                n = self._count(text)
            except Exception as exc:
                raise InvalidInputError(
                    f"Budget.count_tokens raised {type(exc).__name__}: {exc} on the text "
                    f"{text[:60]!r}; it must map any str to an int >= 0"
                ) from exc
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise InvalidInputError(
                    f"Budget.count_tokens must return an int >= 0; it returned {n!r} for the "
                    f"text {text[:60]!r}"
                )
            total += n
        with self._lock:
            self._tokens += total
        return total

    def charge_scoring(self, n_chains: int) -> None:
        """Count ``n_chains`` chains as sent to the scorer."""
        with self._lock:
            self._prm += n_chains

    def take_calls(self, n: int) -> int:
        """:meth:`can_generate` and :meth:`charge_calls` in one step: the calls granted."""
        k = self.can_generate(n)
        self.charge_calls(k)
        return k

    def take_chains(self, n: int) -> int:
        """:meth:`can_score` and :meth:`charge_scoring` in one step: the chains granted."""
        k = self.can_score(n)
        self.charge_scoring(k)
        return k

    def charge_outputs(self, values: Iterable[object]) -> int:
        """Charge the texts in generator return values (a str, or a list of str each).

        Anything else (a failed call's ``None``, a malformed answer) costs nothing.
        """
        texts: list[str] = []
        for value in values:
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, (list, tuple)):
                texts.extend(v for v in value if isinstance(v, str))
        return self.charge_generation(texts)

    def refusal(self, what: str) -> BudgetExhaustedError:
        """The error a request refused for the budget is answered with.

        Args:
            what: what was not done, e.g. ``"generator call not made"``.
        """
        limit = self.exhausted() or self._hit
        return BudgetExhaustedError(f"{what}: the budget's {limit} limit was reached",
                                    limit=limit, spent=self.spent())

    # -- the report -----------------------------------------------------------------------
    def report(self) -> BudgetSpent | None:
        """:meth:`spent` for a meter made with a budget, ``None`` for one made without.

        What strategies put in ``result.budget``: a run without a budget reports nothing
        (its results stay exactly as before budgets existed, wall time included nowhere);
        pass ``Budget()`` to measure a run without limiting it.
        """
        return self.spent() if self.given else None

    def spent(self) -> BudgetSpent:
        """What was spent so far (``seconds`` is the time elapsed now)."""
        with self._lock:
            limit = self.budget.generated_tokens
            overshoot = 0 if limit is None else max(0, self._tokens - limit)
            return BudgetSpent(
                generated_tokens=self._tokens,
                generator_calls=self._calls,
                prm_calls=self._prm,
                seconds=round(self.elapsed(), 6),
                exhausted=self._hit,
                token_overshoot=overshoot,
                limits=self.budget.limits(),
            )
