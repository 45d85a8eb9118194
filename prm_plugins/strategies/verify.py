"""Verify one solution with a PRM: pass/fail, the failing step, and feedback text."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prm_plugins.errors import InvalidInputError, PRMError
from prm_plugins.steps import split_steps, validate_steps
from prm_plugins.types import Aggregate, Aggregation, Splitter, StepScorer, StepScores

# Moved to prm_plugins.validation; re-exported here so that the old imports keep working.
from prm_plugins.validation import (  # noqa: F401
    check_aggregate,
    check_question,
    check_split,
    check_step_scores,
    check_threshold,
)
from prm_plugins.wording import score_and_threshold

__all__ = [
    "Aggregate", "Splitter", "Verdict", "averify", "chain_score", "check_step_scores",
    "make_verdict", "step_feedback", "verify",
]

logger = logging.getLogger(__name__)

#: Most characters of a step quoted in feedback.
FEEDBACK_STEP_CHARS = 160


@dataclass(frozen=True)
class Verdict:
    """A PRM's judgement of one solution.

    Attributes:
        passed: whether the chain score reaches ``threshold``.
        score: the chain score (``aggregate`` of the step scores).
        threshold: the pass mark used.
        step_scores: the per-step scores.
        first_failing_step: 0-based index of the first step scored below ``threshold``,
            or ``None``.
        weakest_step: 0-based index of the lowest-scored step.
        feedback: a sentence for a human or an LLM; it names the step to fix by its
            1-based number, quotes it (truncated) and gives its score.
    """

    passed: bool
    score: float
    threshold: float
    step_scores: StepScores
    first_failing_step: int | None
    weakest_step: int
    feedback: str

    @property
    def steps(self) -> list[str]:
        """The steps that were scored."""
        return self.step_scores.steps

    @property
    def flagged_step(self) -> int | None:
        """0-based index of the step to fix: the first failing step, else (when the chain
        fails only on its aggregate) the weakest step; ``None`` when the chain passed."""
        if self.passed:
            return None
        return self.first_failing_step if self.first_failing_step is not None else (
            self.weakest_step
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "passed": self.passed,
            "score": float(self.score),
            "threshold": float(self.threshold),
            "first_failing_step": self.first_failing_step,
            "weakest_step": self.weakest_step,
            "flagged_step": self.flagged_step,
            "feedback": self.feedback,
            **self.step_scores.to_dict(),
        }


def to_steps(text: str, split: Splitter) -> list[str]:
    """Cut ``text`` into non-blank steps with ``split``."""
    steps = split(text) if callable(split) else split_steps(text, split)
    return [s.strip() for s in steps if isinstance(s, str) and s.strip()]


def as_steps(solution_or_steps: str | Sequence[str], split: Splitter) -> list[str]:
    """Steps of a solution given as text (split) or as a list of steps (validated)."""
    if isinstance(solution_or_steps, str):
        steps = to_steps(solution_or_steps, split)
        if not steps:
            raise InvalidInputError(
                f"the solution has no steps to verify; received {solution_or_steps[:80]!r}. "
                "Pass the answer text, or a list of step strings."
            )
        return steps
    return validate_steps(solution_or_steps)


def _quote(text: str, limit: int = FEEDBACK_STEP_CHARS) -> str:
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 3].rstrip() + "..."
    return f'"{flat}"'


def chain_score(step_scores: StepScores, aggregate: Aggregation) -> float:
    """The chain score under ``aggregate``, which must be a finite number.

    Raises:
        PRMError: a callable ``aggregate`` failed or gave NaN/inf (the message names it).
    """
    try:
        score = float(step_scores.aggregate(aggregate))
    except PRMError:
        raise
    except Exception as exc:  # a user-supplied aggregate callable failed
        raise PRMError(f"aggregate {_name(aggregate)!r} failed on step scores "
                       f"{list(step_scores.scores)[:8]}: {type(exc).__name__}: {exc}") from exc
    if not math.isfinite(score):
        raise PRMError(f"aggregate {_name(aggregate)!r} gave {score} for step scores "
                       f"{list(step_scores.scores)[:8]}; a chain score must be a finite number")
    return score


def make_verdict(step_scores: StepScores, threshold: float, aggregate: Aggregation) -> Verdict:
    """Build a :class:`Verdict` from scores (pure; shared by verify and the strategies).

    Raises:
        PRMError: the chain score is not a finite number (see :func:`chain_score`).
    """
    score = chain_score(step_scores, aggregate)
    passed = score >= threshold
    first = step_scores.first_error(threshold)
    weakest = step_scores.weakest_step
    n = len(step_scores)
    if passed:
        shown, bar = score_and_threshold(score, threshold, digits=2)
        feedback = (
            f"{'The only step looks' if n == 1 else f'All {n} steps look'} right: chain "
            f"score {shown} ({_name(aggregate)}) reaches the threshold {bar}; the weakest is "
            f"step {weakest + 1} with {step_scores.scores[weakest]:.2f}."
        )
    else:
        k = first if first is not None else weakest
        feedback = step_feedback(step_scores, k, threshold, score=score, aggregate=aggregate)
    return Verdict(
        passed=passed,
        score=score,
        threshold=float(threshold),
        step_scores=step_scores,
        first_failing_step=first,
        weakest_step=weakest,
        feedback=feedback,
    )


def step_feedback(
    step_scores: StepScores,
    k: int,
    threshold: float,
    *,
    score: float | None = None,
    aggregate: Aggregation = "min",
) -> str:
    """Feedback naming step ``k`` (0-based; written 1-based), quoting it and its score.

    Examples:
        >>> s = StepScores(["3 * 4 = 12", "2 + 12 = 15"], [0.93, 0.04])
        >>> step_feedback(s, 1, 0.5)
        'Step 2 of 2 looks wrong: "2 + 12 = 15" scores 0.04, below the threshold 0.50. \
Keep step 1 and redo the solution from step 2.'
    """
    n = len(step_scores)
    step_score = step_scores.scores[k]
    if step_score < threshold or score is None:
        shown, bar = score_and_threshold(step_score, threshold, digits=2)
        reason = f"scores {shown}, below the threshold {bar}"
        if step_score >= threshold:
            reason = f"scores {step_score:.2f}, the lowest of the chain"
    else:
        shown, bar = score_and_threshold(score, threshold, digits=2)
        reason = (
            f"is the weakest step ({step_score:.2f}) and the chain score {shown} "
            f"({_name(aggregate)}) is below the threshold {bar}"
        )
    quoted = _quote(step_scores.steps[k])
    if k == 0:
        return f"Step 1 of {n} looks wrong: {quoted} {reason}. Redo the solution from the start."
    keep = "step 1" if k == 1 else f"steps 1-{k}"
    return (
        f"Step {k + 1} of {n} looks wrong: {quoted} {reason}. "
        f"Keep {keep} and redo the solution from step {k + 1}."
    )


def _name(aggregate: Aggregation) -> str:
    return aggregate if isinstance(aggregate, str) else getattr(aggregate, "__name__", "custom")


def verify(
    question: str,
    solution_or_steps: str | Sequence[str],
    prm: StepScorer,
    threshold: float = 0.5,
    aggregate: Aggregation = "min",
    split: Splitter = "auto",
) -> Verdict:
    """Score a solution step by step and say whether, and where, it goes wrong.

    Args:
        question: the problem.
        solution_or_steps: the answer text (cut with ``split``) or a list of steps.
        prm: any :class:`~prm_plugins.StepScorer`.
        threshold: pass mark in [0, 1] for the chain score and for single steps.
        aggregate: chain score: ``"min"`` (default: passes only when every step does),
            ``"prod"``, ``"mean"``, ``"last"``, ``"geomean"`` or a callable.
        split: a :func:`~prm_plugins.split_steps` mode or a callable ``text -> steps``.

    Returns:
        A :class:`Verdict`.

    Raises:
        InvalidInputError: for a threshold outside [0, 1], an unknown aggregate or split,
            or a solution without steps.
        PRMError: the scorer answered something other than one finite probability in
            [0, 1] per step (e.g. NaN), or the chain score is not finite.

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> v = verify("2 + 3 * 4 = ?", "3 * 4 = 12\\n2 + 12 = 15", load_prm())  # doctest: +SKIP
        >>> v.passed, v.first_failing_step  # doctest: +SKIP
        (False, 1)
        >>> v.feedback  # doctest: +SKIP
        'Step 2 of 2 looks wrong: "2 + 12 = 15" scores 0.03, below the threshold 0.50. ...'
    """
    threshold_f, agg, steps = _prepare(solution_or_steps, threshold, aggregate, split)
    scored = check_step_scores(prm.score(question, steps), steps, scorer=prm)
    return make_verdict(scored, threshold_f, agg)


async def averify(
    question: str,
    solution_or_steps: str | Sequence[str],
    prm: StepScorer,
    threshold: float = 0.5,
    aggregate: Aggregation = "min",
    split: Splitter = "auto",
) -> Verdict:
    """Async :func:`verify` (awaits ``prm.ascore``).

    Examples:
        >>> v = await averify(question, answer, prm)  # doctest: +SKIP
    """
    threshold_f, agg, steps = _prepare(solution_or_steps, threshold, aggregate, split)
    scored = check_step_scores(await prm.ascore(question, steps), steps, scorer=prm)
    return make_verdict(scored, threshold_f, agg)


def _prepare(
    solution_or_steps: str | Sequence[str], threshold: float, aggregate: Aggregation,
    split: Splitter,
) -> tuple[float, Aggregation, list[str]]:
    threshold_f = check_threshold(threshold)
    assert threshold_f is not None
    return threshold_f, check_aggregate(aggregate), as_steps(solution_or_steps, check_split(split))
