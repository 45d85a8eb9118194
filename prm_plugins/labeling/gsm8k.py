"""Parse GSM8K reference solutions into checked, structured steps.

A GSM8K answer has one reasoning step per line, calculator annotations such as
``<<48/2=24>>`` and a last line ``#### 72``. :func:`parse_gsm8k_row` turns it into a
:class:`GSM8KSolution`:

- every step's *visible* text is its line with the annotations removed (what a model would
  write); the ``#### N`` line becomes a last step ``"The answer is N."``;
- every annotation is parsed with :func:`parse_expression` (an ``ast`` walker that accepts
  numbers, ``+ - * /``, unary minus and parentheses, never ``eval``) and checked exactly with
  :class:`fractions.Fraction` arithmetic;
- a line without an annotation that writes an exact calculation in plain text
  (``"20 / 4 = 5"``) gets the same treatment, so the data flow is not lost there;
- every number in the visible text is a :class:`NumberSpan` that says what it shows: an operand
  of a calculation, its result, a restatement of an earlier result, or a literal. Perturbations
  (:mod:`prm_plugins.labeling.perturb`) use this to edit the text consistently.

Every calculation result gets a quantity id (``qid``, in reading order); operands that reuse an
earlier result point at that ``qid`` (the nearest earlier result with the same value).
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from prm_plugins.errors import InvalidInputError
from prm_plugins.jsonl import JSONLineError, loads_line

__all__ = [
    "BinaryOp",
    "Calculation",
    "Expr",
    "GSM8KSolution",
    "Negate",
    "NumberSpan",
    "Operand",
    "Step",
    "VisibleEquation",
    "evaluate",
    "evaluate_expression",
    "find_equations",
    "find_numbers",
    "format_number",
    "parse_expression",
    "parse_gsm8k_answer",
    "parse_gsm8k_row",
    "parse_number",
    "quantize",
    "read_gsm8k_jsonl",
    "strip_annotations",
]

logger = logging.getLogger(__name__)

#: A calculator annotation ``<<expr=value>>``.
ANNOTATION_RE = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
#: A number as written in GSM8K text: ``24``, ``0.2``, ``.5``, ``1,000``, ``12.50``.
NUMBER_RE = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")
#: Longest expression accepted by :func:`parse_expression`.
MAX_EXPRESSION_CHARS = 400
#: Longest number (characters) :func:`parse_number` reads; GSM8K's longest has 13. A longer
#: run of digits in a step is text, not a number, so hostile text costs no big-integer work.
MAX_NUMBER_CHARS = 100
#: Longest solution line :func:`parse_gsm8k_answer` parses (GSM8K's longest has 350
#: characters); a longer line makes the row an :class:`InvalidInputError`, which labelling
#: reports as a malformed row, so no line's cost grows without bound.
MAX_LINE_CHARS = 2000
_DIVIDED_BY_RE = re.compile(r"\s+by\b")

_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
}
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


# -- numbers -----------------------------------------------------------------------------------
def parse_number(text: str) -> Fraction:
    """Parse a number as GSM8K writes it, exactly.

    Args:
        text: digits with an optional decimal part and thousands commas, e.g. ``"1,000.5"``;
            a leading ``$`` and surrounding spaces are ignored.

    Returns:
        The exact value.

    Raises:
        InvalidInputError: if ``text`` is not a plain decimal number.

    Examples:
        >>> parse_number("1,250.50")
        Fraction(2501, 2)
        >>> parse_number(".5")
        Fraction(1, 2)
    """
    cleaned = text.strip().lstrip("$").replace(",", "")
    if len(cleaned) > MAX_NUMBER_CHARS:
        raise InvalidInputError(
            f"number of {len(cleaned)} characters is longer than the {MAX_NUMBER_CHARS} read; "
            f"got {cleaned[:40]!r}..."
        )
    if not re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)", cleaned):
        raise InvalidInputError(
            f"expected a plain decimal number such as '24', '0.2' or '1,000', got {text!r}"
        )
    return Fraction(Decimal(cleaned))


def quantize(value: Fraction) -> Fraction:
    """Round a value to what a solver would write down and carry on with.

    Terminating decimals with at most 6 places are kept exactly; anything else (``10/3``) is
    rounded half-up to 2 decimal places (4 when ``|value| < 0.1``), so later steps reuse the
    written number, as a model would.

    Args:
        value: an exact value.

    Returns:
        The value as it would be written.

    Examples:
        >>> quantize(Fraction(1, 8))
        Fraction(1, 8)
        >>> quantize(Fraction(10, 3))
        Fraction(333, 100)
    """
    if _decimal_places(value) is not None:
        return value
    places = 2 if abs(value) >= Fraction(1, 10) else 4
    return _round(value, places)


def _decimal_places(value: Fraction, limit: int = 6) -> int | None:
    """Decimal places needed to write ``value`` exactly, or None if more than ``limit``."""
    for places in range(limit + 1):
        if (value * 10**places).denominator == 1:
            return places
    return None


def _round(value: Fraction, places: int) -> Fraction:
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return Fraction(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def format_number(
    value: Fraction, *, money: bool = False, commas: bool = False, min_places: int = 0
) -> str:
    """Write a value the way GSM8K text does.

    Integers have no ``.0``; money (``money=True``, the number follows a ``$``) that is not
    whole gets two decimals; other decimals are written exactly up to 6 places, rounded to 2
    beyond that.

    Args:
        value: the value to write.
        money: the number is an amount of money (shown after ``$``).
        commas: group thousands with commas, as in ``"1,000"``.
        min_places: for money written with cents (2 or more decimals), write at least this
            many decimals (keeps ``"$333,200.00"`` in the style it was written in).

    Returns:
        The text, without the ``$`` itself.

    Examples:
        >>> format_number(Fraction(24))
        '24'
        >>> format_number(Fraction(1, 5), money=True)
        '0.20'
        >>> format_number(Fraction(12345), commas=True)
        '12,345'
    """
    places = _decimal_places(value)
    if places is None:
        value = _round(value, 2)
        places = 2
    if money and places > 0:
        places = max(places, 2)
    if money and min_places >= 2:  # "$12.00" style: cents always shown
        places = max(places, min_places)
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    if places == 0:
        body = f"{int(magnitude):,}" if commas else str(int(magnitude))
        return sign + body
    exact = Decimal(magnitude.numerator) / Decimal(magnitude.denominator)
    text = f"{exact.quantize(Decimal(1).scaleb(-places)):f}"
    whole, frac = text.split(".")
    if commas:
        whole = f"{int(whole):,}"
    return f"{sign}{whole}.{frac}"


# -- expressions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Operand:
    """A number in an expression.

    Attributes:
        index: position among the expression's operands, left to right.
        value: the exact value.
        text: the number as written.
    """

    index: int
    value: Fraction
    text: str


@dataclass(frozen=True)
class BinaryOp:
    """A binary operation ``left op right``.

    Attributes:
        op: one of ``"+"``, ``"-"``, ``"*"``, ``"/"`` and ``"//"`` (floor division, which
            a few GSM8K annotations use).
        left: left sub-expression.
        right: right sub-expression.
        index: position among the expression's operators, left to right.
    """

    op: str
    left: Expr
    right: Expr
    index: int


@dataclass(frozen=True)
class Negate:
    """Unary minus (``sign=-1``) or plus (``sign=1``)."""

    operand: Expr
    sign: int = -1


Expr = Operand | BinaryOp | Negate


def parse_expression(expr: str) -> Expr:
    """Parse an arithmetic expression safely (an ``ast`` walk, never ``eval``).

    Only numbers, ``+ - * /``, ``//`` (floor division), unary ``-``/``+`` and parentheses are
    accepted. Numbers are read
    from their source text, so ``0.1`` is exactly one tenth.

    Args:
        expr: Python-syntax arithmetic, e.g. ``"100-50-30-15"`` or ``"(2+3)*.5"``.

    Returns:
        The expression tree; operands and operators are numbered left to right.

    Raises:
        InvalidInputError: if the text is empty, too long, not valid syntax, or uses anything
            else than the accepted arithmetic.

    Examples:
        >>> tree = parse_expression("48/2")
        >>> evaluate(tree)
        Fraction(24, 1)
    """
    source = expr.strip()
    if not source:
        raise InvalidInputError("empty arithmetic expression; expected something like '48/2'")
    if len(source) > MAX_EXPRESSION_CHARS:
        raise InvalidInputError(
            f"arithmetic expression of {len(source)} characters is longer than the "
            f"{MAX_EXPRESSION_CHARS} accepted; got {source[:60]!r}..."
        )
    try:
        root = ast.parse(source, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        reason = exc.msg if isinstance(exc, SyntaxError) else type(exc).__name__
        raise InvalidInputError(
            f"cannot parse arithmetic expression {source!r}: {reason}; expected numbers "
            "combined with + - * / and parentheses"
        ) from None
    # Two iterative passes (no recursion, whatever the nesting): number the operands and
    # operators left to right, checking every node, then build the tree bottom-up.
    index: dict[int, int] = {}
    operands: dict[int, Operand] = {}
    n_operators = 0
    todo: list[tuple[bool, ast.expr]] = [(False, root)]
    while todo:
        is_operator, node = todo.pop()
        if is_operator:
            index[id(node)] = n_operators
            n_operators += 1
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            todo += [(False, node.right), (True, node), (False, node.left)]
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            todo.append((False, node.operand))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool)
        ):
            text = ast.get_source_segment(source, node) or repr(node.value)
            try:
                value = parse_number(text)
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"unsupported number {text!r} in arithmetic expression {source!r}; "
                    "write plain decimals such as 12 or 0.5"
                ) from exc
            operands[id(node)] = Operand(len(operands), value, text)
        else:
            raise InvalidInputError(
                f"unsupported syntax ({type(node).__name__}) in arithmetic expression "
                f"{source!r}; only numbers, + - * /, unary minus and parentheses are accepted"
            )
    built: dict[int, Expr] = {}
    stack: list[tuple[bool, ast.expr]] = [(False, root)]
    while stack:
        children_done, node = stack.pop()
        if isinstance(node, ast.Constant):
            built[id(node)] = operands[id(node)]
        elif isinstance(node, ast.BinOp):
            if children_done:
                built[id(node)] = BinaryOp(_BINOPS[type(node.op)], built.pop(id(node.left)),
                                           built.pop(id(node.right)), index[id(node)])
            else:
                stack += [(True, node), (False, node.right), (False, node.left)]
        elif isinstance(node, ast.UnaryOp):
            if children_done:
                sign = -1 if isinstance(node.op, ast.USub) else 1
                built[id(node)] = Negate(built.pop(id(node.operand)), sign)
            else:
                stack += [(True, node), (False, node.operand)]
    return built[id(root)]


def evaluate(
    tree: Expr,
    operands: Sequence[Fraction] | None = None,
    operators: Sequence[str] | None = None,
) -> Fraction:
    """Evaluate an expression tree exactly.

    Args:
        tree: from :func:`parse_expression`.
        operands: replacement value for each operand (by ``Operand.index``); default: the
            written values.
        operators: replacement for each operator (by ``BinaryOp.index``); default: the
            written ones.

    Returns:
        The exact value.

    Raises:
        ZeroDivisionError: on division by zero.
    """
    values: list[Fraction] = []
    stack: list[tuple[bool, Expr]] = [(False, tree)]  # iterative: no recursion limit
    while stack:
        children_done, node = stack.pop()
        if isinstance(node, Operand):
            values.append(node.value if operands is None else operands[node.index])
        elif isinstance(node, Negate):
            if children_done:
                values.append(node.sign * values.pop())
            else:
                stack += [(True, node), (False, node.operand)]
        elif not children_done:
            stack += [(True, node), (False, node.right), (False, node.left)]
        else:
            right, left = values.pop(), values.pop()
            op = node.op if operators is None else operators[node.index]
            if op == "+":
                values.append(left + right)
            elif op == "-":
                values.append(left - right)
            elif op == "*":
                values.append(left * right)
            elif op == "//":
                values.append(Fraction(math.floor(left / right)))
            else:
                values.append(left / right)
    return values[0]


def evaluate_expression(expr: str) -> Fraction:
    """Parse and evaluate ``expr`` exactly (see :func:`parse_expression`).

    Examples:
        >>> evaluate_expression("0.2*50")
        Fraction(10, 1)
    """
    return evaluate(parse_expression(expr))


def operands_of(tree: Expr) -> list[Operand]:
    """The operands of ``tree`` in index order."""
    out: list[Operand] = []
    stack: list[Expr] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Operand):
            out.append(node)
        elif isinstance(node, Negate):
            stack.append(node.operand)
        else:
            stack += [node.right, node.left]
    return out


def operators_of(tree: Expr) -> list[str]:
    """The binary operators of ``tree`` in index order."""
    out: list[str] = []
    stack: list[Expr | str] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, Negate):
            stack.append(node.operand)
        elif isinstance(node, BinaryOp):
            stack += [node.right, node.op, node.left]
    return out


def root_operator(tree: Expr) -> BinaryOp | None:
    """The top-level binary operation of ``tree`` (through unary signs), or None."""
    while isinstance(tree, Negate):
        tree = tree.operand
    return tree if isinstance(tree, BinaryOp) else None


# -- visible text ------------------------------------------------------------------------------
def find_numbers(text: str) -> list[tuple[int, int, Fraction]]:
    """Every number written in ``text`` as ``(start, end, value)``.

    A run of digits longer than :data:`MAX_NUMBER_CHARS` is text, not a number.
    """
    return [(m.start(), m.end(), parse_number(m.group())) for m in NUMBER_RE.finditer(text)
            if len(m.group()) <= MAX_NUMBER_CHARS]


def strip_annotations(line: str) -> str:
    """A GSM8K line without its ``<<...>>`` calculator annotations (the visible text)."""
    return ANNOTATION_RE.sub("", line).strip()


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
        places = _decimal_places(self.result) or 0
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


# -- structured solution -----------------------------------------------------------------------
SpanRole = Literal["operand", "result", "restated", "literal"]


@dataclass(frozen=True)
class NumberSpan:
    """A number in a step's visible text and what it shows.

    Attributes:
        start: start offset in :attr:`Step.text`.
        end: end offset.
        text: the number as written (``"1,000"``).
        value: its exact value.
        money: it follows a ``$``.
        role: ``"operand"`` (an operand of calculation ``qid``), ``"result"`` (the result of
            calculation ``qid``), ``"restated"`` (repeats the result of the earlier calculation
            ``qid``) or ``"literal"`` (a number from the question or a constant).
        qid: the calculation it belongs to or repeats; None for literals.
        operand: the operand index when ``role == "operand"``.
    """

    start: int
    end: int
    text: str
    value: Fraction
    money: bool
    role: SpanRole = "literal"
    qid: int | None = None
    operand: int | None = None

    @property
    def commas(self) -> bool:
        """The number is written with thousands commas."""
        return "," in self.text

    @property
    def places(self) -> int:
        """Decimal places as written (``"12.50"`` -> 2)."""
        return len(self.text.split(".")[1]) if "." in self.text else 0


@dataclass(frozen=True)
class Calculation:
    """One checked calculation of a step (an annotation or a plain-text equation).

    Attributes:
        qid: quantity id of its result, unique within the solution, in reading order.
        expr: the expression in Python syntax, e.g. ``"48/2"``.
        tree: the parsed expression.
        claimed: the result the solution writes.
        computed: the exact value of ``expr`` (None on division by zero).
        origin: ``"annotation"`` (``<<expr=value>>``) or ``"text"`` (a written equation).
        sources: per operand, the ``qid`` of the earlier result it reuses, or None when it
            comes from the question or is a constant.
        operand_spans: per operand, the index in :attr:`Step.spans` where it is written, or
            None when the visible text does not show it.
        operator_spans: per operator, ``(start, end)`` of its symbol in the visible text, or
            None when the text does not show the expression.
        result_span: index in :attr:`Step.spans` of the written result, or None.
        ambiguous: per operand, True when its value is both an earlier result (the source
            chosen) and a number of the question, so the link may be a coincidence.
            Perturbations that would change such an operand through its source are skipped.
    """

    qid: int
    expr: str
    tree: Expr
    claimed: Fraction
    computed: Fraction | None
    origin: Literal["annotation", "text"]
    sources: tuple[int | None, ...]
    operand_spans: tuple[int | None, ...]
    operator_spans: tuple[tuple[int, int] | None, ...]
    result_span: int | None
    ambiguous: tuple[bool, ...] = ()

    @property
    def ok(self) -> bool:
        """The claimed result equals the exact value of the expression."""
        return self.computed is not None and self.computed == self.claimed

    @property
    def operands(self) -> list[Operand]:
        """The operands, left to right."""
        return operands_of(self.tree)

    @property
    def operators(self) -> list[str]:
        """The operators, left to right."""
        return operators_of(self.tree)


@dataclass(frozen=True)
class Step:
    """One step of a solution.

    Attributes:
        index: position in the solution.
        raw: the line as in the data set (with annotations); for the final step, ``#### N``.
        text: visible text (annotations removed), what a model would write.
        spans: the numbers in :attr:`text`.
        calculations: checked calculations, in reading order.
        is_final: this is the ``"The answer is N."`` step.
    """

    index: int
    raw: str
    text: str
    spans: tuple[NumberSpan, ...]
    calculations: tuple[Calculation, ...] = ()
    is_final: bool = False


@dataclass(frozen=True)
class GSM8KSolution:
    """A GSM8K problem with its reference solution parsed into checked steps.

    Attributes:
        question: the problem text.
        steps: the steps; the last one states the final answer.
        answer: the final answer's value.
        answer_text: the final answer as written after ``####``.
        answer_qid: the calculation whose result is the final answer (the last one with that
            value), or None when no calculation produces it.
        question_numbers: the numbers written in the question, in order.
        problems: annotations that could not be parsed, as messages.
    """

    question: str
    steps: tuple[Step, ...]
    answer: Fraction
    answer_text: str
    answer_qid: int | None
    question_numbers: tuple[Fraction, ...]
    problems: tuple[str, ...] = field(default=())

    @property
    def completions(self) -> list[str]:
        """The visible step texts (TRL ``completions``)."""
        return [step.text for step in self.steps]

    @property
    def calculations(self) -> list[Calculation]:
        """Every calculation, in reading order (``qid`` order)."""
        return [calc for step in self.steps for calc in step.calculations]

    @property
    def failed_annotations(self) -> list[Calculation]:
        """Annotations whose claimed result is not the exact value of their expression."""
        return [c for c in self.calculations if c.origin == "annotation" and not c.ok]

    @property
    def is_checked(self) -> bool:
        """Every annotation parsed and evaluates exactly to its claimed result."""
        return not self.problems and not self.failed_annotations

    def result_values(self) -> dict[int, Fraction]:
        """``qid`` -> claimed result."""
        return {c.qid: c.claimed for c in self.calculations}


def final_step_text(answer_text: str) -> str:
    """The visible last step for a final answer, e.g. ``"The answer is 72."``."""
    return f"The answer is {answer_text}."


def _match_operands_right_to_left(
    values: Sequence[Fraction], candidates: Sequence[int], span_values: Sequence[Fraction]
) -> list[int | None]:
    """Bind operand values to spans, matching from the right (the expression sits last)."""
    bound: list[int | None] = [None] * len(values)
    pool = list(candidates)
    for k in range(len(values) - 1, -1, -1):
        for pos in range(len(pool) - 1, -1, -1):
            if span_values[pool[pos]] == values[k]:
                bound[k] = pool[pos]
                pool = pool[:pos]
                break
    return bound


def _parse_claimed(text: str) -> Fraction:
    """The result side of an annotation: a decimal, or a plain fraction such as ``3/4``."""
    fraction = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if fraction is not None and int(fraction.group(2)) != 0:
        return Fraction(int(fraction.group(1)), int(fraction.group(2)))
    return parse_number(text)


class _SolutionBuilder:
    """Builds :class:`Step` objects line by line, keeping the quantity table."""

    def __init__(self, question_numbers: Sequence[Fraction]) -> None:
        self.question_numbers = set(question_numbers)
        self.results: list[tuple[int, Fraction]] = []  # (qid, value) in reading order
        self.qids_by_value: dict[Fraction, list[int]] = {}  # the same, looked up by value
        self.problems: list[str] = []

    def _add_result(self, qid: int, value: Fraction) -> None:
        self.results.append((qid, value))
        self.qids_by_value.setdefault(value, []).append(qid)

    def _nearest(self, value: Fraction, before: int | None = None) -> int | None:
        """The latest result ``qid`` (below ``before``, when given) with this value."""
        for qid in reversed(self.qids_by_value.get(value, ())):
            if before is None or qid < before:
                return qid
        return None

    def build_step(self, index: int, raw: str) -> Step:
        line = raw.strip()
        matches = list(ANNOTATION_RE.finditer(line))
        text = strip_annotations(line)
        # Where each annotation sat in the visible text.
        lead = len(line) - len(line.lstrip())
        positions: list[int] = []
        removed = 0
        for m in matches:
            positions.append(m.start() - removed - lead)
            removed += m.end() - m.start()
        numbers = find_numbers(text)
        span_values = [v for _, _, v in numbers]
        roles: list[dict[str, Any]] = [{"role": "literal"} for _ in numbers]
        start_to_span = {s: k for k, (s, _, _) in enumerate(numbers)}
        equations = find_equations(text)
        pending: list[dict[str, Any]] = []

        for m, pos in zip(matches, positions, strict=True):
            expr_text, claimed_text = m.group(1), m.group(2)
            try:
                tree = parse_expression(expr_text)
                claimed = _parse_claimed(claimed_text)
            except InvalidInputError as exc:
                self.problems.append(f"line {index + 1}: annotation {m.group()!r}: {exc}")
                continue
            try:
                computed: Fraction | None = evaluate(tree)
            except ZeroDivisionError:
                computed = None
            result_span = start_to_span.get(pos)
            if result_span is not None and span_values[result_span] != claimed:
                result_span = None
            if result_span is None:
                # The result written elsewhere in the line ("48/2 = 24 <<48/2=24>>").
                result_span = next(
                    (start_to_span.get(e.result_span[0]) for e in equations
                     if e.result == claimed and e.computed == claimed),
                    None,
                )
            pending.append(
                {"expr": expr_text.strip(), "tree": tree, "claimed": claimed,
                 "computed": computed, "origin": "annotation", "result_span": result_span,
                 "pos": pos}
            )
        # Plain-text calculations: exact equations that no annotation accounts for.
        annotated_results = {p["result_span"] for p in pending if p["result_span"] is not None}
        for written in equations:
            rhs = start_to_span.get(written.result_span[0])
            if rhs is None or rhs in annotated_results:
                continue
            if written.computed is None or written.computed != written.result:
                continue
            pending.append(
                {"expr": written.expr, "tree": written.tree, "claimed": written.result,
                 "computed": written.computed, "origin": "text", "result_span": rhs,
                 "pos": written.result_span[0], "equation": written}
            )
        pending.sort(key=lambda p: p["pos"])

        taken: set[int] = set()
        calcs: list[Calculation] = []
        n_before = len(self.results)
        for p in pending:
            tree = p["tree"]
            operand_values = [o.value for o in operands_of(tree)]
            operator_list = operators_of(tree)
            result_span = p["result_span"]
            if result_span is not None and result_span in taken:
                result_span = None
            eq: VisibleEquation | None = p.get("equation")
            reordered: VisibleEquation | None = None
            if eq is None and result_span is not None:
                # The annotation's expression, when the text writes it out before the result;
                # in another order ("5*2" for <<2*5=10>>) only the operands can be matched.
                for cand in equations:
                    if start_to_span.get(cand.result_span[0]) != result_span:
                        continue
                    cand_values = [o.value for o in operands_of(cand.tree)]
                    if cand_values == operand_values and operators_of(cand.tree) == operator_list:
                        eq = cand
                        break
                    if sorted(cand_values) == sorted(operand_values):
                        reordered = cand
            operand_spans: list[int | None]
            operator_spans: list[tuple[int, int] | None]
            if eq is not None:
                operand_spans = [start_to_span.get(s) for s, _ in eq.operand_spans]
                operator_spans = list(eq.operator_spans)
            elif reordered is not None:
                free = [start_to_span.get(s) for s, _ in reordered.operand_spans]
                operand_spans = []
                for value in operand_values:
                    match = next(
                        (k for k in free if k is not None and span_values[k] == value), None
                    )
                    operand_spans.append(match)
                    free.remove(match)
                operator_spans = [None] * len(operator_list)
            else:
                limit = p["pos"]
                candidates = [
                    k for k, (s, _, _) in enumerate(numbers)
                    if s < limit and k not in taken and k != result_span
                ]
                operand_spans = _match_operands_right_to_left(
                    operand_values, candidates, span_values
                )
                operator_spans = [None] * len(operator_list)
            operand_spans = [
                k if k is not None and k not in taken and k != result_span else None
                for k in operand_spans
            ]
            sources = tuple(self._nearest(v) for v in operand_values)
            qid = len(self.results)
            for k, span in enumerate(operand_spans):
                if span is not None:
                    taken.add(span)
                    roles[span] = {"role": "operand", "qid": qid, "operand": k}
            if result_span is not None:
                taken.add(result_span)
                roles[result_span] = {"role": "result", "qid": qid}
            calcs.append(
                Calculation(
                    qid=qid, expr=p["expr"], tree=tree, claimed=p["claimed"],
                    computed=p["computed"], origin=p["origin"], sources=sources,
                    operand_spans=tuple(operand_spans), operator_spans=tuple(operator_spans),
                    result_span=result_span,
                    ambiguous=tuple(
                        s is not None and v in self.question_numbers
                        for s, v in zip(sources, operand_values, strict=True)
                    ),
                )
            )
            self._add_result(qid, p["claimed"])

        # Other numbers repeat a result when the value matches one and is not also a number of
        # the question (then it is most likely the question's own number). Results of this
        # step come first, wherever they sit ("worth $64 because 60 + 4 = 64"), then the
        # nearest earlier ones.
        for k, (_, _, value) in enumerate(numbers):
            if k in taken:
                continue
            here = [c.qid for c in calcs if c.claimed == value]
            if here:  # the line's own result, even when the question has the same number
                roles[k] = {"role": "restated", "qid": here[-1]}
                continue
            if value in self.question_numbers:
                continue
            earlier = self._nearest(value, before=n_before)
            if earlier is not None:
                roles[k] = {"role": "restated", "qid": earlier}

        spans = tuple(
            NumberSpan(
                start=s, end=e, text=text[s:e], value=v, money=s > 0 and text[s - 1] == "$",
                **roles[k],
            )
            for k, (s, e, v) in enumerate(numbers)
        )
        return Step(index=index, raw=raw, text=text, spans=spans, calculations=tuple(calcs))


def parse_gsm8k_answer(answer: str, question: str = "") -> GSM8KSolution:
    """Parse a GSM8K ``answer`` field into checked, structured steps.

    Args:
        answer: the reference solution: one step per line, ``<<expr=value>>`` annotations,
            last line ``#### N``.
        question: the problem text (its numbers tell literals from restated results).

    Returns:
        The parsed solution. Annotations that do not check are kept and listed by
        :attr:`GSM8KSolution.failed_annotations`; unparseable ones in
        :attr:`GSM8KSolution.problems`.

    Raises:
        InvalidInputError: if there is no ``#### N`` line, its answer is not a number, or
            there are no steps before it.

    Examples:
        >>> sol = parse_gsm8k_answer("Half: 48/2 = <<48/2=24>>24 clips.\\n#### 24")
        >>> sol.completions
        ['Half: 48/2 = 24 clips.', 'The answer is 24.']
        >>> sol.is_checked
        True
    """
    if not isinstance(answer, str):
        raise InvalidInputError(
            f"a GSM8K answer must be a string, got {type(answer).__name__}"
        )
    lines = [line for line in answer.split("\n") if line.strip()]
    final_index = next((k for k, line in enumerate(lines) if line.lstrip().startswith("####")),
                       None)
    if final_index is None:
        raise InvalidInputError(
            "GSM8K answer has no final '#### N' line; got "
            f"{answer[-80:]!r}. Each answer must end with a line like '#### 72'."
        )
    answer_text = lines[final_index].strip()[4:].strip()
    try:
        value = parse_number(answer_text)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"GSM8K final answer must be a number, got {answer_text!r} in the '####' line"
        ) from exc
    body = lines[:final_index]
    for k, line in enumerate(body):
        if len(line) > MAX_LINE_CHARS:
            raise InvalidInputError(
                f"GSM8K answer line {k + 1} has {len(line)} characters, more than the "
                f"{MAX_LINE_CHARS} a solution step may have; got {line[:60]!r}..."
            )
    if not body:
        raise InvalidInputError(
            f"GSM8K answer has no reasoning steps before '#### {answer_text}'"
        )
    question_numbers = tuple(v for _, _, v in find_numbers(question))
    builder = _SolutionBuilder(question_numbers)
    steps = [builder.build_step(k, line) for k, line in enumerate(body)]
    answer_qid = builder._nearest(value)
    final_text = final_step_text(answer_text)
    start = final_text.index(answer_text)
    span = NumberSpan(
        start=start, end=start + len(answer_text), text=answer_text, value=value, money=False,
        role="restated" if answer_qid is not None else "literal", qid=answer_qid,
    )
    steps.append(
        Step(index=len(steps), raw=lines[final_index], text=final_text, spans=(span,),
             is_final=True)
    )
    return GSM8KSolution(
        question=question,
        steps=tuple(steps),
        answer=value,
        answer_text=answer_text,
        answer_qid=answer_qid,
        question_numbers=question_numbers,
        problems=tuple(builder.problems),
    )


def parse_gsm8k_row(row: Mapping[str, Any]) -> GSM8KSolution:
    """Parse a GSM8K row ``{"question": str, "answer": str}``.

    Raises:
        InvalidInputError: if a field is missing or not a string, or the answer is malformed
            (see :func:`parse_gsm8k_answer`).

    Examples:
        >>> row = {"question": "Tom has 3 bags of 4 apples. How many?",
        ...        "answer": "3 * 4 = <<3*4=12>>12\\n#### 12"}
        >>> parse_gsm8k_row(row).answer
        Fraction(12, 1)
    """
    if not isinstance(row, Mapping):
        raise InvalidInputError(
            f"a GSM8K row must be a mapping with 'question' and 'answer', got "
            f"{type(row).__name__}"
        )
    for key in ("question", "answer"):
        if not isinstance(row.get(key), str):
            raise InvalidInputError(
                f"GSM8K row field {key!r} must be a string, got "
                f"{type(row.get(key)).__name__}; rows look like "
                "{'question': '...', 'answer': '...\\n#### 72'}"
            )
    return parse_gsm8k_answer(row["answer"], row["question"])


def read_gsm8k_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the rows of a GSM8K JSONL file (``question``/``answer`` per line).

    Blank lines are skipped.

    Raises:
        InvalidInputError: naming the file and line, for a line that is not UTF-8, or not a
            JSON object with string ``question`` and ``answer`` fields.
        FileNotFoundError: if the file does not exist.
    """
    path = Path(path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:  # one rule for every JSONL reader: BOM, depth and number limits
                row = loads_line(raw)
            except JSONLineError as exc:
                raise InvalidInputError(
                    f"{path}:{lineno}: {exc}; each line must be one object "
                    "{\"question\": ..., \"answer\": ...}"
                ) from None
            if not isinstance(row, dict) or not all(
                isinstance(row.get(k), str) for k in ("question", "answer")
            ):
                got = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise InvalidInputError(
                    f"{path}:{lineno}: expected an object with string 'question' and 'answer', "
                    f"got {got}"
                )
            yield row
