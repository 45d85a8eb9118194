"""The one home of PRM metrics: rank AUROC, step AUROC per kind, F1 counts, ProcessBench F1.

``prm eval`` and training (validation and test reports of :func:`prm_plugins.training.train`)
both compute their step AUROC figures here (:func:`step_auroc_report`), so the two give the
same figure on the same data. Pure Python + numpy; no scikit-learn. Undefined figures (a
ratio with a zero denominator, an AUROC with one class absent) are ``None``, so reports stay
valid JSON.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prm_plugins.errors import InvalidInputError

__all__ = [
    "BinaryCounts",
    "accuracy",
    "auroc",
    "auroc_or_none",
    "f1_score",
    "gold_first_error",
    "harmonic_mean",
    "mean_or_none",
    "paired_bootstrap",
    "predicted_first_error",
    "processbench_scores",
    "step_auroc_report",
]


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[int | bool] | np.ndarray) -> float:
    """Area under the ROC curve, by the Mann-Whitney rank statistic.

    ``AUROC = (sum of the positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, with
    tied scores given their average rank, so a positive tied with a negative counts one half.

    Args:
        scores: higher means "more likely positive" (a correct step).
        labels: 1/True for positive, 0/False for negative.

    Returns:
        The AUROC in [0, 1].

    Raises:
        InvalidInputError: when lengths differ, a score is not finite, or one class is
            absent (AUROC is undefined then; :func:`auroc_or_none` gives ``None`` instead).

    Examples:
        >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
        >>> auroc([0.5, 0.5, 0.9], [0, 1, 1])
        0.75
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise InvalidInputError(
            f"auroc needs one label per score; received {s.size} scores and {y.size} labels"
        )
    if not np.all(np.isfinite(s)):
        raise InvalidInputError(
            f"auroc needs finite scores; received {int((~np.isfinite(s)).sum())} NaN/inf "
            "value(s). Drop unscored steps first"
        )
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise InvalidInputError(
            f"AUROC is undefined with one class only; received {n_pos} positive and {n_neg} "
            "negative label(s). Evaluate on data with both correct and incorrect steps, or "
            "use auroc_or_none()"
        )
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # mean 1-based rank
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auroc_or_none(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int | bool] | np.ndarray
) -> float | None:
    """:func:`auroc`, or ``None`` when one class is absent (e.g. a set of correct chains).

    Examples:
        >>> auroc_or_none([0.2, 0.9], [1, 1]) is None
        True
    """
    y = np.asarray(labels).ravel().astype(bool)
    if y.size == 0 or y.all() or not y.any():
        return None
    return auroc(scores, labels)


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    """``2ab / (a + b)``; 0 when both are 0; ``None`` when either is undefined.

    Examples:
        >>> harmonic_mean(0.5, 1.0)
        0.6666666666666666
    """
    if a is None or b is None:
        return None
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)


def f1_score(tp: int, fp: int, fn: int) -> float | None:
    """F1 = 2tp / (2tp + fp + fn); ``None`` when the class has no gold member (tp + fn = 0).

    Examples:
        >>> f1_score(3, 1, 2)
        0.6666666666666666
        >>> f1_score(0, 4, 0) is None
        True
    """
    if tp + fn == 0:
        return None
    return 2.0 * tp / (2 * tp + fp + fn)


def mean_or_none(values: Iterable[float]) -> float | None:
    """The mean, or ``None`` for no values."""
    vals = list(values)
    return float(sum(vals) / len(vals)) if vals else None


def accuracy(predicted: Sequence[object], gold: Sequence[object]) -> float | None:
    """Fraction of positions where ``predicted == gold``; ``None`` for empty input.

    Examples:
        >>> accuracy([1, -1, 2], [1, -1, 0])
        0.6666666666666666
    """
    if len(predicted) != len(gold):
        raise InvalidInputError(
            f"accuracy needs as many predictions as gold values; received {len(predicted)} "
            f"and {len(gold)}"
        )
    return mean_or_none(float(p == g) for p, g in zip(predicted, gold, strict=True))


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Mean of ``a - b`` over paired units (questions) and its percentile bootstrap interval.

    The units are resampled with replacement, keeping each unit's pair together, so two
    methods judged on the same questions are compared without the between-question noise
    that separate intervals would carry.

    Args:
        a, b: one figure per unit (e.g. each question's best-of-N accuracy under two methods);
            same length, finite.
        resamples: bootstrap resamples.
        confidence: the interval's coverage, in (0, 1).
        seed: seed of the resampling.

    Returns:
        ``{"mean": ..., "low": ..., "high": ..., "units": n, "confidence": ...}``.

    Examples:
        >>> r = paired_bootstrap([1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0], resamples=2000)
        >>> r["mean"], r["low"] >= 0.0, r["high"] <= 1.0
        (0.5, True, True)
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise InvalidInputError(
            f"paired_bootstrap needs two 1-D sequences of the same length (one figure per "
            f"unit); received shapes {x.shape} and {y.shape}")
    if x.size == 0:
        raise InvalidInputError("paired_bootstrap needs at least one unit; received none")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InvalidInputError("paired_bootstrap needs finite figures; drop units without "
                                "one (NaN) from both sequences first")
    if resamples < 1:
        raise InvalidInputError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise InvalidInputError(f"confidence must be in (0, 1), got {confidence}")
    diff = x - y
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory for many units
        stop = min(start + 1000, resamples)
        idx = rng.integers(0, diff.size, size=(stop - start, diff.size))
        means[start:stop] = diff[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high),
            "units": int(diff.size), "confidence": confidence}


