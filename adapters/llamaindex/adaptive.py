"""PRMAdaptiveBestOfNLLM: a LlamaIndex ``LLM`` that samples another until the vote is decided.

The LlamaIndex face of :class:`~prm_plugins.strategies.AdaptiveBestOfN`, exposed the way
best-of-N is (:class:`~prm_plugins.adapters.llamaindex.PRMBestOfNLLM`): a drop-in ``LLM``
whose every ``complete``/``chat`` call (and their async and streaming forms) repeats the
caller's call on the wrapped LLM in rounds, scores the answers with the PRM, and stops as
soon as more answers cannot change the PRM-weighted vote. Prompt handling (the question the
answers are scored against, ``predict`` with a ``query_str``) is :class:`PRMBestOfNLLM`'s.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import Field

from prm_plugins.adapters.llamaindex.events import (
    PRMCandidateSelectedEvent,
    aggregate_name,
    dispatcher,
    emit_scored,
)
from prm_plugins.adapters.llamaindex.llm import PRM_KWARGS_KEY, PRMBestOfNLLM, QuestionFn
from prm_plugins.budget import Budget
from prm_plugins.strategies import AllCandidatesFailedError, RetryPolicy
from prm_plugins.strategies.adaptive import AdaptiveBestOfN, AdaptiveBestOfNResult
from prm_plugins.strategies.options import AdaptiveBestOfNOptions
from prm_plugins.types import Aggregation, Splitter, StepScorer

__all__ = ["PRMAdaptiveBestOfNLLM"]


class PRMAdaptiveBestOfNLLM(PRMBestOfNLLM):
    """An ``LLM`` that samples ``llm`` in rounds until the PRM-weighted vote is decided.

    Each call draws ``round_size`` answers at a time (at most ``max_n``), scores them with
    ``prm`` and tallies the PRM-weighted vote over their final answers; it stops once the
    leader's weight exceeds the runner-up's by more than the answers still allowed (the
    answer is then the one all ``max_n`` would give), or by the optional ``confidence``
    rule (:mod:`prm_plugins.strategies.adaptive`). The response is the wrapped LLM's own
    response for the chosen answer (the highest-scored one giving the winning final
    answer), with the report under ``additional_kwargs["prm"]``: ``answer``, ``weights``,
    ``samples_used``, ``samples_saved``, ``stopped_by``, ``rounds``, ``score``, ``index``,
    ``steps``, ``step_scores``, ``candidate_scores``, ``question``, ``budget``.

    Args:
        llm: the LlamaIndex LLM to sample from (set a temperature above 0).
        prm: a :class:`~prm_plugins.StepScorer`, e.g. ``load_prm()``.
        max_n: most answers per call.
        round_size: answers per round (1 .. ``max_n``).
        confidence: optional leader's share of the vote weight in (0.5, 1] that stops early.
        min_votes: answered candidates needed before the confidence rule may stop.
        aggregate: chain score used as each vote's weight (default ``"min"``).
        extractor: ``text -> answer | None``; default
            :func:`prm_plugins.answers.extract_answer`.
        max_concurrency: most wrapped-LLM calls in flight at once.
        split: how answers are cut into steps.
        retry: retry policy for the wrapped LLM's calls.
        question_fn: what the PRM is told the question is (see :class:`PRMBestOfNLLM`).
        budget: a :class:`~prm_plugins.budget.Budget` for each call (``None``: no limit).
        **kwargs: other ``LLM`` fields (``callback_manager``, ``system_prompt``, ...).

    Raises:
        InvalidInputError: for an ``llm`` that is not a LlamaIndex LLM or a bad option.

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> llm = PRMAdaptiveBestOfNLLM(my_llm, load_prm(), max_n=16)  # doctest: +SKIP
        >>> r = llm.complete("A pen costs $3. How much do 4 pens cost?")  # doctest: +SKIP
        >>> r.additional_kwargs["prm"]["answer"], r.additional_kwargs["prm"]["samples_saved"]
        ... # doctest: +SKIP
        ('12', 8)
    """

    max_n: int = Field(default=16, description="Most answers sampled per call.")
    round_size: int = Field(default=4, description="Answers per round.")
    confidence: float | None = Field(default=None, description="Early-stop vote share.")
    min_votes: int = Field(default=4, description="Votes before the confidence rule.")
    extractor: Any = Field(default=None, exclude=True, description="text -> final answer.")

    def __init__(
        self,
        llm: Any,
        prm: StepScorer,
        max_n: int = 16,
        *,
        round_size: int = 4,
        confidence: float | None = None,
        min_votes: int = 4,
        aggregate: Aggregation = "min",
        extractor: Any = None,
        max_concurrency: int = 4,
        split: Splitter = "auto",
        retry: RetryPolicy | None = None,
        question_fn: QuestionFn | None = None,
        budget: Budget | None = None,
        **kwargs: Any,
    ) -> None:
        # The core validates every option and raises InvalidInputError naming the bad one.
        options = AdaptiveBestOfNOptions(
            max_n=max_n, round_size=round_size, confidence=confidence, min_votes=min_votes,
            aggregate=aggregate, extractor=extractor, max_concurrency=max_concurrency,
            split=split, retry=retry, budget=budget)
        super().__init__(llm, prm, n=options.max_n, aggregate=aggregate,
                         max_concurrency=max_concurrency, split=split, retry=retry,
                         question_fn=question_fn, selection="weighted_vote", budget=budget,
                         max_n=options.max_n, round_size=options.round_size,
                         confidence=options.confidence, min_votes=options.min_votes,
                         extractor=extractor, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "PRMAdaptiveBestOfNLLM"

    # -- the core strategy -----------------------------------------------------------------
    def _adaptive(self, sampler: Any) -> AdaptiveBestOfN:
        options = AdaptiveBestOfNOptions(
            max_n=self.max_n, round_size=self.round_size, confidence=self.confidence,
            min_votes=self.min_votes, aggregate=self.aggregate, extractor=self.extractor,
            max_concurrency=self.max_concurrency, split=self.split, retry=self.retry,
            budget=self.budget)
        return AdaptiveBestOfN.from_options(sampler, self.prm, options)

    def _run(self, sampler: Any, question: str) -> AdaptiveBestOfNResult:
        try:
            return self._adaptive(sampler).run(question)
        except AllCandidatesFailedError as exc:
            raise self._length_error(exc, question) from exc

    async def _arun(
        self, sampler: Any, question: str
    ) -> AdaptiveBestOfNResult:
        try:
            return await self._adaptive(sampler).arun(question)
        except AllCandidatesFailedError as exc:
            raise self._length_error(exc, question) from exc

    def _finish(
        self, result: AdaptiveBestOfNResult, sampler: Any, question: str
    ) -> Any:
        for c in result.candidates:
            if c.step_scores is not None and c.score is not None:
                emit_scored("adaptive_best_of_n_llm", c.step_scores, c.score, self.aggregate,
                            question=question, index=c.index)
        best = result.best
        candidate_scores = [c.score if c.ok else None for c in result.candidates]
        failed = sum(not c.ok for c in result.candidates)
        dispatcher.event(PRMCandidateSelectedEvent(
            question=question, index=best.index, score=float(result.score), text=result.text,
            candidate_scores=candidate_scores, n=result.samples_used, failed=failed,
            stopped_early=result.samples_saved > 0))
        report = {
            "answer": result.answer,
            "weights": dict(result.weights),
            "samples_used": result.samples_used,
            "samples_saved": result.samples_saved,
            "stopped_by": result.stopped_by,
            "rounds": [r.to_dict() for r in result.rounds],
            "score": float(result.score),
            "index": best.index,
            "steps": list(best.steps),
            "step_scores": [] if best.step_scores is None else list(best.step_scores.scores),
            "candidate_scores": candidate_scores,
            "failed": failed,
            "aggregate": aggregate_name(self.aggregate),
            "question": question,
            "budget": None if result.budget is None else result.budget.to_dict(),
        }
        response = sampler.response_for(result.text)
        return response.model_copy(
            update={"additional_kwargs": {**response.additional_kwargs, PRM_KWARGS_KEY: report}}
        )
