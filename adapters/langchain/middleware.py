"""Agent self-verification for ``langchain.agents.create_agent``.

* :class:`PRMVerificationMiddleware` (``after_model``): scores the model's answer step by
  step; under the threshold it appends feedback naming the weak step and jumps back to
  the model, up to ``max_retries`` times (or ends, raises, or lets the answer through).
* :class:`PRMBestOfNMiddleware` (``wrap_model_call``): calls the model ``n`` times and
  keeps the answer the PRM scores highest (core :class:`~prm_plugins.strategies.BestOfN`).

Both have sync and async hooks. Scoring, feedback text and selection come from
:mod:`prm_plugins.strategies`; the middleware only reads the conversation and writes
messages. Needs the ``langchain`` package (``pip install "prm-plugins[langchain]"``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from prm_plugins.errors import InvalidInputError, VerificationFailedError, missing_extra

try:
    from langchain.agents.middleware import (
        AgentMiddleware,
        AgentState,
        ModelRequest,
        ModelResponse,
        hook_config,
    )
except ImportError as exc:
    raise missing_extra("langchain", "langchain") from exc

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables.config import ensure_config

from prm_plugins.adapters.langchain.events import (
    CANDIDATE_SELECTED_EVENT,
    EventDispatcher,
)
from prm_plugins.adapters.langchain.generators import (
    PRM_FEEDBACK_KEY,
    GeneratedText,
    is_prm_feedback,
    message_text,
    question_from_messages,
)
from prm_plugins.budget import Budget
from prm_plugins.strategies import (
    AllCandidatesFailedError,
    BestOfN,
    RetryPolicy,
    Verdict,
    averify,
    verify,
)
from prm_plugins.strategies.options import BestOfNOptions, Selection
from prm_plugins.types import StepScorer
from prm_plugins.validation import (
    check_aggregate,
    check_count,
    check_scorer,
    check_split,
    check_threshold,
)

__all__ = [
    "DEFAULT_FEEDBACK_TEMPLATE",
    "PRMBestOfNMiddleware",
    "PRMVerificationMiddleware",
    "VerificationFailedError",
]

logger = logging.getLogger(__name__)

OnFailure = Literal["retry", "end", "error", "continue"]
ON_FAILURE: tuple[str, ...] = ("retry", "end", "error", "continue")

#: Feedback sent back to the model; ``{feedback}`` is the core verdict's feedback (it names
#: the weak step, quotes it and gives its score), ``{step}`` the flagged step (1-based),
#: ``{score}`` the chain score and ``{threshold}`` the pass mark.
DEFAULT_FEEDBACK_TEMPLATE = (
    "A verifier checked your answer step by step. {feedback} "
    "Revise your answer: keep the steps before step {step}, fix step {step}, and continue "
    "step by step to the final answer."
)

#: Metadata key under which the verdict is attached to the verified ``AIMessage``.
METADATA_KEY = "prm_verification"


def _verdict_metadata(verdict: Verdict, retries: int) -> dict[str, Any]:
    return {
        "passed": verdict.passed,
        "score": float(verdict.score),
        "threshold": float(verdict.threshold),
        "flagged_step": verdict.flagged_step,
        "step_scores": [float(s) for s in verdict.step_scores.scores],
        "feedback": verdict.feedback,
        "retries": retries,
    }


class PRMVerificationMiddleware(AgentMiddleware):
    """Verify the model's answers with a PRM and feed failures back to the model.

    After each model call whose ``AIMessage`` has text and no tool calls (a final answer;
    tool-calling turns are left alone, since their tool calls must run), the answer is
    scored against the user's last message. The verdict is attached to the message as
    ``response_metadata["prm_verification"]``. When it fails, ``on_failure`` decides:

    * ``"retry"``: append a ``HumanMessage`` with the feedback (``feedback_template``,
      marked ``additional_kwargs["prm_feedback"]``) and jump back to the model, at most
      ``max_retries`` times per user message; then the last answer stands (a warning is
      logged and its metadata says ``passed: False``);
    * ``"end"``: jump to the end, appending an ``AIMessage`` that says the answer failed
      verification and why;
    * ``"error"``: raise :class:`VerificationFailedError`;
    * ``"continue"``: let the answer through (metadata only).

    Args:
        prm: a :class:`~prm_plugins.StepScorer`.
        threshold: pass mark in [0, 1].
        max_retries: most feedback rounds per user message with ``on_failure="retry"``.
        on_failure: ``"retry"``, ``"end"``, ``"error"`` or ``"continue"``.
        aggregate: chain score.
        split: how the answer is cut into steps.
        feedback_template: the feedback message; placeholders ``{feedback}``, ``{step}``,
            ``{score}``, ``{threshold}``.

    Examples:
        >>> from langchain.agents import create_agent  # doctest: +SKIP
        >>> agent = create_agent(llm, tools=[], middleware=[
        ...     PRMVerificationMiddleware(prm=load_prm(), threshold=0.5, max_retries=2)])
        >>> out = agent.invoke({"messages": [("user", "What is 2 + 3 * 4?")]})  # doctest: +SKIP
        >>> out["messages"][-1].response_metadata["prm_verification"]["passed"]  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        prm: StepScorer,
        *,
        threshold: float = 0.5,
        max_retries: int = 2,
        on_failure: OnFailure = "retry",
        aggregate: Any = "min",
        split: Any = "auto",
        feedback_template: str = DEFAULT_FEEDBACK_TEMPLATE,
    ) -> None:
        super().__init__()
        check_scorer(prm)
        threshold_f = check_threshold(threshold)
        assert threshold_f is not None
        check_count(max_retries, "max_retries", minimum=0)
        if on_failure not in ON_FAILURE:
            raise InvalidInputError(
                f"on_failure must be one of {', '.join(map(repr, ON_FAILURE))}; "
                f"got {on_failure!r}"
            )
        try:
            feedback_template.format(feedback="f", step=1, score=0.0, threshold=0.5)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise InvalidInputError(
                f"feedback_template may only use {{feedback}}, {{step}}, {{score}} and "
                f"{{threshold}}; got {feedback_template!r} ({type(exc).__name__}: {exc})"
            ) from exc
        self.prm = prm
        self.threshold = threshold_f
        self.max_retries = max_retries
        self.on_failure: OnFailure = on_failure
        self.aggregate = check_aggregate(aggregate)
        self.split = check_split(split)
        self.feedback_template = feedback_template

    # -- hooks ---------------------------------------------------------------------------
    @hook_config(can_jump_to=["model", "end"])
    def after_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        target = self._target(state)
        if target is None:
            return None
        question, message, answer = target
        verdict = verify(question, answer, self.prm, self.threshold, self.aggregate, self.split)
        return self._decide(state, message, answer, verdict)

    @hook_config(can_jump_to=["model", "end"])
    async def aafter_model(
        self, state: AgentState[Any], runtime: Any
    ) -> dict[str, Any] | None:
        target = self._target(state)
        if target is None:
            return None
        question, message, answer = target
        verdict = await averify(question, answer, self.prm, self.threshold, self.aggregate,
                                self.split)
        return self._decide(state, message, answer, verdict)

    # -- internals -------------------------------------------------------------------------
    @staticmethod
    def _target(state: AgentState[Any]) -> tuple[str, AIMessage, str] | None:
        """(question, message, answer) to verify, or ``None`` when there is nothing to."""
        messages: list[BaseMessage] = list(state.get("messages") or [])
        if not messages or not isinstance(messages[-1], AIMessage):
            return None
        message = messages[-1]
        answer = message_text(message)
        if message.tool_calls or not answer.strip():
            return None
        question = question_from_messages(messages[:-1])
        if question is None:
            logger.debug("PRMVerificationMiddleware: no user message to verify against")
            return None
        return question, message, answer

    @staticmethod
    def retries_used(messages: list[BaseMessage]) -> int:
        """Feedback messages since the user's last message."""
        used = 0
        for message in reversed(messages):
            if isinstance(message, HumanMessage):
                if not is_prm_feedback(message):
                    break
                used += 1
        return used

    def _decide(
        self, state: AgentState[Any], message: AIMessage, answer: str, verdict: Verdict
    ) -> dict[str, Any] | None:
        used = self.retries_used(list(state["messages"]))
        metadata = {**message.response_metadata, METADATA_KEY: _verdict_metadata(verdict, used)}
        annotated = message.model_copy(update={"response_metadata": metadata})
        update: dict[str, Any] = {"messages": [annotated] if message.id is not None else []}
        if verdict.passed or self.on_failure == "continue":
            return update
        if self.on_failure == "error":
            raise VerificationFailedError(verdict, answer)
        if self.on_failure == "end":
            update["messages"].append(AIMessage(
                f"I could not verify this answer (score {verdict.score:.2f}, threshold "
                f"{verdict.threshold:.2f}). {verdict.feedback}"))
            update["jump_to"] = "end"
            return update
        if used >= self.max_retries:
            logger.warning("PRMVerificationMiddleware: the answer still fails after %d "
                           "retries (score %.3f); keeping it", used, verdict.score)
            return update
        step = (verdict.flagged_step or 0) + 1
        feedback = self.feedback_template.format(
            feedback=verdict.feedback, step=step, score=verdict.score,
            threshold=verdict.threshold)
        update["messages"].append(HumanMessage(
            feedback, additional_kwargs={PRM_FEEDBACK_KEY: {
                "retry": used + 1, "score": float(verdict.score), "flagged_step": step}}))
        update["jump_to"] = "model"
        logger.info("PRMVerificationMiddleware: answer scored %.3f; retry %d of %d from "
                    "step %d", verdict.score, used + 1, self.max_retries, step)
        return update


