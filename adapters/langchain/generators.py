"""A LangChain runnable as a core generator, and the input/output conversions it needs.

:class:`RunnableGenerator` implements :class:`prm_plugins.generators.Generator` and
:class:`~prm_plugins.generators.AsyncGenerator` over any runnable (a chat model, an LLM,
``prompt | llm``, ``prompt | llm | StrOutputParser()``), so the core strategies can sample
from it. The helpers read the question out of a runnable's input (a str, messages, a prompt
value or a dict) and put a new prompt in its place, which is how revision and next-step
prompts reach a ``prompt | llm`` chain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.base import coerce_to_runnable

from prm_plugins.errors import InvalidInputError
from prm_plugins.strategies.search import build_next_step_prompt
from prm_plugins.strategies.verify import to_steps
from prm_plugins.types import Splitter
from prm_plugins.validation import check_split

__all__ = [
    "PRM_FEEDBACK_KEY",
    "GeneratedText",
    "RunnableGenerator",
    "build_next_step_prompt",
    "is_prm_feedback",
    "message_text",
    "output_text",
    "question_from_input",
    "question_from_messages",
    "with_question",
]

#: ``additional_kwargs`` key that marks a message written by the PRM middleware (feedback).
PRM_FEEDBACK_KEY = "prm_feedback"

_PREVIEW = 80


class GeneratedText(str):
    """A generated text that remembers the runnable output it came from.

    Strategies see a plain ``str``; adapters read ``.output`` (e.g. the ``AIMessage``, with
    its ``response_metadata`` and usage) back from the chosen candidate.

    Examples:
        >>> t = GeneratedText("3 + 2 = 5", output={"raw": 1})
        >>> t == "3 + 2 = 5", t.output
        (True, {'raw': 1})
    """

    output: Any

    def __new__(cls, text: str, output: Any = None) -> GeneratedText:
        obj = super().__new__(cls, text)
        obj.output = output
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (GeneratedText, (str(self), self.output))


def message_text(message: BaseMessage) -> str:
    """The text of a message as a plain ``str`` (text blocks joined; tool calls ignored)."""
    return str(message.text)


def is_prm_feedback(message: BaseMessage) -> bool:
    """Whether ``message`` is feedback written by the PRM middleware."""
    return bool(message.additional_kwargs.get(PRM_FEEDBACK_KEY))


def output_text(output: Any) -> str:
    """The text of a runnable's output: a str, a message, or a ``{"text"|"output": str}``.

    Raises:
        InvalidInputError: for any other output, saying how to end the chain instead.

    Examples:
        >>> output_text(AIMessage("3 + 2 = 5")), output_text("x")
        ('3 + 2 = 5', 'x')
    """
    if isinstance(output, str):
        return str(output)
    if isinstance(output, BaseMessage):
        return message_text(output)
    if isinstance(output, dict):
        for key in ("text", "output", "content"):
            if isinstance(output.get(key), (str, BaseMessage)):
                return output_text(output[key])
    raise InvalidInputError(
        f"the generator must return a str or a message (e.g. end it with a chat model or "
        f"StrOutputParser()); it returned {type(output).__name__} {_preview(output)}"
    )


def question_from_messages(messages: Sequence[BaseMessage]) -> str | None:
    """Text of the last human message that is not PRM feedback, or ``None``."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage) and not is_prm_feedback(message):
            return message_text(message)
    return None


