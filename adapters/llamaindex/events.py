"""Instrumentation events sent by the LlamaIndex adapters through the dispatcher.

Every adapter reports what the PRM did with three events, all subclasses of LlamaIndex's
:class:`~llama_index.core.instrumentation.events.BaseEvent`, sent with
``get_dispatcher(__name__).event(...)``. The dispatcher propagates to the root dispatcher,
so any :class:`~llama_index.core.instrumentation.event_handlers.BaseEventHandler` added
there (Arize Phoenix, Langfuse, a logging handler of your own) receives them next to the
LLM and retrieval events.

==================================  ==========================================================
event                               sent when
==================================  ==========================================================
:class:`PRMStepsScoredEvent`        the PRM scored one chain (a candidate, a response, a round)
:class:`PRMCandidateSelectedEvent`  :class:`PRMBestOfNLLM` chose a candidate
:class:`PRMVerificationFailedEvent` a chain scored under the threshold (evaluator, self-critique
                                    round, agent answer)
==================================  ==========================================================

Step indices in these events are 0-based, as in :class:`prm_plugins.strategies.Verdict`.

Examples:
    >>> from llama_index.core.instrumentation import get_dispatcher  # doctest: +SKIP
    >>> from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    >>> class Print(BaseEventHandler):  # doctest: +SKIP
    ...     def handle(self, event, **kwargs):
    ...         if isinstance(event, PRMVerificationFailedEvent):
    ...             print(event.feedback)
    >>> get_dispatcher().add_event_handler(Print())  # doctest: +SKIP
"""

from __future__ import annotations

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent

from prm_plugins.strategies import Verdict
from prm_plugins.types import Aggregation, StepScores

__all__ = [
    "PRMCandidateSelectedEvent",
    "PRMStepsScoredEvent",
    "PRMVerificationFailedEvent",
    "dispatcher",
]

#: The dispatcher every adapter sends its events through (child of the root dispatcher).
dispatcher = get_dispatcher(__name__)


class PRMStepsScoredEvent(BaseEvent):
    """The PRM scored the steps of one chain.

    Attributes:
        source: the component that asked: ``"best_of_n_llm"``, ``"evaluator"``,
            ``"self_critique"`` or ``"agent"``.
        question: the question the chain answers.
        steps: the steps scored.
        step_scores: one probability per step.
        score: the chain score under ``aggregate``.
        aggregate: name of the aggregation (``"min"``, ...; ``"custom"`` for a callable).
        threshold: the pass mark, when the component has one.
        passed: whether ``score`` reaches ``threshold`` (``None`` without a threshold).
        index: the candidate's index (best-of-N) or the round (self-critique, agent).
    """

    source: str
    question: str
    steps: list[str]
    step_scores: list[float]
    score: float
    aggregate: str
    threshold: float | None = None
    passed: bool | None = None
    index: int | None = None

    @classmethod
    def class_name(cls) -> str:
        return "PRMStepsScoredEvent"


class PRMCandidateSelectedEvent(BaseEvent):
    """:class:`PRMBestOfNLLM` chose one of its candidates.

    Attributes:
        question: the question the candidates answer.
        index: 0-based index of the chosen candidate in sampling order.
        score: its chain score.
        text: its text.
        candidate_scores: every candidate's chain score in sampling order (``None`` for a
            failed candidate).
        n: candidates sampled.
        failed: how many of them failed (generation, empty text or scoring).
        stopped_early: sampling stopped before ``n`` because a candidate reached the
            threshold.
    """

    question: str
    index: int
    score: float
    text: str
    candidate_scores: list[float | None]
    n: int
    failed: int = 0
    stopped_early: bool = False

    @classmethod
    def class_name(cls) -> str:
        return "PRMCandidateSelectedEvent"


class PRMVerificationFailedEvent(BaseEvent):
    """A chain's score fell under the threshold.

    Attributes:
        source: ``"evaluator"``, ``"self_critique"`` or ``"agent"``.
        question: the question.
        score: the chain score.
        threshold: the pass mark.
        flagged_step: 0-based index of the step the feedback names.
        feedback: the feedback text (names the step 1-based, quotes it, gives its score).
        round: the self-critique or agent round (0 = first answer); ``None`` for the
            evaluator.
        will_retry: whether the component goes on to ask for a revision.
    """

    source: str
    question: str
    score: float
    threshold: float
    flagged_step: int | None
    feedback: str
    round: int | None = None
    will_retry: bool = False

    @classmethod
    def class_name(cls) -> str:
        return "PRMVerificationFailedEvent"


def aggregate_name(aggregate: Aggregation) -> str:
    """The name an aggregate is reported under (``"custom"`` for an unnamed callable)."""
    if isinstance(aggregate, str):
        return aggregate
    return getattr(aggregate, "__name__", "custom")


def emit_scored(
    source: str,
    step_scores: StepScores,
    score: float,
    aggregate: Aggregation,
    *,
    question: str,
    threshold: float | None = None,
    index: int | None = None,
) -> None:
    """Send a :class:`PRMStepsScoredEvent` for one scored chain."""
    dispatcher.event(
        PRMStepsScoredEvent(
            source=source,
            question=question,
            steps=list(step_scores.steps),
            step_scores=[float(s) for s in step_scores.scores],
            score=float(score),
            aggregate=aggregate_name(aggregate),
            threshold=threshold,
            passed=None if threshold is None else bool(score >= threshold),
            index=index,
        )
    )


def emit_verdict(
    source: str,
    question: str,
    verdict: Verdict,
    aggregate: Aggregation,
    *,
    feedback: str | None = None,
    flagged_step: int | None = None,
    round: int | None = None,
    will_retry: bool = False,
) -> None:
    """Send :class:`PRMStepsScoredEvent`, and :class:`PRMVerificationFailedEvent` when the
    verdict failed (``feedback``/``flagged_step`` override the verdict's own)."""
    emit_scored(source, verdict.step_scores, verdict.score, aggregate, question=question,
                threshold=verdict.threshold, index=round)
    if verdict.passed:
        return
    dispatcher.event(
        PRMVerificationFailedEvent(
            source=source,
            question=question,
            score=float(verdict.score),
            threshold=float(verdict.threshold),
            flagged_step=verdict.flagged_step if flagged_step is None else flagged_step,
            feedback=verdict.feedback if feedback is None else feedback,
            round=round,
            will_retry=will_retry,
        )
    )
