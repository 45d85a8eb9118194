"""The calculator check: every written equation ``expression = number`` in a step, checked.

Lenient, for text a model writes: numbers may carry ``$``/``€``/``£``, thousands commas and
``%``; up to three unit words may sit between a number and its operator (``12 slices * 3``);
an ``x`` between two numbers is a product. The left side is evaluated with
:func:`~prm_plugins.arithmetic.expressions.evaluate_tokens` (bounded nesting and value size),
the right side read with :func:`~prm_plugins.arithmetic.numerals.read_written_number`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from prm_plugins.arithmetic.expressions import evaluate_tokens
from prm_plugins.arithmetic.numerals import WRITTEN_NUMBER, read_written_number
from prm_plugins.errors import InvalidInputError

__all__ = ["ArithmeticCheck", "EquationCheck", "check_arithmetic"]

_TOKEN = re.compile(
    rf"""
    (?P<num>{WRITTEN_NUMBER})
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


def _tokens(text: str) -> list[tuple[str, object, str]]:
    """Tokens of a step, with unit words between a number and an operator removed."""
    raw_toks: list[tuple[str, object, str]] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "other"
        raw = m.group()
        if kind == "space":
            continue
        if kind == "num":
            parsed = read_written_number(raw)
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
        lhs = evaluate_tokens(lhs_items)
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
