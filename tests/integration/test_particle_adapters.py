"""Particle filtering through the framework adapters (issue 21 item 4).

LangChain: :class:`PRMParticleFilter`, the drop-in component (as ``PRMBeamSearch`` is for
beam search), driven by langchain_core's ``FakeListChatModel`` and, where a test needs the
next step to depend on the steps so far, a ``RunnableLambda`` that reads the prefix from the
next-step prompt. LlamaIndex exposes step-level search through
:class:`LlamaIndexGenerator` (any ``LLM`` as a core generator, as for ``StepBeamSearch``);
it is driven by LlamaIndex's ``MockLLM`` and by :func:`tree_llm`, a small ``CustomLLM``
that answers next-step prompts from a tree, because ``MockLLM`` only echoes its prompt (or
writes "text text ...") and cannot give a chain that ends with an answer.

The scorer is :class:`TableScorer` (a score per step text) so that the particle that must
win is known in advance; the PRM itself is exercised in tests/unit/test_particle_filter.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from prm_plugins import InvalidInputError, StepScores
from prm_plugins.strategies import ParticleFilter, ParticleFilterResult

Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
TREE = {
    (): ["3 + 4 = 7", "3 * 4 = 12"],
    ("3 + 4 = 7",): ["The answer is 7."],
    ("3 * 4 = 12",): ["The answer is 12."],
}
TABLE = {"3 + 4 = 7": 0.9, "3 * 4 = 12": 0.1, "The answer is 7.": 0.9,
         "The answer is 12.": 0.2}


class TableScorer:
    """StepScorer with a score per step text (see the module docstring)."""

    def __init__(self, table: dict[str, float], default: float = 0.5) -> None:
        self.table = table
        self.default = default

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        return [StepScores(list(steps), [self.table.get(s, self.default) for s in steps], q)
                for q, steps in items]

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score_batch([(question, steps)])[0]

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score(question, steps)


def _prefix(prompt: str) -> tuple[str, ...]:
    """The steps so far, read back from a ``build_next_step_prompt`` prompt."""
    return tuple(line.split(": ", 1)[1] for line in prompt.splitlines()
                 if line.startswith("Step "))


class TreeAnswers:
    """Answers next-step prompts from ``TREE`` (cycling the options of each prefix)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], int] = {}
        self.prompts: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, prompt: Any) -> str:
        self.prompts.append(prompt)
        text = prompt["question"] if isinstance(prompt, dict) else str(prompt)
        prefix = _prefix(text)
        with self.lock:
            k = self.counts.get(prefix, 0)
            self.counts[prefix] = k + 1
        options = TREE[prefix]
        return options[k % len(options)] + "\nmore text after the step"


# -- LangChain -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lc() -> Any:
    return pytest.importorskip("prm_plugins.adapters.langchain.particles")


def test_langchain_particle_filter_follows_the_prm(lc: Any) -> None:
    from langchain_core.runnables import RunnableLambda

    from prm_plugins.adapters.langchain import build_next_step_prompt

    answers = TreeAnswers()
    pf = lc.PRMParticleFilter(generator=RunnableLambda(answers), prm=TableScorer(TABLE), n=4,
                              seed=0, temperature=0.1, max_concurrency=1, return_result=True)
    result = pf.invoke({"question": Q, "style": "terse"})
    assert isinstance(result, ParticleFilterResult)
    # the generator got its own input shape, the question replaced by a next-step prompt
    assert answers.prompts[0] == {"question": build_next_step_prompt(Q, []), "style": "terse"}
    assert result.steps == ["3 + 4 = 7", "The answer is 7."] and result.answer == "7"
    assert all(p.steps == result.steps for p in result.particles)  # cold: one lineage
    again = lc.PRMParticleFilter(generator=RunnableLambda(TreeAnswers()),
                                 prm=TableScorer(TABLE), n=4, seed=0, temperature=0.1,
                                 max_concurrency=1, return_result=True).invoke(Q)
    assert again.to_dict() == result.to_dict()


def test_langchain_particle_filter_is_a_drop_in_chat_model(lc: Any) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    def model() -> Any:
        return FakeListChatModel(responses=["3 + 4 = 7\nso he has 7", "The answer is 7."])

    scorer = TableScorer(TABLE)
    message = lc.PRMParticleFilter(generator=model(), prm=scorer, n=2, seed=1,
                                   max_concurrency=1).invoke(Q)
    assert isinstance(message, AIMessage) and message.text.endswith("The answer is 7.")
    report = message.response_metadata["prm"]
    assert report["answer"] == "7" and report["method"] == "particle_filter"
    assert report["result"]["particles"] and report["result"]["seed"] == 1
    prompt = ChatPromptTemplate.from_template("Solve: {question}")
    chain = prompt | lc.PRMParticleFilter(generator=model(), prm=scorer, n=2, seed=1,
                                          max_concurrency=1) | StrOutputParser()
    assert chain.invoke({"question": Q}) == message.text
    chunks = list(lc.PRMParticleFilter(generator=model(), prm=scorer, n=2, seed=1,
                                       max_concurrency=1).stream(Q))
    assert len(chunks) == 1 and isinstance(chunks[0], AIMessageChunk)
    assert chunks[0].text == message.text


