"""Platt calibration of step scores, so a threshold of 0.5 means what it says.

A PRM trained with class-balanced weights (or on data whose bad-step rate differs from the
data it meets) ranks steps well but its probabilities sit off the true rate: the default PRM
scored most correct late steps near 0.3. Platt scaling fits two numbers on held-out labelled
steps, ``p' = sigmoid(a * logit(p) + b)``, by maximum likelihood. It is monotone, so rankings,
AUROC and best-of-N picks are unchanged; only thresholded decisions (``verify``, first-error,
self-critique, agent middleware) move.

``prm calibrate MODEL_DIR --data VAL.jsonl`` fits it on TRL stepwise rows and writes it into
the model's ``prm.json`` (``extra.calibration``); :class:`prm_plugins.OnnxPRM` applies it
before any step check. ``load_prm(..., calibrate=False)`` gives the raw scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prm_plugins.errors import InvalidInputError

__all__ = [
    "PlattCalibration",
    "calibrate_model_dir",
    "fit_platt",
    "log_loss_and_brier",
    "remove_calibration",
]

_EPS = 1e-6


class PlattCalibration:
    """``p' = sigmoid(a * logit(p) + b)`` applied to step probabilities.

    Examples:
        >>> cal = PlattCalibration(a=1.0, b=0.0)
        >>> round(cal.apply([0.2, 0.9])[1], 6)
        0.9
        >>> PlattCalibration(a=2.0, b=1.0).apply([0.5])[0] == 1 / (1 + math.exp(-1.0))
        True
    """

    def __init__(self, a: float, b: float) -> None:
        for name, value in (("a", a), ("b", b)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value):
                raise InvalidInputError(f"calibration {name} must be a finite number, "
                                        f"got {value!r}")
        if a <= 0:
            raise InvalidInputError(
                f"calibration slope a must be > 0 (a monotone map keeps the ranking), got {a}"
            )
        self.a = float(a)
        self.b = float(b)

    @classmethod
    def from_manifest(cls, spec: object) -> PlattCalibration:
        """Read ``extra.calibration`` of a ``prm.json``.

        Raises:
            InvalidInputError: not ``{"method": "platt", "a": float, "b": float, ...}``.
        """
        if not isinstance(spec, Mapping) or spec.get("method") != "platt":
            raise InvalidInputError(
                f"prm.json extra.calibration must be {{\"method\": \"platt\", \"a\": ..., "
                f"\"b\": ...}}, got {spec!r}; rerun `prm calibrate` or remove it with "
                "`prm calibrate MODEL_DIR --remove`"
            )
        return cls(spec.get("a"), spec.get("b"))  # type: ignore[arg-type]

    def apply(self, probs: Sequence[float]) -> list[float]:
        """Calibrated probabilities, one per input probability."""
        p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
        z = self.a * (np.log(p) - np.log1p(-p)) + self.b
        return [float(v) for v in 1.0 / (1.0 + np.exp(-z))]

    def to_dict(self) -> dict[str, Any]:
        """The ``extra.calibration`` entry (more keys may be added by the caller)."""
        return {"method": "platt", "a": self.a, "b": self.b}


def fit_platt(probs: Sequence[float], labels: Sequence[bool], *,
              l2: float = 1e-4, max_iter: int = 100) -> PlattCalibration:
    """Fit ``a`` and ``b`` by Newton's method on the log-loss of ``labels`` (True = good step).

    Args:
        probs: raw step probabilities from the model.
        labels: whether each step is correct.
        l2: a small ridge on ``a - 1`` and ``b`` that keeps the fit finite on separable data.
        max_iter: Newton iterations at most.

    Raises:
        InvalidInputError: empty or mismatched inputs, or only one class among the labels.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> z = rng.normal(size=4000)
        >>> y = rng.random(4000) < 1 / (1 + np.exp(-(2 * z - 1)))   # true a=2, b=-1
        >>> cal = fit_platt(1 / (1 + np.exp(-z)), y)
        >>> round(cal.a, 1), round(cal.b, 1)
        (2.0, -1.0)
    """
    if len(probs) != len(labels):
        raise InvalidInputError(f"{len(probs)} probabilities but {len(labels)} labels")
    if len(probs) == 0:
        raise InvalidInputError("no labelled steps to calibrate on")
    y = np.asarray(labels, dtype=np.float64)
    if y.min() == y.max():
        raise InvalidInputError(
            "calibration needs both good and bad steps among the labels; got only "
            f"{'good' if y[0] else 'bad'} ones"
        )
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    x = np.log(p) - np.log1p(-p)
    w = np.array([1.0, 0.0])  # a, b
    prior = np.array([1.0, 0.0])
    n = len(x)
    for _ in range(max_iter):
        z = w[0] * x + w[1]
        q = 1.0 / (1.0 + np.exp(-z))
        r = q - y
        grad = np.array([np.dot(r, x), r.sum()]) / n + l2 * (w - prior)
        s = q * (1 - q)
        hess = np.array([[np.dot(s, x * x), np.dot(s, x)],
                         [np.dot(s, x), s.sum()]]) / n + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    a = float(w[0])
    if a <= 0:
        raise InvalidInputError(
            f"the fitted slope is {a:.3g} (<= 0): on this data the model's scores rank bad "
            "steps above good ones, so calibration cannot help; check the data and the model"
        )
    return PlattCalibration(a, float(w[1]))


def log_loss_and_brier(probs: Sequence[float], labels: Sequence[bool]) -> tuple[float, float]:
    """Mean log-loss and Brier score of ``probs`` against ``labels`` (True = good step)."""
    q = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    t = np.asarray(labels, dtype=np.float64)
    ll = float(-np.mean(t * np.log(q) + (1 - t) * np.log1p(-q)))
    return ll, float(np.mean((q - t) ** 2))


def calibrate_model_dir(model_dir: str | Path, rows: Sequence[Mapping[str, Any]], *,
                        batch_size: int = 32, data_name: str | None = None) -> dict[str, Any]:
    """Fit Platt calibration of a model directory on stepwise rows and write it to prm.json.

    The model's raw probabilities (no calibration, no step checks, long chains scored in
    windows) on ``rows`` (TRL stepwise: ``{"prompt", "completions", "labels"}``) are fitted
    with :func:`fit_platt`; the entry written under ``extra.calibration`` holds the fit, the
    data it came from and the log-loss and Brier score before and after. The model files are
    untouched, so their hashes still hold.

    Args:
        model_dir: a model directory made by ``prm export``.
        rows: held-out labelled stepwise rows (questions the model was not trained on).
        batch_size: chains per scoring call.
        data_name: what to record as the data's name (e.g. the file name).

    Returns:
        The entry written into ``prm.json``.

    Raises:
        InvalidInputError: no rows, a bad batch size, or labels :func:`fit_platt` refuses.
        ModelLoadError: the model directory cannot be loaded.
    """
    from prm_plugins.manifest import Manifest
    from prm_plugins.runtime import load_prm

    if not rows:
        raise InvalidInputError("no stepwise rows to calibrate on")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
    manifest = Manifest.read(model_dir)
    prm = load_prm(model_dir, device="cpu", checks=(), calibrate=False, long_chains="window")
    probs: list[float] = []
    labels: list[bool] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        scored = prm.score_batch([(r["prompt"], r["completions"]) for r in chunk])
        for r, s in zip(chunk, scored, strict=True):
            probs.extend(s.scores)
            labels.extend(bool(v) for v in r["labels"])
    cal = fit_platt(probs, labels)
    before = log_loss_and_brier(probs, labels)
    after = log_loss_and_brier(cal.apply(probs), labels)
    entry = {**cal.to_dict(), "data": data_name, "rows": len(rows), "steps": len(labels),
             "good_steps": int(sum(labels)),
             "log_loss": {"before": round(before[0], 5), "after": round(after[0], 5)},
             "brier": {"before": round(before[1], 5), "after": round(after[1], 5)}}
    manifest.extra["calibration"] = entry
    manifest.write(model_dir)
    return entry


def remove_calibration(model_dir: str | Path) -> bool:
    """Delete ``extra.calibration`` from a model directory's prm.json; True if there was one."""
    from prm_plugins.manifest import Manifest

    manifest = Manifest.read(model_dir)
    removed = manifest.extra.pop("calibration", None) is not None
    manifest.write(model_dir)
    return removed
