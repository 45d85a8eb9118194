"""Perturbations of GSM8K reference solutions that imitate real model reasoning errors.

Each perturbation takes a checked :class:`~prm_plugins.labeling.gsm8k.GSM8KSolution`, makes one
error, and lets the rest of the solution *carry on consistently* with it: every later
calculation that used a changed value is recomputed, and every number in the visible text that
shows a changed value is rewritten (the final answer included). It returns a
:class:`Perturbation` (the new steps and the index of the first wrong step) or ``None`` when it
does not apply.

Label convention: steps before the first wrong step are good, the first wrong step and every
step after it are bad (see ``LABELS.md``).

A perturbation is skipped (another site is tried, and finally ``None`` is returned) when:

- the chain would be identical to the reference, or its final answer unchanged (an error that
  does not matter is not a useful negative, and the label of the "wrong" step would be unclear);
- a recomputed value would divide by zero or turn negative where the reference is not
  (a model rarely writes a negative count without noticing; such chains look artificial);
- the error would not be visible in the step that makes it;
- a written calculation (``a op b = c``) in a changed step no longer holds after the edit,
  i.e. the text could not be kept consistent (for example a plain-text line that computes with
  a changed value in a way the parser did not capture). The arithmetic slip itself is exempt;
- a changed value feeds an operand whose link to an earlier result is ambiguous (the same
  number is also in the question).

Sites that turn a whole number of the reference into a fraction (``0.4 black cats``) are used
only when no other site of that kind works, so most negatives look plausible at a glance.

``skipped`` (a :class:`collections.Counter`) counts these reasons when passed in.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from prm_plugins.errors import InvalidInputError
from prm_plugins.labeling.gsm8k import (
    BinaryOp,
    Calculation,
    Expr,
    GSM8KSolution,
    Negate,
    Operand,
    Step,
    evaluate,
    find_equations,
    format_number,
    quantize,
    root_operator,
)

__all__ = [
    "PERTURBATIONS",
    "PERTURBATION_KINDS",
    "Perturbation",
    "arithmetic_slip",
    "dropped_step",
    "duplicated_step",
    "perturb",
    "unit_slip",
    "wrong_operation",
    "wrong_quantity",
]

logger = logging.getLogger(__name__)

#: Sites tried per call before giving up.
MAX_TRIES = 12

#: Conversion factors a solver may confuse, and what they get confused with.
UNIT_CONFUSIONS: dict[Fraction, tuple[Fraction, ...]] = {
    Fraction(60): (Fraction(100),),
    Fraction(100): (Fraction(10), Fraction(1000)),
    Fraction(1000): (Fraction(100),),
    Fraction(10): (Fraction(100),),
    Fraction(12): (Fraction(10),),
    Fraction(3600): (Fraction(60),),
}

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


def _subtree_values(tree: Expr) -> tuple[Fraction, Fraction] | None:
    root = root_operator(tree)
    if root is None or isinstance(tree, Negate):
        return None
    try:
        return evaluate(root.left), evaluate(root.right)
    except ZeroDivisionError:
        return None


def _digits(n: int) -> list[int]:
    return [int(d) for d in reversed(str(n))]


def _slip_values(calc: Calculation) -> list[tuple[str, Fraction]]:
    """Plausible wrong results for a calculation: carry/borrow errors, times-table slips,
    swapped digits, off by a little."""
    value = calc.claimed
    out: list[tuple[str, Fraction]] = []
    root = root_operator(calc.tree)
    parts = _subtree_values(calc.tree)
    if root is not None and parts is not None:
        a, b = parts
        if a.denominator == 1 and b.denominator == 1 and a >= 0 and b >= 0:
            x, y = int(a), int(b)
            if root.op == "+":
                dx, dy, carry = _digits(x), _digits(y), 0
                for p in range(max(len(dx), len(dy))):
                    total = (dx[p] if p < len(dx) else 0) + (dy[p] if p < len(dy) else 0) + carry
                    carry = int(total >= 10)
                    if carry:
                        out.append(("forgot a carry", value - 10 ** (p + 1)))
            elif root.op == "-" and x >= y:
                dx, dy, borrow = _digits(x), _digits(y), 0
                for p in range(len(dx)):
                    top = dx[p] - borrow
                    borrow = int(top < (dy[p] if p < len(dy) else 0))
                    if borrow and p + 1 < len(dx):
                        out.append(("forgot a borrow", value + 10 ** (p + 1)))
            elif root.op == "*" and x >= 2 and y >= 2:
                out.append(("times-table slip", value - y))
                out.append(("times-table slip", value + y))
    if value.denominator == 1:
        n = int(value)
        text = str(n)
        for p in range(len(text) - 1):
            if text[p] != text[p + 1] and not (p == 0 and text[p + 1] == "0"):
                swapped = text[:p] + text[p + 1] + text[p] + text[p + 2 :]
                out.append(("swapped digits", Fraction(int(swapped))))
        for delta in (1, 2, 10):
            out.append((f"off by {delta}", value + delta))
            out.append((f"off by {delta}", value - delta))
    else:
        places = len(format_number(value).split(".")[1])
        step = Fraction(1, 10**places)
        out += [("off in the last digit", value + step), ("off in the last digit", value - step)]
    seen: set[Fraction] = set()
    unique = []
    for name, v in out:
        if v >= 0 and v != value and v not in seen:
            seen.add(v)
            unique.append((name, v))
    return unique


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


# -- the perturbations -------------------------------------------------------------------------
def arithmetic_slip(
    solution: GSM8KSolution,
    rng: random.Random | None = None,
    *,
    step: int | None = None,
    value: Fraction | int | None = None,
    skipped: Counter[str] | None = None,
) -> Perturbation | None:
    """A calculation's result is written wrong; later steps carry on with the wrong value.

    The wrong value imitates real slips: a forgotten carry or borrow, a times-table slip
    (``7 * 8 = 48``), two swapped digits, or off by 1, 2 or 10.

    Args:
        solution: a checked reference solution.
        rng: random source (sites and variants); default ``random.Random(0)``.
        step: only perturb this step (index into the reference's steps).
        value: use this wrong result instead of a random plausible one.
        skipped: counts why sites were rejected.

    Returns:
        The perturbed chain (first error: the step with the slip), or None.

    Examples:
        >>> from prm_plugins.labeling.gsm8k import parse_gsm8k_answer
        >>> sol = parse_gsm8k_answer(
        ...     "a: 48/2 = <<48/2=24>>24\\nb: 48+24 = <<48+24=72>>72\\n#### 72")
        >>> arithmetic_slip(sol, step=0, value=25).completions
        ['a: 48/2 = 25', 'b: 48+25 = 73', 'The answer is 73.']
    """
    _check_solution(solution)
    rng = rng or random.Random(0)
    candidates: list[Callable[[], Perturbation]] = []
    for k in _step_indices(solution, step):
        for ci, calc in enumerate(solution.steps[k].calculations):
            if calc.result_span is None or calc.claimed < 0:
                continue
            if value is not None:
                variants = [("given", Fraction(value))]
            else:
                variants = _slip_values(calc)
            if not variants:
                continue

            def make(k: int = k, ci: int = ci, variants: list[Any] = variants) -> Perturbation:
                name, wrong = rng.choice(variants)
                nodes = _program(solution)
                wc = nodes[k].calcs[ci]
                wc.override = wrong
                detail = (
                    f"step {k}: {wc.calc.expr} = {_show(wc.calc.claimed)} written as "
                    f"{_show(wrong)} ({name})"
                )
                return _finish(solution, nodes, solution.completions, kind="arithmetic_slip",
                               detail=detail, error_node=k, exempt_node=k)

            candidates.append(make)
    return _attempt(candidates, rng, skipped, "arithmetic_slip")


def wrong_quantity(
    solution: GSM8KSolution,
    rng: random.Random | None = None,
    *,
    step: int | None = None,
    operand: int | None = None,
    replacement: Fraction | int | None = None,
    skipped: Counter[str] | None = None,
) -> Perturbation | None:
    """The right operation on the wrong quantity; the arithmetic of the step is then correct.

    An operand that is a quantity (a number of the question or an earlier result) is replaced
    by another number of the question or another earlier result (with probability 0.7 one of
    the same origin: a misread question number, or the wrong intermediate result), never by a
    value of the calculation's own operands (``34 - 34 = 0`` is not a plausible error). The step
    computes correctly with it and the rest carries on.

    Args:
        solution: a checked reference solution.
        rng: random source; default ``random.Random(0)``.
        step: only perturb this step.
        operand: only replace this operand (index, left to right, in the step's calculation).
        replacement: use this value instead of a random quantity.
        skipped: counts why sites were rejected.

    Returns:
        The perturbed chain (first error: the step that takes the wrong quantity), or None.
    """
    _check_solution(solution)
    rng = rng or random.Random(0)
    question_values = list(dict.fromkeys(v for v in solution.question_numbers if v > 0))
    results = solution.result_values()
    candidates: list[Callable[[], Perturbation]] = []
    for k in _step_indices(solution, step):
        for ci, calc in enumerate(solution.steps[k].calculations):
            for oi, (op, src, span) in enumerate(
                zip(calc.operands, calc.sources, calc.operand_spans, strict=True)
            ):
                if span is None or (operand is not None and oi != operand):
                    continue
                if src is None and op.value not in question_values:
                    continue  # a constant (2 for "half", 60 minutes), not a quantity
                if replacement is not None:
                    same: list[Source] = [("v", Fraction(replacement))]
                    other: list[Source] = []
                else:
                    # Not a value of this calculation's own operands: "34 - 34 = 0" is not a
                    # plausible slip.
                    own = {o.value for o in calc.operands}
                    from_question: list[Source] = [
                        ("v", v) for v in question_values if v not in own
                    ]
                    earlier: list[Source] = [
                        ("q", q) for q, v in results.items()
                        if q < calc.qid and v > 0 and v not in own
                    ]
                    same, other = (earlier, from_question) if src is not None else (
                        from_question, earlier)
                if not same and not other:
                    continue

                def make(
                    k: int = k, ci: int = ci, oi: int = oi,
                    same: list[Source] = same, other: list[Source] = other,
                ) -> Perturbation:
                    pool = same if same and (not other or rng.random() < 0.7) else other
                    new = rng.choice(pool)
                    nodes = _program(solution)
                    wc = nodes[k].calcs[ci]
                    old_value = wc.calc.operands[oi].value
                    wc.sources[oi] = new
                    wc.ambiguous[oi] = False
                    new_value = results[new[1]] if new[0] == "q" else new[1]
                    origin = "an earlier result" if new[0] == "q" else "a question number"
                    detail = (
                        f"step {k}: operand {_show(old_value)} of {wc.calc.expr} replaced by "
                        f"{_show(new_value)} ({origin})"
                    )
                    return _finish(solution, nodes, solution.completions, kind="wrong_quantity",
                                   detail=detail, error_node=k)

                candidates.append(make)
    return _attempt(candidates, rng, skipped, "wrong_quantity")


def wrong_operation(
    solution: GSM8KSolution,
    rng: random.Random | None = None,
    *,
    step: int | None = None,
    operator: int | None = None,
    skipped: Counter[str] | None = None,
) -> Perturbation | None:
    """The wrong operation for the situation (``+`` <-> ``-``, ``*`` <-> ``/``), computed right.

    Only operators the visible text writes out are changed (the symbol is rewritten in the
    text's own style: ``x`` or ``*`` for multiplication).

    Args:
        solution: a checked reference solution.
        rng: random source; default ``random.Random(0)``.
        step: only perturb this step.
        operator: only change this operator (index, left to right, in the calculation).
        skipped: counts why sites were rejected.

    Returns:
        The perturbed chain (first error: the step with the wrong operation), or None.
    """
    _check_solution(solution)
    rng = rng or random.Random(0)
    times = _multiplication_symbol(solution)
    candidates: list[Callable[[], Perturbation]] = []
    for k in _step_indices(solution, step):
        text = solution.steps[k].text
        for ci, calc in enumerate(solution.steps[k].calculations):
            for oi, (op, span) in enumerate(zip(calc.operators, calc.operator_spans,
                                                strict=True)):
                if span is None or op not in _SWAPPED_OPERATOR:
                    continue
                if operator is not None and oi != operator:
                    continue
                written = text[span[0]:span[1]]
                spaced = text[span[0] - 1:span[0]] == " "

                def make(
                    k: int = k, ci: int = ci, oi: int = oi, span: tuple[int, int] = span,
                    written: str = written, op: str = op, spaced: bool = spaced,
                ) -> Perturbation:
                    new = _SWAPPED_OPERATOR[op]
                    symbol = _operator_symbol(new, written, times, spaced)
                    nodes = _program(solution)
                    wc = nodes[k].calcs[ci]
                    wc.operators[oi] = new
                    nodes[k].edits[span] = symbol
                    detail = f"step {k}: {op} replaced by {new} in {wc.calc.expr}"
                    return _finish(solution, nodes, solution.completions,
                                   kind="wrong_operation", detail=detail, error_node=k)

                candidates.append(make)
    return _attempt(candidates, rng, skipped, "wrong_operation")


def dropped_step(
    solution: GSM8KSolution,
    rng: random.Random | None = None,
    *,
    step: int | None = None,
    skipped: Counter[str] | None = None,
) -> Perturbation | None:
    """A needed step is left out; later steps use the quantity it would have transformed.

    The step's calculation is removed and every later use of its result takes the quantity the
    step started from instead (its first operand that is an earlier result, else its first
    operand that is a question number, else its first operand): forgetting to halve, to
    subtract the discount, to convert. The first step that depends on the missing value is the
    first wrong step: the steps before it are each correct and the chain could still have
    done the missing step later, so they keep the label True.

    Args:
        solution: a checked reference solution.
        rng: random source; default ``random.Random(0)``.
        step: only drop this step.
        skipped: counts why sites were rejected.

    Returns:
        The perturbed chain, one step shorter, or None.
    """
    _check_solution(solution)
    rng = rng or random.Random(0)
    if len(solution.steps) < 3:
        if skipped is not None:
            skipped["no_candidate"] += 1
        return None
    question_values = set(solution.question_numbers)
    candidates: list[Callable[[], Perturbation]] = []
    for k in _step_indices(solution, step):
        calcs = solution.steps[k].calculations
        if len(calcs) != 1:
            continue
        calc = calcs[0]
        used = any(
            s == calc.qid for later in solution.steps[k + 1:] for c in later.calculations
            for s in c.sources
        ) or any(
            span.qid == calc.qid and span.role == "restated"
            for later in solution.steps[k + 1:] for span in later.spans
        )
        if not used:
            continue
        pick = next((i for i, s in enumerate(calc.sources) if s is not None), None)
        if pick is None:
            pick = next(
                (i for i, o in enumerate(calc.operands) if o.value in question_values), 0
            )
        src = calc.sources[pick]
        substitute: Source = ("q", src) if src is not None else ("v", calc.operands[pick].value)

        def make(k: int = k, substitute: Source = substitute) -> Perturbation:
            nodes = _program(solution)
            removed = nodes.pop(k)
            _remap(nodes[k:], removed.calcs[0].qid, substitute)
            aligned = solution.completions[:k] + solution.completions[k + 1:]
            detail = f"step {k} ({removed.step.text!r}) left out"
            return _finish(solution, nodes, aligned, kind="dropped_step", detail=detail,
                           error_node=None)

        candidates.append(make)
    return _attempt(candidates, rng, skipped, "dropped_step")


def duplicated_step(
    solution: GSM8KSolution,
    rng: random.Random | None = None,
    *,
    step: int | None = None,
    skipped: Counter[str] | None = None,
) -> Perturbation | None:
    """A step is applied twice (double counting); later steps use the doubled-up value.

    The copy, inserted right after the step, applies the same operation to the step's own
    result (``48 + 24 = 72`` then ``72 + 24 = 96``; ``48 / 2 = 24`` then ``24 / 2 = 12``). The
    copy is the first wrong step.

    Args:
        solution: a checked reference solution.
        rng: random source; default ``random.Random(0)``.
        step: only duplicate this step.
        skipped: counts why sites were rejected.

    Returns:
        The perturbed chain, one step longer, or None.
    """
    _check_solution(solution)
    rng = rng or random.Random(0)
    fresh = max((c.qid for c in solution.calculations), default=-1) + 1
    candidates: list[Callable[[], Perturbation]] = []
    for k in _step_indices(solution, step):
        calcs = solution.steps[k].calculations
        if len(calcs) != 1 or calcs[0].operand_spans[0] is None or calcs[0].result_span is None:
            continue

        def make(k: int = k) -> Perturbation:
            nodes = _program(solution)
            original = nodes[k]
            old = original.calcs[0].qid
            copy = _Node(
                step=original.step,
                calcs=[
                    _Calc(qid=fresh, calc=original.calcs[0].calc,
                          sources=[("q", old)] + original.calcs[0].sources[1:],
                          operators=list(original.calcs[0].operators),
                          ambiguous=[False] + original.calcs[0].ambiguous[1:])
                ],
                targets=[
                    ("operand", fresh, t[2]) if t is not None and t[0] == "operand" and t[1] == old
                    else ("q", fresh) if t == ("q", old) else t
                    for t in original.targets
                ],
                inserted=True,
            )
            _remap(nodes[k + 1:], old, ("q", fresh))
            nodes.insert(k + 1, copy)
            aligned: list[str | None] = list(solution.completions)
            aligned.insert(k + 1, None)
            detail = f"step {k} ({original.step.text!r}) applied twice"
            return _finish(solution, nodes, aligned, kind="duplicated_step", detail=detail,
                           error_node=k + 1)

        candidates.append(make)
    return _attempt(candidates, rng, skipped, "duplicated_step")


def unit_slip(
    solution: GSM8KSolution,
    rng: random.Random | None = None,
    *,
    step: int | None = None,
    skipped: Counter[str] | None = None,
) -> Perturbation | None:
    """A magnitude or unit slip: a wrong conversion factor, a conversion the wrong way round,
    or a percentage used as a whole number.

    Sites are constants of the solution that multiply or divide, are not numbers of the
    question and are not written in an earlier step (so they are conversion factors, not
    quantities):

    - a factor confused with another: 60 -> 100 (minutes as hundredths of an hour),
      100 -> 10 or 1000, 1000 -> 100, 10 -> 100, 12 -> 10, 3600 -> 60;
    - a conversion applied the wrong way round: ``x / 60`` written ``x * 60`` and vice versa;
    - a percentage ``p%`` of the question used as ``p`` instead of ``p/100`` (``0.2`` -> ``20``).

    Args:
        solution: a checked reference solution.
        rng: random source; default ``random.Random(0)``.
        step: only perturb this step.
        skipped: counts why sites were rejected.

    Returns:
        The perturbed chain (first error: the step with the slip), or None.
    """
    _check_solution(solution)
    rng = rng or random.Random(0)
    question_values = set(solution.question_numbers)
    question = solution.question
    times = _multiplication_symbol(solution)
    # Numbers written in earlier steps: a "constant" written there may be an uncaptured result.
    written_before: list[set[Fraction]] = [set()]
    for past in solution.steps[:-1]:
        written_before.append(written_before[-1] | {span.value for span in past.spans})
    candidates: list[Callable[[], Perturbation]] = []
    for k in _step_indices(solution, step):
        text = solution.steps[k].text
        for ci, calc in enumerate(solution.steps[k].calculations):
            for oi, (op, src, span) in enumerate(
                zip(calc.operands, calc.sources, calc.operand_spans, strict=True)
            ):
                if span is None or src is not None:
                    continue
                variants: list[tuple[str, Any]] = []
                parent = _parent_of(calc.tree, oi)
                scales = parent is not None and parent.op in ("*", "/")
                if (
                    op.value in UNIT_CONFUSIONS
                    and op.value not in question_values
                    and op.value not in written_before[k]
                    and scales
                ):
                    variants += [("factor", f) for f in UNIT_CONFUSIONS[op.value]]
                    if (
                        parent is not None
                        and isinstance(parent.right, Operand)
                        and parent.right.index == oi
                        and parent.op in ("*", "/")
                        and calc.operator_spans[parent.index] is not None
                    ):
                        variants.append(("inverted", parent))
                if 0 < op.value < 1 and f"{format_number(op.value * 100)}%" in question:
                    variants.append(("percent", op.value * 100))
                for variant in variants:

                    def make(
                        k: int = k, ci: int = ci, oi: int = oi, variant: Any = variant,
                        text: str = text,
                    ) -> Perturbation:
                        nodes = _program(solution)
                        wc = nodes[k].calcs[ci]
                        old_value = wc.calc.operands[oi].value
                        name, arg = variant
                        if name == "inverted":
                            span = wc.calc.operator_spans[arg.index]
                            assert span is not None
                            new_op = _SWAPPED_OPERATOR[arg.op]
                            wc.operators[arg.index] = new_op
                            written = text[span[0]:span[1]]
                            spaced = text[span[0] - 1:span[0]] == " "
                            nodes[k].edits[span] = _operator_symbol(new_op, written, times, spaced)
                            detail = (
                                f"step {k}: conversion by {_show(old_value)} applied the wrong "
                                f"way ({arg.op} -> {new_op}) in {wc.calc.expr}"
                            )
                        else:
                            wc.sources[oi] = ("v", arg)
                            wc.ambiguous[oi] = False
                            what = "percentage used as a whole number" if name == "percent" \
                                else "wrong conversion factor"
                            detail = (
                                f"step {k}: {_show(old_value)} replaced by {_show(arg)} in "
                                f"{wc.calc.expr} ({what})"
                            )
                        return _finish(solution, nodes, solution.completions, kind="unit_slip",
                                       detail=detail, error_node=k)

                    candidates.append(make)
    return _attempt(candidates, rng, skipped, "unit_slip")


#: Every perturbation, by kind name.
PERTURBATIONS: dict[str, Callable[..., Perturbation | None]] = {
    "arithmetic_slip": arithmetic_slip,
    "wrong_quantity": wrong_quantity,
    "wrong_operation": wrong_operation,
    "dropped_step": dropped_step,
    "duplicated_step": duplicated_step,
    "unit_slip": unit_slip,
}
#: The kind names, in a fixed order.
PERTURBATION_KINDS: tuple[str, ...] = tuple(PERTURBATIONS)


def perturb(
    solution: GSM8KSolution,
    kind: str,
    rng: random.Random | None = None,
    *,
    skipped: Counter[str] | None = None,
) -> Perturbation | None:
    """Apply the perturbation named ``kind`` (one of :data:`PERTURBATION_KINDS`).

    Raises:
        InvalidInputError: if ``kind`` is unknown.
    """
    if kind not in PERTURBATIONS:
        raise InvalidInputError(
            f"unknown perturbation kind {kind!r}; choose from {', '.join(PERTURBATION_KINDS)}"
        )
    return PERTURBATIONS[kind](solution, rng, skipped=skipped)
