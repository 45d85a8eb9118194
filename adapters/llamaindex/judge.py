"""Any LlamaIndex ``LLM`` as a PRM: :class:`LLMJudgePRM`.

The LLM judges every step of a chain in one ``chat`` answer (the labelling grader's prompt
and reader). The scores come from the answer's token log-probabilities when the response has
them (``ChatResponse.logprobs``: per position, the most likely tokens, as
llama-index-llms-openai fills it for ``OpenAI(..., logprobs=True, top_logprobs=5)``), else
from the verdicts and their stated confidence. Token counts come from the response's
``additional_kwargs`` (``prompt_tokens``/``completion_tokens``, as the OpenAI LLMs write
them) or ``raw["usage"]``. The logic is framework-free in :mod:`prm_plugins.backends.judge`.

Examples:
    >>> judge = LLMJudgePRM(my_llm)  # doctest: +SKIP
    >>> judge.score("What is 2 + 3 * 4?", ["3 * 4 = 12", "2 + 12 = 15"]).scores  # doctest: +SKIP
    [0.95, 0.05]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole

from prm_plugins.backends.judge import JudgePRM
from prm_plugins.backends.judge_scores import JudgeReply, aligned_logprobs
from prm_plugins.errors import InvalidInputError

__all__ = ["LLMJudgePRM", "LlamaIndexJudgeClient", "llm_model_id"]

#: Generation settings read into the model identity (the cache key) when the LLM has them.
_SETTINGS = ("model", "temperature", "top_p", "max_tokens", "logprobs", "top_logprobs", "seed")
_ROLES = {"system": MessageRole.SYSTEM, "human": MessageRole.USER, "ai": MessageRole.ASSISTANT}


def llm_model_id(llm: Any) -> str:
    """A LlamaIndex LLM's identity: its class, its metadata (model name, context window,
    ...) and the generation settings it has (``model``, ``temperature``, ``top_p``,
    ``max_tokens``, ``logprobs``, ``top_logprobs``, ``seed``; never a key or a secret).

    Examples:
        >>> from llama_index.core.llms import MockLLM
        >>> llm_model_id(MockLLM()).split(" ")[0]
        'MockLLM'
    """
    metadata = getattr(llm, "metadata", None)
    try:
        described = dict(metadata.model_dump()) if metadata is not None else {}
    except Exception:  # noqa: BLE001 - an LLM that cannot describe itself: name it by class
        described = {}
    for name in _SETTINGS:
        value = getattr(llm, name, None)
        if value is not None:
            described[f"llm.{name}"] = value
    return f"{type(llm).__name__} {json.dumps(described, sort_keys=True, default=repr)}"


def _count(*values: Any) -> int | None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def judge_reply(response: Any) -> JudgeReply:
    """A LlamaIndex ``ChatResponse`` as a :class:`~prm_plugins.backends.judge.JudgeReply`.

    Raises:
        TypeError: when ``response`` is not a ``ChatResponse`` with text content.
    """
    if not isinstance(response, ChatResponse):
        raise TypeError(f"the LLM returned {type(response).__name__}, not a ChatResponse")
    text = response.message.content
    if not isinstance(text, str):
        raise TypeError("the LLM's ChatResponse has no text content")
    extra = response.additional_kwargs if isinstance(response.additional_kwargs, Mapping) else {}
    raw = response.raw if isinstance(response.raw, Mapping) else {}
    found = raw.get("usage")
    usage: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    return JudgeReply(
        text=text,
        logprobs=aligned_logprobs(text, response.logprobs),
        input_tokens=_count(extra.get("prompt_tokens"), usage.get("prompt_tokens")),
        output_tokens=_count(extra.get("completion_tokens"), usage.get("completion_tokens")),
    )


def to_chat_messages(conversation: list[tuple[str, str]]) -> list[ChatMessage]:
    """``(role, text)`` pairs as LlamaIndex ``ChatMessage`` s (system, user, assistant)."""
    out = []
    for role, text in conversation:
        if role not in _ROLES:
            raise InvalidInputError(f"unknown message role {role!r}; expected one of "
                                    f"{', '.join(_ROLES)}")
        out.append(ChatMessage(role=_ROLES[role], content=text))
    return out


class LlamaIndexJudgeClient:
    """A LlamaIndex ``LLM`` as a :class:`~prm_plugins.backends.judge.JudgeClient`.

    Args:
        llm: any LlamaIndex ``LLM`` (``chat``/``achat``).
        model_id: the identity used in the cache key; default :func:`llm_model_id`.
    """

    def __init__(self, llm: Any, *, model_id: str | None = None) -> None:
        if not callable(getattr(llm, "chat", None)) or not callable(getattr(llm, "achat", None)):
            raise InvalidInputError(
                f"llm must be a LlamaIndex LLM (with chat and achat); received "
                f"{type(llm).__name__}. Pass e.g. OpenAI(model=...) or any LLM subclass.")
        if model_id is not None and (not isinstance(model_id, str) or not model_id):
            raise InvalidInputError(f"model_id must be a non-empty str, got {model_id!r}")
        self.llm = llm
        self.model_id = model_id or llm_model_id(llm)

    def reply(self, conversation: list[tuple[str, str]]) -> JudgeReply:
        """``chat`` with the LLM."""
        return judge_reply(self.llm.chat(to_chat_messages(conversation)))

    async def areply(self, conversation: list[tuple[str, str]]) -> JudgeReply:
        """``achat`` with the LLM."""
        return judge_reply(await self.llm.achat(to_chat_messages(conversation)))


class LLMJudgePRM(JudgePRM):
    """Any LlamaIndex ``LLM`` as a PRM (a :class:`~prm_plugins.StepScorer`).

    Args:
        llm: any LlamaIndex ``LLM``.
        model_id: the identity used in the cache key; default :func:`llm_model_id`.
        **options: the options of :class:`~prm_plugins.backends.judge.JudgePRM`.

    Raises:
        InvalidInputError: for something that is not an LLM, or a bad option.
    """

    def __init__(self, llm: Any, *, model_id: str | None = None, **options: Any) -> None:
        super().__init__(LlamaIndexJudgeClient(llm, model_id=model_id), **options)

    @property
    def llm(self) -> Any:
        """The LlamaIndex LLM."""
        return self.client.llm  # type: ignore[attr-defined]
