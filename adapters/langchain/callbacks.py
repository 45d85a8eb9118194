"""A callback handler that scores LLM outputs as they finish (observe only)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from prm_plugins.adapters.langchain.generators import question_from_messages
from prm_plugins.plans import describe_error
from prm_plugins.strategies import Verdict, verify
from prm_plugins.types import StepScorer
from prm_plugins.validation import check_aggregate, check_scorer, check_split, check_threshold

__all__ = ["PRMCallbackHandler", "ScoredGeneration"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredGeneration:
    """One LLM output scored by :class:`PRMCallbackHandler`.

    Attributes:
        run_id: the LLM run that produced it.
        parent_run_id: that run's parent (e.g. the chain or agent step), if any.
        question: what it answers (the last human message or the prompt).
        text: the output text.
        verdict: the PRM's verdict (``None`` when scoring failed).
        error: why scoring failed (``None`` when it did not).
        index: position of the output among the run's generations (prompt, candidate).
    """

    run_id: UUID
    parent_run_id: UUID | None
    question: str
    text: str
    verdict: Verdict | None
    error: str | None = None
    index: tuple[int, int] = (0, 0)

    @property
    def score(self) -> float | None:
        """The chain score, or ``None`` when scoring failed."""
        return None if self.verdict is None else self.verdict.score

    @property
    def passed(self) -> bool | None:
        """Whether the output passed, or ``None`` when scoring failed."""
        return None if self.verdict is None else self.verdict.passed


class PRMCallbackHandler(BaseCallbackHandler):
    """Scores every finished LLM / chat-model output with a PRM and records the result.

    Observe only: it never changes an output and never raises into the run (a scoring
    failure is logged and recorded with ``error``). Outputs without text (e.g. pure tool
    calls) are skipped. Records are in ``records``, in the order the runs finished; the
    handler is thread-safe and works for sync and async runs.

    Args:
        prm: a :class:`~prm_plugins.StepScorer`.
        threshold: pass mark in [0, 1] for each record's verdict.
        aggregate: chain score.
        split: how output text is cut into steps.
        question: the question to score against when a run's input has none (e.g. a
            completion prompt with instructions around the question); by default the last
            human message (chat models) or the prompt (LLMs).

    Examples:
        >>> handler = PRMCallbackHandler(load_prm())  # doctest: +SKIP
        >>> (prompt | llm).invoke({"question": q}, {"callbacks": [handler]})  # doctest: +SKIP
        >>> [(r.score, r.passed) for r in handler.records]  # doctest: +SKIP
        [(0.91, True)]
    """

    raise_error = False

    def __init__(
        self,
        prm: StepScorer,
        *,
        threshold: float = 0.5,
        aggregate: Any = "min",
        split: Any = "auto",
        question: str | None = None,
    ) -> None:
        check_scorer(prm)
        threshold_f = check_threshold(threshold)
        assert threshold_f is not None
        self.prm = prm
        self.threshold = threshold_f
        self.aggregate = check_aggregate(aggregate)
        self.split = check_split(split)
        self.question = question
        self.records: list[ScoredGeneration] = []
        self._questions: dict[UUID, str] = {}
        self._lock = threading.Lock()

    # -- run starts: remember the question ---------------------------------------------------
    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        question = question_from_messages(messages[0]) if messages else None
        with self._lock:
            self._questions[run_id] = question or ""

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        with self._lock:
            self._questions[run_id] = prompts[0] if prompts else ""

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._questions.pop(run_id, None)

    # -- run ends: score --------------------------------------------------------------------
    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            asked = self._questions.pop(run_id, "")
        question = self.question if self.question is not None else asked
        records = [
            self._score(run_id, parent_run_id, question, generation.text, (i, j))
            for i, generations in enumerate(response.generations)
            for j, generation in enumerate(generations)
            if isinstance(generation.text, str) and generation.text.strip()
        ]
        with self._lock:
            self.records.extend(records)

    def _score(
        self, run_id: UUID, parent_run_id: UUID | None, question: str, text: str,
        index: tuple[int, int],
    ) -> ScoredGeneration:
        try:
            verdict = verify(question, text, self.prm, self.threshold, self.aggregate,
                             self.split)
        except Exception as exc:  # observe only: record, never raise into the run
            logger.warning("PRMCallbackHandler could not score run %s: %s", run_id, exc)
            return ScoredGeneration(run_id, parent_run_id, question, text, None,
                                    describe_error(exc), index)
        return ScoredGeneration(run_id, parent_run_id, question, text, verdict, None, index)

    # -- reading the records ------------------------------------------------------------------
    def scores(self) -> list[float | None]:
        """The chain score of every record, in order."""
        with self._lock:
            return [r.score for r in self.records]

    def failed(self) -> Sequence[ScoredGeneration]:
        """Records whose output failed verification."""
        with self._lock:
            return [r for r in self.records if r.passed is False]

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self.records.clear()
            self._questions.clear()
