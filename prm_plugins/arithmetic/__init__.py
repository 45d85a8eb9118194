"""Numbers, expressions and written equations: the one home of arithmetic on solution text.

Used by the calculator check (:mod:`prm_plugins.checks`) and the GSM8K labelling parser
(:mod:`prm_plugins.labeling.gsm8k`). Everything is exact (:class:`fractions.Fraction`),
nothing uses ``eval``, and every reader is iterative and bounded, so hostile text (deep
nesting, huge numbers) costs no recursion and no big-integer work.

- :mod:`~prm_plugins.arithmetic.numerals`: reading, rounding and writing numbers;
- :mod:`~prm_plugins.arithmetic.expressions`: expression trees, exact evaluation;
- :mod:`~prm_plugins.arithmetic.equations`: equations written in reference text, with spans
  (strict; for labelling);
- :mod:`~prm_plugins.arithmetic.calculator`: equations written by a model, checked (lenient;
  for the ``arithmetic`` step check).

Examples:
    >>> from prm_plugins.arithmetic import check_arithmetic, evaluate_expression
    >>> evaluate_expression("48/2")
    Fraction(24, 1)
    >>> check_arithmetic("She earns 12 * 5 = $65 a week.")[0]
    'wrong'
"""

from __future__ import annotations

from prm_plugins.arithmetic.calculator import ArithmeticCheck, EquationCheck, check_arithmetic
from prm_plugins.arithmetic.equations import VisibleEquation, find_equations
from prm_plugins.arithmetic.expressions import (
    MAX_EXPRESSION_CHARS,
    MAX_NESTING,
    MAX_VALUE_BITS,
    BinaryOp,
    Expr,
    Negate,
    Operand,
    apply_operator,
    evaluate,
    evaluate_expression,
    evaluate_tokens,
    operands_of,
    operators_of,
    parse_expression,
    root_operator,
)
from prm_plugins.arithmetic.numerals import (
    MAX_NUMBER_CHARS,
    MAX_WRITTEN_NUMBER_CHARS,
    NUMBER_RE,
    WRITTEN_NUMBER,
    decimal_places,
    find_numbers,
    format_number,
    parse_number,
    quantize,
    read_written_number,
    round_half_up,
)

__all__ = [
    "MAX_EXPRESSION_CHARS",
    "MAX_NESTING",
    "MAX_NUMBER_CHARS",
    "MAX_VALUE_BITS",
    "MAX_WRITTEN_NUMBER_CHARS",
    "NUMBER_RE",
    "WRITTEN_NUMBER",
    "ArithmeticCheck",
    "BinaryOp",
    "EquationCheck",
    "Expr",
    "Negate",
    "Operand",
    "VisibleEquation",
    "apply_operator",
    "check_arithmetic",
    "decimal_places",
    "evaluate",
    "evaluate_expression",
    "evaluate_tokens",
    "find_equations",
    "find_numbers",
    "format_number",
    "operands_of",
    "operators_of",
    "parse_expression",
    "parse_number",
    "quantize",
    "read_written_number",
    "root_operator",
    "round_half_up",
]
