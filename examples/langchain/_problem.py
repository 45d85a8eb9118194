"""The problem and the scripted answers the LangChain examples share.

The problem and the correct solution are GSM8K test item 2 (MIT licence, (c) 2021 OpenAI),
with the calculator annotations removed and the final line written as a step. The flawed
solutions make reasoning errors, not arithmetic slips: every equation in them is computed
correctly, but on the wrong quantities.

``chat_model()`` is the one place where the examples choose their LLM: a scripted fake chat
model by default (it replays ``FLAWED_1``, ``CORRECT``, ``FLAWED_2`` in turn, so the
examples run offline and show what the PRM does), or any real chat model through
LangChain's ``init_chat_model``.
"""

from __future__ import annotations

from typing import Any

QUESTION = (
    "A robe takes 2 bolts of blue fiber and half that much white fiber. "
    "How many bolts in total does it take?"
)
CORRECT = (
    "It takes 2/2=1 bolt of white fiber\n"
    "So the total amount of fabric is 2+1=3 bolts of fabric\n"
    "The answer is 3."
)
FLAWED_1 = (
    "It takes 2*2=4 bolts of white fiber\n"
    "So the total amount of fabric is 2+4=6 bolts of fabric\n"
    "The answer is 6."
)
FLAWED_2 = (
    "It takes 2/2=1 bolt of white fiber\n"
    "So the total amount of fabric is 2+2=4 bolts of fabric\n"
    "The answer is 4."
)

#: The one-line switch to a real LLM: set a model for langchain.chat_models.init_chat_model,
#: e.g. "openai:gpt-4.1-mini", "anthropic:claude-sonnet-4-5" or "ollama:qwen2.5:7b" (its
#: provider package must be installed and configured). None uses the scripted fake model.
REAL_MODEL: str | None = None


def chat_model(responses: list[str] | None = None, **kwargs: Any) -> Any:
    """The examples' chat model: the real one named by ``REAL_MODEL``, else a scripted fake.

    Args:
        responses: what the fake model replays, in turn (default: the three answers above).
        **kwargs: passed to ``init_chat_model`` (e.g. ``temperature``).
    """
    if REAL_MODEL:
        from langchain.chat_models import init_chat_model

        return init_chat_model(REAL_MODEL, **kwargs)
    from langchain_core.language_models import FakeListChatModel

    return FakeListChatModel(responses=responses or [FLAWED_1, CORRECT, FLAWED_2])
