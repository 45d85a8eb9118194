"""A LlamaIndex LLM as a core generator (:mod:`prm_plugins.generators`).

:class:`LlamaIndexGenerator` implements :class:`~prm_plugins.generators.Generator` and
:class:`~prm_plugins.generators.AsyncGenerator` over any LlamaIndex ``LLM``, so every core
strategy (best-of-N, votes, self-critique, step beam search, DVTS) can sample from it.
Chat models get the prompt as one user message (after an optional system message);
completion models get it through ``complete``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any, Literal

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.llms import LLM

from prm_plugins.errors import InvalidInputError
from prm_plugins.steps import split_steps
from prm_plugins.strategies.search import build_next_step_prompt
from prm_plugins.validation import check_count

__all__ = ["LlamaIndexGenerator", "build_next_step_prompt", "chat_text", "check_llm"]

Mode = Literal["auto", "chat", "complete"]

#: A leading "Step 3:" / "**Step 3.**" marker, dropped from proposed next steps.
_STEP_LABEL = re.compile(r"^[^\S\n]*[*_]{0,2}step[^\S\n]*\d+[^\S\n]*[:.)][*_]{0,2}[^\S\n]*",
                         re.IGNORECASE)


def check_llm(llm: object, what: str = "llm") -> LLM:
    """Return ``llm`` or raise :class:`InvalidInputError` unless it is a LlamaIndex ``LLM``."""
    if not isinstance(llm, LLM):
        raise InvalidInputError(
            f"{what} must be a LlamaIndex LLM (llama_index.core.llms.LLM, e.g. OpenAI(...), "
            f"Ollama(...), MockLLM()); received {type(llm).__name__}. A LangChain model "
            "goes through prm_plugins.adapters.langchain instead."
        )
    return llm


def chat_text(response: ChatResponse) -> str:
    """The text of a chat response (its message's text blocks; ``""`` when there are none)."""
    return response.message.content or ""


class LlamaIndexGenerator:
    """Adapts a LlamaIndex ``LLM`` to the core generator protocols (sync and async).

    Each ``sample`` draw is one LLM call; ``n`` draws are ``n`` calls (``asample`` runs them
    concurrently). Transient failures are retried by the strategy's
    :class:`~prm_plugins.strategies.RetryPolicy`; name your client's rate-limit errors in
    its ``retry_on`` to retry them too.

    Args:
        llm: any LlamaIndex ``LLM``.
        mode: ``"chat"`` sends the prompt as a user message, ``"complete"`` uses
            ``complete``; ``"auto"`` (default) picks chat for chat models
            (``llm.metadata.is_chat_model``).
        system_prompt: a system message put before the prompt in chat mode.
        llm_kwargs: extra keyword arguments for every LLM call (e.g. ``temperature``
            where the integration takes it per call).

    Raises:
        InvalidInputError: when ``llm`` is not a LlamaIndex LLM or ``mode`` is unknown.

    Examples:
        >>> from llama_index.core.llms import MockLLM
        >>> gen = LlamaIndexGenerator(MockLLM())
        >>> gen.sample("1 + 1 = ?", 2)  # MockLLM echoes the prompt
        ['1 + 1 = ?', '1 + 1 = ?']
        >>> from prm_plugins.strategies import best_of_n  # doctest: +SKIP
        >>> best_of_n("What is 17 * 3?", LlamaIndexGenerator(llm), prm, n=8)  # doctest: +SKIP
    """

    def __init__(
        self,
        llm: LLM,
        *,
        mode: Mode = "auto",
        system_prompt: str | None = None,
        llm_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.llm = check_llm(llm)
        if mode not in ("auto", "chat", "complete"):
            raise InvalidInputError(f"mode must be 'auto', 'chat' or 'complete', got {mode!r}")
        self.mode: Mode = mode
        self.system_prompt = system_prompt
        self.llm_kwargs = dict(llm_kwargs or {})

    @property
    def use_chat(self) -> bool:
        """Whether prompts go through ``chat`` (else ``complete``)."""
        if self.mode == "auto":
            return bool(self.llm.metadata.is_chat_model)
        return self.mode == "chat"

    def _messages(self, prompt: str) -> list[ChatMessage]:
        messages = []
        if self.system_prompt:
            messages.append(ChatMessage(role=MessageRole.SYSTEM, content=self.system_prompt))
        messages.append(ChatMessage(role=MessageRole.USER, content=prompt))
        return messages

    # -- one call --------------------------------------------------------------------------
    def generate(self, prompt: str) -> str:
        """One completion of ``prompt`` (one LLM call)."""
        if self.use_chat:
            return chat_text(self.llm.chat(self._messages(prompt), **self.llm_kwargs))
        return self.llm.complete(prompt, **self.llm_kwargs).text

    async def agenerate(self, prompt: str) -> str:
        """Async :meth:`generate`."""
        if self.use_chat:
            return chat_text(await self.llm.achat(self._messages(prompt), **self.llm_kwargs))
        return (await self.llm.acomplete(prompt, **self.llm_kwargs)).text

    # -- Generator / AsyncGenerator --------------------------------------------------------
    def sample(self, prompt: str, n: int) -> list[str]:
        """``n`` independent completions of ``prompt``."""
        return [self.generate(prompt) for _ in range(_check_n(n))]

    async def asample(self, prompt: str, n: int) -> list[str]:
        """Async :meth:`sample`; the ``n`` calls run concurrently."""
        return list(await asyncio.gather(*(self.agenerate(prompt) for _ in range(_check_n(n)))))

    def propose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        """``n`` candidate next steps after ``prefix`` (the first step of each completion).

        The prompt is :func:`build_next_step_prompt`; an empty completion means the model
        had nothing to add.
        """
        prompt = build_next_step_prompt(question, prefix)
        return [_first_step(self.generate(prompt)) for _ in range(_check_n(n))]

    async def apropose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        """Async :meth:`propose_next_steps`."""
        prompt = build_next_step_prompt(question, prefix)
        texts = await asyncio.gather(*(self.agenerate(prompt) for _ in range(_check_n(n))))
        return [_first_step(t) for t in texts]


def _check_n(n: int) -> int:
    checked = check_count(n, "n")
    assert checked is not None
    return checked


def _first_step(text: str) -> str:
    steps = [s for s in split_steps(text, "newlines") if s.strip()]
    return _STEP_LABEL.sub("", steps[0]).strip() if steps else ""