class _HandlerGenerator:
    """Core generator over an agent's model-call handler; the prompt is ignored (the
    request is fixed). The first draw returns the response already fetched."""

    def __init__(
        self,
        first: ModelResponse,
        call: Callable[[], ModelResponse] | None = None,
        acall: Callable[[], Awaitable[ModelResponse]] | None = None,
    ) -> None:
        self._first: ModelResponse | None = first
        self._call = call
        self._acall = acall
        self._lock = threading.Lock()

    def _take_first(self) -> ModelResponse | None:
        with self._lock:
            first, self._first = self._first, None
        return first

    @staticmethod
    def _texts(response: ModelResponse) -> list[str]:
        messages = response.result if isinstance(response, ModelResponse) else [response]
        ai = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
        return [GeneratedText("" if ai is None else message_text(ai), response)]

    def sample(self, prompt: str, n: int) -> list[str]:
        assert self._call is not None
        out: list[str] = []
        for _ in range(n):
            out.extend(self._texts(self._take_first() or self._call()))
        return out

    async def asample(self, prompt: str, n: int) -> list[str]:
        assert self._acall is not None
        out: list[str] = []
        for _ in range(n):
            out.extend(self._texts(self._take_first() or await self._acall()))
        return out


def _has_tool_calls(response: ModelResponse | AIMessage | Any) -> bool:
    messages = response.result if isinstance(response, ModelResponse) else [response]
    return any(isinstance(m, AIMessage) and m.tool_calls for m in messages)


