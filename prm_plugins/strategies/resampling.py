"""Particle weights and resampling, for :class:`~prm_plugins.strategies.ParticleFilter`.

Pure functions over lists of floats and a seeded :class:`random.Random`; the same seed gives
the same draws on every platform (``random.Random`` is specified to be reproducible across
Python versions for ``random()``).

* :func:`log_weights` turns PRM likelihoods (probabilities in [0, 1]) into log-weights, in
  one of three ways (``weighting``): ``"logit"`` (``log(p / (1 - p))``, what its_hub's
  particle filtering does), ``"log"`` (``log p``: the likelihood itself is the weight, the
  textbook bootstrap filter) or ``"score"`` (the probability itself, as the paper's
  Algorithm 1 writes ``softmax(w)`` over the rewards).
* :func:`normalize` is the softmax with a temperature over log-weights.
* :func:`multinomial_resample` draws ``n`` ancestors independently;
  :func:`systematic_resample` draws one uniform and takes ``n`` evenly spaced points, so each
  particle ``i`` gets ``floor(n * w_i)`` or ``ceil(n * w_i)`` copies (lower variance).
* :func:`effective_sample_size` is ``1 / sum(w_i ** 2)``.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from typing import Literal

from prm_plugins.errors import InvalidInputError

__all__ = [
    "RESAMPLERS",
    "WEIGHTINGS",
    "Resampler",
    "Weighting",
    "effective_sample_size",
    "log_weights",
    "multinomial_resample",
    "normalize",
    "resample",
    "systematic_resample",
]

#: How PRM likelihoods become log-weights (see the module docstring).
Weighting = Literal["logit", "log", "score"]
WEIGHTINGS: tuple[str, ...] = ("logit", "log", "score")
#: How ancestors are drawn from the normalised weights.
Resampler = Literal["multinomial", "systematic"]
RESAMPLERS: tuple[str, ...] = ("multinomial", "systematic")

#: Likelihoods are clipped to [EPS, 1 - EPS] before a log or a logit (a PRM score of exactly
#: 0 or 1 would give an infinite log-weight).
EPS = 1e-7


def log_weights(likelihoods: Sequence[float], weighting: Weighting = "logit") -> list[float]:
    """Log-weights of particles from their PRM likelihoods (probabilities in [0, 1]).

    Examples:
        >>> [round(x, 3) for x in log_weights([0.5, 0.9], "logit")]
        [0.0, 2.197]
        >>> [round(x, 3) for x in log_weights([0.5, 0.9], "log")]
        [-0.693, -0.105]
        >>> log_weights([0.5, 0.9], "score")
        [0.5, 0.9]
    """
    if weighting == "score":
        return [float(p) for p in likelihoods]
    clipped = [min(max(float(p), EPS), 1.0 - EPS) for p in likelihoods]
    if weighting == "logit":
        return [math.log(p / (1.0 - p)) for p in clipped]
    if weighting == "log":
        return [math.log(p) for p in clipped]
    raise InvalidInputError(
        f"weighting must be one of {', '.join(map(repr, WEIGHTINGS))}; got {weighting!r}"
    )


def normalize(log_w: Sequence[float], temperature: float = 1.0) -> list[float]:
    """Softmax of ``log_w / temperature``: probabilities that sum to 1.

    A lower temperature sharpens the distribution (towards the argmax), a higher one
    flattens it (towards uniform).

    Examples:
        >>> [round(p, 3) for p in normalize([0.0, math.log(3.0)])]
        [0.25, 0.75]
        >>> [round(p, 3) for p in normalize([0.0, math.log(3.0)], temperature=2.0)]
        [0.366, 0.634]
    """
    if not log_w:
        return []
    scaled = [x / temperature for x in log_w]
    top = max(scaled)
    exp = [math.exp(x - top) for x in scaled]
    total = sum(exp)
    return [e / total for e in exp]


def effective_sample_size(weights: Sequence[float]) -> float:
    """``1 / sum(w ** 2)`` of normalised weights: ``n`` when uniform, 1 when degenerate.

    Examples:
        >>> effective_sample_size([0.25] * 4), effective_sample_size([1.0, 0.0])
        (4.0, 1.0)
    """
    total = sum(w * w for w in weights)
    return 1.0 / total if total > 0 else 0.0


def _cumulative(weights: Sequence[float]) -> list[float]:
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc)
    out[-1] = 1.0  # absorb round-off so that every draw in [0, 1) lands somewhere
    return out


def _index(cumulative: list[float], u: float) -> int:
    """The first index whose cumulative weight exceeds ``u`` (zero-weight ones never)."""
    return min(bisect.bisect_right(cumulative, u), len(cumulative) - 1)


def multinomial_resample(weights: Sequence[float], n: int, rng: random.Random) -> list[int]:
    """``n`` ancestor indices drawn independently with probabilities ``weights``.

    Examples:
        >>> multinomial_resample([0.0, 1.0, 0.0], 3, random.Random(0))
        [1, 1, 1]
    """
    cumulative = _cumulative(weights)
    return [_index(cumulative, rng.random()) for _ in range(n)]


def systematic_resample(weights: Sequence[float], n: int, rng: random.Random) -> list[int]:
    """``n`` ancestor indices from one uniform draw and ``n`` evenly spaced points.

    Particle ``i`` gets ``floor(n * w_i)`` or ``ceil(n * w_i)`` copies; the indices come out
    sorted.

    Examples:
        >>> systematic_resample([0.5, 0.25, 0.25], 4, random.Random(0))
        [0, 0, 1, 2]
    """
    cumulative = _cumulative(weights)
    u = rng.random() / n
    return [_index(cumulative, u + k / n) for k in range(n)]


def resample(
    weights: Sequence[float], n: int, rng: random.Random, method: Resampler = "multinomial"
) -> list[int]:
    """``n`` ancestor indices drawn by ``method`` (``"multinomial"`` or ``"systematic"``)."""
    if method == "systematic":
        return systematic_resample(weights, n, rng)
    if method == "multinomial":
        return multinomial_resample(weights, n, rng)
    raise InvalidInputError(
        f"resampling must be one of {', '.join(map(repr, RESAMPLERS))}; got {method!r}"
    )
