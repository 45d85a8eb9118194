"""Step-level errors: a step left out, or a step done twice."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from prm_plugins.labeling.gsm8k import GSM8KSolution
from prm_plugins.labeling.perturb.chain import (
    Perturbation,
    Source,
    _attempt,
    _Calc,
    _check_solution,
    _finish,
    _Node,
    _program,
    _remap,
    _step_indices,
)

__all__ = ["dropped_step", "duplicated_step"]


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
