"""LLM-as-grader: label every step of a chain with a LangChain chat model.

The grader sends the question and the numbered steps to any chat model with ``invoke`` /
``ainvoke`` over a list of messages (any LangChain ``BaseChatModel``) and asks for exactly
one verdict line per step, in order and nothing else::

    Step 1: correct
    Step 2: incorrect
    Step 3: incorrect

:func:`parse_step_verdicts` reads that answer strictly: a line that is not of this form, an
unknown verdict word, a step graded twice, a step number that does not exist, steps out of
order or a step without a verdict is refused with a :class:`GraderAnswerError` that says
exactly what was wrong. The grader then asks again (up to ``max_retries`` times), sending its
previous answer and the error, and reports the chain as failed when no answer can be read;
one failed chain never sinks a batch.

Label convention (as in the GSM8K verifier, see ``LABELS.md``): with ``propagate=True`` (the
default) the first step graded ``incorrect`` and every step after it are labelled bad,
whatever the model said about the later ones; ``propagate=False`` keeps the model's raw
verdicts. The raw verdicts are always kept in :attr:`GradedChain.verdicts`.

Framework-free: the conversation goes to the chat model's ``invoke`` as ``(role, text)``
pairs (which every LangChain chat model takes); the LangChain message objects, when wanted,
are built by :mod:`prm_plugins.adapters.langchain.grader`. The prompts and the verdict reader
are in :mod:`prm_plugins.labeling.verdicts`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prm_plugins.errors import GraderAnswerError, InvalidInputError
from prm_plugins.labeling.verdicts import (
    GRADER_SYSTEM_PROMPT,
    build_grading_prompt,
    build_regrade_prompt,
    parse_step_verdicts,
    propagate_first_error,
)
from prm_plugins.plans import CallOutcome, RetryPolicy, describe_error
from prm_plugins.validation import check_count, check_max_concurrency

__all__ = [
    "GRADER_SYSTEM_PROMPT",
    "GradedChain",
    "GraderAnswerError",
    "LLMStepGrader",
    "build_grading_prompt",
    "build_regrade_prompt",
    "graded_rows",
    "parse_step_verdicts",
    "propagate_first_error",
    "role_text_pairs",
]

logger = logging.getLogger(__name__)

@dataclass
class GradedChain:
    """The grader's result for one chain.

    Attributes:
        question: the problem.
        steps: the chain's steps.
        verdicts: the model's raw verdicts (``None`` when the chain failed).
        labels: the labels written (``verdicts`` propagated from the first error, or raw with
            ``propagate=False``; ``None`` when failed).
        propagate: whether ``labels`` follow the first-error convention.
        error: why the chain failed (``None`` when it did not).
        answers: every answer the model gave, in order (refused ones included).
        parse_errors: why each refused answer was refused.
        model_calls: grading requests made (re-asks included, transient retries not).
        attempts: model calls made, transient retries included.
        id: the input row's ``"id"``, when it had one.
    """

    question: str
    steps: list[str]
    verdicts: list[bool] | None = None
    labels: list[bool] | None = None
    propagate: bool = True
    error: str | None = None
    answers: list[str] = field(default_factory=list)
    parse_errors: list[str] = field(default_factory=list)
    model_calls: int = 0
    attempts: int = 0
    id: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the chain was graded."""
        return self.error is None and self.labels is not None

    @property
    def first_error(self) -> int | None:
        """Index of the first step graded incorrect, or ``None`` (also when failed)."""
        if self.verdicts is None:
            return None
        return next((k for k, v in enumerate(self.verdicts) if not v), None)

    def to_row(self, *, source: str = "llm-grader", model: str | None = None) -> dict[str, Any]:
        """The TRL stepwise row of a graded chain.

        Args:
            source: value of the ``"source"`` key.
            model: value of the ``"grader_model"`` key (omitted when ``None``).

        Returns:
            ``{"prompt", "completions", "labels", "source", "verdicts", "grader_calls"}``,
            plus ``"first_error"`` with ``propagate=True`` (its labels then match it), ``"id"``
            when known and ``"grader_model"`` when given.

        Raises:
            InvalidInputError: for a failed chain (it has no labels).
        """
        if not self.ok or self.labels is None or self.verdicts is None:
            raise InvalidInputError(
                f"chain {self.id or self.question[:60]!r} was not graded ({self.error}); "
                "only graded chains have a stepwise row: filter with GradedChain.ok"
            )
        row: dict[str, Any] = {}
        if self.id is not None:
            row["id"] = self.id
        row.update({"prompt": self.question, "completions": list(self.steps),
                    "labels": list(self.labels), "source": source})
        if self.propagate:
            row["first_error"] = self.first_error
        row["verdicts"] = list(self.verdicts)
        row["grader_calls"] = self.model_calls
        if model is not None:
            row["grader_model"] = model
        return row


