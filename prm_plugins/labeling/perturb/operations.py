"""The wrong operation for the situation (``+`` <-> ``-``, ``*`` <-> ``/``), computed right."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from prm_plugins.labeling.gsm8k import GSM8KSolution
from prm_plugins.labeling.perturb.chain import (
    _SWAPPED_OPERATOR,
    Perturbation,
    _attempt,
    _check_solution,
    _finish,
    _multiplication_symbol,
    _operator_symbol,
    _program,
    _step_indices,
)

__all__ = ["wrong_operation"]


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
