"""The working copy of a solution that every perturbation edits, and what they share.

A perturbation turns a :class:`~prm_plugins.labeling.gsm8k.GSM8KSolution` into nodes
(:func:`_program`), changes a source, an operator or a value, and :func:`_finish` re-renders
the chain (every later value recomputed, every shown number rewritten) and rejects it
(:class:`_Skip`) when it is not a consistent, useful negative. :func:`_attempt` tries sites
in random order.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from prm_plugins.arithmetic import (
    BinaryOp,
    Expr,
    Negate,
    Operand,
    evaluate,
    find_equations,
    format_number,
    quantize,
)
from prm_plugins.errors import InvalidInputError
from prm_plugins.labeling.gsm8k import Calculation, GSM8KSolution, Step

__all__ = ["MAX_TRIES", "Perturbation", "Source"]

logger = logging.getLogger(__name__)

#: Sites tried per call before giving up.
MAX_TRIES = 12

_SWAPPED_OPERATOR = {"+": "-", "-": "+", "*": "/", "/": "*"}


@dataclass(frozen=True)
class Perturbation:
    """A perturbed chain.

    Attributes:
        kind: the perturbation kind, e.g. ``"wrong_quantity"``.
        completions: the visible steps of the perturbed chain (the last states the answer).
        first_error: index of the first wrong step.
        answer: the perturbed chain's final answer.
        detail: what was changed, for people reading the data.
        fractional: a value that is a whole number in the reference became a fraction
            (``0.4 black cats``); such chains are only returned when no other site works.
    """

    kind: str
    completions: list[str]
    first_error: int
    answer: Fraction
    detail: str
    fractional: bool = False

    @property
    def labels(self) -> list[bool]:
        """Step labels: True before :attr:`first_error`, False from it on."""
        return [k < self.first_error for k in range(len(self.completions))]


class _Skip(Exception):
    """A candidate site cannot give a consistent, useful perturbation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- working copy of a solution ----------------------------------------------------------------
Source = tuple[str, Any]  # ("q", qid) reuse a result | ("v", Fraction) a fixed number


@dataclass
class _Calc:
    qid: int
    calc: Calculation
    sources: list[Source]
    operators: list[str]
    ambiguous: list[bool] = field(default_factory=list)
    override: Fraction | None = None


@dataclass
class _Node:
    step: Step
    calcs: list[_Calc]
    # Per span: ("operand", qid, k) | ("q", qid) | ("v", Fraction) | None (literal, unchanged).
    targets: list[tuple[Any, ...] | None]
    edits: dict[tuple[int, int], str] = field(default_factory=dict)
    inserted: bool = False


def _program(solution: GSM8KSolution) -> list[_Node]:
    nodes = []
    for step in solution.steps:
        calcs = [
            _Calc(
                qid=c.qid,
                calc=c,
                sources=[
                    ("q", s) if s is not None else ("v", o.value)
                    for s, o in zip(c.sources, c.operands, strict=True)
                ],
                operators=list(c.operators),
                ambiguous=list(c.ambiguous) or [False] * len(c.sources),
            )
            for c in step.calculations
        ]
        targets: list[tuple[Any, ...] | None] = []
        for span in step.spans:
            if span.role == "operand":
                targets.append(("operand", span.qid, span.operand))
            elif span.role in ("result", "restated"):
                targets.append(("q", span.qid))
            else:
                targets.append(None)
        nodes.append(_Node(step=step, calcs=calcs, targets=targets))
    return nodes


def _render(nodes: Sequence[_Node]) -> tuple[list[str], dict[int, Fraction]]:
    values: dict[int, Fraction] = {}
    operand_values: dict[int, list[Fraction]] = {}
    texts: list[str] = []
    for node in nodes:
        for wc in node.calcs:
            args = []
            for k, (kind, ref) in enumerate(wc.sources):
                if kind == "q":
                    if ref not in values:
                        raise _Skip("dangling_reference")
                    if wc.ambiguous[k] and values[ref] != wc.calc.operands[k].value:
                        # The operand may be the question's number rather than that result.
                        raise _Skip("ambiguous_reference")
                    args.append(values[ref])
                else:
                    args.append(ref)
            try:
                value = evaluate(wc.calc.tree, args, wc.operators)
            except ZeroDivisionError:
                raise _Skip("division_by_zero") from None
            if value != wc.calc.claimed:
                value = quantize(value)
            if wc.override is not None:
                value = wc.override
            values[wc.qid] = value
            operand_values[wc.qid] = args
        edits = dict(node.edits)
        for span, target in zip(node.step.spans, node.targets, strict=True):
            if target is None:
                continue
            if target[0] == "operand":
                if target[1] not in operand_values:
                    raise _Skip("dangling_reference")
                new = operand_values[target[1]][target[2]]
            elif target[0] == "q":
                if target[1] not in values:
                    raise _Skip("dangling_reference")
                new = values[target[1]]
            else:
                new = target[1]
            if new != span.value:
                edits[(span.start, span.end)] = format_number(
                    new, money=span.money, commas=span.commas, min_places=span.places
                )
        text = node.step.text
        for (start, end), replacement in sorted(edits.items(), reverse=True):
            text = text[:start] + replacement + text[end:]
        texts.append(text)
    return texts, values