def graded_rows(
    graded: Iterable[GradedChain], *, source: str = "llm-grader", model: str | None = None
) -> list[dict[str, Any]]:
    """Stepwise rows of the chains that were graded (failed ones are skipped).

    Examples:
        >>> g = GradedChain("q", ["a", "b"], verdicts=[True, False], labels=[True, False])
        >>> graded_rows([g, GradedChain("q2", ["c"], error="timeout")])[0]["labels"]
        [True, False]
    """
    return [g.to_row(source=source, model=model) for g in graded if g.ok]


Chain = tuple[str, list[str], str | None]
ChainInput = Mapping[str, Any] | Sequence[Any]


def as_chain(item: ChainInput, position: int | None = None) -> Chain:
    """``(question, steps, id)`` of a chain given as a row or a ``(question, steps)`` pair.

    Rows may be stepwise rows (``prompt``/``completions``) or ``question``/``steps`` rows;
    their ``"id"`` is kept, other keys (labels included) are ignored.

    Raises:
        InvalidInputError: for anything else, an empty question or an empty step list.
    """
    where = "" if position is None else f"chain {position}: "
    if isinstance(item, Mapping):
        question = item.get("prompt", item.get("question"))
        steps = item.get("completions", item.get("steps"))
        ident = item.get("id")
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        question, steps = item
        ident = None
    else:
        raise InvalidInputError(
            f"{where}expected a (question, steps) pair or a row with 'prompt' and "
            f"'completions' (or 'question' and 'steps'); received {type(item).__name__}"
        )
    if not isinstance(question, str) or not question.strip():
        raise InvalidInputError(f"{where}the question must be a non-empty str; received "
                                f"{type(question).__name__} {str(question)[:60]!r}")
    if isinstance(steps, str) or not isinstance(steps, Sequence) or not steps:
        raise InvalidInputError(f"{where}steps must be a non-empty list of str; received "
                                f"{type(steps).__name__} {str(steps)[:60]!r}")
    bad = [k for k, s in enumerate(steps) if not isinstance(s, str) or not s.strip()]
    if bad:
        raise InvalidInputError(f"{where}step(s) {bad} are empty or not str; every step must "
                                "be non-empty text")
    if ident is not None and not isinstance(ident, str):
        ident = str(ident)
    return question, list(steps), ident


