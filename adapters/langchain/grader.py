"""LangChain messages for the step grader (:class:`~prm_plugins.labeling.grader.LLMStepGrader`).

The core grader is framework-free: it sends a conversation as ``(role, text)`` pairs, which
every LangChain chat model accepts. :func:`to_langchain_messages` builds LangChain message
objects (``SystemMessage``, ``HumanMessage``, ``AIMessage``) instead, for a chat model (or a
wrapper around one) that wants message objects.

Examples:
    >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
    >>> from prm_plugins.labeling import LLMStepGrader
    >>> model = FakeListChatModel(responses=["Step 1: correct"])
    >>> grader = LLMStepGrader(model, to_messages=to_langchain_messages)
    >>> grader.grade("What is 2 + 3?", ["2 + 3 = 5"]).labels
    [True]
"""

from __future__ import annotations

from collections.abc import Sequence

from prm_plugins.errors import InvalidInputError, missing_extra

try:
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        HumanMessage,
        SystemMessage,
    )
except ImportError as exc:
    raise missing_extra("langchain_core", "langchain") from exc

__all__ = ["to_langchain_messages"]

_KINDS: dict[str, type[BaseMessage]] = {
    "system": SystemMessage,
    "human": HumanMessage,
    "ai": AIMessage,
}


def to_langchain_messages(conversation: Sequence[tuple[str, str]]) -> list[BaseMessage]:
    """A grading conversation as LangChain messages.

    Args:
        conversation: ``(role, text)`` pairs, roles ``"system"``, ``"human"`` or ``"ai"``.

    Returns:
        One ``SystemMessage`` / ``HumanMessage`` / ``AIMessage`` per pair, in order.

    Raises:
        InvalidInputError: for a role other than those three.

    Examples:
        >>> [type(m).__name__ for m in to_langchain_messages([("system", "s"), ("human", "h")])]
        ['SystemMessage', 'HumanMessage']
    """
    messages: list[BaseMessage] = []
    for role, text in conversation:
        kind = _KINDS.get(role)
        if kind is None:
            raise InvalidInputError(
                f"unknown message role {role!r} in a grading conversation; expected one of "
                f"{', '.join(_KINDS)}")
        messages.append(kind(content=text))
    return messages
