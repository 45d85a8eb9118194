"""A seeded, scripted fake generator for strategy tests (no model, no network).

:class:`FakeGenerator` implements :class:`prm_plugins.generators.Generator`,
:class:`~prm_plugins.generators.AsyncGenerator`, :class:`~prm_plugins.generators.Reviser` and
:class:`~prm_plugins.generators.AsyncReviser`. What it returns is scripted, so tests can
hand-compute what a strategy must choose:

* ``sample`` draws from ``solutions`` in order (cycling), or, with ``seed``, picks entry
  ``Random(f"{seed}:{k}")`` for the k-th draw. An entry that is an exception instance is
  raised instead of returned (e.g. ``TimeoutError()`` to exercise retries).
* ``propose_next_steps(question, prefix, n)`` returns ``n`` options from ``tree[prefix]``
  rotated by a per-prefix call count (or, with ``seed``, a seeded offset keyed by the
  prefix), so its output depends only on the prefix and how often it was asked, never on
  thread timing. Unknown prefixes give ``default_steps``.
* ``revise`` draws from ``revisions`` the same way and logs its arguments.

Every attempt is counted per method (``calls``) and logged (``log``); ``delay`` makes each
call sleep (``time.sleep`` / ``asyncio.sleep``) so cancellation can be tested, and
``in_flight``, ``peak_in_flight`` and ``cancelled`` count calls running, the most
running at once, and async calls cancelled.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

Script = Sequence["str | BaseException"]


class FakeGenerator:
    """Scripted generator; see the module docstring.

    Args:
        solutions: what ``sample`` returns, one entry per draw.
        tree: prefix (tuple of steps) -> next-step options for ``propose_next_steps``.
        revisions: what ``revise`` returns, one entry per call.
        seed: pick entries pseudo-randomly (reproducibly) instead of in order.
        fail_always: raise this exception from every call.
        delay: seconds each call sleeps before answering.
        default_steps: options for a prefix missing from ``tree``.
    """

    def __init__(
        self,
        solutions: Script = (),
        *,
        tree: Mapping[tuple[str, ...], Sequence[str]] | None = None,
        revisions: Script = (),
        seed: int | None = None,
        fail_always: BaseException | None = None,
        delay: float = 0.0,
        default_steps: Sequence[str] = (),
    ) -> None:
        self.solutions = list(solutions)
        self.tree = {tuple(k): list(v) for k, v in (tree or {}).items()}
        self.revisions = list(revisions)
        self.seed = seed
        self.fail_always = fail_always
        self.delay = delay
        self.default_steps = list(default_steps)
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.cancelled = 0
        self._draws: Counter[str] = Counter()
        self._prefix_calls: Counter[tuple[str, ...]] = Counter()
        self._lock = threading.Lock()

    # -- scripted answers ---------------------------------------------------------------
    def _draw(self, kind: str, script: list[str | BaseException]) -> str:
        with self._lock:
            k = self._draws[kind]
            self._draws[kind] += 1
        if not script:
            return ""
        if self.seed is None:
            entry = script[k % len(script)]
        else:
            entry = random.Random(f"{self.seed}:{kind}:{k}").choice(script)
        if isinstance(entry, BaseException):
            raise entry
        return entry

    def _answer(self, method: str, args: tuple[Any, ...]) -> Any:
        if self.fail_always is not None:
            raise self.fail_always
        if method == "sample":
            _prompt, n = args
            return [self._draw("sample", self.solutions) for _ in range(n)]
        if method == "propose_next_steps":
            _question, prefix, n = args
            key = tuple(prefix)
            options = self.tree.get(key, self.default_steps)
            with self._lock:
                count = self._prefix_calls[key]
                self._prefix_calls[key] += 1
            if not options:
                return []
            if self.seed is None:
                offset = count * n
            else:
                offset = random.Random(f"{self.seed}:{key}:{count}").randrange(len(options))
            return [options[(offset + i) % len(options)] for i in range(n)]
        if method == "revise":
            return self._draw("revise", self.revisions)
        raise AssertionError(method)

    def _enter(self, method: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self.calls[method] += 1
            self.log.append((method, args))
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _exit(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _sync(self, method: str, *args: Any) -> Any:
        self._enter(method, args)
        try:
            if self.delay:
                time.sleep(self.delay)
            return self._answer(method, args)
        finally:
            self._exit()

    async def _async(self, method: str, *args: Any) -> Any:
        self._enter(method, args)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return self._answer(method, args)
        except asyncio.CancelledError:
            with self._lock:
                self.cancelled += 1
            raise
        finally:
            self._exit()

    # -- Generator / Reviser ------------------------------------------------------------
    def sample(self, prompt: str, n: int) -> list[str]:
        return self._sync("sample", prompt, n)  # type: ignore[no-any-return]

    def propose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        return self._sync("propose_next_steps", question, list(prefix), n)  # type: ignore[no-any-return]

    def revise(self, question: str, prefix: list[str], feedback: str) -> str:
        return self._sync("revise", question, list(prefix), feedback)  # type: ignore[no-any-return]

    # -- AsyncGenerator / AsyncReviser --------------------------------------------------
    async def asample(self, prompt: str, n: int) -> list[str]:
        return await self._async("sample", prompt, n)  # type: ignore[no-any-return]

    async def apropose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        return await self._async("propose_next_steps", question, list(prefix), n)  # type: ignore[no-any-return]

    async def arevise(self, question: str, prefix: list[str], feedback: str) -> str:
        return await self._async("revise", question, list(prefix), feedback)  # type: ignore[no-any-return]


class MethodView:
    """Exposes only the named methods of a generator (e.g. a sync-only or sample-only one).

    Examples:
        >>> view = MethodView(FakeGenerator(["a"]), "sample")
        >>> hasattr(view, "asample"), view.sample("q", 1)
        (False, ['a'])
    """

    def __init__(self, generator: Any, *names: str) -> None:
        for name in names:
            setattr(self, name, getattr(generator, name))
        self.generator = generator
