"""The problem and the scripted answers the LangChain examples share.

The problem and the correct solution are GSM8K test item 2 (MIT licence, (c) 2021 OpenAI),
with the calculator annotations removed and the final line written as a step. The flawed
solutions are the two kinds of mistake a model makes:

* arithmetic slips (``2+1=4``): written arithmetic that is wrong. The shipped default PRM
  catches these reliably (its arithmetic check caps such a step, and every later one, at
  0.05);
* a reasoning error with correct arithmetic (``WRONG_QUANTITY``: it adds the blue fiber
  twice, ``2+2=4``). The shipped PRM does *not* see these: it scores that answer like the
  correct one. A stronger PRM is needed for them (see ``STRONGER_PRM``).

``chat_model()`` is the one place where the examples choose their LLM: a scripted fake chat
model by default (it replays the answers it is given, in turn, so the examples run offline
and show what the PRM does), or any real chat model through LangChain's
``init_chat_model``.
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
#: The same solution in other words (a second sample of a real model would differ too).
CORRECT_REWORDED = (
    "Half of 2 bolts is 2/2=1 bolt of white fiber\n"
    "Blue and white together take 2+1=3 bolts\n"
    "The answer is 3."
)
#: Arithmetic slip in step 2 (2+1 is not 4).
SLIP_STEP_2 = (
    "It takes 2/2=1 bolt of white fiber\n"
    "So the total amount of fabric is 2+1=4 bolts of fabric\n"
    "The answer is 4."
)
#: Arithmetic slip in step 1 (2/2 is not 2), carried on to the same wrong answer.
SLIP_STEP_1 = (
    "It takes 2/2=2 bolts of white fiber\n"
    "So the total amount of fabric is 2+2=4 bolts of fabric\n"
    "The answer is 4."
)
#: A reasoning error with correct arithmetic: the shipped PRM cannot see it.
WRONG_QUANTITY = (
    "It takes 2/2=1 bolt of white fiber\n"
    "So the total amount of fabric is 2+2=4 bolts of fabric\n"
    "The answer is 4."
)

#: Pass mark for verification. The shipped PRM scores correct late steps near 0.5 (see its
#: model card), so 0.5 would flag correct answers; 0.3 passes them with a wide margin and
#: still fails every step its arithmetic check caps (0.05).
THRESHOLD = 0.3

#: What the examples print about the shipped PRM, and the one line that replaces it.

#: The one-line switch to a real LLM: set a model for langchain.chat_models.init_chat_model,
#: e.g. "openai:gpt-4.1-mini", "anthropic:claude-sonnet-4-5" or "ollama:qwen2.5:7b" (its
#: provider package must be installed and configured). None uses the scripted fake model.
REAL_MODEL: str | None = None


def final_answer(text: str) -> str:
    """The number on the solution's last line ("The answer is 3." gives "3")."""
    return text.strip().splitlines()[-1].removeprefix("The answer is ").rstrip(".")


def chat_model(responses: list[str], **kwargs: Any) -> Any:
    """The examples' chat model: the real one named by ``REAL_MODEL``, else a scripted fake.

    Args:
        responses: what the fake model replays, in turn (ignored by a real model).
        **kwargs: passed to ``init_chat_model`` (e.g. ``temperature``).
    """
    if REAL_MODEL:
        from langchain.chat_models import init_chat_model

        return init_chat_model(REAL_MODEL, **kwargs)
    from langchain_core.language_models import FakeListChatModel

    return FakeListChatModel(responses=responses)
