"""The structured GSM8K solution: steps, their numbers and their checked calculations."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from prm_plugins.arithmetic import Expr, Operand, operands_of, operators_of

__all__ = [
    "ANNOTATION_RE",
    "Calculation",
    "GSM8KSolution",
    "NumberSpan",
    "SpanRole",
    "Step",
    "final_step_text",
    "strip_annotations",
]

#: A calculator annotation ``<<expr=value>>``.
ANNOTATION_RE = re.compile(r"<<([^<>=]*)=([^<>]*)>>")


def strip_annotations(line: str) -> str:
    """A GSM8K line without its ``<<...>>`` calculator annotations (the visible text)."""
    return ANNOTATION_RE.sub("", line).strip()


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
