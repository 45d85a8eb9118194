"""Deterministic step checks, and :class:`HybridPRM`, a learned PRM plus those checks.

A calculator catches arithmetic slips in written equations ("48/2 = 26") better than any
small model; a learned PRM is for what a calculator cannot see (the wrong quantity, the
wrong operation for the situation, a missing step). :class:`HybridPRM` combines them.

Checks (names as listed in a manifest's ``extra.checks`` and in ``load_prm(checks=...)``):

- ``arithmetic``: a step whose written arithmetic is wrong has its score capped, and,
  following the labelling convention (a chain is wrong from its first error on), so do the
  steps after it. The calculator is :func:`prm_plugins.arithmetic.check_arithmetic`.
- ``coverage``: experimental (tried, not shipped; see the model card), in
  :mod:`prm_plugins.experimental.coverage`, which fills this module's check registry when a
  check of that name is first asked for.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Sequence
from typing import Protocol

from prm_plugins.arithmetic import ArithmeticCheck, EquationCheck, check_arithmetic
from prm_plugins.errors import InvalidInputError
from prm_plugins.lazy import lazy_exports
from prm_plugins.types import StepScorer, StepScores

__all__ = [
    "KNOWN_CHECKS",
    "ArithmeticCheck",
    "EquationCheck",
    "HybridPRM",
    "StepCheck",
    "apply_arithmetic_check",
    "apply_checks",
    "check_arithmetic",
    "register_check",
]


class StepCheck(Protocol):
    """A named step check: caps scores of a scored chain, keeps the model's in ``meta``."""

    def __call__(self, scored: StepScores, *, cap: float, propagate: bool) -> StepScores: ...


#: Names of the checks a model's manifest may list under ``extra.checks``.
KNOWN_CHECKS: tuple[str, ...] = ("arithmetic", "coverage")

#: Checks that live outside this module -> the module that registers them when imported.
_PROVIDERS: dict[str, str] = {"coverage": "prm_plugins.experimental.coverage"}
_REGISTRY: dict[str, StepCheck] = {}

#: Names that moved to :mod:`prm_plugins.experimental.coverage` (old path warns, one release).
__getattr__, __dir__ = lazy_exports(__name__, {}, moved=dict.fromkeys(
    ["apply_coverage_check", "states_final_answer", "unused_quantities"],
    "prm_plugins.experimental.coverage"))


def register_check(name: str, check: StepCheck) -> None:
    """Register the step check ``name`` (one of :data:`KNOWN_CHECKS`) for :func:`apply_checks`.

    Raises:
        InvalidInputError: if ``name`` is not one of :data:`KNOWN_CHECKS`.
    """
    if name not in KNOWN_CHECKS:
        raise InvalidInputError(f"unknown step check {name!r}; known checks: "
                                f"{', '.join(KNOWN_CHECKS)}")
    _REGISTRY[name] = check


def _check(name: str) -> StepCheck | None:
    """The registered check ``name``, importing the module that provides it if need be."""
    if name not in _REGISTRY and name in _PROVIDERS:
        importlib.import_module(_PROVIDERS[name])
    return _REGISTRY.get(name)


def apply_checks(scored: StepScores, checks: Sequence[str], *, cap: float = 0.05,
                 propagate: bool = True) -> StepScores:
    """Apply the named checks (:data:`KNOWN_CHECKS`) in order."""
    for name in checks:
        check = _check(name)
        if check is None:
            raise InvalidInputError(f"unknown step check {name!r}; known checks: "
                                    f"{', '.join(KNOWN_CHECKS)}")
        scored = check(scored, cap=cap, propagate=propagate)
    return scored


def apply_arithmetic_check(
    scored: StepScores, *, cap: float = 0.05, propagate: bool = True
) -> StepScores:
    """Cap the score of steps whose written arithmetic is wrong (and, with ``propagate``,
    of every later step). The model's own scores are kept in ``meta["model_scores"]``.
    """
    checks = [check_arithmetic(s)[0] for s in scored.steps]
    scores = list(scored.scores)
    wrong_seen = False
    for i, verdict in enumerate(checks):
        wrong_seen = wrong_seen or verdict == "wrong"
        if verdict == "wrong" or (propagate and wrong_seen):
            scores[i] = min(scores[i], cap)
    meta = {**scored.meta, "arithmetic": checks}
    meta.setdefault("model_scores", list(scored.scores))
    return StepScores(steps=scored.steps, scores=scores, question=scored.question, meta=meta)


register_check("arithmetic", apply_arithmetic_check)


class HybridPRM:
    """A learned PRM plus deterministic checks (by default the calculator check).

    Args:
        prm: any scorer (``OnnxPRM``, a remote scorer, ...).
        cap: highest score a step with wrong written arithmetic keeps.
        propagate: also cap every later step (a chain is wrong from its first error on).
        checks: the checks to apply, in order (:data:`KNOWN_CHECKS`).

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> prm = HybridPRM(load_prm())  # doctest: +SKIP
        >>> prm.score("12 pens at $5 each?", ["12 * 5 = $65"]).scores[0] <= 0.05  # doctest: +SKIP
        True
    """

    def __init__(self, prm: StepScorer, *, cap: float = 0.05, propagate: bool = True,
                 checks: Sequence[str] = ("arithmetic",)) -> None:
        if not 0.0 <= cap <= 1.0:
            raise InvalidInputError(f"cap must be in [0, 1], got {cap!r}")
        if isinstance(checks, str) or any(c not in KNOWN_CHECKS for c in checks):
            raise InvalidInputError(f"checks must be a list of names from {KNOWN_CHECKS}, "
                                    f"got {checks!r}")
        self.checks = tuple(checks)
        self.prm = prm
        self.cap = float(cap)
        self.propagate = propagate

    #: Attributes read through from the wrapped scorer; scoring methods are never passed
    #: through, so every score goes through the arithmetic cap.
    _PASSTHROUGH = frozenset({"provider", "format", "manifest", "model_dir", "max_length",
                              "tokenizer", "long_chains", "run_graph"})

    def __getattr__(self, name: str) -> object:
        if name in HybridPRM._PASSTHROUGH:
            return getattr(self.prm, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _combine(self, scored: StepScores) -> StepScores:
        return apply_checks(scored, self.checks, cap=self.cap, propagate=self.propagate)

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        """Model scores, capped where the written arithmetic is wrong."""
        return self._combine(self.prm.score(question, steps))

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """:meth:`score` for many chains, in one batched model call."""
        return [self._combine(s) for s in self.prm.score_batch(items)]

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        """Async :meth:`score`."""
        return await asyncio.to_thread(self.score, question, steps)

    async def ascore_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """Async :meth:`score_batch`."""
        return await asyncio.to_thread(self.score_batch, items)
