"""A scripted LlamaIndex LLM for the examples: it answers from a fixed list, in order.

This is a fake, on purpose: the examples must run offline, where no LLM is reachable. Each
example has one line that builds its LLM; replace it with a real one to see the same
components at work, for example::

    from llama_index.llms.openai import OpenAI      # pip install llama-index-llms-openai
    llm = OpenAI(model="gpt-4o-mini", temperature=0.8)

    from llama_index.llms.ollama import Ollama      # pip install llama-index-llms-ollama
    llm = Ollama(model="qwen2.5:7b-instruct", request_timeout=120.0)

(sample with a temperature above 0 for best-of-N, or every answer is the same).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback

from prm_plugins.wording import SHIPPED_PRM_NOTE

__all__ = ["SHIPPED_PRM_NOTE", "ScriptedLLM"]

#: What the examples print about the shipped PRM, and the one line that replaces it.

_LOCK = threading.Lock()


class ScriptedLLM(CustomLLM):
    """Answers with ``answers[0]``, ``answers[1]``, ... (cycling), whatever the prompt.

    Args:
        answers: the texts to return, in order.
        chat_model: report itself as a chat model (agents format their prompts for one).
        respond: optional ``prompt -> text | None``; a text it returns is the answer,
            ``None`` falls back to the list (a script that reacts to feedback prompts).
    """

    answers: list[str]
    chat_model: bool = False
    respond: Any = None
    _count: int = PrivateAttr(default=0)

    def __init__(
        self,
        answers: Sequence[str],
        chat_model: bool = False,
        respond: Callable[[str], str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(answers=list(answers), chat_model=chat_model, respond=respond,
                         **kwargs)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted-llm", is_chat_model=self.chat_model)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self.respond is not None:
            reply = self.respond(prompt)
            if reply is not None:
                return CompletionResponse(text=reply)
        with _LOCK:
            text = self.answers[self._count % len(self.answers)]
            self._count += 1
        return CompletionResponse(text=text)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        text = self.complete(prompt, formatted=formatted, **kwargs).text

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=text, delta=text)

        return gen()
