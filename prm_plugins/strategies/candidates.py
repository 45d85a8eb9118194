"""Best-of-N candidates and results, and the votes over their final answers.

:class:`Candidate` is one sampled solution, :class:`BestOfNResult` what
:class:`~prm_plugins.strategies.BestOfN` returns, :class:`VoteResult` what a vote returns.
:func:`tally_votes` groups candidates by their normalised final answer and weighs each
group (summed chain scores, or counts); :func:`apply_selection` turns a top-score result
into the ``selection`` the caller asked for. All pure: no generator, no scorer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from prm_plugins.answers import extract_answer as extract_final_answer
from prm_plugins.answers import normalize_answer
from prm_plugins.budget import BudgetSpent
from prm_plugins.strategies.options import Selection
from prm_plugins.types import StepScores

__all__ = [
    "BestOfNResult",
    "Candidate",
    "Extractor",
    "FailedAt",
    "VoteResult",
    "apply_selection",
    "tally_votes",
]

logger = logging.getLogger("prm_plugins.strategies.best_of_n")

#: Why a candidate failed: its generator call, empty text, or scoring.
FailedAt = Literal["generation", "empty", "scoring"]

@dataclass
class Candidate:
    """One sampled solution.

    Attributes:
        index: position in sampling order (0-based).
        text: the generated text (``None`` when the generator call failed).
        steps: ``text`` cut into steps.
        step_scores: the PRM's per-step scores (``None`` if not scored).
        score: the chain score under the run's aggregate (``None`` if not scored).
        error: why the candidate failed (``None`` when it did not).
        failed_at: ``"generation"``, ``"empty"`` or ``"scoring"`` for a failed candidate.
        attempts: generator attempts made for it (retries included).
        answer: the extracted final answer (voting strategies only).
        exception: the exception behind ``error``, if any.
    """

    index: int
    text: str | None
    steps: list[str] = field(default_factory=list)
    step_scores: StepScores | None = None
    score: float | None = None
    error: str | None = None
    failed_at: FailedAt | None = None
    attempts: int = 0
    answer: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """Whether the candidate was generated (and scored, where scoring was asked for)."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "index": self.index,
            "text": self.text,
            "steps": list(self.steps),
            "step_scores": None if self.step_scores is None else list(self.step_scores.scores),
            "score": self.score,
            "error": self.error,
            "failed_at": self.failed_at,
            "attempts": self.attempts,
            "answer": self.answer,
        }


@dataclass
class BestOfNResult:
    """What :func:`best_of_n` chose and why.

    Attributes:
        best: the chosen candidate (highest chain score; the earliest on ties).
        score: its chain score.
        candidates: every candidate sampled, failed ones included, in sampling order.
        generator_calls: generator calls made (one per candidate; retries not counted).
        attempts: generator attempts, retries included.
        stopped_early: sampling stopped before ``n`` because a candidate reached the
            threshold.
        selection: how ``best`` was chosen: ``"weighted_vote"`` (the highest-scored
            candidate giving the answer with the largest summed chain score) or
            ``"top_score"``.
        answer: the winning final answer (weighted vote only, else ``None``).
        votes: summed chain score per normalised answer (weighted vote only).
        budget: what the run spent and the limit that stopped it, if any (``None``
            when run without a budget).
    """

    best: Candidate
    score: float
    candidates: list[Candidate]
    generator_calls: int
    attempts: int
    stopped_early: bool = False
    selection: Literal["weighted_vote", "top_score"] = "top_score"
    answer: str | None = None
    votes: dict[str, float] = field(default_factory=dict)
    budget: BudgetSpent | None = None

    @property
    def text(self) -> str:
        """The chosen solution's text."""
        return self.best.text or ""

    @property
    def failed(self) -> list[Candidate]:
        """The candidates that failed."""
        return [c for c in self.candidates if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "best": self.best.index,
            "text": self.text,
            "score": self.score,
            "candidates": [c.to_dict() for c in self.candidates],
            "generator_calls": self.generator_calls,
            "attempts": self.attempts,
            "stopped_early": self.stopped_early,
            "selection": self.selection,
            "answer": self.answer,
            "votes": dict(self.votes),
            "budget": None if self.budget is None else self.budget.to_dict(),
        }


