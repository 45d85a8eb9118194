"""Custom LangChain events dispatched by the Runnables, and the scorer proxy behind them.

Two events, dispatched on the component's own run (so ``astream_events(version="v2")``
shows them as ``on_custom_event`` with the component's ``run_id`` as parent):

* :data:`STEP_SCORED_EVENT` (``"prm.step_scored"``), once per chain the PRM scores:
  ``{"question", "steps", "scores", "score", "aggregate"}``;
* :data:`CANDIDATE_SELECTED_EVENT` (``"prm.candidate_selected"``), once per call of a
  selecting strategy, with what it chose (fields per strategy; always ``"text"`` and
  ``"score"``).

The core strategies know nothing of LangChain: the adapter wraps the scorer in
:class:`ObservedScorer`, which reports each :class:`~prm_plugins.StepScores` it returns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.runnables import RunnableConfig

from prm_plugins.types import Aggregation, StepScorer, StepScores

__all__ = [
    "CANDIDATE_SELECTED_EVENT",
    "STEP_SCORED_EVENT",
    "ObservedScorer",
    "step_scored_data",
]

logger = logging.getLogger(__name__)

#: Name of the event dispatched for every chain the PRM scores.
STEP_SCORED_EVENT = "prm.step_scored"
#: Name of the event dispatched when a strategy has chosen its answer.
CANDIDATE_SELECTED_EVENT = "prm.candidate_selected"

#: Longest a worker thread waits for the event loop to take an event (a stopped loop must
#: not hang the thread).
_DISPATCH_TIMEOUT_S = 30.0


def step_scored_data(scores: StepScores, aggregate: Aggregation) -> dict[str, Any]:
    """Payload of :data:`STEP_SCORED_EVENT` for one scored chain."""
    name = aggregate if isinstance(aggregate, str) else getattr(aggregate, "__name__", "custom")
    return {
        "question": scores.question,
        "steps": list(scores.steps),
        "scores": [float(s) for s in scores.scores],
        "score": float(scores.aggregate(aggregate)),
        "aggregate": name,
    }


class ObservedScorer:
    """A :class:`~prm_plugins.StepScorer` proxy that reports every chain it scores.

    Args:
        prm: the real scorer; other attributes (e.g. ``format``) are passed through.
        on_scored: called with each :class:`StepScores`, in the thread that scored it.
        aon_scored: awaited with each :class:`StepScores` returned by ``ascore``.
    """

    def __init__(
        self,
        prm: StepScorer,
        on_scored: Callable[[StepScores], None],
        aon_scored: Callable[[StepScores], Any] | None = None,
    ) -> None:
        self._prm = prm
        self._on_scored = on_scored
        self._aon_scored = aon_scored

    def __getattr__(self, name: str) -> Any:
        return getattr(self._prm, name)

    def _report(self, results: Sequence[StepScores]) -> None:
        for s in results:
            if isinstance(s, StepScores):
                self._on_scored(s)

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        out = self._prm.score(question, steps)
        self._report([out])
        return out

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        out = list(self._prm.score_batch(items))
        self._report(out)
        return out

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        out = await self._prm.ascore(question, steps)
        if self._aon_scored is not None:
            await self._aon_scored(out)
        else:
            self._on_scored(out)
        return out


def _log_dispatch_error(name: str, exc: Exception) -> None:
    if isinstance(exc, RuntimeError) and "parent run id" in str(exc):
        logger.debug("%s not dispatched: not inside a LangChain run", name)
    else:
        logger.warning("could not dispatch %s: %s", name, exc, exc_info=True)


class EventDispatcher:
    """Dispatches custom events on a run from any thread (sync or async run).

    Args:
        config: the child config of the run (its callbacks' parent is the run).
        loop: the event loop of an async run; events raised in worker threads are sent
            to it and awaited there, so async handlers (``astream_events``) get them in
            order.
    """

    def __init__(self, config: RunnableConfig, loop: asyncio.AbstractEventLoop | None = None):
        self.config = config
        self.loop = loop
        self._loop_thread = threading.get_ident() if loop is not None else None

    def send(self, name: str, data: dict[str, Any]) -> None:
        """Dispatch from sync code (the calling thread or a worker thread)."""
        try:
            if self.loop is None:
                dispatch_custom_event(name, data, config=self.config)
            elif threading.get_ident() == self._loop_thread:
                self.loop.create_task(adispatch_custom_event(name, data, config=self.config))
            else:
                asyncio.run_coroutine_threadsafe(
                    adispatch_custom_event(name, data, config=self.config), self.loop
                ).result(timeout=_DISPATCH_TIMEOUT_S)
        except Exception as exc:  # an event must never break the strategy
            _log_dispatch_error(name, exc)

    async def asend(self, name: str, data: dict[str, Any]) -> None:
        """Dispatch from the event loop."""
        try:
            await adispatch_custom_event(name, data, config=self.config)
        except Exception as exc:
            _log_dispatch_error(name, exc)

    def observe(self, prm: StepScorer, aggregate: Aggregation) -> ObservedScorer:
        """``prm`` wrapped so that every chain it scores is sent as :data:`STEP_SCORED_EVENT`."""

        def on_scored(s: StepScores) -> None:
            self.send(STEP_SCORED_EVENT, step_scored_data(s, aggregate))

        async def aon_scored(s: StepScores) -> None:
            await self.asend(STEP_SCORED_EVENT, step_scored_data(s, aggregate))

        return ObservedScorer(prm, on_scored, aon_scored if self.loop is not None else None)
