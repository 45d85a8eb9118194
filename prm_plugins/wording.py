"""How prm-plugins words numbers for people: plurals and score-versus-threshold comparisons.

Shared by the CLI and the feedback the strategies write (for people and for the LLM that
revises): a score printed next to a threshold always shows which side it is on (0.4996 is
written 0.4996 beside a threshold of 0.5000, never 0.50 "below" 0.50), and counts agree with
their nouns ("1 step", "2 steps").
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["SHIPPED_PRM_NOTE", "comparison_digits", "plural", "score_and_threshold"]

#: What the examples print after a run with the shipped PRM: what it is for, and the one
#: line that plugs in a stronger one.
SHIPPED_PRM_NOTE = (
    "Note: the shipped default PRM is a small demonstration model. It reliably catches\n"
    "written arithmetic slips and little else (prm_plugins/models/default/MODEL_CARD.md).\n"
    "To catch reasoning errors, plug in a stronger PRM; one line:\n"
    "    prm = load_prm(\"path/to/exported-prm\", device=\"cuda\")"
    "  # e.g. Qwen2.5-Math-PRM-7B after `prm export`"
)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 step"``, ``"2 steps"``; ``many`` for irregular plurals.

    Examples:
        >>> plural(1, "retry", "retries"), plural(0, "chain")
        ('1 retry', '0 chains')
    """
    return f"{n} {word if n == 1 else (many or word + 's')}"


def comparison_digits(values: Sequence[float], threshold: float, digits: int = 3) -> int:
    """Decimals that print every value apart from ``threshold`` when they differ.

    With 3 decimals a score of 0.4996 reads 0.500, "below" a threshold of 0.500; this gives
    the smallest count from ``digits`` on (at most 9) at which no value that differs from the
    threshold prints like it, so a comparison always shows in the digits.

    Examples:
        >>> comparison_digits([0.25, 0.4996], 0.5)
        4
        >>> comparison_digits([0.25, 0.75], 0.5)
        3
    """
    for k in range(digits, 10):
        t = f"{threshold:.{k}f}"
        if all((f"{v:.{k}f}" == t) == (v == threshold) for v in values):
            return k
    return 9


def score_and_threshold(score: float, threshold: float, digits: int = 3) -> tuple[str, str]:
    """``score`` and ``threshold`` as text with enough decimals that the comparison shows.

    Examples:
        >>> score_and_threshold(0.4996, 0.5)
        ('0.4996', '0.5000')
        >>> score_and_threshold(0.25, 0.5)
        ('0.250', '0.500')
    """
    k = comparison_digits([score], threshold, digits)
    return f"{score:.{k}f}", f"{threshold:.{k}f}"
