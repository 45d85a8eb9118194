"""Any LangChain chat model as a PRM: :class:`LLMJudgePRM`.

The model judges every step of a chain in one answer (the labelling grader's prompt and
reader); the scores come from the answer's token log-probabilities when the model returns
them in ``AIMessage.response_metadata["logprobs"]`` (OpenAI's shape, as langchain-openai
puts it there for ``ChatOpenAI(..., logprobs=True, top_logprobs=5)``), else from the verdicts
and their stated confidence. Token counts come from ``AIMessage.usage_metadata``. The logic
(prompt, reading, scores, cache, retries, accounting) is framework-free in
:mod:`prm_plugins.backends.judge`; this module only talks to the model.

Examples:
    >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
    >>> judge = LLMJudgePRM(FakeListChatModel(responses=[
    ...     "Step 1: correct (confidence: high)\\nStep 2: incorrect (confidence: medium)"]))
    >>> s = judge.score("What is 2 + 3 * 4?", ["3 * 4 = 12", "2 + 12 = 15"])
    >>> s.scores, s.meta["score_source"]
    ([0.95, 0.2], 'verdict')

    With a real model that returns log-probabilities::

        judge = LLMJudgePRM(ChatOpenAI(model="gpt-4o-mini", logprobs=True, top_logprobs=5))
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prm_plugins.adapters.langchain.grader import to_langchain_messages
from prm_plugins.backends.judge import JudgePRM
from prm_plugins.backends.judge_scores import JudgeReply, openai_logprobs
from prm_plugins.errors import InvalidInputError, MissingExtraError, install_hint

try:
    from langchain_core.messages import BaseMessage
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("'langchain_core' is not installed; it is needed here. Install it "
                            f"with: {install_hint('langchain')}") from exc

__all__ = ["LLMJudgePRM", "LangChainJudgeClient", "chat_model_id", "judge_reply"]


def chat_model_id(chat_model: Any) -> str:
    """A LangChain chat model's identity: its type and the parameters that identify it.

    A ``.bind(...)`` binding adds its bound arguments. Used as the judge's cache key, so two
    models (or one model with other settings) never share cached verdicts.

    Examples:
        >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
        >>> chat_model_id(FakeListChatModel(responses=["a"]))
        'fake-list-chat-model {"_type": "fake-list-chat-model", "responses": ["a"]}'
    """
    bound, extra = chat_model, {}
    if hasattr(chat_model, "bound") and isinstance(getattr(chat_model, "kwargs", None), Mapping):
        bound, extra = chat_model.bound, dict(chat_model.kwargs)
    describe = getattr(bound, "asdict", None)
    try:
        params = dict(describe()) if callable(describe) else {}
    except Exception:  # noqa: BLE001 - a model that cannot describe itself: name it by type
        params = {}
    params.update({f"bound.{k}": v for k, v in extra.items()})
    kind = str(params.get("_type") or type(bound).__name__)
    return f"{kind} {json.dumps(params, sort_keys=True, default=repr)}"


def _text(message: Any) -> str:
    content = getattr(message, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b if isinstance(b, str) else str(b.get("text", ""))
            for b in content
            if isinstance(b, str) or (isinstance(b, Mapping) and b.get("type") == "text"))
    raise TypeError(f"the chat model returned {type(message).__name__} without text content; "
                    "expected an AIMessage")


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def judge_reply(message: Any) -> JudgeReply:
    """A LangChain ``AIMessage`` as a :class:`~prm_plugins.backends.judge.JudgeReply`.

    Reads the text, ``response_metadata["logprobs"]`` (OpenAI's ``{"content": [...]}``; any
    other shape counts as none) and ``usage_metadata``'s ``input_tokens``/``output_tokens``.

    Raises:
        TypeError: when ``message`` is not a message with text content.
    """
    if not isinstance(message, BaseMessage):
        raise TypeError(f"the chat model returned {type(message).__name__}, not a message")
    metadata = getattr(message, "response_metadata", None) or {}
    usage = getattr(message, "usage_metadata", None) or {}
    return JudgeReply(
        text=_text(message),
        logprobs=openai_logprobs(metadata.get("logprobs")) if isinstance(metadata, Mapping)
        else None,
        input_tokens=_count(usage.get("input_tokens")) if isinstance(usage, Mapping) else None,
        output_tokens=_count(usage.get("output_tokens")) if isinstance(usage, Mapping) else None,
    )


class LangChainJudgeClient:
    """A LangChain chat model as a :class:`~prm_plugins.backends.judge.JudgeClient`.

    Args:
        chat_model: any ``BaseChatModel`` (or a ``.bind(...)`` of one).
        model_id: the identity used in the cache key; default :func:`chat_model_id`.
        to_messages: builds what ``invoke`` takes from ``(role, text)`` pairs; default
            LangChain message objects.
    """

    def __init__(
        self,
        chat_model: Any,
        *,
        model_id: str | None = None,
        to_messages: Callable[[Sequence[tuple[str, str]]], Any] = to_langchain_messages,
    ) -> None:
        if not callable(getattr(chat_model, "invoke", None)) or not callable(
                getattr(chat_model, "ainvoke", None)):
            raise InvalidInputError(
                f"chat_model must be a LangChain chat model (with invoke and ainvoke); received "
                f"{type(chat_model).__name__}. Pass e.g. ChatOpenAI(...) or any BaseChatModel.")
        if model_id is not None and (not isinstance(model_id, str) or not model_id):
            raise InvalidInputError(f"model_id must be a non-empty str, got {model_id!r}")
        self.chat_model = chat_model
        self.model_id = model_id or chat_model_id(chat_model)
        self.to_messages = to_messages

    def reply(self, conversation: list[tuple[str, str]]) -> JudgeReply:
        """``invoke`` the model on the conversation."""
        return judge_reply(self.chat_model.invoke(self.to_messages(conversation)))

    async def areply(self, conversation: list[tuple[str, str]]) -> JudgeReply:
        """``ainvoke`` the model on the conversation."""
        return judge_reply(await self.chat_model.ainvoke(self.to_messages(conversation)))


class LLMJudgePRM(JudgePRM):
    """Any LangChain chat model as a PRM (a :class:`~prm_plugins.StepScorer`).

    Args:
        chat_model: any ``BaseChatModel`` (``ChatOpenAI``, ``ChatAnthropic``,
            ``ChatHuggingFace``, ...), or a ``.bind(...)`` of one.
        model_id: the identity used in the cache key; default :func:`chat_model_id`.
        **options: the options of :class:`~prm_plugins.backends.judge.JudgePRM`
            (``scores_from``, ``confidence``, ``calibration``, ``max_retries``, ``retry``,
            ``max_concurrency``, ``cache_size``, ``system_prompt``).

    Raises:
        InvalidInputError: for something that is not a chat model, or a bad option.
    """

    def __init__(self, chat_model: Any, *, model_id: str | None = None, **options: Any) -> None:
        super().__init__(LangChainJudgeClient(chat_model, model_id=model_id), **options)

    @property
    def chat_model(self) -> Any:
        """The LangChain chat model."""
        return self.client.chat_model  # type: ignore[attr-defined]
