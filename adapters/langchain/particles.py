"""Particle filtering as a drop-in LangChain component: :class:`PRMParticleFilter`.

Exposed the way :class:`~prm_plugins.adapters.langchain.PRMBeamSearch` exposes beam search:
the component wraps a generator runnable (a chat model, an LLM, or a chain such as
``prompt | llm``), asks it for one next step per particle with a next-step prompt, runs
:class:`~prm_plugins.strategies.ParticleFilter` and returns the chosen chain as the
generator's output type (an ``AIMessage`` with the PRM's report in
``response_metadata["prm"]``, or the text for a string generator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

from prm_plugins.adapters.langchain.base import DEFAULT_MAX_CONCURRENCY, SelectingRunnableBase
from prm_plugins.adapters.langchain.generators import build_next_step_prompt
from prm_plugins.strategies import RetryPolicy
from prm_plugins.strategies.particles import (
    ParticleFilter,
    ParticleFilterOptions,
    ParticleFilterResult,
)
from prm_plugins.validation import check_count

__all__ = ["PRMParticleFilter"]


class PRMParticleFilter(SelectingRunnableBase):
    """Particle filtering over steps, the PRM's score as the likelihood (a drop-in model).

    Each particle's next step comes from sending ``step_prompt(question, prefix)`` (default
    :func:`~prm_plugins.adapters.langchain.build_next_step_prompt`) to the generator in the
    question's place and keeping the first step of the completion, so the generator should
    sample (a temperature above 0). The input is the generator's input (a question str, or
    e.g. ``{"question": ...}`` for ``prompt | llm``). The output is the chosen chain as the
    generator's output type: a new ``AIMessage`` of its steps with the report in
    ``response_metadata["prm"]``, or the text for a string generator;
    ``return_result=True`` gives the core
    :class:`~prm_plugins.strategies.ParticleFilterResult`. The options are those of
    :class:`~prm_plugins.strategies.ParticleFilter`.

    Dispatches ``prm.step_scored`` per scored chain and ``prm.candidate_selected`` once.

    Examples:
        >>> pf = PRMParticleFilter(generator=llm, prm=load_prm(), n=8,
        ...                        seed=0)  # doctest: +SKIP
        >>> msg = pf.invoke("A pen costs $3. How much do 4 pens cost?")  # doctest: +SKIP
        >>> msg.text, msg.response_metadata["prm"]["answer"]  # doctest: +SKIP
    """

    n: int = 8
    """Particles."""
    max_steps: int = 10
    """Most iterations (steps in a chain)."""
    temperature: float = 1.0
    """Softmax temperature over the particles' log-weights (> 0; lower is greedier)."""
    likelihood: str = "last"
    """``"last"`` (the newest step's score), ``"product"`` or ``"model"`` (chain as one step)."""
    weighting: str = "logit"
    """How a likelihood becomes a log-weight: ``"logit"`` (as its_hub), ``"log"``, ``"score"``."""
    resampling: str = "multinomial"
    """How ancestors are drawn: ``"multinomial"`` or ``"systematic"``."""
    select: str = "best"
    """``"best"`` (the highest weight) or ``"vote"`` (weighted vote over final answers)."""
    seed: int | None = None
    """Seed of the resampling; ``None`` draws fresh entropy per call."""
    aggregate: Any = "last"
    """Chain score reported in the ``prm.step_scored`` events."""
    is_complete: Callable[[str], bool] | None = None
    """``step -> bool``: whether a step ends the solution (default: it states an answer)."""
    step_prompt: Callable[[str, Sequence[str]], str] = build_next_step_prompt
    """``(question, prefix) -> prompt`` asking for one next step."""
    max_concurrency: int | None = None
    """Most generator calls in flight; ``None`` takes the call's config, else 4."""
    retry: RetryPolicy | None = None
    """Retry policy for generator calls."""
    budget: Any = None
    """A :class:`~prm_plugins.budget.Budget` for each call (``None``: no limit)."""

    _result_type: ClassVar[type] = ParticleFilterResult

    # The str fields are checked by ParticleFilterOptions (not pydantic), so a bad value
    # raises the core's InvalidInputError naming the allowed values.

    def _check_options(self) -> None:
        check_count(self.max_concurrency, "max_concurrency", optional=True)
        self._options(DEFAULT_MAX_CONCURRENCY)

    def _options(self, max_concurrency: int) -> ParticleFilterOptions:
        return ParticleFilterOptions(
            n=self.n, max_steps=self.max_steps, temperature=self.temperature,
            likelihood=cast("Any", self.likelihood), weighting=cast("Any", self.weighting),
            resampling=cast("Any", self.resampling), select=cast("Any", self.select),
            seed=self.seed, is_complete=self.is_complete, max_concurrency=max_concurrency,
            retry=self.retry, budget=self.budget)

    def _core(self, generator: Any, prm: Any, max_concurrency: int) -> ParticleFilter:
        return ParticleFilter.from_options(generator, prm, self._options(max_concurrency))

    @staticmethod
    def _selected(result: ParticleFilterResult) -> dict[str, Any]:
        return {
            "text": result.text,
            "steps": list(result.steps),
            "score": result.score,
            "weight": result.best.weight,
            "answer": result.answer,
            "complete": result.best.complete,
            "finished": sum(p.finished for p in result.particles),
            "iterations": result.iterations,
            "method": "particle_filter",
        }