def question_from_input(input: Any, question_key: str = "question", *, who: str = "") -> str:
    """The question a runnable's input asks.

    Args:
        input: a str; a message; a list of messages (or message-likes such as
            ``("human", "...")``); a prompt value; or a dict holding the question under
            ``question_key``.
        question_key: the dict key of the question.
        who: the component name used in error messages.

    Returns:
        The question text (the last human message for message inputs).

    Raises:
        InvalidInputError: when no question can be found; the message says what was
            received and how to pass the question.

    Examples:
        >>> question_from_input({"question": "2 + 3?", "style": "terse"})
        '2 + 3?'
        >>> question_from_input([("system", "Be brief."), ("human", "2 + 3?")])
        '2 + 3?'
    """
    who = f"{who}: " if who else ""
    if isinstance(input, str):
        return input
    if isinstance(input, StringPromptValue):
        return input.text
    if isinstance(input, ChatPromptValue):
        input = input.messages
    if isinstance(input, BaseMessage):
        return message_text(input)
    if isinstance(input, dict):
        value = input.get(question_key)
        if isinstance(value, str):
            return value
        if isinstance(value, BaseMessage):
            return message_text(value)
        raise InvalidInputError(
            f"{who}the input dict must hold the question (a str) under {question_key!r}; "
            f"received keys {sorted(map(str, input))} and {question_key}={_preview(value)}. "
            f"Add {question_key!r} to the input or set question_key= to the key that holds it."
        )
    if isinstance(input, (list, tuple)):
        try:
            messages = convert_to_messages(input)
        except Exception as exc:
            raise InvalidInputError(
                f"{who}a list input must be chat messages; received {_preview(input)} ({exc})"
            ) from exc
        question = question_from_messages(messages)
        if question is None:
            raise InvalidInputError(
                f"{who}the messages hold no human message to take the question from; "
                f"received {len(messages)} message(s) of types "
                f"{[m.type for m in messages]}"
            )
        return question
    raise InvalidInputError(
        f"{who}cannot read a question from a {type(input).__name__} input "
        f"{_preview(input)}; pass a str, chat messages, a prompt value or a dict with "
        f"{question_key!r}"
    )


def with_question(input: Any, text: str, question_key: str = "question") -> Any:
    """``input`` with its question replaced by ``text`` (same shape as ``input``).

    Dicts keep their other keys; message lists keep every message but the last human one,
    which becomes ``HumanMessage(text)``.

    Examples:
        >>> with_question({"question": "q", "style": "terse"}, "new")
        {'question': 'new', 'style': 'terse'}
    """
    if isinstance(input, str):
        return text
    if isinstance(input, StringPromptValue):
        return StringPromptValue(text=text)
    if isinstance(input, ChatPromptValue):
        return ChatPromptValue(messages=with_question(list(input.messages), text))
    if isinstance(input, BaseMessage):
        return HumanMessage(text)
    if isinstance(input, dict):
        return {**input, question_key: text}
    if isinstance(input, (list, tuple)):
        messages = convert_to_messages(input)
        for i in range(len(messages) - 1, -1, -1):
            if isinstance(messages[i], HumanMessage) and not is_prm_feedback(messages[i]):
                return [*messages[:i], HumanMessage(text), *messages[i + 1:]]
        return [*messages, HumanMessage(text)]
    raise InvalidInputError(
        f"cannot put a prompt into a {type(input).__name__} input {_preview(input)}"
    )


