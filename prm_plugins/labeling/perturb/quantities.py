"""The right operation on the wrong quantity (a misread number, the wrong earlier result)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from functools import partial

from prm_plugins.labeling.gsm8k import Calculation, GSM8KSolution
from prm_plugins.labeling.perturb.chain import (
    Perturbation,
    Source,
    _attempt,
    _check_solution,
    _finish,
    _program,
    _show,
    _step_indices,
)

__all__ = ["wrong_quantity"]


def _pools(
    calc: Calculation, src: int | None, question_values: list[Fraction],
    results: dict[int, Fraction], replacement: Fraction | int | None,
) -> tuple[list[Source], list[Source]]:
    """The replacements for one operand: those of its own origin first, then the others."""
    if replacement is not None:
        return [("v", Fraction(replacement))], []
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
    return (earlier, from_question) if src is not None else (from_question, earlier)


def _replace_quantity(
    solution: GSM8KSolution, rng: random.Random, results: dict[int, Fraction],
    k: int, ci: int, oi: int, same: list[Source], other: list[Source],
) -> Perturbation:
    """Operand ``oi`` of calculation ``ci`` in step ``k`` takes a quantity from the pools."""
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
                same, other = _pools(calc, src, question_values, results, replacement)
                if not same and not other:
                    continue
                candidates.append(partial(_replace_quantity, solution, rng, results, k, ci, oi,
                                          same, other))
    return _attempt(candidates, rng, skipped, "wrong_quantity")
