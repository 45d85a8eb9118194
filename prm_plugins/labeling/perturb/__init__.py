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

Modules: :mod:`~prm_plugins.labeling.perturb.chain` (the working copy every perturbation
edits, and the skip rules), then one module per family: ``slips`` (arithmetic_slip),
``quantities`` (wrong_quantity), ``operations`` (wrong_operation), ``steps`` (dropped_step,
duplicated_step) and ``units`` (unit_slip).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from prm_plugins.errors import InvalidInputError
from prm_plugins.labeling.gsm8k import GSM8KSolution
from prm_plugins.labeling.perturb.chain import MAX_TRIES, Perturbation, Source
from prm_plugins.labeling.perturb.operations import wrong_operation
from prm_plugins.labeling.perturb.quantities import wrong_quantity
from prm_plugins.labeling.perturb.slips import arithmetic_slip
from prm_plugins.labeling.perturb.steps import dropped_step, duplicated_step
from prm_plugins.labeling.perturb.units import UNIT_CONFUSIONS, unit_slip

__all__ = [
    "MAX_TRIES",
    "PERTURBATIONS",
    "PERTURBATION_KINDS",
    "UNIT_CONFUSIONS",
    "Perturbation",
    "Source",
    "arithmetic_slip",
    "dropped_step",
    "duplicated_step",
    "perturb",
    "unit_slip",
    "wrong_operation",
    "wrong_quantity",
]


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
