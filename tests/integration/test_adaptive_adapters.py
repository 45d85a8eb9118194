"""Adaptive best-of-N and budgets in the LangChain and LlamaIndex adapters.

LangChain generators are ``langchain_core``'s own fake chat models; LlamaIndex LLMs are
its ``MockLLM`` (which echoes the prompt: every answer is the same) and
:class:`ScriptedLLM`, a small ``CustomLLM`` answering from a list, because these tests
need different answers in a known order, which ``MockLLM`` cannot give. The scorer is the
table-driven :class:`ScriptedScorer` (round chain scores make the stopping points
hand-computable); one test runs the shipped default PRM.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

try:
    from langchain_core.language_models.fake_chat_models import (
        FakeListChatModel,
        FakeMessagesListChatModel,
    )
    from langchain_core.messages import AIMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from llama_index.core.base.llms.types import (
        ChatMessage,
        CompletionResponse,
        CompletionResponseGen,
        LLMMetadata,
    )
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.llms import CustomLLM, MockLLM
    from llama_index.core.llms.callbacks import llm_completion_callback
except ImportError:
    pytest.skip("these tests need the langchain and llamaindex extras",
                allow_module_level=True)

from prm_plugins import InvalidInputError, load_prm
from prm_plugins.adapters.langchain.adaptive import PRMAdaptiveBestOfN
from prm_plugins.adapters.langchain.middleware import PRMBestOfNMiddleware
from prm_plugins.adapters.langchain.runnables import PRMBeamSearch, PRMBestOfN, PRMSelfCritique
from prm_plugins.adapters.llamaindex.adaptive import PRMAdaptiveBestOfNLLM
from prm_plugins.adapters.llamaindex.llm import PRMBestOfNLLM
from prm_plugins.budget import Budget
from prm_plugins.strategies import RetryPolicy
from prm_plugins.strategies.adaptive import AdaptiveBestOfNResult

from support.scripted_scorer import ScriptedScorer

FAST = RetryPolicy.no_wait()
FIVE = "s1\nThe answer is 5."
SEVEN = "s2\nThe answer is 7."


def fake_llm(*responses: str) -> FakeListChatModel:
    return FakeListChatModel(responses=list(responses))


# -- LangChain --------------------------------------------------------------------------------


def test_langchain_adaptive_stops_when_decided_and_reports_it() -> None:
    ada = PRMAdaptiveBestOfN(generator=fake_llm(FIVE), prm=ScriptedScorer({}), max_n=8,
                             round_size=2, max_concurrency=1)
    msg = ada.invoke("What is 2 + 3?")
    assert isinstance(msg, AIMessage) and msg.text == FIVE
    report = msg.response_metadata["prm"]
    # rounds of 2: 2 vs 6 left, 4 vs 4 (a tie is not safe), 6 > 2
    assert report["samples_used"] == 6 and report["samples_saved"] == 2
    assert report["stopped_by"] == "decided" and report["answer"] == "5"
    assert report["result"]["rounds"][-1]["decided"] is True


def test_langchain_adaptive_draws_everything_while_undecided() -> None:
    ada = PRMAdaptiveBestOfN(generator=fake_llm(FIVE, SEVEN), prm=ScriptedScorer({"s1": 0.9}),
                             max_n=6, round_size=2, max_concurrency=1, return_result=True)
    r = ada.invoke("q")
    assert isinstance(r, AdaptiveBestOfNResult)
    assert r.samples_used == 6 and r.stopped_by == "max_n"
    assert r.answer == "7" and r.weights == pytest.approx({"5": 2.7, "7": 3.0})


def test_langchain_adaptive_in_a_chain_and_async() -> None:
    prompt = ChatPromptTemplate.from_template("{question}")
    chain = prompt | PRMAdaptiveBestOfN(generator=fake_llm(FIVE), prm=ScriptedScorer({}),
                                        max_n=4, round_size=2) | StrOutputParser()
    assert chain.invoke({"question": "What is 2 + 3?"}) == FIVE
    ada = PRMAdaptiveBestOfN(generator=fake_llm(FIVE, SEVEN, SEVEN), prm=ScriptedScorer({}),
                             max_n=6, round_size=3, max_concurrency=1, return_result=True)
    sync, other = ada.invoke("q"), asyncio.run(ada.ainvoke("q"))
    assert (other.answer, other.samples_used) == (sync.answer, sync.samples_used) == ("7", 6)


def test_langchain_adaptive_refuses_bad_options() -> None:
    with pytest.raises(InvalidInputError, match="round_size"):
        PRMAdaptiveBestOfN(generator=fake_llm(FIVE), prm=ScriptedScorer({}), max_n=2,
                           round_size=4)
    with pytest.raises(InvalidInputError, match="budget must be"):
        PRMAdaptiveBestOfN(generator=fake_llm(FIVE), prm=ScriptedScorer({}), budget=10)


def test_langchain_components_pass_the_budget_through() -> None:
    bon = PRMBestOfN(generator=fake_llm(FIVE, SEVEN), prm=ScriptedScorer({}), n=8,
                     budget=Budget(generator_calls=3), return_result=True).invoke("q")
    assert len(bon.candidates) == 3 and bon.budget is not None
    assert bon.budget.exhausted == "generator_calls"
    msg = PRMBestOfN(generator=fake_llm(FIVE), prm=ScriptedScorer({}), n=2,
                     budget=Budget()).invoke("q")
    assert msg.response_metadata["prm"]["result"]["budget"]["generator_calls"] == 2
    ada = PRMAdaptiveBestOfN(generator=fake_llm(FIVE, SEVEN), prm=ScriptedScorer({}), max_n=16,
                             budget=Budget(prm_calls=5), return_result=True).invoke("q")
    assert ada.samples_used == 5 and ada.stopped_by == "budget"
    critic = PRMSelfCritique(generator=fake_llm("s1\ns2 bad"), prm=ScriptedScorer(
        {"s2 bad": 0.1}), max_rounds=3, budget=Budget(generator_calls=2),
        return_result=True).invoke("q")
    assert critic.generator_calls == 2 and critic.budget.exhausted == "generator_calls"
    search = PRMBeamSearch(generator=fake_llm("a", "The answer is 1."), prm=ScriptedScorer({}),
                           n=2, beam_width=1, budget=Budget(generator_calls=2),
                           return_result=True).invoke("q")
    assert search.generator_calls == 2 and search.budget.generator_calls == 2


class ToolCallingFake(FakeMessagesListChatModel):
    """A scripted chat model that accepts bind_tools (create_agent binds the tools)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingFake:
        return self


