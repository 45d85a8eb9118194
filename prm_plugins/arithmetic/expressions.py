"""Arithmetic expressions: parsed into trees, evaluated exactly, never with ``eval``.

- :func:`parse_expression` reads Python-syntax arithmetic (a GSM8K annotation ``48/2``) into a
  tree of :class:`Operand`, :class:`BinaryOp` and :class:`Negate` whose operands and operators
  are numbered, so a perturbation can replace them (:func:`evaluate` with ``operands=``).
- :func:`evaluate_tokens` evaluates a token list taken from free text (the calculator check)
  with explicit stacks and bounds on nesting and value size.

Both apply operators with :func:`apply_operator`; both are iterative, so hostile nesting costs
no recursion.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from prm_plugins.arithmetic.numerals import parse_number
from prm_plugins.errors import InvalidInputError

__all__ = [
    "MAX_EXPRESSION_CHARS",
    "MAX_NESTING",
    "MAX_VALUE_BITS",
    "BinaryOp",
    "Expr",
    "Negate",
    "Operand",
    "apply_operator",
    "evaluate",
    "evaluate_expression",
    "evaluate_tokens",
    "operands_of",
    "operators_of",
    "parse_expression",
    "root_operator",
]

#: Longest expression accepted by :func:`parse_expression`.
MAX_EXPRESSION_CHARS = 400
_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
}


def apply_operator(op: str, left: Fraction, right: Fraction) -> Fraction:
    """``left op right`` exactly, for ``op`` in ``+ - * / //`` (``//`` floors).

    Raises:
        ZeroDivisionError: on division by zero.

    Examples:
        >>> apply_operator("/", Fraction(7), Fraction(2))
        Fraction(7, 2)
    """
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "//":
        return Fraction(math.floor(left / right))
    return left / right


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
    operands, index = _number_nodes(root, source)
    return _build_tree(root, operands, index)


def _number_nodes(
    root: ast.expr, source: str
) -> tuple[dict[int, Operand], dict[int, int]]:
    """First pass of :func:`parse_expression`: check every node, number operands/operators."""
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
    return operands, index


def _build_tree(root: ast.expr, operands: dict[int, Operand], index: dict[int, int]) -> Expr:
    """Second pass of :func:`parse_expression`: the tree, built bottom-up without recursion."""
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
            values.append(apply_operator(op, left, right))
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



#: Deepest nesting of parentheses and unary signs evaluated; deeper expressions (no person
#: writes them; hostile text does) get no verdict.
MAX_NESTING = 64
#: Largest intermediate value, in bits of numerator or denominator (about 1,200 digits);
#: an expression that grows past it ("9^9^9" written out as products) gets no verdict.
MAX_VALUE_BITS = 4096


class _Unparsable(Exception):
    """The items do not form one expression the check evaluates (no verdict)."""


def _reduce(values: list[Fraction], op: str) -> None:
    """Apply ``op`` to the top of ``values`` (one operand for ``"neg"``, else two)."""
    if op == "neg":
        values.append(-values.pop())
        return
    rhs, lhs = values.pop(), values.pop()
    value = apply_operator(op, lhs, rhs)  # ZeroDivisionError: no verdict
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_VALUE_BITS:
        raise _Unparsable("value too large")
    values.append(value)


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3}


def evaluate_tokens(items: list[tuple[str, object]]) -> Fraction | None:
    """Value of + - * / ( ) and unary minus over Fractions, or None; no ``eval``.

    ``items`` are ``(kind, value)`` pairs in reading order: ``("num", Fraction)``,
    ``("op", "+" | "-" | "*" | "/")``, ``("lp", "(")`` and ``("rp", ")")``; a ``"-"`` where
    an operand is expected is a unary minus. This is the reader for tokens already taken
    from free text (:func:`~prm_plugins.arithmetic.calculator.check_arithmetic`);
    :func:`parse_expression` is the one for Python-syntax expressions (annotations).

    Iterative (operator precedence with explicit stacks), so nesting costs no recursion:
    nesting deeper than :data:`MAX_NESTING`, a value past :data:`MAX_VALUE_BITS`,
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
                if nesting > MAX_NESTING:
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
