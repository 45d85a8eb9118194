"""PRMBestOfNLLM: a LlamaIndex ``LLM`` that answers with the best of N samples of another.

Drop it in wherever an ``LLM`` goes (query engines, chat engines, ``ReActAgent``,
``llm.predict``): each ``complete``/``chat`` call (and their async and streaming forms)
repeats the caller's call N times on the wrapped LLM, scores the answers step by step with
the PRM, and returns the best one. Sampling, retries, scoring and selection are
:class:`prm_plugins.strategies.BestOfN`; this module only converts LlamaIndex calls and
responses.

In a query engine the prompt holds the retrieved context as well as the user's query; the
answers are scored against the query alone (the ``query_str`` of the prompt template, which
every LlamaIndex response synthesizer fills), not against the whole prompt.
"""

from __future__ import annotations

import contextvars
import re
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from llama_index.core.base.llms.generic_utils import (
    messages_to_prompt as generic_messages_to_prompt,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, SerializeAsAny, field_serializer
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.types import TokenAsyncGen, TokenGen

from prm_plugins.adapters.llamaindex.events import (
    PRMCandidateSelectedEvent,
    aggregate_name,
    dispatcher,
    emit_scored,
)
from prm_plugins.adapters.llamaindex.generator import chat_text, check_llm
from prm_plugins.budget import Budget
from prm_plugins.errors import AnswersTooLongError, ChainTooLongError, InvalidInputError
from prm_plugins.strategies import AllCandidatesFailedError, BestOfN, BestOfNResult, RetryPolicy
from prm_plugins.strategies.options import BestOfNOptions, Selection
from prm_plugins.types import Aggregation, Splitter, StepScorer
from prm_plugins.validation import check_scorer

__all__ = [
    "PRM_KWARGS_KEY",
    "QUERY_VARIABLE",
    "AnswersTooLongError",
    "PRMBestOfNLLM",
    "QuestionFn",
    "query_from_prompt",
]

#: Key of the PRM report in a response's ``additional_kwargs``.
PRM_KWARGS_KEY = "prm"

#: ``prompt -> question`` (complete) or ``messages -> question`` (chat).
QuestionFn = Callable[[Any], str]

R = TypeVar("R", ChatResponse, CompletionResponse)

#: The prompt-template variable that holds the user's query in LlamaIndex's prompts.
QUERY_VARIABLE = "query_str"

#: The user's query of the ``predict``/``stream`` call in progress (set from its prompt
#: arguments), so the answers are scored against it rather than the whole prompt.
_QUERY: contextvars.ContextVar[str | None] = contextvars.ContextVar("prm_query", default=None)

#: Where LlamaIndex's default QA and refine templates put the query, for prompts that
#: arrive already formatted.
_QUERY_PATTERNS = (
    re.compile(r"\nQuery: (?P<q>.+?)\nAnswer: ?\Z", re.DOTALL),
    re.compile(r"\AThe original query is as follows: (?P<q>.+?)\nWe have provided an existing "
               r"answer", re.DOTALL),
)


def query_from_prompt(prompt: str) -> str | None:
    """The user's query inside a prompt built from LlamaIndex's default QA or refine
    template, or ``None`` for any other prompt.

    Examples:
        >>> query_from_prompt("Context information is below.\\n---\\nsome context\\n---\\n"
        ...                   "Given the context ..., answer the query.\\n"
        ...                   "Query: How many muffins?\\nAnswer: ")
        'How many muffins?'
        >>> query_from_prompt("What is 2 + 3?") is None
        True
    """
    for pattern in _QUERY_PATTERNS:
        match = pattern.search(prompt)
        if match and match.group("q").strip():
            return match.group("q").strip()
    return None

#: LLM fields copied from the wrapped LLM, so that ``predict`` and friends format prompts
#: the same way through the wrapper as without it.
_PROMPT_FIELDS = (
    "system_prompt",
    "messages_to_prompt",
    "completion_to_prompt",
    "query_wrapper_prompt",
    "output_parser",
    "pydantic_program_mode",
)


class _RepeatCall(Generic[R]):
    """Core generator for one wrapped call: every draw repeats the caller's LLM call.

    The strategy passes the question as the prompt; it is ignored here, because the
    caller's own prompt or messages (and keyword arguments) are what the LLM must see.
    Responses are kept by text, so the chosen candidate's full response (raw payload,
    message blocks, logprobs) can be returned, not only its text.
    """

    def __init__(
        self,
        call: Callable[[], R],
        acall: Callable[[], Awaitable[R]],
        text_of: Callable[[R], str],
    ) -> None:
        self._call: Callable[[], R] = call
        self._acall: Callable[[], Awaitable[R]] = acall
        self._text_of: Callable[[R], str] = text_of
        self._responses: dict[str, R] = {}
        self._lock = threading.Lock()

    def _keep(self, response: R) -> str:
        text = self._text_of(response)
        with self._lock:
            self._responses.setdefault(text, response)
        return text

    def sample(self, prompt: str, n: int) -> list[str]:
        return [self._keep(self._call()) for _ in range(n)]

    async def asample(self, prompt: str, n: int) -> list[str]:
        return [self._keep(await self._acall()) for _ in range(n)]

    def response_for(self, text: str) -> R:
        return self._responses[text]


class PRMBestOfNLLM(LLM):
    """An ``LLM`` that samples N answers from ``llm`` and returns the one the PRM prefers.

    Every call is repeated ``n`` times on the wrapped LLM (with the caller's prompt or
    messages and keyword arguments); the answers are cut into steps, scored by ``prm`` and
    one is chosen (:class:`prm_plugins.strategies.BestOfN`: by default the PRM-weighted vote
    over final answers when most answers state one, else the highest chain score; with the
    shipped PRM the vote beats majority voting at every N >= 2 while single picks fall below
    random from N = 8, ``benchmarks/results/bon_curve.md``). The returned
    response is the wrapped LLM's own response for the chosen answer, with the PRM's report
    under ``additional_kwargs["prm"]``:

    ==================  ==================================================================
    key                 value
    ==================  ==================================================================
    ``score``           the chosen answer's chain score
    ``index``           its index in sampling order (0-based)
    ``selection``       ``"weighted_vote"`` or ``"top_score"``: how it was chosen
    ``answer``          the winning final answer (weighted vote), else ``None``
    ``votes``           summed chain score per final answer (weighted vote)
    ``question``        what the answers were scored against
    ``steps``           its steps, as scored
    ``step_scores``     one score per step
    ``candidate_scores`` every candidate's chain score (``None`` for a failed one)
    ``n``, ``failed``   candidates sampled, and how many failed
    ``stopped_early``   sampling stopped at the threshold before ``n``
    ``aggregate``       the aggregation used
    ``budget``          what the call spent (``None`` when run without a ``budget``)
    ==================  ==================================================================

    ``metadata`` is the wrapped LLM's, except ``is_function_calling_model``, which is
    ``False``: tool calls are not sampled N times and scored, so ``FunctionAgent`` needs the
    plain LLM (use :class:`PRMVerifiedAgentRunner` there); ``ReActAgent`` works with this
    one. Streaming forms run the N samples first, then yield the chosen answer as one chunk.
    The wrapped LLM's prompt settings (``system_prompt``, ``messages_to_prompt``, ...) are
    copied unless given, so ``predict`` formats prompts as the wrapped LLM would.

    Every scored candidate sends a :class:`PRMStepsScoredEvent` and the choice a
    :class:`PRMCandidateSelectedEvent`.

    Args:
        llm: the LlamaIndex LLM to sample from (sampling settings such as temperature are
            its own: set a temperature above 0, or all N answers may be the same).
        prm: a :class:`~prm_plugins.StepScorer`, e.g. ``load_prm()``.
        n: answers per call (>= 1).
        aggregate: chain score: ``"min"``, ``"prod"``, ``"mean"``, ``"last"``,
            ``"geomean"`` or a callable over the step scores.
        threshold: stop sampling once an answer's chain score reaches it; answers are then
            drawn in rounds of ``max_concurrency``.
        max_concurrency: most wrapped-LLM calls in flight at once.
        split: how answers are cut into steps (a :func:`~prm_plugins.split_steps` mode or
            a callable).
        retry: retry policy for the wrapped LLM's calls (:class:`RetryPolicy`); put your
            client's rate-limit error types in its ``retry_on``.
        question_fn: what the PRM is told the question is. Default: the user's query when
            the call comes through ``predict``/``stream`` with a ``query_str`` prompt
            variable (every LlamaIndex query engine and response synthesizer) or the prompt
            is LlamaIndex's default QA/refine template; else the prompt for ``complete``,
            the text of the last user message for ``chat``. Give a callable (it receives the
            prompt string or the message list) for other templates that wrap the question.
        selection: ``"auto"`` (default), ``"weighted_vote"`` or ``"top_score"``
            (:class:`~prm_plugins.strategies.BestOfN`).
        budget: a :class:`~prm_plugins.budget.Budget` for each call (``None``: no limit);
            what a call spent is the report's ``budget``.
        **kwargs: other ``LLM`` fields (``callback_manager``, ``system_prompt``, ...).

    Raises:
        InvalidInputError: for an ``llm`` that is not a LlamaIndex LLM or a bad option
            (the message shows the value received).
        AnswersTooLongError: (from a call) when every answer is too long for the PRM's
            ``max_length`` together with the question; it is not retried, and the message
            names the fixes.

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> from llama_index.llms.openai import OpenAI  # doctest: +SKIP
        >>> llm = PRMBestOfNLLM(OpenAI(model="gpt-4o-mini", temperature=0.8), load_prm(), n=8)
        ... # doctest: +SKIP
        >>> r = llm.complete("A pen costs $3. How much do 4 pens cost?")  # doctest: +SKIP
        >>> r.text, r.additional_kwargs["prm"]["score"]  # doctest: +SKIP
        ('4 * 3 = 12\\nThe answer is 12.', 0.94)
        >>> from llama_index.core.agent.workflow import ReActAgent  # doctest: +SKIP
        >>> agent = ReActAgent(tools=[...], llm=llm)  # doctest: +SKIP
    """

    llm: SerializeAsAny[LLM] = Field(description="The LLM sampled N times per call.")
    prm: Any = Field(exclude=True, description="The StepScorer that ranks the answers.")
    n: int = Field(default=4, description="Answers sampled per call.")
    aggregate: Any = Field(default="min", description="Chain-score aggregation.")
    threshold: float | None = Field(default=None, description="Early-stop chain score.")
    max_concurrency: int = Field(default=4, description="Most wrapped calls at once.")
    split: Any = Field(default="auto", description="How answers are cut into steps.")
    retry: Any = Field(default=None, exclude=True, description="RetryPolicy for calls.")
    question_fn: Any = Field(default=None, exclude=True,
                             description="prompt or messages -> question for the PRM.")
    selection: str = Field(default="auto", description="How the answer is chosen.")
    budget: Any = Field(default=None, exclude=True, description="Budget for each call.")

    def __init__(
        self,
        llm: LLM,
        prm: StepScorer,
        n: int = 4,
        *,
        aggregate: Aggregation = "min",
        threshold: float | None = None,
        max_concurrency: int = 4,
        split: Splitter = "auto",
        retry: RetryPolicy | None = None,
        question_fn: QuestionFn | None = None,
        selection: Selection = "auto",
        budget: Budget | None = None,
        **kwargs: Any,
    ) -> None:
        check_llm(llm)
        # The core validates every option and raises InvalidInputError naming the bad one.
        core = BestOfNOptions(n=n, aggregate=aggregate, threshold=threshold,
                              max_concurrency=max_concurrency, split=split, retry=retry,
                              selection=selection, budget=budget)
        check_scorer(prm)
        if question_fn is not None and not callable(question_fn):
            raise InvalidInputError(
                f"question_fn must be a callable (prompt or messages -> question) or None, "
                f"got {question_fn!r}"
            )
        for name in _PROMPT_FIELDS:
            if name not in kwargs and getattr(llm, name, None) is not None:
                kwargs[name] = getattr(llm, name)
        kwargs.setdefault("callback_manager", llm.callback_manager)
        fields: dict[str, Any] = {
            "llm": llm, "prm": prm, "n": n, "aggregate": core.aggregate,
            "threshold": core.threshold, "max_concurrency": core.max_concurrency,
            "split": core.split, "retry": core.retry, "question_fn": question_fn,
            "selection": core.selection, "budget": budget,
        }
        super().__init__(**fields, **kwargs)

    @field_serializer("aggregate", "split")
    def _name_of_callable(self, value: Any) -> str:
        """A callable aggregate or split serialises as its name (JSON has no functions)."""
        return aggregate_name(value)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> PRMBestOfNLLM:
        """Deep copies share the scorer (an ONNX Runtime session cannot be copied)."""
        memo = {} if memo is None else memo
        memo[id(self.prm)] = self.prm
        return super().__deepcopy__(memo)

    @classmethod
    def class_name(cls) -> str:
        return "PRMBestOfNLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """The wrapped LLM's metadata, with ``is_function_calling_model=False``."""
        return self.llm.metadata.model_copy(update={"is_function_calling_model": False})

    # -- the core strategy -----------------------------------------------------------------
    def _strategy(self, sampler: _RepeatCall[Any]) -> BestOfN:
        options = BestOfNOptions(n=self.n, aggregate=self.aggregate, threshold=self.threshold,
                                 max_concurrency=self.max_concurrency, split=self.split,
                                 retry=self.retry, selection=self.selection,  # type: ignore[arg-type]
                                 budget=self.budget)
        return BestOfN.from_options(sampler, self.prm, options)

    def _length_error(self, exc: AllCandidatesFailedError, question: str) -> Exception:
        """An :class:`AnswersTooLongError` when length is why every candidate failed."""
        causes = [getattr(c, "exception", None) for c in exc.candidates or []]
        if not causes or not all(isinstance(c, ChainTooLongError) for c in causes):
            return exc
        first = causes[0]
        assert isinstance(first, ChainTooLongError)
        return AnswersTooLongError(
            f"PRMBestOfNLLM: none of the {len(causes)} answers could be scored: each one, "
            f"with the question, is too long for the PRM ({first}). This is a length "
            "limit, not a transient error, so nothing was retried. The question scored was "
            f"{len(question)} characters ({question[:80]!r}). Fixes: make the answers "
            "shorter (the wrapped LLM's max tokens); pass question_fn= when the prompt "
            "wraps the question in a long template; or load the PRM with "
            "load_prm(..., long_chains='window') to score long answers in windows.",
            n_tokens=first.n_tokens, max_length=first.max_length,
            causes=exc.causes, candidates=exc.candidates,
        )

    def _run(self, sampler: _RepeatCall[Any], question: str) -> BestOfNResult:
        try:
            return self._strategy(sampler).run(question)
        except AllCandidatesFailedError as exc:
            raise self._length_error(exc, question) from exc

    async def _arun(self, sampler: _RepeatCall[Any], question: str) -> BestOfNResult:
        try:
            return await self._strategy(sampler).arun(question)
        except AllCandidatesFailedError as exc:
            raise self._length_error(exc, question) from exc

    def _question(self, prompt_or_messages: str | Sequence[ChatMessage]) -> str:
        question_fn: QuestionFn | None = self.question_fn
        if question_fn is not None:
            question = question_fn(prompt_or_messages)
            if not isinstance(question, str) or not question.strip():
                raise InvalidInputError(
                    f"question_fn must return a non-empty str; it returned "
                    f"{type(question).__name__} {str(question)[:80]!r}"
                )
            return question
        query = _QUERY.get()
        if query is not None and query.strip():
            return query
        if isinstance(prompt_or_messages, str):
            question = prompt_or_messages
        else:
            users = [m for m in prompt_or_messages if m.role == MessageRole.USER]
            question = (users[-1].content or "") if users else ""
            if not question.strip():
                to_prompt = self.messages_to_prompt or generic_messages_to_prompt
                question = to_prompt(prompt_or_messages)
        question = query_from_prompt(question) or question
        if not question.strip():
            raise InvalidInputError(
                "PRMBestOfNLLM needs a question to score answers against, but the prompt "
                "(or the last user message) is empty; pass the question in the prompt, or "
                "give question_fn"
            )
        return question

    def _finish(self, result: BestOfNResult, sampler: _RepeatCall[R], question: str) -> R:
        for c in result.candidates:
            if c.step_scores is not None and c.score is not None:
                emit_scored("best_of_n_llm", c.step_scores, c.score, self.aggregate,
                            question=question, threshold=self.threshold, index=c.index)
        best = result.best
        candidate_scores = [c.score if c.ok else None for c in result.candidates]
        dispatcher.event(
            PRMCandidateSelectedEvent(
                question=question, index=best.index, score=float(result.score),
                text=result.text, candidate_scores=candidate_scores,
                n=len(result.candidates), failed=len(result.failed),
                stopped_early=result.stopped_early,
            )
        )
        report = {
            "score": float(result.score),
            "index": best.index,
            "steps": list(best.steps),
            "step_scores": [] if best.step_scores is None else list(best.step_scores.scores),
            "candidate_scores": candidate_scores,
            "n": len(result.candidates),
            "failed": len(result.failed),
            "stopped_early": result.stopped_early,
            "aggregate": aggregate_name(self.aggregate),
            "selection": result.selection,
            "answer": result.answer,
            "votes": dict(result.votes),
            "question": question,
            "budget": None if result.budget is None else result.budget.to_dict(),
        }
        response = sampler.response_for(result.text)
        return response.model_copy(
            update={"additional_kwargs": {**response.additional_kwargs, PRM_KWARGS_KEY: report}}
        )

    def _chat_sampler(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> _RepeatCall[ChatResponse]:
        return _RepeatCall(lambda: self.llm.chat(messages, **kwargs),
                           lambda: self.llm.achat(messages, **kwargs), chat_text)

    def _complete_sampler(
        self, prompt: str, formatted: bool, kwargs: dict[str, Any]
    ) -> _RepeatCall[CompletionResponse]:
        return _RepeatCall(lambda: self.llm.complete(prompt, formatted=formatted, **kwargs),
                           lambda: self.llm.acomplete(prompt, formatted=formatted, **kwargs),
                           lambda r: r.text)

    def _best_chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponse:
        question = self._question(messages)
        sampler = self._chat_sampler(messages, kwargs)
        return self._finish(self._run(sampler, question), sampler, question)

    async def _abest_chat(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> ChatResponse:
        question = self._question(messages)
        sampler = self._chat_sampler(messages, kwargs)
        return self._finish(await self._arun(sampler, question), sampler, question)

    def _best_complete(
        self, prompt: str, formatted: bool, kwargs: dict[str, Any]
    ) -> CompletionResponse:
        question = self._question(prompt)
        sampler = self._complete_sampler(prompt, formatted, kwargs)
        return self._finish(self._run(sampler, question), sampler, question)

    async def _abest_complete(
        self, prompt: str, formatted: bool, kwargs: dict[str, Any]
    ) -> CompletionResponse:
        question = self._question(prompt)
        sampler = self._complete_sampler(prompt, formatted, kwargs)
        return self._finish(await self._arun(sampler, question), sampler, question)

    # -- prompt-template calls: remember the user's query -------------------------------
    @staticmethod
    @contextmanager
    def _query_of(prompt_args: dict[str, Any]) -> Iterator[None]:
        query = prompt_args.get(QUERY_VARIABLE)
        token = _QUERY.set(query if isinstance(query, str) else None)
        try:
            yield
        finally:
            _QUERY.reset(token)

    def predict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        """``LLM.predict``, scoring the answers against the prompt's ``query_str``."""
        with self._query_of(prompt_args):
            return super().predict(prompt, **prompt_args)

    async def apredict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        """``LLM.apredict``, scoring the answers against the prompt's ``query_str``."""
        with self._query_of(prompt_args):
            return await super().apredict(prompt, **prompt_args)

    def stream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> TokenGen:
        """``LLM.stream``, scoring the answers against the prompt's ``query_str``."""
        with self._query_of(prompt_args):
            return super().stream(prompt, **prompt_args)

    async def astream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> TokenAsyncGen:
        """``LLM.astream``, scoring the answers against the prompt's ``query_str``."""
        with self._query_of(prompt_args):
            return await super().astream(prompt, **prompt_args)

    # -- LLM interface ---------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Best of ``n`` ``llm.chat(messages, **kwargs)`` answers."""
        return self._best_chat(messages, kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Best of ``n`` ``llm.achat(messages, **kwargs)`` answers (sampled concurrently)."""
        return await self._abest_chat(messages, kwargs)

    @llm_completion_callback()
    def complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Best of ``n`` ``llm.complete(prompt, formatted, **kwargs)`` answers."""
        return self._best_complete(prompt, formatted, kwargs)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Best of ``n`` ``llm.acomplete(prompt, formatted, **kwargs)`` answers."""
        return await self._abest_complete(prompt, formatted, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """:meth:`chat`, then the chosen answer as one chunk."""
        response = self._best_chat(messages, kwargs)

        def gen() -> ChatResponseGen:
            yield response.model_copy(update={"delta": chat_text(response)})

        return gen()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """:meth:`achat`, then the chosen answer as one chunk."""
        response = await self._abest_chat(messages, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            yield response.model_copy(update={"delta": chat_text(response)})

        return gen()

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """:meth:`complete`, then the chosen answer as one chunk."""
        response = self._best_complete(prompt, formatted, kwargs)

        def gen() -> CompletionResponseGen:
            yield response.model_copy(update={"delta": response.text})

        return gen()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """:meth:`acomplete`, then the chosen answer as one chunk."""
        response = await self._abest_complete(prompt, formatted, kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            yield response.model_copy(update={"delta": response.text})

        return gen()
