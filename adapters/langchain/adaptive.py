"""Adaptive best-of-N as a drop-in LangChain component: :class:`PRMAdaptiveBestOfN`.

Exposed the way :class:`~prm_plugins.adapters.langchain.PRMBestOfN` exposes best-of-N: the
component wraps a generator runnable (a chat model, an LLM, or a chain such as
``prompt | llm``), samples from it in rounds with
:class:`~prm_plugins.strategies.AdaptiveBestOfN` until the PRM-weighted vote is decided,
and returns the chosen answer as the generator's output type (an ``AIMessage`` with the
PRM's report in ``response_metadata["prm"]``, or the text for a string generator).
"""

from __future__ import annotations

from typing import Any, ClassVar

from prm_plugins.adapters.langchain.base import DEFAULT_MAX_CONCURRENCY, SelectingRunnableBase
from prm_plugins.strategies import RetryPolicy
from prm_plugins.strategies.adaptive import AdaptiveBestOfN, AdaptiveBestOfNResult
from prm_plugins.strategies.options import AdaptiveBestOfNOptions
from prm_plugins.validation import check_count

__all__ = ["PRMAdaptiveBestOfN"]


class PRMAdaptiveBestOfN(SelectingRunnableBase):
    """Best-of-N that stops sampling once more answers cannot change the voted answer.

    A drop-in for the model it wraps, like :class:`PRMBestOfN`: the input is the
    generator's own input and the output its own output for the chosen answer (the
    highest-scored candidate giving the winning final answer), with the PRM's report in
    ``response_metadata["prm"]``: ``answer``, ``weights``, ``samples_used``,
    ``samples_saved``, ``stopped_by``, ``rounds``, ``score``, ... and the full result under
    ``"result"``. ``return_result=True`` gives the core
    :class:`~prm_plugins.strategies.AdaptiveBestOfNResult`. Candidates are drawn
    ``round_size`` at a time until the leader's weight exceeds the runner-up's by more than
    the samples left (exact: the answer is then the one all ``max_n`` samples would give),
    or by the optional ``confidence`` rule; see :mod:`prm_plugins.strategies.adaptive`.

    Dispatches ``prm.step_scored`` per candidate and ``prm.candidate_selected`` once.

    Examples:
        >>> ada = PRMAdaptiveBestOfN(generator=llm, prm=load_prm(), max_n=16)  # doctest: +SKIP
        >>> msg = ada.invoke("What is 17 * 3?")  # doctest: +SKIP
        >>> msg.response_metadata["prm"]["samples_saved"]  # doctest: +SKIP
        8
    """

    max_n: int = 16
    """Most candidates to sample."""
    round_size: int = 4
    """Candidates per round (the vote is checked after each)."""
    confidence: float | None = None
    """Optional leader's share of the vote weight, in (0.5, 1], that stops early."""
    min_votes: int = 4
    """Answered candidates needed before the confidence rule may stop."""
    extractor: Any = None
    """``text -> answer | None``; default :func:`prm_plugins.answers.extract_answer`."""
    max_concurrency: int | None = None
    """Most generator calls in flight; ``None`` takes the call's config, else 4."""
    retry: RetryPolicy | None = None
    """Retry policy for generator calls."""
    budget: Any = None
    """A :class:`~prm_plugins.budget.Budget` for each call (``None``: no limit)."""

    _result_type: ClassVar[type] = AdaptiveBestOfNResult

    def _check_options(self) -> None:
        check_count(self.max_concurrency, "max_concurrency", optional=True)
        self._options(DEFAULT_MAX_CONCURRENCY)

    def _options(self, max_concurrency: int) -> AdaptiveBestOfNOptions:
        return AdaptiveBestOfNOptions(
            max_n=self.max_n, round_size=self.round_size, confidence=self.confidence,
            min_votes=self.min_votes, aggregate=self.aggregate, extractor=self.extractor,
            max_concurrency=max_concurrency, split=self.split, retry=self.retry,
            budget=self.budget)

    def _core(self, generator: Any, prm: Any, max_concurrency: int) -> AdaptiveBestOfN:
        return AdaptiveBestOfN.from_options(generator, prm, self._options(max_concurrency))

    @staticmethod
    def _template(result: AdaptiveBestOfNResult) -> Any:
        return getattr(result.best.text, "output", None)

    @staticmethod
    def _selected(result: AdaptiveBestOfNResult) -> dict[str, Any]:
        best = result.best
        return {
            "index": best.index,
            "text": result.text,
            "score": result.score,
            "answer": result.answer,
            "weights": dict(result.weights),
            "steps": list(best.steps),
            "step_scores": None if best.step_scores is None else list(best.step_scores.scores),
            "scores": [c.score for c in result.candidates],
            "samples_used": result.samples_used,
            "samples_saved": result.samples_saved,
            "stopped_by": result.stopped_by,
            "rounds": len(result.rounds),
            "failed": sum(not c.ok for c in result.candidates),
        }
