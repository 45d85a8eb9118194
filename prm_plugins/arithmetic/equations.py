"""Written equations (``a op b = c``) in a solution's visible text, found and checked.

Two readers, for two kinds of text:

- :func:`find_equations` (reference text, the labelling parser): strict infix only, with the
  operators GSM8K writes (``+ - * / x × ÷`` and the words ``plus``, ``minus``, ``times``,
  ``divided by``), and the character spans of every operand, operator and result, so a
  perturbation can rewrite the text consistently. A result is exact, or right to the
  decimals it is written with (:attr:`VisibleEquation.holds`).
- :func:`~prm_plugins.arithmetic.calculator.check_arithmetic` (model-written steps, the
  calculator check): lenient; it reads past unit words (``12 slices * 3``), money signs and
  percentages, and accepts a whole number written for a fractional result.

Both read numbers with :mod:`prm_plugins.arithmetic.numerals` and evaluate with
:mod:`prm_plugins.arithmetic.expressions`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from prm_plugins.arithmetic.expressions import Expr, evaluate, parse_expression
from prm_plugins.arithmetic.numerals import (
    MAX_NUMBER_CHARS,
    NUMBER_RE,
    decimal_places,
    parse_number,
)
from prm_plugins.errors import InvalidInputError

__all__ = ["VisibleEquation", "find_equations"]

_DIVIDED_BY_RE = re.compile(r"\s+by\b")
_TEXT_OPERATORS: dict[str, str] = {
    "+": "+",
    "-": "-",
    "\u2212": "-",  # minus sign
    "*": "*",
    "\u00d7": "*",  # multiplication sign
    "x": "*",
    "X": "*",
    "/": "/",
    "\u00f7": "/",  # division sign
    "plus": "+",
    "minus": "-",
    "times": "*",
    "divided by": "/",
}
#: Operators written as words ("3 times 60 equals 180"); "divided by" is matched separately.
_WORD_OPERATORS = ("plus", "minus", "times")


@dataclass(frozen=True)
class VisibleEquation:
    """An ``a op b ... = c`` calculation written in plain text.

    Attributes:
        expr: the left side in Python syntax (``x``/``×`` become ``*``), e.g. ``"0.2*50"``.
        tree: the parsed left side.
        operand_spans: ``(start, end)`` in the text of each operand, left to right.
        operator_spans: ``(start, end)`` in the text of each operator, left to right.
        result_span: ``(start, end)`` of the number after ``=``.
        result: its value.
        computed: the left side's exact value (None on division by zero).
    """

    expr: str
    tree: Expr
    operand_spans: tuple[tuple[int, int], ...]
    operator_spans: tuple[tuple[int, int], ...]
    result_span: tuple[int, int]
    result: Fraction
    computed: Fraction | None

    @property
    def holds(self) -> bool:
        """True when the written result is right (to the decimals it is written with)."""
        if self.computed is None:
            return False
        if self.computed == self.result:
            return True
        places = decimal_places(self.result) or 0
        return places >= 1 and abs(self.computed - self.result) <= Fraction(1, 2 * 10**places)


_Token = tuple[str, int, int, str]  # kind, start, end, text


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    numbers = {m.start(): m for m in NUMBER_RE.finditer(text)
               if len(m.group()) <= MAX_NUMBER_CHARS}
    i = 0
    while i < len(text):
        ch = text[i]
        if i in numbers:
            m = numbers[i]
            tokens.append(("num", m.start(), m.end(), m.group()))
            i = m.end()
        elif ch.isspace() or ch == "$":
            i += 1
        elif ch in "+-\u2212*\u00d7/\u00f7":
            tokens.append(("op", i, i + 1, ch))
            i += 1
        elif ch == "(":
            tokens.append(("lp", i, i + 1, ch))
            i += 1
        elif ch == ")":
            tokens.append(("rp", i, i + 1, ch))
            i += 1
        elif ch == "=":
            tokens.append(("eq", i, i + 1, ch))
            i += 1
        elif ch.isalpha():
            j = i
            while j < len(text) and text[j].isalpha():
                j += 1
            word = text[i:j]
            lower = word.lower()
            by = _DIVIDED_BY_RE.match(text, j) if lower == "divided" else None
            if by is not None:
                j = by.end()
                tokens.append(("op", i, j, "divided by"))
            elif lower in _WORD_OPERATORS:
                tokens.append(("op", i, j, lower))
            elif lower in ("equals", "is"):
                tokens.append(("eq" if lower == "equals" else "other", i, j, word))
            else:
                tokens.append(("x" if word in ("x", "X") else "other", i, j, word))
            i = j
        else:
            tokens.append(("other", i, i + 1, ch))
            i += 1
    # "x" is multiplication only between two numbers / parentheses.
    for k, tok in enumerate(tokens):
        if tok[0] == "x":
            before = tokens[k - 1][0] if k > 0 else ""
            after = tokens[k + 1][0] if k + 1 < len(tokens) else ""
            is_op = before in ("num", "rp") and after in ("num", "lp")
            tokens[k] = ("op" if is_op else "other", tok[1], tok[2], tok[3])
    return tokens


def _balanced_start(lhs: list[_Token]) -> int:
    """First ``s`` where ``lhs[s:]`` starts with an operand or ``(`` and its parentheses
    balance (one linear pass; ``len(lhs)`` when there is none)."""
    depth = [0]  # depth[i]: parentheses open after lhs[:i]
    for tok in lhs:
        depth.append(depth[-1] + (tok[0] == "lp") - (tok[0] == "rp"))
    n = len(lhs)
    lowest_after = [0] * (n + 1)  # min(depth[i + 1:]), or depth[n] at the end
    lowest_after[n] = depth[n]
    for i in range(n - 1, -1, -1):
        lowest_after[i] = min(depth[i + 1], lowest_after[i + 1])
    for s in range(n):
        if (lhs[s][0] not in ("op", "rp") and depth[s] == depth[n]
                and lowest_after[s] >= depth[s]):
            return s
    return n


def _equation_from_tokens(lhs: list[_Token], rhs: _Token) -> VisibleEquation | None:
    # Trim from the left until the tokens form one well-formed infix expression.
    lhs = lhs[_balanced_start(lhs):]
    operators = [t for t in lhs if t[0] == "op"]
    if not operators:
        return None
    previous = ""
    for tok in lhs:  # no unary signs and no implicit products: strict infix only
        if tok[0] == "op" and previous not in ("num", "rp"):
            return None
        if tok[0] in ("num", "lp") and previous in ("num", "rp"):
            return None
        previous = tok[0]
    if previous not in ("num", "rp"):
        return None
    pieces = []
    for kind, _, _, text in lhs:
        if kind == "num":
            pieces.append(text.replace(",", ""))
        elif kind == "op":
            pieces.append(_TEXT_OPERATORS[text])
        else:
            pieces.append(text)
    expr = "".join(pieces)
    try:
        tree = parse_expression(expr)
    except InvalidInputError:
        return None
    try:
        computed: Fraction | None = evaluate(tree)
    except ZeroDivisionError:
        computed = None
    return VisibleEquation(
        expr=expr,
        tree=tree,
        operand_spans=tuple((t[1], t[2]) for t in lhs if t[0] == "num"),
        operator_spans=tuple((t[1], t[2]) for t in operators),
        result_span=(rhs[1], rhs[2]),
        result=parse_number(rhs[3]),
        computed=computed,
    )


def find_equations(text: str) -> list[VisibleEquation]:
    """Every ``expression = number`` calculation written in ``text``, left to right.

    The expression is the longest run of numbers, operators (``+ - * / x × ÷`` and the words
    ``plus``, ``minus``, ``times``, ``divided by``) and parentheses right before ``=`` (or the
    word ``equals``) that is well formed and has at least one operator; the result is the number
    right after it (a following operator disqualifies it: ``"= 2 * 3"`` is not
    a result). Words between numbers end the expression.

    Args:
        text: visible step text.

    Returns:
        The equations found, whether or not they hold (see :attr:`VisibleEquation.holds`).

    Examples:
        >>> [e.expr for e in find_equations("She earned 0.2 x 50 = $10.")]
        ['0.2*50']
    """
    tokens = _tokenize(text)
    equations: list[VisibleEquation] = []
    for k, tok in enumerate(tokens):
        if tok[0] != "eq" or k + 1 >= len(tokens) or tokens[k + 1][0] != "num":
            continue
        if k + 2 < len(tokens) and tokens[k + 2][0] in ("op", "lp"):
            continue
        j = k
        while j > 0 and tokens[j - 1][0] in ("num", "op", "lp", "rp"):
            j -= 1
        equation = _equation_from_tokens(tokens[j:k], tokens[k + 1])
        if equation is not None:
            equations.append(equation)
    return equations