def _message_text(message: Any) -> str:
    """The text of a chat model's reply (an ``AIMessage``, content blocks, or a str)."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
        return "".join(parts)
    raise InvalidInputError(
        f"the chat model returned {type(message).__name__} with content of type "
        f"{type(content).__name__}; expected a message with text content"
    )


def role_text_pairs(conversation: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """A grading conversation as ``(role, text)`` pairs (roles ``system``, ``human``, ``ai``).

    The default message format of :class:`LLMStepGrader`: every LangChain chat model takes
    such pairs as messages. :func:`prm_plugins.adapters.langchain.grader.to_langchain_messages`
    builds LangChain message objects instead.
    """
    return [(role, text) for role, text in conversation]


def _model_name(chat_model: Any) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(chat_model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(chat_model).__name__


# A grading conversation is a plan: it yields the messages to send and receives the outcome.
GradePlan = Generator[list[tuple[str, str]], CallOutcome, GradedChain]


class LLMStepGrader:
    """Label each step of chains with a LangChain chat model (one verdict per step).

    Args:
        chat_model: any LangChain ``BaseChatModel`` (anything with ``invoke``, and
            ``ainvoke`` for the async forms, that takes a list of messages and returns a
            message).
        max_retries: how many times an unreadable answer is answered with the parse error
            and a request to answer again (>= 0); after that the chain is failed.
        propagate: label the first incorrect step and every later step bad (default); with
            ``False`` the raw verdicts are the labels.
        system_prompt: the system message (default :data:`GRADER_SYSTEM_PROMPT`).
        max_concurrency: most chains graded at once by the batch forms.
        retry: retry policy for transient model errors (``TimeoutError``,
            ``ConnectionError``, :class:`~prm_plugins.strategies.TransientGeneratorError`, or
            what its ``retry_on`` says); other errors fail the chain at once.
        source: value of the ``"source"`` key of the rows.
        to_messages: turns a conversation (``(role, text)`` pairs) into what ``invoke``
            takes; default :func:`role_text_pairs` (the pairs themselves, which every
            LangChain chat model accepts). For message objects, pass
            ``prm_plugins.adapters.langchain.grader.to_langchain_messages``.

    Examples:
        >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
        >>> model = FakeListChatModel(responses=["Step 1: correct\\nStep 2: incorrect"])
        >>> grader = LLMStepGrader(model)
        >>> g = grader.grade("What is 2 + 3 * 4?", ["3 * 4 = 12", "2 + 12 = 15"])
        >>> g.labels, g.first_error
        ([True, False], 1)
        >>> g.to_row()["source"]
        'llm-grader'
    """

    def __init__(
        self,
        chat_model: Any,
        *,
        max_retries: int = 2,
        propagate: bool = True,
        system_prompt: str = GRADER_SYSTEM_PROMPT,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        source: str = "llm-grader",
        to_messages: Callable[[Sequence[tuple[str, str]]], Any] = role_text_pairs,
    ) -> None:
        if not callable(getattr(chat_model, "invoke", None)) and not callable(
            getattr(chat_model, "ainvoke", None)
        ):
            raise InvalidInputError(
                f"chat_model must be a LangChain chat model (with invoke/ainvoke); received "
                f"{type(chat_model).__name__}. Pass e.g. ChatOpenAI(...) or any BaseChatModel."
            )
        check_count(max_retries, "max_retries", minimum=0)
        if not isinstance(system_prompt, str):
            raise InvalidInputError(
                f"system_prompt must be a str, got {type(system_prompt).__name__}")
        RetryPolicy.check(retry)
        if not callable(to_messages):
            raise InvalidInputError(
                f"to_messages must be a function of a list of (role, text) pairs, got "
                f"{type(to_messages).__name__}")
        self.to_messages = to_messages
        self.chat_model = chat_model
        self.max_retries = max_retries
        self.propagate = bool(propagate)
        self.system_prompt = system_prompt
        self.max_concurrency = check_max_concurrency(max_concurrency)
        self.retry = retry or RetryPolicy()
        self.source = source

    @property
    def model_name(self) -> str:
        """The chat model's name (``model_name``/``model`` attribute, else its class)."""
        return _model_name(self.chat_model)

    # -- one chain -----------------------------------------------------------------------
    def _plan(self, question: str, steps: list[str], ident: str | None) -> GradePlan:
        n = len(steps)
        result = GradedChain(question, steps, propagate=self.propagate, id=ident)
        conversation: list[tuple[str, str]] = [
            ("human", build_grading_prompt(question, steps))]
        if self.system_prompt:
            conversation.insert(0, ("system", self.system_prompt))
        for ask in range(self.max_retries + 1):
            outcome = yield list(conversation)
            result.model_calls += 1
            result.attempts += outcome.attempts
            if outcome.error is not None:
                result.error = f"chat model call failed: {describe_error(outcome.error)}"
                logger.warning("grading %r failed: %s", ident or question[:60], result.error)
                return result
            try:
                text = _message_text(outcome.value)
            except InvalidInputError as exc:
                result.error = str(exc)
                return result
            result.answers.append(text)
            try:
                verdicts = parse_step_verdicts(text, n)
            except GraderAnswerError as exc:
                result.parse_errors.append(str(exc))
                logger.info("grader answer %d for %r refused: %s", ask + 1,
                            ident or question[:60], exc)
                conversation += [("ai", text), ("human", build_regrade_prompt(str(exc), n))]
                continue
            result.verdicts = verdicts
            result.labels = propagate_first_error(verdicts) if self.propagate else list(verdicts)
            return result
        result.error = (f"no readable answer after {result.model_calls} tries; last error: "
                        f"{result.parse_errors[-1]}")
        logger.warning("grading %r failed: %s", ident or question[:60], result.error)
        return result

    def _run(self, plan: GradePlan) -> GradedChain:
        invoke, to_messages = self.chat_model.invoke, self.to_messages
        try:
            conversation = next(plan)
            while True:
                outcome = self.retry.call(
                    lambda c: invoke(to_messages(c)), conversation, what="chat_model.invoke()")
                conversation = plan.send(outcome)
        except StopIteration as stop:
            return stop.value
        finally:
            plan.close()

    async def _arun(self, plan: GradePlan) -> GradedChain:
        ainvoke: Callable[[Any], Awaitable[Any]] | None = getattr(
            self.chat_model, "ainvoke", None)
        if ainvoke is None:
            invoke = self.chat_model.invoke

            async def ainvoke(messages: Any) -> Any:
                return await asyncio.to_thread(invoke, messages)

        assert ainvoke is not None
        call, to_messages = ainvoke, self.to_messages

        async def send(c: list[tuple[str, str]]) -> Any:
            return await call(to_messages(c))

        try:
            conversation = next(plan)
            while True:
                outcome = await self.retry.acall(send, conversation, what="chat_model.ainvoke()")
                conversation = plan.send(outcome)
        except StopIteration as stop:
            return stop.value
        finally:
            plan.close()

    def _check_sync(self) -> None:
        if not callable(getattr(self.chat_model, "invoke", None)):
            raise InvalidInputError(
                f"{type(self.chat_model).__name__} has no invoke(); use the async forms "
                "(agrade, agrade_batch)")

    def grade(self, question: str, steps: Sequence[str], *, id: str | None = None) -> GradedChain:
        """Grade one chain, blocking.

        Args:
            question: the problem.
            steps: the chain's steps.
            id: an identifier kept on the result and its row.

        Returns:
            The :class:`GradedChain` (``ok`` is ``False`` when no readable answer came back
            or the model call failed; nothing is raised for that).

        Raises:
            InvalidInputError: for an empty question or step list.
        """
        self._check_sync()
        q, s, _ = as_chain((question, list(steps) if not isinstance(steps, str) else steps))
        return self._run(self._plan(q, s, id))

    async def agrade(
        self, question: str, steps: Sequence[str], *, id: str | None = None
    ) -> GradedChain:
        """Async :meth:`grade` (uses the model's ``ainvoke``)."""
        q, s, _ = as_chain((question, list(steps) if not isinstance(steps, str) else steps))
        return await self._arun(self._plan(q, s, id))

    # -- batches -------------------------------------------------------------------------
    def grade_batch(self, chains: Iterable[ChainInput]) -> list[GradedChain]:
        """Grade many chains, at most ``max_concurrency`` at once (threads).

        Args:
            chains: ``(question, steps)`` pairs or rows (stepwise rows with ``prompt`` and
                ``completions``, or ``question``/``steps`` rows; their ``"id"`` is kept).

        Returns:
            One :class:`GradedChain` per input, in input order; failed chains included.

        Raises:
            InvalidInputError: before any model call, when an input is not a chain.

        Examples:
            >>> results = grader.grade_batch([("q1", ["a", "b"]), {"prompt": "q2",
            ...     "completions": ["c"], "id": "x"}])  # doctest: +SKIP
            >>> rows = graded_rows(results)  # doctest: +SKIP
        """
        self._check_sync()
        items = [as_chain(c, k) for k, c in enumerate(chains)]
        if not items:
            return []
        if self.max_concurrency == 1 or len(items) == 1:
            return [self._run(self._plan(*item)) for item in items]
        workers = min(self.max_concurrency, len(items))
        with concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="prm-grader"
        ) as pool:
            futures = [pool.submit(self._run, self._plan(*item)) for item in items]
            return [f.result() for f in futures]

    async def agrade_batch(self, chains: Iterable[ChainInput]) -> list[GradedChain]:
        """Async :meth:`grade_batch`: at most ``max_concurrency`` conversations at once."""
        items = [as_chain(c, k) for k, c in enumerate(chains)]
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def one(item: Chain) -> GradedChain:
            async with semaphore:
                return await self._arun(self._plan(*item))

        return list(await asyncio.gather(*(one(item) for item in items)))

    def rows(self, graded: Iterable[GradedChain]) -> list[dict[str, Any]]:
        """Stepwise rows of the graded chains, with this grader's source and model name."""
        return graded_rows(graded, source=self.source, model=self.model_name)
