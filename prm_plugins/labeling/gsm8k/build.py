"""Steps of a GSM8K solution built line by line, with the table of calculation results.

:class:`SolutionBuilder` reads each line's calculator annotations and plain-text equations,
binds their operands and results to the numbers of the visible text, and gives every result a
quantity id (``qid``) that later operands point back to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from prm_plugins.arithmetic import (
    VisibleEquation,
    evaluate,
    find_equations,
    find_numbers,
    operands_of,
    operators_of,
    parse_expression,
    parse_number,
)
from prm_plugins.errors import InvalidInputError
from prm_plugins.labeling.gsm8k.solution import (
    ANNOTATION_RE,
    Calculation,
    NumberSpan,
    Step,
    strip_annotations,
)

__all__ = ["SolutionBuilder"]


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


def _annotation_positions(line: str, matches: Sequence[re.Match[str]]) -> list[int]:
    """Where each annotation sat in the visible text (the line without annotations)."""
    lead = len(line) - len(line.lstrip())
    positions: list[int] = []
    removed = 0
    for m in matches:
        positions.append(m.start() - removed - lead)
        removed += m.end() - m.start()
    return positions


@dataclass
class _Line:
    """One line's visible text and what is known so far about its numbers."""

    text: str
    numbers: list[tuple[int, int, Fraction]]
    equations: list[VisibleEquation]
    span_values: list[Fraction] = field(init=False)
    start_to_span: dict[int, int] = field(init=False)
    roles: list[dict[str, Any]] = field(init=False)
    taken: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.span_values = [v for _, _, v in self.numbers]
        self.start_to_span = {s: k for k, (s, _, _) in enumerate(self.numbers)}
        self.roles = [{"role": "literal"} for _ in self.numbers]


