"""Arithmetic slips: a step computes its result wrong (a forgotten carry, a times-table slip)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from prm_plugins.arithmetic import (
    Expr,
    Negate,
    evaluate,
    format_number,
    root_operator,
)
from prm_plugins.labeling.gsm8k import Calculation, GSM8KSolution
from prm_plugins.labeling.perturb.chain import (
    Perturbation,
    _attempt,
    _check_solution,
    _finish,
    _program,
    _show,
    _step_indices,
)

__all__ = ["arithmetic_slip"]


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