def test_langchain_async_equals_sync_and_dispatches_events(lc: Any) -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.runnables import RunnableLambda

    from prm_plugins.adapters.langchain import CANDIDATE_SELECTED_EVENT, STEP_SCORED_EVENT

    class Events(BaseCallbackHandler):
        def __init__(self) -> None:
            self.names: list[str] = []

        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            self.names.append(name)

    def build() -> Any:
        return lc.PRMParticleFilter(generator=RunnableLambda(TreeAnswers()),
                                    prm=TableScorer(TABLE), n=4, seed=3,
                                    resampling="systematic", select="vote",
                                    return_result=True)

    recorder = Events()
    sync = build().invoke(Q)
    async_ = asyncio.run(build().ainvoke(Q, {"callbacks": [recorder]}))
    assert async_.to_dict() == sync.to_dict()
    assert recorder.names.count(STEP_SCORED_EVENT) == sync.chains_scored
    assert recorder.names.count(CANDIDATE_SELECTED_EVENT) == 1


def test_langchain_bad_options_and_configurable_fields(lc: Any) -> None:
    from langchain_core.runnables import ConfigurableField, RunnableLambda

    with pytest.raises(InvalidInputError, match="temperature must be a finite number > 0"):
        lc.PRMParticleFilter(generator=RunnableLambda(TreeAnswers()), prm=TableScorer({}),
                             temperature=0)
    with pytest.raises(InvalidInputError, match="resampling must be one of"):
        lc.PRMParticleFilter(generator=RunnableLambda(TreeAnswers()), prm=TableScorer({}),
                             resampling="stratified")
    pf = lc.PRMParticleFilter(generator=RunnableLambda(TreeAnswers()), prm=TableScorer(TABLE),
                              n=4, seed=0, return_result=True).configurable_fields(
        n=ConfigurableField(id="n", name="particles"))
    assert len(pf.invoke(Q).particles) == 4
    assert len(pf.with_config(configurable={"n": 2}).invoke(Q).particles) == 2
    with pytest.raises(InvalidInputError, match="budget must be a prm_plugins.budget.Budget"):
        lc.PRMParticleFilter(generator=RunnableLambda(TreeAnswers()), prm=TableScorer({}),
                             budget=5)


def test_langchain_particle_filter_respects_a_budget(lc: Any) -> None:
    from langchain_core.runnables import RunnableLambda

    from prm_plugins.budget import Budget

    answers = TreeAnswers()
    result = lc.PRMParticleFilter(generator=RunnableLambda(answers), prm=TableScorer(TABLE),
                                  n=4, seed=0, budget=Budget(generator_calls=5),
                                  return_result=True).invoke(Q)
    assert len(answers.prompts) == 5 and result.budget.generator_calls == 5
    assert result.budget.exhausted == "generator_calls" and result.iterations == 2


# -- LlamaIndex ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def li() -> Any:
    return pytest.importorskip("prm_plugins.adapters.llamaindex")


def tree_llm() -> Any:
    """A LlamaIndex ``CustomLLM`` answering next-step prompts from ``TREE``."""
    from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata
    from llama_index.core.llms import CustomLLM
    from llama_index.core.llms.callbacks import llm_completion_callback

    answers = TreeAnswers()

    class TreeLLM(CustomLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="tree-llm")

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False,
                     **kwargs: Any) -> CompletionResponse:
            return CompletionResponse(text=answers(prompt))

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False,
                            **kwargs: Any) -> Any:
            raise NotImplementedError

    return TreeLLM()


def test_llamaindex_llm_drives_the_particle_filter(li: Any) -> None:
    def run(use_async: bool) -> ParticleFilterResult:
        pf = ParticleFilter(li.LlamaIndexGenerator(tree_llm()), TableScorer(TABLE), n=4,
                            seed=2, temperature=0.1, max_concurrency=1)
        return asyncio.run(pf.arun(Q)) if use_async else pf.run(Q)

    sync = run(False)
    assert sync.steps == ["3 + 4 = 7", "The answer is 7."] and sync.answer == "7"
    assert run(True).to_dict() == sync.to_dict()


def test_llamaindex_mock_llm_runs_to_max_steps(li: Any) -> None:
    from llama_index.core.llms import MockLLM

    # MockLLM(max_tokens=3) answers "text text text": never a final answer.
    pf = ParticleFilter(li.LlamaIndexGenerator(MockLLM(max_tokens=3)), TableScorer({}), n=3,
                        max_steps=3, seed=0)
    for result in (pf.run(Q), asyncio.run(pf.arun(Q))):
        assert result.iterations == 3 and result.generator_calls == 9
        assert all(p.steps == ["text text text"] * 3 for p in result.particles)
        assert not result.best.complete and result.errors == []