def test_best_of_n_middleware_passes_the_budget_through() -> None:
    from langchain.agents import create_agent
    from langchain_core.callbacks import BaseCallbackHandler

    class Selected(BaseCallbackHandler):
        def __init__(self) -> None:
            self.data: list[Any] = []

        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            if name == "prm.candidate_selected":
                self.data.append(data)

    model = ToolCallingFake(responses=[AIMessage(SEVEN), AIMessage(FIVE), AIMessage(FIVE),
                                       AIMessage("unused")])
    agent = create_agent(model, tools=[], middleware=[PRMBestOfNMiddleware(
        prm=ScriptedScorer({}), n=4, max_concurrency=1, budget=Budget(generator_calls=3))])
    seen = Selected()
    messages = agent.invoke({"messages": [("user", "q")]}, {"callbacks": [seen]})["messages"]
    assert model.i == 3 and messages[-1].content == FIVE  # 3 calls: the budget, not n=4
    assert seen.data[0]["budget"]["generator_calls"] == 3
    assert seen.data[0]["budget"]["exhausted"] == "generator_calls"


def test_langchain_adaptive_with_the_shipped_prm() -> None:
    right = "16 - 3 - 4 = 9\n9 * 2 = 18\nThe answer is 18."
    ada = PRMAdaptiveBestOfN(generator=fake_llm(right), prm=load_prm(), max_n=16,
                             round_size=4, max_concurrency=1, return_result=True)
    r = ada.invoke("Janet's ducks lay 16 eggs a day. She eats 3 and bakes with 4. She sells "
                   "the rest at $2 each. How much does she make?")
    # the shipped PRM scores this chain about 0.48: unanimous votes decide after 12 of 16
    assert r.answer == "18" and r.stopped_by == "decided" and r.samples_used == 12


