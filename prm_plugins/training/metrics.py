"""Step-level metrics: a rank-based AUROC (ties averaged) and AUROC per perturbation kind.

Pure Python + numpy, no scikit-learn.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["auroc", "step_auroc_report"]


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Area under the ROC curve, by the Mann-Whitney rank statistic.

    ``AUROC = (sum of the positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``,
    with tied scores given their average rank, so a tie between a positive and a negative
    counts one half.

    Args:
        scores: higher means "more likely positive".
        labels: 1 for positive (a correct step), 0 for negative.

    Returns:
        The AUROC in [0, 1], or ``nan`` when one class is absent.

    Examples:
        >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
        >>> auroc([0.5, 0.5], [0, 1])
        0.5
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Average rank (1-based) over each run of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def step_auroc_report(
    step_scores: Iterable[Sequence[float]],
    step_labels: Iterable[Sequence[int | bool]],
    kinds: Iterable[str | None] | None = None,
) -> dict[str, Any]:
    """Step AUROC overall and per perturbation kind.

    Per kind ``k``, the negatives are the incorrect steps of rows perturbed with ``k`` and the
    positives are all correct steps of the set (every row), so each figure answers "does this
    kind of error score below correct steps?" on the same positives. ``within_rows`` gives
    the stricter figure computed on the rows of kind ``k`` only.

    Args:
        step_scores: per row, one score per step.
        step_labels: per row, one label per step (1/True correct).
        kinds: per row, its perturbation kind (``None`` for unperturbed rows).

    ``first_error_auroc`` (overall and per kind) keeps only each row's first incorrect step
    as a negative: whether the model sees an error where it happens, apart from the steps
    after it, which are labelled incorrect too and are easier (by position, and by the error
    before them). Figures that cannot be computed (one class absent) are ``None``.

    Returns:
        ``{"auroc", "first_error_auroc", "n_steps", "n_pos", "n_neg", "n_rows",
        "per_kind": {kind: {...}}}``.
    """
    rows_s = [list(map(float, r)) for r in step_scores]
    rows_y = [[int(bool(v)) for v in r] for r in step_labels]
    if len(rows_s) != len(rows_y):
        raise ValueError(f"{len(rows_s)} score rows but {len(rows_y)} label rows")
    row_kinds = [None] * len(rows_s) if kinds is None else list(kinds)
    all_s = np.array([v for r in rows_s for v in r], dtype=np.float64)
    all_y = np.array([v for r in rows_y for v in r], dtype=np.int64)
    pos_scores = all_s[all_y == 1]

    def vs_positives(neg: np.ndarray) -> float | None:
        if not (neg.size and pos_scores.size):
            return None
        return auroc(np.concatenate([pos_scores, neg]),
                     np.concatenate([np.ones(pos_scores.size), np.zeros(neg.size)]))

    def firsts(idx: Sequence[int]) -> np.ndarray:
        return np.array([rows_s[i][rows_y[i].index(0)] for i in idx if 0 in rows_y[i]],
                        dtype=np.float64)

    def finite(x: float) -> float | None:
        return None if np.isnan(x) else x

    report: dict[str, Any] = {
        "auroc": finite(auroc(all_s, all_y)),
        "first_error_auroc": vs_positives(firsts(range(len(rows_s)))),
        "n_rows": len(rows_s),
        "n_steps": int(all_y.size),
        "n_pos": int(all_y.sum()),
        "n_neg": int(all_y.size - all_y.sum()),
    }
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(row_kinds):
        by_kind["none" if k is None else str(k)].append(i)
    per_kind: dict[str, Mapping[str, Any]] = {}
    for k in sorted(by_kind):
        idx = by_kind[k]
        ks = np.array([v for i in idx for v in rows_s[i]], dtype=np.float64)
        ky = np.array([v for i in idx for v in rows_y[i]], dtype=np.int64)
        neg = ks[ky == 0]
        per_kind[k] = {
            "rows": len(idx),
            "neg_steps": int(neg.size),
            "auroc": vs_positives(neg),
            "first_error_auroc": vs_positives(firsts(idx)),
            "within_rows": finite(auroc(ks, ky)),
        }
    report["per_kind"] = per_kind
    return report
