"""Experimental ``coverage`` step check (tried, not shipped; see the model card).

A final-answer step ("The answer is 53.", ``#### 53``, ``\\boxed{53}``) reached without ever
using one of the numbers the question gives is capped (a skipped step or an ignored condition;
"he sells 18 and gives away 7" answered without the 18). Only the final-answer step is
capped, since the check cannot tell where the missing step belonged, and never a partial
chain, so search over prefixes is unaffected. Problems with deliberately irrelevant numbers
trip it: leave it off for such data.

Importing this module registers the check as ``"coverage"`` in :mod:`prm_plugins.checks`, so
``load_prm(checks=("arithmetic", "coverage"))`` and ``HybridPRM(..., checks=(...,
"coverage"))`` use it (they import it on first use).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

from prm_plugins.arithmetic import WRITTEN_NUMBER, read_written_number
from prm_plugins.checks import register_check
from prm_plugins.types import StepScores

__all__ = ["apply_coverage_check", "states_final_answer", "unused_quantities"]

_QUANTITY = re.compile(WRITTEN_NUMBER)
_FINAL_ANSWER = re.compile(r"(?i)\banswer\s*(?:is|:)|####|\\boxed\{")


def _values(text: str) -> set[Fraction]:
    """Values of the numbers in ``text``; a percentage gives both ``25`` and ``0.25``."""
    out: set[Fraction] = set()
    for m in _QUANTITY.finditer(text):
        parsed = read_written_number(m.group())
        if parsed is None:
            continue
        out.add(parsed[0])
        if m.group().endswith("%"):
            out.add(parsed[0] * 100)
    return out


def unused_quantities(question: str, steps: Sequence[str]) -> list[str]:
    """Numbers written in the question whose value no step writes (as written, in order).

    A percentage counts as used when either form is written (``25%`` as ``25`` or ``0.25``),
    and so does a number written x100 or /100 (``0.5`` as ``50``).

    Examples:
        >>> unused_quantities("He sells 18 apples and gives away 7.", ["60 - 7 = 53"])
        ['18']
        >>> unused_quantities("A 25% tip on $1,200?", ["0.25 * 1200 = 300"])
        []
    """
    used: set[Fraction] = set()
    for step in steps:
        used |= _values(step)
    out = []
    for m in _QUANTITY.finditer(question):
        values = _values(m.group())
        if values and not any(v in used or v * 100 in used or v / 100 in used
                              for v in values):
            out.append(m.group().lstrip("$€£"))
    return list(dict.fromkeys(out))


def states_final_answer(step: str) -> bool:
    """Whether a step states the final answer ("The answer is 5", ``#### 5``, ``\boxed{5}``).

    Examples:
        >>> states_final_answer("The answer is 53."), states_final_answer("60 - 7 = 53")
        (True, False)
    """
    return bool(_FINAL_ANSWER.search(step))


def apply_coverage_check(scored: StepScores, *, cap: float = 0.3) -> StepScores:
    """Cap a final-answer step reached without using every number of the question.

    ``meta["unused_quantities"]`` lists the numbers not used (empty when the check passed
    or did not apply); a chain whose last step states no final answer is left alone.
    """
    unused: list[str] = []
    scores = list(scored.scores)
    if scored.steps and scored.question and states_final_answer(scored.steps[-1]):
        unused = unused_quantities(scored.question, scored.steps)
        if unused:
            scores[-1] = min(scores[-1], cap)
    meta = {**scored.meta, "unused_quantities": unused}
    meta.setdefault("model_scores", list(scored.scores))
    return StepScores(steps=scored.steps, scores=scores, question=scored.question, meta=meta)


def _coverage(scored: StepScores, *, cap: float, propagate: bool) -> StepScores:
    """The registered ``coverage`` check: its own cap (0.3), whatever the arithmetic cap."""
    del cap, propagate
    return apply_coverage_check(scored)


register_check("coverage", _coverage)
