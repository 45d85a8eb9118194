"""Parse GSM8K reference solutions into checked, structured steps.

A GSM8K answer has one reasoning step per line, calculator annotations such as
``<<48/2=24>>`` and a last line ``#### 72``. :func:`parse_gsm8k_row` turns it into a
:class:`GSM8KSolution`:

- every step's *visible* text is its line with the annotations removed (what a model would
  write); the ``#### N`` line becomes a last step ``"The answer is N."``;
- every annotation is parsed with :func:`~prm_plugins.arithmetic.parse_expression` (an
  ``ast`` walker that accepts numbers, ``+ - * /``, unary minus and parentheses, never
  ``eval``) and checked exactly with :class:`fractions.Fraction` arithmetic;
- a line without an annotation that writes an exact calculation in plain text
  (``"20 / 4 = 5"``) gets the same treatment, so the data flow is not lost there;
- every number in the visible text is a :class:`NumberSpan` that says what it shows: an operand
  of a calculation, its result, a restatement of an earlier result, or a literal. Perturbations
  (:mod:`prm_plugins.labeling.perturb`) use this to edit the text consistently.

Every calculation result gets a quantity id (``qid``, in reading order); operands that reuse an
earlier result point at that ``qid`` (the nearest earlier result with the same value).

Modules: :mod:`~prm_plugins.labeling.gsm8k.solution` (the structured solution types),
:mod:`~prm_plugins.labeling.gsm8k.build` (steps built line by line, the quantity table) and
:mod:`~prm_plugins.labeling.gsm8k.parse` (answers, rows and JSONL files). Numbers, expressions
and written equations come from :mod:`prm_plugins.arithmetic` and are re-exported here.
"""

from __future__ import annotations

from prm_plugins.arithmetic import (
    MAX_EXPRESSION_CHARS,
    MAX_NUMBER_CHARS,
    NUMBER_RE,
    BinaryOp,
    Expr,
    Negate,
    Operand,
    VisibleEquation,
    evaluate,
    evaluate_expression,
    find_equations,
    find_numbers,
    format_number,
    operands_of,
    operators_of,
    parse_expression,
    parse_number,
    quantize,
    root_operator,
)
from prm_plugins.labeling.gsm8k.parse import (
    MAX_LINE_CHARS,
    parse_gsm8k_answer,
    parse_gsm8k_row,
    read_gsm8k_jsonl,
)
from prm_plugins.labeling.gsm8k.solution import (
    ANNOTATION_RE,
    Calculation,
    GSM8KSolution,
    NumberSpan,
    SpanRole,
    Step,
    final_step_text,
    strip_annotations,
)

__all__ = [
    "ANNOTATION_RE",
    "MAX_EXPRESSION_CHARS",
    "MAX_LINE_CHARS",
    "MAX_NUMBER_CHARS",
    "NUMBER_RE",
    "BinaryOp",
    "Calculation",
    "Expr",
    "GSM8KSolution",
    "Negate",
    "NumberSpan",
    "Operand",
    "SpanRole",
    "Step",
    "VisibleEquation",
    "evaluate",
    "evaluate_expression",
    "final_step_text",
    "find_equations",
    "find_numbers",
    "format_number",
    "operands_of",
    "operators_of",
    "parse_expression",
    "parse_gsm8k_answer",
    "parse_gsm8k_row",
    "parse_number",
    "quantize",
    "read_gsm8k_jsonl",
    "root_operator",
    "strip_annotations",
]