def _text_calculations(
    info: _Line, annotated: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Plain-text calculations: exact equations that no annotation accounts for."""
    annotated_results = {p["result_span"] for p in annotated if p["result_span"] is not None}
    pending: list[dict[str, Any]] = []
    for written in info.equations:
        rhs = info.start_to_span.get(written.result_span[0])
        if rhs is None or rhs in annotated_results:
            continue
        if written.computed is None or written.computed != written.result:
            continue
        pending.append(
            {"expr": written.expr, "tree": written.tree, "claimed": written.result,
             "computed": written.computed, "origin": "text", "result_span": rhs,
             "pos": written.result_span[0], "equation": written}
        )
    return pending


def _written_equation(
    info: _Line, result_span: int, operand_values: list[Fraction], operator_list: list[str]
) -> tuple[VisibleEquation | None, VisibleEquation | None]:
    """The annotation's expression, when the text writes it out before the result; in
    another order ("5*2" for <<2*5=10>>) only the operands can be matched (``reordered``)."""
    reordered: VisibleEquation | None = None
    for cand in info.equations:
        if info.start_to_span.get(cand.result_span[0]) != result_span:
            continue
        cand_values = [o.value for o in operands_of(cand.tree)]
        if cand_values == operand_values and operators_of(cand.tree) == operator_list:
            return cand, reordered
        if sorted(cand_values) == sorted(operand_values):
            reordered = cand
    return None, reordered


def _bind_spans(
    info: _Line, p: dict[str, Any], result_span: int | None,
    operand_values: list[Fraction], operator_list: list[str],
) -> tuple[list[int | None], list[tuple[int, int] | None]]:
    """Per operand, the span where the text writes it; per operator, its symbol's span."""
    eq: VisibleEquation | None = p.get("equation")
    reordered: VisibleEquation | None = None
    if eq is None and result_span is not None:
        eq, reordered = _written_equation(info, result_span, operand_values, operator_list)
    operand_spans: list[int | None]
    operator_spans: list[tuple[int, int] | None]
    if eq is not None:
        operand_spans = [info.start_to_span.get(s) for s, _ in eq.operand_spans]
        operator_spans = list(eq.operator_spans)
    elif reordered is not None:
        free = [info.start_to_span.get(s) for s, _ in reordered.operand_spans]
        operand_spans = []
        for value in operand_values:
            match = next(
                (k for k in free if k is not None and info.span_values[k] == value), None
            )
            operand_spans.append(match)
            free.remove(match)
        operator_spans = [None] * len(operator_list)
    else:
        limit = p["pos"]
        candidates = [
            k for k, (s, _, _) in enumerate(info.numbers)
            if s < limit and k not in info.taken and k != result_span
        ]
        operand_spans = _match_operands_right_to_left(
            operand_values, candidates, info.span_values
        )
        operator_spans = [None] * len(operator_list)
    operand_spans = [
        k if k is not None and k not in info.taken and k != result_span else None
        for k in operand_spans
    ]
    return operand_spans, operator_spans


class SolutionBuilder:
    """Builds :class:`Step` objects line by line, keeping the quantity table.

    Args:
        question_numbers: the numbers written in the question (they tell literals from
            restated results).
    """

    def __init__(self, question_numbers: Sequence[Fraction]) -> None:
        self.question_numbers = set(question_numbers)
        self.results: list[tuple[int, Fraction]] = []  # (qid, value) in reading order
        self.qids_by_value: dict[Fraction, list[int]] = {}  # the same, looked up by value
        self.problems: list[str] = []

    def _add_result(self, qid: int, value: Fraction) -> None:
        self.results.append((qid, value))
        self.qids_by_value.setdefault(value, []).append(qid)

    def nearest(self, value: Fraction, before: int | None = None) -> int | None:
        """The latest result ``qid`` (below ``before``, when given) with this value."""
        for qid in reversed(self.qids_by_value.get(value, ())):
            if before is None or qid < before:
                return qid
        return None

    def build_step(self, index: int, raw: str) -> Step:
        """The :class:`Step` for solution line ``index`` (``raw``, annotations included)."""
        line = raw.strip()
        matches = list(ANNOTATION_RE.finditer(line))
        text = strip_annotations(line)
        info = _Line(text=text, numbers=find_numbers(text), equations=find_equations(text))
        pending = self._annotations(index, info, matches, _annotation_positions(line, matches))
        pending += _text_calculations(info, pending)
        pending.sort(key=lambda p: p["pos"])
        n_before = len(self.results)
        calcs = [self._calculation(info, p) for p in pending]
        self._restated(info, calcs, n_before)
        spans = tuple(
            NumberSpan(
                start=s, end=e, text=text[s:e], value=v, money=s > 0 and text[s - 1] == "$",
                **info.roles[k],
            )
            for k, (s, e, v) in enumerate(info.numbers)
        )
        return Step(index=index, raw=raw, text=text, spans=spans, calculations=tuple(calcs))

    def _annotations(
        self, index: int, info: _Line, matches: Sequence[re.Match[str]], positions: list[int]
    ) -> list[dict[str, Any]]:
        """The line's calculator annotations, parsed; unparseable ones go to ``problems``."""
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
            result_span = info.start_to_span.get(pos)
            if result_span is not None and info.span_values[result_span] != claimed:
                result_span = None
            if result_span is None:
                # The result written elsewhere in the line ("48/2 = 24 <<48/2=24>>").
                result_span = next(
                    (info.start_to_span.get(e.result_span[0]) for e in info.equations
                     if e.result == claimed and e.computed == claimed),
                    None,
                )
            pending.append(
                {"expr": expr_text.strip(), "tree": tree, "claimed": claimed,
                 "computed": computed, "origin": "annotation", "result_span": result_span,
                 "pos": pos}
            )
        return pending

    def _calculation(self, info: _Line, p: dict[str, Any]) -> Calculation:
        """One pending calculation bound to the text, given its ``qid`` and recorded."""
        tree = p["tree"]
        operand_values = [o.value for o in operands_of(tree)]
        operator_list = operators_of(tree)
        result_span = p["result_span"]
        if result_span is not None and result_span in info.taken:
            result_span = None
        operand_spans, operator_spans = _bind_spans(
            info, p, result_span, operand_values, operator_list
        )
        sources = tuple(self.nearest(v) for v in operand_values)
        qid = len(self.results)
        for k, span in enumerate(operand_spans):
            if span is not None:
                info.taken.add(span)
                info.roles[span] = {"role": "operand", "qid": qid, "operand": k}
        if result_span is not None:
            info.taken.add(result_span)
            info.roles[result_span] = {"role": "result", "qid": qid}
        calc = Calculation(
            qid=qid, expr=p["expr"], tree=tree, claimed=p["claimed"],
            computed=p["computed"], origin=p["origin"], sources=sources,
            operand_spans=tuple(operand_spans), operator_spans=tuple(operator_spans),
            result_span=result_span,
            ambiguous=tuple(
                s is not None and v in self.question_numbers
                for s, v in zip(sources, operand_values, strict=True)
            ),
        )
        self._add_result(qid, p["claimed"])
        return calc

    def _restated(self, info: _Line, calcs: Sequence[Calculation], n_before: int) -> None:
        """Mark the other numbers that repeat a result.

        A number repeats a result when the value matches one and is not also a number of the
        question (then it is most likely the question's own number). Results of this step
        come first, wherever they sit ("worth $64 because 60 + 4 = 64"), then the nearest
        earlier ones.
        """
        for k, (_, _, value) in enumerate(info.numbers):
            if k in info.taken:
                continue
            here = [c.qid for c in calcs if c.claimed == value]
            if here:  # the line's own result, even when the question has the same number
                info.roles[k] = {"role": "restated", "qid": here[-1]}
                continue
            if value in self.question_numbers:
                continue
            earlier = self.nearest(value, before=n_before)
            if earlier is not None:
                info.roles[k] = {"role": "restated", "qid": earlier}
