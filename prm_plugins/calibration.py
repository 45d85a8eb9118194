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
from typing import Any

import numpy as np

from prm_plugins.errors import InvalidInputError

__all__ = ["PlattCalibration", "fit_platt"]

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
