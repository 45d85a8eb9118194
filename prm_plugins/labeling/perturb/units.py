"""Magnitude and unit slips: a wrong conversion factor, a conversion the wrong way round."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from typing import Any

from prm_plugins.arithmetic import (
    Operand,
    format_number,
)
from prm_plugins.labeling.gsm8k import Calculation, GSM8KSolution
from prm_plugins.labeling.perturb.chain import (
    _SWAPPED_OPERATOR,
    Perturbation,
    _attempt,
    _check_solution,
    _finish,
    _multiplication_symbol,
    _operator_symbol,
    _parent_of,
    _program,
    _show,
    _step_indices,
)

#: Conversion factors a solver may confuse, and what they get confused with.
UNIT_CONFUSIONS: dict[Fraction, tuple[Fraction, ...]] = {
    Fraction(60): (Fraction(100),),
    Fraction(100): (Fraction(10), Fraction(1000)),
    Fraction(1000): (Fraction(100),),
    Fraction(10): (Fraction(100),),
    Fraction(12): (Fraction(10),),
    Fraction(3600): (Fraction(60),),
}

__all__ = ["UNIT_CONFUSIONS", "unit_slip"]


def _unit_variants(
    solution: GSM8KSolution, calc: Calculation, oi: int, value: Fraction,
    question_values: set[Fraction], written_before: set[Fraction],
) -> list[tuple[str, Any]]:
    """The slips operand ``oi`` (a constant of value ``value``) allows."""
    variants: list[tuple[str, Any]] = []
    parent = _parent_of(calc.tree, oi)
    scales = parent is not None and parent.op in ("*", "/")
    if (
        value in UNIT_CONFUSIONS
        and value not in question_values
        and value not in written_before
        and scales
    ):
        variants += [("factor", f) for f in UNIT_CONFUSIONS[value]]
        if (
            parent is not None
            and isinstance(parent.right, Operand)
            and parent.right.index == oi
            and parent.op in ("*", "/")
            and calc.operator_spans[parent.index] is not None
        ):
            variants.append(("inverted", parent))
    if 0 < value < 1 and f"{format_number(value * 100)}%" in solution.question:
        variants.append(("percent", value * 100))
    return variants


def _apply_unit_slip(
    solution: GSM8KSolution, times: str, k: int, ci: int, oi: int, variant: Any, text: str,
) -> Perturbation:
    """The chain with ``variant`` applied to operand ``oi`` of calculation ``ci``, step ``k``."""
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
                variants = _unit_variants(solution, calc, oi, op.value,
                                          question_values, written_before[k])
                for variant in variants:
                    candidates.append(partial(_apply_unit_slip, solution, times, k, ci, oi,
                                              variant, text))
    return _attempt(candidates, rng, skipped, "unit_slip")