def _remap(nodes: Sequence[_Node], old: int, new: Source) -> None:
    """Point every reference to result ``old`` at ``new`` (sources and shown numbers)."""
    for node in nodes:
        for wc in node.calcs:
            wc.sources = [new if s == ("q", old) else s for s in wc.sources]
        node.targets = [
            (new if t == ("q", old) else t) for t in node.targets
        ]


def _finish(
    solution: GSM8KSolution,
    nodes: list[_Node],
    aligned: Sequence[str | None],
    *,
    kind: str,
    detail: str,
    error_node: int | None,
    exempt_node: int | None = None,
) -> Perturbation:
    texts, values = _render(nodes)
    if list(texts) == list(aligned):
        raise _Skip("identical_chain")
    final_target = nodes[-1].targets[0] if nodes[-1].targets else None
    if final_target is None:
        final_value = solution.answer
    elif final_target[0] == "q":
        final_value = values[final_target[1]]
    else:
        final_value = final_target[1]
    if final_value == solution.answer:
        raise _Skip("final_answer_unchanged")
    for node in nodes:
        for wc in node.calcs:
            if values[wc.qid] < 0 <= wc.calc.claimed:
                raise _Skip("negative_value")
    first_error = next(
        k for k, (new, old) in enumerate(zip(texts, aligned, strict=True)) if new != old
    )
    if error_node is not None and first_error != error_node:
        raise _Skip("error_not_visible")
    for k in range(first_error, len(nodes)):
        if k == exempt_node or texts[k] == aligned[k]:
            continue
        before = find_equations(nodes[k].step.text)
        after = find_equations(texts[k])
        if len(before) != len(after) or any(
            b.holds and not a.holds for b, a in zip(before, after, strict=True)
        ):
            raise _Skip("inconsistent_text")
    fractional = any(
        values[wc.qid].denominator != 1 and wc.calc.claimed.denominator == 1
        for node in nodes for wc in node.calcs
    )
    return Perturbation(
        kind=kind, completions=texts, first_error=first_error, answer=final_value,
        detail=detail, fractional=fractional,
    )


# -- helpers -----------------------------------------------------------------------------------
def _check_solution(solution: GSM8KSolution) -> None:
    if not isinstance(solution, GSM8KSolution):
        raise InvalidInputError(
            f"perturbations take a GSM8KSolution (from parse_gsm8k_row), got "
            f"{type(solution).__name__}"
        )
    if not solution.is_checked:
        raise InvalidInputError(
            "perturbations need a reference whose annotations all check; this one has "
            f"{len(solution.failed_annotations)} failing and {len(solution.problems)} "
            "unparseable annotation(s). Drop it (build_verifier_dataset does)."
        )


def _step_indices(solution: GSM8KSolution, step: int | None) -> list[int]:
    body = len(solution.steps) - 1
    if step is None:
        return list(range(body))
    if not 0 <= step < body:
        raise InvalidInputError(
            f"step={step} is not a reasoning step of this solution; expected 0..{body - 1} "
            "(the last step, the answer, cannot be perturbed directly)"
        )
    return [step]


def _attempt(
    candidates: list[Callable[[], Perturbation]],
    rng: random.Random,
    skipped: Counter[str] | None,
    kind: str,
) -> Perturbation | None:
    if not candidates:
        if skipped is not None:
            skipped["no_candidate"] += 1
        return None
    rng.shuffle(candidates)
    fallback: Perturbation | None = None
    for make in candidates[:MAX_TRIES]:
        try:
            result = make()
        except _Skip as skip:
            if skipped is not None:
                skipped[skip.reason] += 1
            continue
        if not result.fractional:
            return result
        if skipped is not None:
            skipped["fractional_value"] += 1
        fallback = fallback or result
    if fallback is None:
        logger.debug("no %s perturbation applies", kind)
    return fallback



def _show(value: Fraction) -> str:
    return format_number(value)


def _parent_of(tree: Expr, index: int) -> BinaryOp | None:
    """The binary operation whose direct child is operand ``index``."""
    if isinstance(tree, Negate):
        return _parent_of(tree.operand, index)
    if isinstance(tree, BinaryOp):
        for child in (tree.left, tree.right):
            if isinstance(child, Operand) and child.index == index:
                return tree
        return _parent_of(tree.left, index) or _parent_of(tree.right, index)
    return None


def _operator_symbol(new: str, written: str, times: str, spaced: bool = True) -> str:
    """The symbol for operator ``new`` in the style of the ``written`` one it replaces.

    ``times`` is the chain's multiplication sign (``x`` or ``*``); ``x`` needs spaces around
    it (``12x60`` does not read as a product), so unspaced operators get ``*``.
    """
    words = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}
    if written.lower() in words.values():
        return words[new]
    if new == "+":
        return "+"
    if new == "-":
        return "\u2212" if written == "\u2212" else "-"
    if new == "*":
        return "\u00d7" if written == "\u00f7" else (times if spaced else "*")
    return "\u00f7" if written == "\u00d7" else "/"


def _multiplication_symbol(solution: GSM8KSolution) -> str:
    return "x" if any(" x " in step.text for step in solution.steps) else "*"


