"""PRMStepEvaluator: a LlamaIndex ``BaseEvaluator`` that scores a response step by step.

The PRM verdict (:func:`prm_plugins.strategies.verify`) becomes an ``EvaluationResult``:
``passing``, ``score`` (the chain score) and ``feedback`` that names the step to fix, quotes
it and gives its score. So it plugs into ``RetryQueryEngine`` (whose retry prompt carries
the feedback), ``BatchEvalRunner`` and anything else that takes an evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from llama_index.core.evaluation import BaseEvaluator, EvaluationResult
from llama_index.core.prompts.mixin import PromptDictType

from prm_plugins.adapters.llamaindex.events import emit_verdict
from prm_plugins.errors import InvalidInputError
from prm_plugins.strategies import Verdict, averify, verify
from prm_plugins.strategies.verify import step_feedback, to_steps
from prm_plugins.types import Aggregation, Splitter, StepScorer
from prm_plugins.validation import check_aggregate, check_split, check_threshold

__all__ = ["PRMEvaluationResult", "PRMStepEvaluator", "original_question"]

#: The line ``FeedbackQueryTransformation`` (used by ``RetryQueryEngine``) writes before
#: the original query when it builds a retry query.
_RETRY_MARKER = "\nNow answer the question.\n"

#: Feedback for a response without any step to score.
EMPTY_FEEDBACK = (
    "The response is empty, so no step could be checked. Write the solution step by step, "
    "one step per line, and end with the final answer."
)

Flag = Literal["weakest", "first_failing"]


def original_question(query: str) -> str:
    """The original question inside a ``RetryQueryEngine`` retry query.

    ``FeedbackQueryTransformation`` turns a failed query into "Here is a previous bad
    answer ... Now answer the question.\\n<query>", nesting on every retry. The PRM must
    score against the question, not that text, so everything up to the last marker is
    dropped. Other queries are returned unchanged.

    Examples:
        >>> original_question("What is 2 + 2?")
        'What is 2 + 2?'
        >>> q = "Here is a previous bad answer.\\n5\\n...\\nNow answer the question.\\n"
        >>> original_question(q + "What is 2 + 2?")
        'What is 2 + 2?'
    """
    head, marker, tail = query.rpartition(_RETRY_MARKER)
    return tail if marker and tail.strip() else query


class PRMEvaluationResult(EvaluationResult):
    """An ``EvaluationResult`` with the PRM's per-step detail.

    Attributes:
        steps: the steps scored.
        step_scores: one probability per step.
        flagged_step: 0-based index of the step the feedback names (``None`` when passing).
        threshold: the pass mark used.
    """

    steps: list[str] = []
    step_scores: list[float] = []
    flagged_step: int | None = None
    threshold: float | None = None


class PRMStepEvaluator(BaseEvaluator):
    """Evaluate a response by scoring its reasoning steps with a PRM.

    ``query`` is the question (a ``RetryQueryEngine`` retry query is reduced to the
    original question, see :func:`original_question`), ``response`` the answer text, cut
    into steps with ``split``; ``contexts`` are not used. The result is a
    :class:`PRMEvaluationResult`: ``passing`` when the chain score reaches ``threshold``,
    ``score`` the chain score, ``feedback`` naming the step to fix (1-based), quoting it and
    giving its score. A response with no steps (``None`` or blank) fails with
    ``invalid_result=True``.

    Each evaluation sends a :class:`PRMStepsScoredEvent`, and a failed one a
    :class:`PRMVerificationFailedEvent`.

    Args:
        prm: a :class:`~prm_plugins.StepScorer`, e.g. ``load_prm()``.
        threshold: pass mark in [0, 1].
        aggregate: chain score: ``"min"`` (default: passes only when every step does),
            ``"prod"``, ``"mean"``, ``"last"``, ``"geomean"`` or a callable.
        split: how the response is cut into steps.
        flag: which step failing feedback names: ``"weakest"`` (default, the lowest-scored
            step) or ``"first_failing"`` (the first step under the threshold, as
            :class:`~prm_plugins.strategies.SelfCritique` does).
        question_fn: ``query -> question`` for the PRM; default :func:`original_question`.

    Raises:
        InvalidInputError: for a bad option.

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> evaluator = PRMStepEvaluator(load_prm(), threshold=0.5)  # doctest: +SKIP
        >>> r = evaluator.evaluate(query="What is 2 + 3 * 4?",
        ...                        response="2 + 3 = 5\\n5 * 4 = 20")  # doctest: +SKIP
        >>> r.passing, r.feedback  # doctest: +SKIP
        (False, 'Step 1 of 2 looks wrong: "2 + 3 = 5" scores 0.08, ...')
        >>> from llama_index.core.query_engine import RetryQueryEngine  # doctest: +SKIP
        >>> engine = RetryQueryEngine(index.as_query_engine(), evaluator, max_retries=2)
        ... # doctest: +SKIP
    """

    def __init__(
        self,
        prm: StepScorer,
        *,
        threshold: float = 0.5,
        aggregate: Aggregation = "min",
        split: Splitter = "auto",
        flag: Flag = "weakest",
        question_fn: Callable[[str], str] | None = None,
    ) -> None:
        if not callable(getattr(prm, "score", None)) or not callable(
            getattr(prm, "ascore", None)
        ):
            raise InvalidInputError(
                f"prm must be a StepScorer (with score() and ascore(), e.g. load_prm()); "
                f"received {type(prm).__name__}"
            )
        if flag not in ("weakest", "first_failing"):
            raise InvalidInputError(f"flag must be 'weakest' or 'first_failing', got {flag!r}")
        if question_fn is not None and not callable(question_fn):
            raise InvalidInputError(
                f"question_fn must be a callable query -> question, or None; got {question_fn!r}"
            )
        threshold_f = check_threshold(threshold)
        assert threshold_f is not None
        self.prm = prm
        self.threshold = threshold_f
        self.aggregate = check_aggregate(aggregate)
        self.split = check_split(split)
        self.flag: Flag = flag
        self.question_fn = question_fn or original_question

    # -- PromptMixin (no prompts) ----------------------------------------------------------
    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts_dict: PromptDictType) -> None:
        """No prompts to update: the evaluator is a model, not an LLM judge."""

    # -- BaseEvaluator ---------------------------------------------------------------------
    def evaluate(
        self,
        query: str | None = None,
        response: str | None = None,
        contexts: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> EvaluationResult:
        """Score ``response`` against ``query`` (blocking; no event loop needed).

        Args:
            query: the question (required).
            response: the answer text.
            contexts: ignored (kept for the ``BaseEvaluator`` signature).
            **kwargs: ignored.

        Returns:
            A :class:`PRMEvaluationResult`.

        Raises:
            InvalidInputError: when ``query`` is missing.
        """
        question = self._question(query)
        if not self._has_steps(response):
            return self._empty(query, response, contexts, question)
        verdict = verify(question, response or "", self.prm, self.threshold, self.aggregate,
                         self.split)
        return self._result(query, response or "", contexts, question, verdict)

    async def aevaluate(
        self,
        query: str | None = None,
        response: str | None = None,
        contexts: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> EvaluationResult:
        """Async :meth:`evaluate` (the PRM runs in a worker thread)."""
        question = self._question(query)
        if not self._has_steps(response):
            return self._empty(query, response, contexts, question)
        verdict = await averify(question, response or "", self.prm, self.threshold,
                                self.aggregate, self.split)
        return self._result(query, response or "", contexts, question, verdict)

    # -- conversion ------------------------------------------------------------------------
    def _question(self, query: str | None) -> str:
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError(
                "PRMStepEvaluator needs the query (the question the response answers); "
                f"received {query!r}. Pass query=..., or evaluate_response(query, response)."
            )
        question = self.question_fn(query)
        if not isinstance(question, str) or not question.strip():
            raise InvalidInputError(
                f"question_fn must return a non-empty str; it returned {question!r} for "
                f"query {query[:80]!r}"
            )
        return question

    def _has_steps(self, response: str | None) -> bool:
        return isinstance(response, str) and bool(to_steps(response, self.split))

    def _empty(
        self, query: str | None, response: str | None, contexts: Sequence[str] | None,
        question: str,
    ) -> PRMEvaluationResult:
        return PRMEvaluationResult(
            query=query, contexts=contexts, response=response or "", passing=False, score=0.0,
            feedback=EMPTY_FEEDBACK, invalid_result=True,
            invalid_reason="the response has no steps to score", threshold=self.threshold,
        )

    def _result(
        self, query: str | None, response: str, contexts: Sequence[str] | None,
        question: str, verdict: Verdict,
    ) -> PRMEvaluationResult:
        flagged = verdict.flagged_step
        feedback = verdict.feedback
        if not verdict.passed and self.flag == "weakest":
            flagged = verdict.weakest_step
            feedback = step_feedback(verdict.step_scores, flagged, self.threshold,
                                     score=verdict.score, aggregate=self.aggregate)
        emit_verdict("evaluator", question, verdict, self.aggregate, feedback=feedback,
                     flagged_step=flagged)
        return PRMEvaluationResult(
            query=query,
            contexts=contexts,
            response=response,
            passing=verdict.passed,
            score=verdict.score,
            feedback=feedback,
            steps=list(verdict.steps),
            step_scores=[float(s) for s in verdict.step_scores.scores],
            flagged_step=flagged,
            threshold=verdict.threshold,
        )
