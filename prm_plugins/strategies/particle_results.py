"""The result of :class:`~prm_plugins.strategies.ParticleFilter`, and how it chooses.

:class:`Particle` is one particle of the last population, :class:`ParticleFilterResult` the
whole run (``to_dict()`` is JSON-ready); :func:`choose_particle` picks the answer from the
last population by the highest weight or by a weighted vote over final answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from prm_plugins.answers import normalize_answer
from prm_plugins.budget import BudgetSpent

__all__ = ["Particle", "ParticleFilterResult", "ParticleSelect", "choose_particle"]

logger = logging.getLogger(__name__)

#: How the answer is chosen from the last population.
ParticleSelect = Literal["best", "vote"]


@dataclass(frozen=True)
class Particle:
    """One particle of the last population.

    Attributes:
        steps: its chain.
        step_scores: the PRM's scores of every step of the chain.
        likelihood: what its weight comes from (the newest step's score, or the product).
        weight: its normalised weight in the last population (the weights sum to 1).
        complete: whether its last step passed ``is_complete``.
        finished: whether it stopped growing (complete, or its generator had nothing to add).
        answer: the final answer it states (``prm_plugins.answers.extract_answer``), or
            ``None``.
        ancestry: for each resampling, the index (in that iteration's population of
            :attr:`ParticleFilterResult.history`) of the particle it descends from.
    """

    steps: list[str]
    step_scores: list[float]
    likelihood: float
    weight: float
    complete: bool
    finished: bool
    answer: str | None
    ancestry: list[int]

    @property
    def text(self) -> str:
        """The chain as text, one step per line."""
        return "\n".join(self.steps)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"steps": list(self.steps), "step_scores": list(self.step_scores),
                "likelihood": self.likelihood, "weight": self.weight,
                "complete": self.complete, "finished": self.finished, "answer": self.answer,
                "ancestry": list(self.ancestry)}


@dataclass
class ParticleFilterResult:
    """What :class:`ParticleFilter` found.

    Attributes:
        best: the chosen particle (see ``select``).
        answer: its final answer, or ``None`` when it states none.
        particles: the last population, in order (copies of one particle appear as often as
            resampling drew them).
        history: one dict per iteration: ``likelihoods``, ``weights`` (normalised) and
            ``finished`` of that iteration's population, its effective sample size
            ``ess``, and ``ancestors``: the index drawn for each particle of the next
            population (empty after the last iteration, which is not resampled).
        iterations: iterations run (each adds at most one step to each live particle).
        generator_calls: ``propose_next_steps`` calls made (retries not counted).
        attempts: generator attempts, retries included.
        chains_scored: chains sent to the scorer.
        tokens_scored: tokens of every chain scored (rendered lengths when the scorer
            exposes ``format.render``, else steps).
        failed: particles dropped because their call or their scoring failed.
        errors: those failures, as text.
        select: ``"best"`` or ``"vote"``.
        votes: with ``select="vote"``, the summed weight of each normalised answer.
        seed: the seed the filter ran with.
        budget: what the run spent and the limit that stopped it, if any
            (:class:`~prm_plugins.budget.BudgetSpent`; ``None`` when run without a budget).
    """

    best: Particle
    answer: str | None
    particles: list[Particle]
    history: list[dict[str, Any]]
    iterations: int
    generator_calls: int
    attempts: int
    chains_scored: int
    tokens_scored: int
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    select: ParticleSelect = "best"
    votes: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    budget: BudgetSpent | None = None

    @property
    def text(self) -> str:
        """The chosen chain as text."""
        return self.best.text

    @property
    def steps(self) -> list[str]:
        """The chosen chain's steps."""
        return self.best.steps

    @property
    def score(self) -> float:
        """The chosen particle's likelihood."""
        return self.best.likelihood

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "method": "particle_filter",
            "best": self.best.to_dict(),
            "answer": self.answer,
            "particles": [p.to_dict() for p in self.particles],
            "history": [dict(h) for h in self.history],
            "iterations": self.iterations,
            "generator_calls": self.generator_calls,
            "attempts": self.attempts,
            "chains_scored": self.chains_scored,
            "tokens_scored": self.tokens_scored,
            "failed": self.failed,
            "errors": list(self.errors),
            "select": self.select,
            "votes": dict(self.votes),
            "seed": self.seed,
            "budget": self.budget.to_dict() if self.budget is not None else None,
        }



def choose_particle(
    particles: list[Particle], select: ParticleSelect
) -> tuple[Particle, dict[str, float]]:
    """The chosen particle and, for ``"vote"``, the summed weight of each normalised answer.

    Finished particles that state a final answer are the pool when there are any, else every
    particle. ``"best"``: the highest weight (the first of equals). ``"vote"``: weights are
    summed per :func:`~prm_plugins.answers.normalize_answer` key; the key with the largest
    sum wins (ties: the higher best weight, then the key seen first), and its
    highest-weight particle is chosen.
    """
    pool = [p for p in particles if p.complete and p.answer is not None] or particles
    best = max(pool, key=lambda p: p.weight)  # the first of equals
    if select == "best":
        return best, {}
    votes: dict[str, float] = {}
    leader: dict[str, Particle] = {}
    for p in pool:
        key = normalize_answer(p.answer)
        if key is None:
            continue
        votes[key] = votes.get(key, 0.0) + p.weight
        if key not in leader or p.weight > leader[key].weight:
            leader[key] = p
    if not votes:
        logger.warning("particle filter vote: no particle states a final answer; choosing the "
                       "highest weight")
        return best, votes
    order = list(votes)
    winner = max(order, key=lambda k: (votes[k], leader[k].weight, -order.index(k)))
    return leader[winner], votes