class PRMBestOfNMiddleware(AgentMiddleware):
    """Best-of-N around each model call of an agent.

    The model is called once; if that response calls tools it is returned as is (tool
    turns are not reasoning answers). Otherwise ``n - 1`` more responses are sampled and
    the one the PRM prefers, scored against the user's last message, is returned (core
    :class:`~prm_plugins.strategies.BestOfN`, whose default ``selection="auto"`` is the
    PRM-weighted vote when most responses state a final answer, else the highest chain
    score; failed or empty candidates are skipped; when all fail, the first response is
    returned). Dispatches
    ``prm.step_scored`` and ``prm.candidate_selected`` on the model node's run.

    Args:
        prm: a :class:`~prm_plugins.StepScorer`.
        n: responses to choose from (``1`` disables it).
        aggregate: chain score.
        split: how response text is cut into steps.
        max_concurrency: most model calls in flight at once.
        retry: retry policy for the extra model calls (default: the core's).
        selection: ``"auto"``, ``"weighted_vote"`` or ``"top_score"`` (core ``BestOfN``).
        budget: a :class:`~prm_plugins.budget.Budget` for each model call's best-of-N
            (``None``: no limit); the spend is in the ``prm.candidate_selected`` data.

    Examples:
        >>> agent = create_agent(llm, tools=[], middleware=[
        ...     PRMBestOfNMiddleware(prm=load_prm(), n=4)])  # doctest: +SKIP
        >>> agent.invoke({"messages": [("user", "What is 17 * 3?")]})  # doctest: +SKIP
    """

    def __init__(
        self,
        prm: StepScorer,
        *,
        n: int = 4,
        aggregate: Any = "min",
        split: Any = "auto",
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        selection: Selection = "auto",
        budget: Budget | None = None,
    ) -> None:
        super().__init__()
        check_scorer(prm)
        self.options = BestOfNOptions(n=n, aggregate=aggregate, max_concurrency=max_concurrency,
                                      split=split, retry=retry, selection=selection,
                                      budget=budget)
        self.selection: Selection = selection
        self.prm = prm
        self.n = n
        self.aggregate = aggregate
        self.split = split
        self.max_concurrency = max_concurrency
        self.retry = retry

    def _core(self, generator: _HandlerGenerator, events: EventDispatcher) -> BestOfN:
        return BestOfN.from_options(generator, events.observe(self.prm, self.aggregate),
                                    self.options)

    def _choose(self, question: str, first: ModelResponse, result: Any,
                events: EventDispatcher) -> tuple[ModelResponse, dict[str, Any]]:
        chosen = getattr(result.best.text, "output", None) or first
        data = {"index": result.best.index, "text": result.text, "score": result.score,
                "scores": [c.score for c in result.candidates],
                "selection": result.selection, "answer": result.answer,
                "budget": None if result.budget is None else result.budget.to_dict()}
        return chosen, data

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        first = handler(request)
        question = question_from_messages(request.messages)
        if self.n == 1 or not question or not question.strip() or _has_tool_calls(first):
            return first
        parent = contextvars.copy_context()  # model runs in worker threads nest like ours

        def call() -> ModelResponse:
            return parent.copy().run(handler, request)

        events = EventDispatcher(ensure_config())
        try:
            result = self._core(_HandlerGenerator(first, call=call), events).run(question)
        except AllCandidatesFailedError as exc:
            logger.warning("PRMBestOfNMiddleware: no candidate could be scored (%s); "
                           "keeping the first response", exc)
            return first
        chosen, data = self._choose(question, first, result, events)
        events.send(CANDIDATE_SELECTED_EVENT, data)
        return chosen

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        first = await handler(request)
        question = question_from_messages(request.messages)
        if self.n == 1 or not question or not question.strip() or _has_tool_calls(first):
            return first

        async def acall() -> ModelResponse:
            return await handler(request)

        events = EventDispatcher(ensure_config(), asyncio.get_running_loop())
        try:
            result = await self._core(_HandlerGenerator(first, acall=acall), events).arun(
                question)
        except AllCandidatesFailedError as exc:
            logger.warning("PRMBestOfNMiddleware: no candidate could be scored (%s); "
                           "keeping the first response", exc)
            return first
        chosen, data = self._choose(question, first, result, events)
        await events.asend(CANDIDATE_SELECTED_EVENT, data)
        return chosen