class RunnableGenerator:
    """Any LangChain runnable as a core generator (sync and async).

    ``sample(prompt, n)`` invokes the runnable ``n`` times; ``propose_next_steps`` sends
    :func:`build_next_step_prompt` (or ``step_prompt``) and keeps the first step of each
    completion. Every call carries ``config``, so with the child callbacks of a run manager
    in it the generator's runs nest under that run.

    Args:
        runnable: a chat model, an LLM, or a chain such as ``prompt | llm``; a callable is
            coerced with ``coerce_to_runnable``.
        input_key: when set, prompts are sent as ``{input_key: prompt}`` (for a
            ``prompt | llm`` chain); when ``None``, as the bare string.
        config: the ``RunnableConfig`` of every call (callbacks, tags, ...).
        split: how a completion is cut into steps (to keep the first one).
        step_prompt: ``(question, prefix) -> prompt`` for ``propose_next_steps``.

    Examples:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> from prm_plugins.strategies import best_of_n
        >>> gen = RunnableGenerator(FakeListChatModel(responses=["2 + 3 = 5\\nThe answer is 5."]))
        >>> gen.sample("What is 2 + 3?", 2)
        ['2 + 3 = 5\\nThe answer is 5.', '2 + 3 = 5\\nThe answer is 5.']
        >>> best_of_n("What is 2 + 3?", gen, load_prm(), n=4).text  # doctest: +SKIP
    """

    def __init__(
        self,
        runnable: Runnable[Any, Any] | Callable[..., Any],
        *,
        input_key: str | None = None,
        config: RunnableConfig | None = None,
        split: Splitter = "auto",
        step_prompt: Callable[[str, Sequence[str]], str] = build_next_step_prompt,
    ) -> None:
        self.runnable = as_runnable(runnable, "runnable")
        if input_key is not None and not isinstance(input_key, str):
            raise InvalidInputError(f"input_key must be a str or None, got {input_key!r}")
        if not callable(step_prompt):
            raise InvalidInputError(
                f"step_prompt must be a callable (question, prefix) -> str, got {step_prompt!r}"
            )
        self.input_key = input_key
        self.config = config
        self.split = check_split(split)
        self.step_prompt = step_prompt
        self._base: tuple[Any, str, str] | None = None
        #: The runnable's latest raw output (its type is what drop-in components return).
        self.last_output: Any = None

    def bound_to(
        self, input: Any, question: str, question_key: str = "question"
    ) -> RunnableGenerator:
        """A copy that answers prompts by re-using ``input``.

        The prompt equal to ``question`` sends ``input`` unchanged; any other prompt (a
        revision or next-step prompt) is sent as ``with_question(input, prompt)``. The
        Runnables of this package use it so that ``prompt | llm`` gets its own input shape.
        """
        clone = RunnableGenerator(self.runnable, input_key=self.input_key, config=self.config,
                                  split=self.split, step_prompt=self.step_prompt)
        clone._base = (input, question, question_key)
        return clone

    def to_input(self, prompt: str) -> Any:
        """The runnable input for ``prompt``."""
        if self._base is not None:
            input, question, key = self._base
            return input if prompt == question else with_question(input, prompt, key)
        return prompt if self.input_key is None else {self.input_key: prompt}

    def _texts(self, outputs: Sequence[Any]) -> list[str]:
        texts: list[str] = [GeneratedText(output_text(o), o) for o in outputs]
        if outputs:
            self.last_output = outputs[-1]
        return texts

    def _first_steps(self, texts: Sequence[str]) -> list[str]:
        out: list[str] = []
        for text in texts:
            steps = to_steps(text, self.split)
            out.append(GeneratedText(steps[0] if steps else "", getattr(text, "output", None)))
        return out

    # -- Generator -----------------------------------------------------------------------
    def sample(self, prompt: str, n: int) -> list[str]:
        """``n`` completions of ``prompt`` (one runnable call each)."""
        inputs = [self.to_input(prompt)] * n
        if n == 1:
            return self._texts([self.runnable.invoke(inputs[0], self.config)])
        return self._texts(self.runnable.batch(inputs, self.config))

    def propose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        """``n`` candidate next steps (the first step of each completion)."""
        return self._first_steps(self.sample(self.step_prompt(question, prefix), n))

    # -- AsyncGenerator ------------------------------------------------------------------
    async def asample(self, prompt: str, n: int) -> list[str]:
        """Async :meth:`sample`."""
        inputs = [self.to_input(prompt)] * n
        if n == 1:
            return self._texts([await self.runnable.ainvoke(inputs[0], self.config)])
        return self._texts(await self.runnable.abatch(inputs, self.config))

    async def apropose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        """Async :meth:`propose_next_steps`."""
        return self._first_steps(await self.asample(self.step_prompt(question, prefix), n))


def as_runnable(value: Any, what: str) -> Runnable[Any, Any]:
    """``value`` as a Runnable (callables and dicts are coerced), or a clear error."""
    if isinstance(value, Runnable):
        return value
    if callable(value) or isinstance(value, dict):
        return coerce_to_runnable(value)
    raise InvalidInputError(
        f"{what} must be a LangChain Runnable (a chat model, an LLM or a chain such as "
        f"prompt | llm) or a callable; received {type(value).__name__} {_preview(value)}"
    )


def answer_from_messages(messages: Sequence[BaseMessage]) -> tuple[str | None, str | None]:
    """(question, answer) of a conversation: the last AI message and the human one before."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], AIMessage):
            return question_from_messages(messages[:i]), message_text(messages[i])
    return question_from_messages(messages), None


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."