@dataclass
class VoteResult:
    """What a vote (:func:`weighted_best_of_n`, :func:`majority_vote`) chose.

    Attributes:
        answer: the winning final answer as the representative candidate wrote it, or
            ``None`` when no candidate stated one.
        answer_key: its normalised form (:func:`prm_plugins.answers.normalize_answer`),
            the key votes are grouped by.
        best: the representative candidate: for ``weighted``, the highest-scored one giving
            the winning answer; for ``majority``, the first one.
        weights: total weight per answer key (summed chain scores, or counts for majority).
        counts: candidates per answer key.
        candidates: every candidate, with ``answer`` filled in.
        generator_calls: generator calls made (retries not counted).
        attempts: generator attempts, retries included.
        method: ``"weighted"`` or ``"majority"``.
        budget: what the run spent and the limit that stopped it, if any (``None``
            when run without a budget).
    """

    answer: str | None
    answer_key: str | None
    best: Candidate
    weights: dict[str, float]
    counts: dict[str, int]
    candidates: list[Candidate]
    generator_calls: int
    attempts: int
    method: Literal["weighted", "majority"]
    budget: BudgetSpent | None = None

    @property
    def text(self) -> str:
        """The representative candidate's text."""
        return self.best.text or ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "answer": self.answer,
            "answer_key": self.answer_key,
            "best": self.best.index,
            "text": self.text,
            "weights": dict(self.weights),
            "counts": dict(self.counts),
            "candidates": [c.to_dict() for c in self.candidates],
            "generator_calls": self.generator_calls,
            "attempts": self.attempts,
            "method": self.method,
            "budget": None if self.budget is None else self.budget.to_dict(),
        }



# -- votes ---------------------------------------------------------------------------------

Extractor = Callable[[str], "str | None"]


def tally_votes(
    result: BestOfNResult, extractor: Extractor, method: Literal["weighted", "majority"]
) -> VoteResult:
    candidates = []
    weights: dict[str, float] = {}
    counts: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    representative: dict[str, Candidate] = {}
    for c in result.candidates:
        if not c.ok or c.text is None:
            candidates.append(c)
            continue
        raw = extractor(c.text)
        c = replace(c, answer=raw)
        candidates.append(c)
        key = normalize_answer(raw)
        if key is None:
            continue
        weight = 1.0 if method == "majority" else float(c.score or 0.0)
        weights[key] = weights.get(key, 0.0) + weight
        counts[key] = counts.get(key, 0) + 1
        first_seen.setdefault(key, c.index)
        rep = representative.get(key)
        if rep is None or (method == "weighted" and (c.score or 0.0) > (rep.score or 0.0)):
            representative[key] = c
    ok = [c for c in candidates if c.ok]
    if not weights:
        logger.warning("%s vote: no candidate states a final answer; falling back to %s",
                       method, "the best-scored candidate" if method == "weighted" else
                       "the first candidate")
        best = (max(ok, key=lambda c: (c.score or 0.0, -c.index)) if method == "weighted"
                else ok[0])
        answer_key = None
    else:
        answer_key = max(weights, key=lambda k: (
            weights[k], representative[k].score or 0.0, -first_seen[k]))
        best = representative[answer_key]
    return VoteResult(
        answer=best.answer if answer_key is not None else None,
        answer_key=answer_key,
        best=best,
        weights=weights,
        counts=counts,
        candidates=candidates,
        generator_calls=result.generator_calls,
        attempts=result.attempts,
        method=method,
        budget=result.budget,
    )


def apply_selection(result: BestOfNResult, selection: Selection) -> BestOfNResult:
    """``result`` with ``best`` chosen by ``selection`` (it arrives as the top score)."""
    if selection == "top_score":
        return result
    extractor: Extractor = extract_final_answer
    if selection == "auto":
        ok = [c for c in result.candidates if c.ok and c.text is not None]
        stated = sum(extract_final_answer(c.text or "", fallback_last_number=False) is not None
                     for c in ok)
        if 2 * stated <= len(ok):  # most candidates state no final answer: top score
            return result
    vote = tally_votes(result, extractor, "weighted")
    if vote.answer_key is None:
        return replace(result, candidates=vote.candidates)
    logger.info("best_of_n: weighted vote chose answer %r (%.3f of %.3f total weight)",
                vote.answer, vote.weights[vote.answer_key], sum(vote.weights.values()))
    return replace(result, best=vote.best,
                   score=float("nan") if vote.best.score is None else vote.best.score,
                   candidates=vote.candidates, selection="weighted_vote",
                   answer=vote.answer, votes=dict(vote.weights))