def predicted_first_error(scores: Sequence[float | None], threshold: float = 0.5) -> int:
    """Index of the first step scored below ``threshold``, or -1 (ProcessBench convention).

    ``None`` scores (steps that could not be scored, e.g. empty ones) are passed over.

    Examples:
        >>> predicted_first_error([0.9, 0.4, 0.2]), predicted_first_error([0.9, 0.8])
        (1, -1)
    """
    for i, s in enumerate(scores):
        if s is not None and s < threshold:
            return i
    return -1


def gold_first_error(labels: Sequence[bool | int | None]) -> int:
    """Index of the first step labelled incorrect (``False``/0), or -1.

    Examples:
        >>> gold_first_error([True, True, False, False]), gold_first_error([1, 1])
        (2, -1)
    """
    for i, v in enumerate(labels):
        if v is not None and not v:
            return i
    return -1


def _first_error_score(scores: Sequence[float | None], labels: Sequence[Any]) -> float | None:
    """The score of the first step labelled incorrect, or ``None`` (no error, or unscored)."""
    first = gold_first_error(labels)
    return scores[first] if 0 <= first < len(scores) else None


def step_auroc_report(
    step_scores: Iterable[Sequence[float | None]],
    step_labels: Iterable[Sequence[bool | int | None]],
    kinds: Iterable[str | None] | None = None,
) -> dict[str, Any]:
    """Step AUROC overall and per kind (perturbation, class): the one computation of both
    ``prm eval steps --kind stepwise`` and training's validation/test reports.

    Per kind ``k``, the negatives are the incorrect steps of rows of kind ``k`` and the
    positives are all correct steps of the set (every row), so each figure answers "does this
    kind of error score below correct steps?" on the same positives; ``within_rows`` is the
    stricter figure on the rows of kind ``k`` only. ``first_error_auroc`` (overall and per
    kind) keeps only each row's first incorrect step as a negative: whether the model sees an
    error where it happens, apart from the steps after it (labelled incorrect too, and easier
    by position and by the error before them). A step whose score or label is ``None``
    (unscored, unlabelled) is left out. Figures that cannot be computed (one class absent)
    are ``None``.

    Args:
        step_scores: per row, one score per step (``None`` for an unscored step).
        step_labels: per row, one label per step (1/True correct, 0/False incorrect, ``None``
            unknown).
        kinds: per row, its kind (``None`` counts as ``"none"``).

    Returns:
        ``{"auroc", "first_error_auroc", "n_rows", "n_steps", "n_pos", "n_neg",
        "per_kind": {kind: {"rows", "neg_steps", "auroc", "first_error_auroc",
        "within_rows"}}}``; ``n_steps`` counts the steps both scored and labelled.

    Raises:
        InvalidInputError: when rows or a row's scores and labels differ in length, or a
            score is not finite.

    Examples:
        >>> r = step_auroc_report([[0.9, 0.2], [0.8, 0.7]], [[1, 0], [1, 1]], ["slip", None])
        >>> r["auroc"], r["per_kind"]["slip"]["auroc"], r["per_kind"]["none"]["auroc"]
        (1.0, 1.0, None)
    """
    rows_s = [list(r) for r in step_scores]
    rows_y = [list(r) for r in step_labels]
    row_kinds = [None] * len(rows_s) if kinds is None else list(kinds)
    pairs = _labelled_pairs(rows_s, rows_y)
    positives = [p for row in pairs for p in row if p[1]]

    def vs_positives(negatives: list[tuple[float, bool]]) -> float | None:
        return _pairs_auroc(positives + negatives) if negatives else None

    def firsts(idx: Iterable[int]) -> list[tuple[float, bool]]:
        scores = (_first_error_score(rows_s[i], rows_y[i]) for i in idx)
        return [(float(v), False) for v in scores if v is not None]

    everything = [p for row in pairs for p in row]
    report: dict[str, Any] = {
        "auroc": _pairs_auroc(everything),
        "first_error_auroc": vs_positives(firsts(range(len(rows_s)))),
        "n_rows": len(rows_s), "n_steps": len(everything),
        "n_pos": len(positives), "n_neg": len(everything) - len(positives),
    }
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(row_kinds):
        by_kind["none" if k is None else str(k)].append(i)
    report["per_kind"] = {}
    for k in sorted(by_kind):
        kind_pairs = [p for i in by_kind[k] for p in pairs[i]]
        negatives = [p for p in kind_pairs if not p[1]]
        report["per_kind"][k] = {
            "rows": len(by_kind[k]), "neg_steps": len(negatives),
            "auroc": vs_positives(negatives),
            "first_error_auroc": vs_positives(firsts(by_kind[k])),
            "within_rows": _pairs_auroc(kind_pairs),
        }
    return report