# -- LlamaIndex -------------------------------------------------------------------------------

_LOCK = threading.Lock()


class ScriptedLLM(CustomLLM):
    """A completion LLM answering from ``script`` in order (cycling); see the module doc."""

    script: list[str] = Field(default_factory=list)
    _count: int = PrivateAttr(default=0)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted-llm")

    @property
    def calls(self) -> int:
        return self._count

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        with _LOCK:
            k = self._count
            self._count += 1
        return CompletionResponse(text=self.script[k % len(self.script)], raw={"call": k})

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        response = self.complete(prompt, formatted=formatted, **kwargs)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=response.text, delta=response.text, raw=response.raw)

        return gen()


def test_llamaindex_adaptive_llm_stops_when_decided() -> None:
    inner = ScriptedLLM(script=[FIVE, FIVE, FIVE, SEVEN])
    llm = PRMAdaptiveBestOfNLLM(inner, ScriptedScorer({}), max_n=16, round_size=4,
                                max_concurrency=1)
    response = llm.complete("What is 2 + 3?")
    report = response.additional_kwargs["prm"]
    # per round +3 for "5", +1 for "7": margins 2, 4, 6 against 12, 8, 4 left
    assert report["stopped_by"] == "decided" and report["samples_used"] == 12
    assert report["samples_saved"] == 4 and inner.calls == 12
    assert report["answer"] == "5" and report["weights"] == {"5": 9.0, "7": 3.0}
    assert response.text == FIVE and response.raw == {"call": 0}  # the wrapped LLM's response
    assert [r["decided"] for r in report["rounds"]] == [False, False, True]
    assert llm.class_name() == "PRMAdaptiveBestOfNLLM"


def test_llamaindex_adaptive_llm_on_mock_llm_async_and_chat() -> None:
    # MockLLM echoes the prompt, so every answer is the question's own solution text
    llm = PRMAdaptiveBestOfNLLM(MockLLM(), ScriptedScorer({}), max_n=5, round_size=3)
    response = asyncio.run(llm.acomplete("2 + 3 = 5\nThe answer is 5."))
    report = response.additional_kwargs["prm"]
    assert report["samples_used"] == 3 and report["stopped_by"] == "decided"  # 3 > 2 left
    chat = PRMAdaptiveBestOfNLLM(ScriptedLLM(script=[SEVEN]), ScriptedScorer({}), max_n=4,
                                 round_size=2).chat([ChatMessage(role="user", content="q?")])
    assert chat.message.content == SEVEN
    assert chat.additional_kwargs["prm"]["samples_used"] == 4  # 2 vs 2 left, then all drawn


def test_llamaindex_budget_pass_through() -> None:
    inner = ScriptedLLM(script=[FIVE, SEVEN])
    llm = PRMAdaptiveBestOfNLLM(inner, ScriptedScorer({}), max_n=16, round_size=4,
                                budget=Budget(generator_calls=6), max_concurrency=1)
    report = llm.complete("q").additional_kwargs["prm"]
    assert report["samples_used"] == 6 and report["stopped_by"] == "budget"
    assert report["budget"]["exhausted"] == "generator_calls" and inner.calls == 6
    bon = PRMBestOfNLLM(ScriptedLLM(script=[FIVE]), ScriptedScorer({}), n=4,
                        budget=Budget(generator_calls=2))
    assert bon.complete("q").additional_kwargs["prm"]["budget"]["generator_calls"] == 2
    plain = PRMBestOfNLLM(ScriptedLLM(script=[FIVE]), ScriptedScorer({}), n=2)
    assert plain.complete("q").additional_kwargs["prm"]["budget"] is None
    with pytest.raises(InvalidInputError, match="budget must be"):
        PRMBestOfNLLM(ScriptedLLM(script=[FIVE]), ScriptedScorer({}), budget="small")
    with pytest.raises(InvalidInputError, match="confidence"):
        PRMAdaptiveBestOfNLLM(ScriptedLLM(script=[FIVE]), ScriptedScorer({}), confidence=2)
