"""Deterministic step checks, and :class:`HybridPRM`, a learned PRM plus those checks.

A calculator catches arithmetic slips in written equations ("48/2 = 26") better than any
small model; a learned PRM is for what a calculator cannot see (the wrong quantity, the
wrong operation for the situation, a missing step). :class:`HybridPRM` combines them.

Checks (names as listed in a manifest's ``extra.checks`` and in ``load_prm(checks=...)``):

- ``arithmetic``: a step whose written arithmetic is wrong has its score capped, and,
  following the labelling convention (a chain is wrong from its first error on), so do the
  steps after it.
- ``coverage``: a final-answer step ("The answer is 53.", ``#### 53``, ``\boxed{53}``) reached
  without ever using one of the numbers the question gives is capped (a skipped step or an
  ignored condition; "he sells 18 and gives away 7" answered without the 18). Only the
  final-answer step is capped, since the check cannot tell where the missing step belonged,
  and never a partial chain, so search over prefixes is unaffected. Problems with
  deliberately irrelevant numbers trip it: leave it off for such data.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from prm_plugins.errors import InvalidInputError
from prm_plugins.types import StepScorer, StepScores

__all__ = [
    "KNOWN_CHECKS",
    "ArithmeticCheck",
    "EquationCheck",
    "HybridPRM",
    "apply_arithmetic_check",
    "apply_checks",
    "apply_coverage_check",
    "check_arithmetic",
    "states_final_answer",
    "unused_quantities",
]

#: A number as written in a step or question: "$1,200.50", "15%", ".5".
_NUMBER = r"(?<![\w.])[$€£]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)%?"
_TOKEN = re.compile(
    rf"""
    (?P<num>{_NUMBER})
  | (?P<op>[-+*/×÷–−])
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<eq>=)
  | (?P<word>[^\W\d_]+)
  | (?P<space>\s+)
  | (?P<other>.)
    """,
    re.VERBOSE,
)
_OPS = {"+": "+", "-": "-", "–": "-", "−": "-", "*": "*", "/": "/", "×": "*", "÷": "/",
        "x": "*", "X": "*"}
#: Most unit words allowed between a number and an operator ("12 slices * 1/3").
_MAX_UNIT_WORDS = 3

@dataclass(frozen=True)
class EquationCheck:
    """One written equation ``lhs = rhs`` found in a step, and whether it holds."""

    text: str
    lhs_value: Fraction
    rhs_value: Fraction
    holds: bool


ArithmeticCheck = Literal["ok", "wrong", "none"]


def _number(tok: str) -> tuple[Fraction, int] | None:
    """Value and decimal places of a number token (``$1,200.50``, ``15%`` -> 0.15)."""
    if len(tok) > _MAX_NUMBER_CHARS:
        return None
    t = tok.lstrip("$€£").replace(",", "")
    pct = t.endswith("%")
    t = t.rstrip("%")
    try:
        value = Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    places = len(t.split(".")[1]) if "." in t else 0
    return (value / 100 if pct else value), places + (2 if pct else 0)


#: Longest number (characters, sign and separators included) read as a number; a longer
#: run of digits is text, so a step holding ``"9" * 100000`` costs no big-integer work.
#: GSM8K's longest number has 13 characters.
_MAX_NUMBER_CHARS = 64
#: Deepest nesting of parentheses and unary signs evaluated; deeper expressions (no person
#: writes them; hostile text does) get no verdict.
_MAX_NESTING = 64
#: Largest intermediate value, in bits of numerator or denominator (about 1,200 digits);
#: an expression that grows past it ("9^9^9" written out as products) gets no verdict.
_MAX_VALUE_BITS = 4096


class _Unparsable(Exception):
    """The items do not form one expression the check evaluates (no verdict)."""


def _reduce(values: list[Fraction], op: str) -> None:
    """Apply ``op`` to the top of ``values`` (one operand for ``"neg"``, else two)."""
    if op == "neg":
        values.append(-values.pop())
        return
    rhs, lhs = values.pop(), values.pop()
    if op == "+":
        value = lhs + rhs
    elif op == "-":
        value = lhs - rhs
    elif op == "*":
        value = lhs * rhs
    else:
        value = lhs / rhs  # ZeroDivisionError: no verdict
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > _MAX_VALUE_BITS:
        raise _Unparsable("value too large")
    values.append(value)


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3}


def _evaluate(items: list[tuple[str, object]]) -> Fraction | None:
    """Value of + - * / ( ) and unary minus over Fractions, or None; no ``eval``.

    Iterative (operator precedence with explicit stacks), so nesting costs no recursion:
    nesting deeper than :data:`_MAX_NESTING`, a value past :data:`_MAX_VALUE_BITS`,
    division by zero or a malformed expression give ``None``.
    """
    values: list[Fraction] = []
    ops: list[str] = []  # binary operators, "neg" and "(" markers
    expect_operand = True
    nesting = 0
    try:
        for kind, val in items:
            if expect_operand:
                if kind == "num":
                    values.append(val)  # type: ignore[arg-type]
                    expect_operand = False
                    while ops and ops[-1] == "neg":  # "-x" binds to its operand
                        _reduce(values, ops.pop())
                        nesting -= 1
                elif kind == "op" and val == "-":
                    ops.append("neg")
                    nesting += 1
                elif kind == "lp":
                    ops.append("(")
                    nesting += 1
                else:
                    return None
                if nesting > _MAX_NESTING:
                    return None
            elif kind == "op":
                op = str(val)
                while ops and ops[-1] != "(" and _PRECEDENCE[ops[-1]] >= _PRECEDENCE[op]:
                    _reduce(values, ops.pop())
                ops.append(op)
                expect_operand = True
            elif kind == "rp":
                while ops and ops[-1] != "(":
                    _reduce(values, ops.pop())
                if not ops:
                    return None  # unmatched ")"
                ops.pop()
                nesting -= 1
                while ops and ops[-1] == "neg":  # "-(...)"
                    _reduce(values, ops.pop())
                    nesting -= 1
            else:
                return None  # two operands in a row
        if expect_operand:
            return None
        while ops:
            op = ops.pop()
            if op == "(":
                return None  # unclosed "("
            _reduce(values, op)
    except (ZeroDivisionError, _Unparsable):
        return None
    return values[0] if len(values) == 1 else None


def _tokens(text: str) -> list[tuple[str, object, str]]:
    """Tokens of a step, with unit words between a number and an operator removed."""
    raw_toks: list[tuple[str, object, str]] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "other"
        raw = m.group()
        if kind == "space":
            continue
        if kind == "num":
            parsed = _number(raw)
            raw_toks.append(("num", parsed, raw) if parsed else ("other", raw, raw))
        elif kind == "op":
            raw_toks.append(("op", _OPS[raw], raw))
        else:
            raw_toks.append((kind, raw, raw))
    toks: list[tuple[str, object, str]] = []
    i = 0
    while i < len(raw_toks):
        tok = raw_toks[i]
        toks.append(tok)
        i += 1
        if tok[0] not in ("num", "rp"):
            continue
        # "2000x 10" or "3 x 4": an x between two numbers is a multiplication
        if (i + 1 < len(raw_toks) and raw_toks[i][0] == "word" and raw_toks[i][1] in ("x", "X")
                and raw_toks[i + 1][0] == "num"):
            toks.append(("op", "*", raw_toks[i][2]))
            i += 1
            continue
        # unit words ("12 slices *", "2 GB/minute =") up to an operator, "=" or ")"
        j, words = i, 0
        while j < len(raw_toks) and words <= _MAX_UNIT_WORDS:
            if raw_toks[j][0] == "word" and raw_toks[j][1] not in ("x", "X"):
                j, words = j + 1, words + 1
            elif (raw_toks[j][0] == "op" and raw_toks[j][1] == "/"
                  and j + 1 < len(raw_toks) and raw_toks[j + 1][0] == "word"):
                j += 1
            else:
                break
        if (j > i and words <= _MAX_UNIT_WORDS and j < len(raw_toks)
                and raw_toks[j][0] in ("op", "eq", "rp")):
            i = j
        elif (j > i and words <= _MAX_UNIT_WORDS and j < len(raw_toks) - 1
              and raw_toks[j][0] == "word" and raw_toks[j][1] in ("x", "X")
              and raw_toks[j + 1][0] == "num"):
            toks.append(("op", "*", raw_toks[j][2]))
            i = j + 1
    return toks


def _expression_left(toks: list[tuple[str, object, str]], eq: int) -> tuple[int, int]:
    """Span [start, eq) of the longest arithmetic run ending just before ``toks[eq]``."""
    start = eq
    while start > 0 and toks[start - 1][0] in ("num", "op", "lp", "rp"):
        start -= 1
    # trim a leading binary operator or unmatched ")"; a leading "-" is a unary minus
    while start < eq and (toks[start][0] == "rp" or (toks[start][0] == "op"
                                                      and toks[start][1] != "-")):
        start += 1
    return start, eq


def check_arithmetic(step: str) -> tuple[ArithmeticCheck, list[EquationCheck]]:
    """Check every written equation ``expression = number`` in a step.

    Only equations whose left side has an operator are checked ("x = 5" is not). A
    right side written with d decimals is compared after rounding the left side to d
    decimals (so "10/3 = 3.33" holds), an integer written for a fractional result may
    round either way, and "=" chains are checked pairwise.

    Returns:
        ``("wrong", ...)`` if any equation fails, ``("ok", ...)`` if at least one was
        checked and all hold, ``("none", [])`` if nothing could be checked.

    Examples:
        >>> check_arithmetic("Natalia sold 48/2 = 24 clips in May.")[0]
        'ok'
        >>> check_arithmetic("She earns 12 * 5 = $65 a week.")[0]
        'wrong'
        >>> check_arithmetic("She walks to school.")[0]
        'none'
    """
    if not isinstance(step, str):
        raise InvalidInputError(f"step must be a str, got {type(step).__name__}")
    toks = _tokens(step)
    checks: list[EquationCheck] = []
    for eq, tok in enumerate(toks):
        if tok[0] != "eq" or eq + 1 >= len(toks):
            continue
        start, end = _expression_left(toks, eq)
        lhs_items = [(k, v[0] if k == "num" else v) for k, v, _ in toks[start:end]]  # type: ignore[index]
        if not any(k == "op" for k, _ in lhs_items):
            continue
        # right side: an optional minus and one number
        j = eq + 1
        neg = False
        if toks[j][0] == "op" and toks[j][1] == "-" and j + 1 < len(toks):
            neg, j = True, j + 1
        if toks[j][0] != "num":
            continue
        # a right side that continues with an operator is an expression, not a result
        if j + 1 < len(toks) and toks[j + 1][0] == "op":
            continue
        lhs = _evaluate(lhs_items)
        if lhs is None:
            continue
        num: tuple[Fraction, int] = toks[j][1]  # type: ignore[assignment]
        rhs_value, places = num
        rhs = -rhs_value if neg else rhs_value
        tol = Fraction(1, 2 * 10**places) if places else Fraction(0)
        # An integer written for a fractional result may be rounded either way
        # ("7/2 = 3 full boxes", "10/3 = 4 buses").
        holds = any(
            abs(lhs - r) <= tol + Fraction(1, 10**9)
            or (p == 0 and lhs.denominator != 1 and abs(lhs - r) < 1)
            # "18 / 450 x 100 = 4%": a percentage written for a value already times 100
            for r, tol, p in ((rhs, tol, places), (rhs * 100, tol * 100, places - 2))
            if r == rhs or str(toks[j][2]).endswith("%")
        )
        text = " ".join(t[2] for t in toks[start : j + 1])
        checks.append(EquationCheck(text=text, lhs_value=lhs, rhs_value=rhs, holds=holds))
    if not checks:
        return "none", []
    return ("ok" if all(c.holds for c in checks) else "wrong"), checks


#: Names of the checks a model's manifest may list under ``extra.checks``.
KNOWN_CHECKS: tuple[str, ...] = ("arithmetic", "coverage")

_QUANTITY = re.compile(_NUMBER)
_FINAL_ANSWER = re.compile(r"(?i)\banswer\s*(?:is|:)|####|\\boxed\{")


def _values(text: str) -> set[Fraction]:
    """Values of the numbers in ``text``; a percentage gives both ``25`` and ``0.25``."""
    out: set[Fraction] = set()
    for m in _QUANTITY.finditer(text):
        parsed = _number(m.group())
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


def apply_checks(scored: StepScores, checks: Sequence[str], *, cap: float = 0.05,
                 propagate: bool = True) -> StepScores:
    """Apply the named checks (:data:`KNOWN_CHECKS`) in order."""
    for name in checks:
        if name == "arithmetic":
            scored = apply_arithmetic_check(scored, cap=cap, propagate=propagate)
        elif name == "coverage":
            scored = apply_coverage_check(scored)
        else:
            raise InvalidInputError(f"unknown step check {name!r}; known checks: "
                                    f"{', '.join(KNOWN_CHECKS)}")
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