def _labelled_pairs(
    rows_s: list[list[float | None]], rows_y: list[list[bool | int | None]]
) -> list[list[tuple[float, bool]]]:
    """Per row, ``(score, correct)`` for the steps both scored and labelled."""
    if len(rows_s) != len(rows_y):
        raise InvalidInputError(
            f"step_auroc_report needs one label row per score row; received {len(rows_s)} "
            f"score rows and {len(rows_y)} label rows")
    pairs = []
    for i, (s, y) in enumerate(zip(rows_s, rows_y, strict=True)):
        if len(s) != len(y):
            raise InvalidInputError(
                f"row {i}: {len(s)} step score(s) but {len(y)} label(s); give one label per "
                "step")
        pairs.append([(float(v), bool(lab)) for v, lab in zip(s, y, strict=True)
                      if v is not None and lab is not None])
    return pairs


def _pairs_auroc(pairs: Sequence[tuple[float, bool]]) -> float | None:
    return auroc_or_none([p[0] for p in pairs], [p[1] for p in pairs])


def processbench_scores(
    predicted: Sequence[int], gold: Sequence[int]
) -> dict[str, float | int | None]:
    """ProcessBench figures from first-error indices (-1 = no error).

    Accuracy on the erroneous samples (gold >= 0: the exact first-error step must be found),
    accuracy on the correct samples (gold == -1: predicted -1), and F1 = their harmonic mean.

    Args:
        predicted: predicted first-error index per sample.
        gold: gold first-error index per sample.

    Returns:
        ``{"error_acc", "correct_acc", "f1", "n_error", "n_correct"}``.

    Examples:
        >>> r = processbench_scores([2, -1, -1, 0], [2, 1, -1, -1])
        >>> r["error_acc"], r["correct_acc"], round(r["f1"], 4)
        (0.5, 0.5, 0.5)
    """
    if len(predicted) != len(gold):
        raise InvalidInputError(
            f"processbench_scores needs one prediction per sample; received {len(predicted)} "
            f"predictions and {len(gold)} gold labels"
        )
    err = [(p, g) for p, g in zip(predicted, gold, strict=True) if g >= 0]
    cor = [(p, g) for p, g in zip(predicted, gold, strict=True) if g < 0]
    error_acc = mean_or_none(float(p == g) for p, g in err)
    correct_acc = mean_or_none(float(p < 0) for p, _ in cor)
    return {"error_acc": error_acc, "correct_acc": correct_acc,
            "f1": harmonic_mean(error_acc, correct_acc),
            "n_error": len(err), "n_correct": len(cor)}


@dataclass
class BinaryCounts:
    """Step-level confusion counts where "positive" means a correct step.

    ``tp``: correct step predicted correct; ``fn``: correct step flagged; ``tn``: erroneous
    step flagged; ``fp``: erroneous step passed (PRMBench's convention).
    """

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def add(self, predicted_correct: bool, gold_correct: bool) -> None:
        """Count one step."""
        if gold_correct:
            if predicted_correct:
                self.tp += 1
            else:
                self.fn += 1
        elif predicted_correct:
            self.fp += 1
        else:
            self.tn += 1

    def __iadd__(self, other: BinaryCounts) -> BinaryCounts:
        self.tp += other.tp
        self.fp += other.fp
        self.tn += other.tn
        self.fn += other.fn
        return self

    @property
    def positive_f1(self) -> float | None:
        """F1 of the correct-step class."""
        return f1_score(self.tp, self.fp, self.fn)

    @property
    def negative_f1(self) -> float | None:
        """F1 of the erroneous-step class."""
        return f1_score(self.tn, self.fn, self.fp)

    @property
    def prm_score(self) -> float | None:
        """PRMBench's PRMScore: the mean of negative F1 and positive F1.

        Where the gold steps are of one class only (a set of correct chains), the F1 of the
        absent class is undefined and PRMScore is the other F1 alone.
        """
        vals = [v for v in (self.negative_f1, self.positive_f1) if v is not None]
        return mean_or_none(vals)

    def as_dict(self) -> dict[str, float | int | None]:
        """Counts and F1 figures, JSON-ready."""
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn,
                "positive_f1": self.positive_f1, "negative_f1": self.negative_f1,
                "prm_score": self.prm_score}
