"""LlamaIndex adapters: best-of-N LLM, step evaluator, self-critique workflow, agent runner.

The PRM is a real :class:`~prm_plugins.runtime.OnnxPRM` running the hand-built contract
graph of ``graph_models`` (milliseconds per call), so every expected choice, pass/fail and
feedback below is computed independently from the graph's formula (``reference``), never
read back from the adapter. One test runs the tiny *exported* token classifier of the
conftest fixtures end to end, and one runs the shipped default PRM when it is installed.

LLMs are LlamaIndex's own ``MockLLM`` and ``MockFunctionCallingLLM`` (scripted through its
``response_generator``) and :class:`ScriptedLLM`, a small ``CustomLLM`` defined here that
answers from a fixed list: MockLLM only echoes its prompt, and these tests need chosen
answers (good and bad solutions in a known order), failures (exceptions) and a record of
the prompts and keyword arguments each call received. For agents, ReAct-format text from
ScriptedLLM drives ``ReActAgent``; ``MockFunctionCallingLLM`` drives ``FunctionAgent`` and
``AgentWorkflow``, including a real tool call.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

try:
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.agent.workflow import (
        AgentWorkflow,
        FunctionAgent,
        ReActAgent,
    )
    from llama_index.core.base.llms.types import (
        ChatMessage,
        CompletionResponse,
        CompletionResponseGen,
        LLMMetadata,
        ToolCallBlock,
    )
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.chat_engine import SimpleChatEngine
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.evaluation import BatchEvalRunner, EvaluationResult
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events import BaseEvent
    from llama_index.core.llms import CustomLLM, MockLLM
    from llama_index.core.llms.callbacks import llm_completion_callback
    from llama_index.core.llms.mock import MockFunctionCallingLLM
    from llama_index.core.query_engine import RetryQueryEngine
    from llama_index.core.workflow import Context
except ImportError:
    pytest.skip("the LlamaIndex adapter tests need the llamaindex extra: "
                "pip install 'prm-plugins[llamaindex]'", allow_module_level=True)

import prm_plugins.adapters.llamaindex as li
from prm_plugins import ChainTooLongError, InvalidInputError, load_prm
from prm_plugins.adapters.llamaindex import (
    AnswersTooLongError,
    CritiqueRoundEvent,
    LlamaIndexGenerator,
    PRMBestOfNLLM,
    PRMCandidateSelectedEvent,
    PRMEvaluationResult,
    PRMSelfCritiqueWorkflow,
    PRMStepEvaluator,
    PRMStepsScoredEvent,
    PRMVerificationFailedEvent,
    PRMVerifiedAgentRunner,
    original_question,
)
from prm_plugins.runtime import OnnxPRM
from prm_plugins.steps import split_steps
from prm_plugins.strategies import (
    AllCandidatesFailedError,
    RetryPolicy,
    SelfCritique,
    build_revision_prompt,
)

from support.graph_models import make_model_dir, reference_probs
from support.paths import ROOT

Q = "w1 w2 + w3 = ?"
#: Step 2 fails (about 0.46); chain min about 0.46.
BAD = "w14 = w15\nw7 w7 w9 = 6"
#: One passing step (about 0.58).
OK = "w16 w17 = 9"
#: Two passing steps, min about 0.60: the best of BAD / OK / BEST under "min".
BEST = "w14 = w15\nw16 w17 = 9"
#: Both steps high (about 0.72, 0.74).
HIGH = "w36 w34 = 3\nw2 = 2"
#: Step 1 is the first under 0.5 (about 0.46), step 2 the weakest (about 0.31).
TWO_FAIL = "w7 w9 = 6\nw7 w7 w7 w35 w4 = 9"
FAST = RetryPolicy.no_wait()
REACT_DONE = "Thought: I can answer without using any more tools.\nAnswer: "


# -- PRM and reference scores ----------------------------------------------------------------


@pytest.fixture(scope="module")
def prm(tmp_path_factory: pytest.TempPathFactory) -> OnnxPRM:
    return load_prm(make_model_dir(tmp_path_factory.mktemp("li") / "graph"), device="cpu")


def steps_of(text: str) -> list[str]:
    return [s for s in split_steps(text) if s.strip()]


def reference(prm: OnnxPRM, text: str, question: str = Q) -> list[float]:
    """Per-step scores computed by hand from the graph's formula (no ONNX Runtime)."""
    r = prm.format.render(question, steps_of(text))
    probs = reference_probs(r.input_ids)
    return [float(probs[p]) for p in r.step_positions]


def ref_min(prm: OnnxPRM, text: str, question: str = Q) -> float:
    return min(reference(prm, text, question))


def test_reference_data_is_what_the_tests_assume(prm: OnnxPRM) -> None:
    bad, ok, best, high, two = (reference(prm, t) for t in (BAD, OK, BEST, HIGH, TWO_FAIL))
    assert bad[0] >= 0.5 > bad[1]
    assert min(bad) < min(ok) < min(best) < 0.7 <= min(high)
    assert two[0] < 0.5 and two[1] < two[0]  # first failing step 1, weakest step 2


# -- LLMs and events -------------------------------------------------------------------------


#: Guards ScriptedLLM counters (module level: a lock attribute could not be deep-copied).
_LOCK = threading.Lock()


class ScriptedLLM(CustomLLM):
    """A completion LLM answering from ``script`` in order (cycling); see the module doc.

    An entry that is an exception instance is raised instead. ``prompts`` and ``kwargs``
    record every call; each response's ``raw`` says which script entry it came from.
    """

    script: list[Any] = Field(default_factory=list)
    chat_model: bool = False
    model: str = "scripted-llm"
    prompts: list[str] = Field(default_factory=list)
    kwargs: list[dict[str, Any]] = Field(default_factory=list)
    _count: int = PrivateAttr(default=0)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=self.chat_model, model_name=self.model,
                           context_window=2048, num_output=77)

    @property
    def calls(self) -> int:
        return self._count

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        with _LOCK:
            k = self._count
            self._count += 1
            self.prompts.append(prompt)
            self.kwargs.append(dict(kwargs))
        entry = self.script[k % len(self.script)]
        if isinstance(entry, BaseException):
            raise entry
        return CompletionResponse(text=entry, raw={"entry": k % len(self.script)})

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        response = self.complete(prompt, formatted=formatted, **kwargs)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=response.text, delta=response.text, raw=response.raw)

        return gen()


class EventCollector(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)

    def of(self, cls: type[BaseEvent]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


@pytest.fixture()
def events() -> Iterator[EventCollector]:
    """Collects every instrumentation event (root dispatcher) during one test."""
    root = get_dispatcher()
    handler = EventCollector()
    root.add_event_handler(handler)
    try:
        yield handler
    finally:
        root.event_handlers.remove(handler)


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="Solve step by step."),
            ChatMessage(role="user", content=text)]


# -- package ---------------------------------------------------------------------------------


def test_import_without_llama_index_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['llama_index'] = None; sys.modules['llama_index.core'] = None\n"
        "try:\n"
        "    import prm_plugins.adapters.llamaindex\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, '|', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("MissingExtraError |")
    assert 'pip install "prm-plugins[llamaindex]"' in out


def test_public_api_is_pinned() -> None:
    assert sorted(li.__all__) == sorted([
        "DEFAULT_FEEDBACK_TEMPLATE", "PRM_KWARGS_KEY", "AgentRound", "AnswersTooLongError",
        "CritiqueRoundEvent", "LLMJudgePRM",
        "LlamaIndexGenerator", "PRMAdaptiveBestOfNLLM", "PRMBestOfNLLM",
        "PRMCandidateSelectedEvent",
        "PRMEvaluationResult", "PRMSelfCritiqueWorkflow", "PRMStepEvaluator",
        "PRMStepsScoredEvent", "PRMVerificationFailedEvent", "PRMVerifiedAgentRunner",
        "ReviseEvent", "SelfCritiqueStartEvent", "VerifiedAgentResult", "VerifyEvent",
        "original_question",
    ])
    for name in li.__all__:
        assert hasattr(li, name), name
    for cls in (PRMStepsScoredEvent, PRMCandidateSelectedEvent, PRMVerificationFailedEvent):
        assert issubclass(cls, BaseEvent)


# -- LlamaIndexGenerator ---------------------------------------------------------------------


def test_generator_completes_or_chats_by_model_kind() -> None:
    echo = LlamaIndexGenerator(MockLLM())  # completion model: prompt goes to complete()
    assert echo.use_chat is False
    assert echo.sample("w1 = 1", 2) == ["w1 = 1", "w1 = 1"]

    chat = ScriptedLLM(script=[BEST], chat_model=True)
    gen = LlamaIndexGenerator(chat, system_prompt="Be brief.", llm_kwargs={"seed": 7})
    assert gen.use_chat is True
    assert asyncio.run(gen.asample(Q, 3)) == [BEST] * 3
    # CustomLLM.chat renders the messages into one prompt: the system and user turns.
    assert chat.calls == 3
    assert "Be brief." in chat.prompts[0] and Q in chat.prompts[0]
    assert chat.kwargs[0]["seed"] == 7

    forced = LlamaIndexGenerator(chat, mode="complete")
    forced.sample(Q, 1)
    assert chat.prompts[-1] == Q  # complete(): the bare prompt, no chat rendering


def test_generator_proposes_one_clean_next_step() -> None:
    llm = ScriptedLLM(script=["Step 2: w16 w17 = 9\nStep 3: w2 = 2", "**Step 2.** w2 = 2", ""])
    gen = LlamaIndexGenerator(llm)
    assert gen.propose_next_steps(Q, ["w14 = w15"], 3) == ["w16 w17 = 9", "w2 = 2", ""]
    assert "Steps so far:\nStep 1: w14 = w15" in llm.prompts[0]
    assert "Write only step 2" in llm.prompts[0]
    assert asyncio.run(gen.apropose_next_steps(Q, [], 1)) == ["w16 w17 = 9"]


def test_generator_rejects_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="must be a LlamaIndex LLM.*received str"):
        LlamaIndexGenerator("gpt-4o")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="mode must be"):
        LlamaIndexGenerator(MockLLM(), mode="stream")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="n must be an int >= 1, got 0"):
        LlamaIndexGenerator(MockLLM()).sample("q", 0)


# -- PRMBestOfNLLM ---------------------------------------------------------------------------


def test_best_of_n_complete_returns_the_best_with_scores_and_events(
    prm: OnnxPRM, events: EventCollector
) -> None:
    inner = ScriptedLLM(script=[BAD, OK, BEST, OK])
    llm = PRMBestOfNLLM(inner, prm, n=4, max_concurrency=1)
    response = llm.complete(Q, temperature=0.9)

    expected = [ref_min(prm, t) for t in (BAD, OK, BEST, OK)]
    assert max(range(4), key=expected.__getitem__) == 2
    assert response.text == BEST
    assert response.raw == {"entry": 2}  # the wrapped LLM's own response for that answer
    assert inner.calls == 4 and inner.prompts == [Q] * 4
    assert all(k["temperature"] == 0.9 for k in inner.kwargs)  # caller kwargs pass through
    report = response.additional_kwargs["prm"]
    assert report["index"] == 2 and report["n"] == 4 and report["failed"] == 0
    assert report["score"] == pytest.approx(expected[2], abs=1e-5)
    assert report["candidate_scores"] == pytest.approx(expected, abs=1e-5)
    assert report["steps"] == steps_of(BEST)
    assert report["step_scores"] == pytest.approx(reference(prm, BEST), abs=1e-5)
    assert report["aggregate"] == "min" and report["stopped_early"] is False

    scored = [e for e in events.of(PRMStepsScoredEvent) if e.source == "best_of_n_llm"]
    assert sorted(e.index for e in scored) == [0, 1, 2, 3]
    assert {e.index: e.score for e in scored}[0] == pytest.approx(expected[0], abs=1e-5)
    (selected,) = events.of(PRMCandidateSelectedEvent)
    assert (selected.index, selected.n, selected.text, selected.question) == (2, 4, BEST, Q)
    assert selected.candidate_scores == pytest.approx(expected, abs=1e-5)


def test_best_of_n_chat_async_and_streaming_forms(prm: OnnxPRM) -> None:
    def wrapped() -> PRMBestOfNLLM:
        return PRMBestOfNLLM(ScriptedLLM(script=[OK, BEST, BAD]), prm, n=3)

    chat = wrapped().chat(user(Q))
    assert chat.message.content == BEST
    assert chat.additional_kwargs["prm"]["score"] == pytest.approx(ref_min(prm, BEST), abs=1e-5)

    llm = wrapped()
    achat = asyncio.run(llm.achat(user(Q)))
    assert achat.message.content == BEST
    # the PRM's question is the last user message, not the system prompt
    assert all("Solve step by step." in p for p in llm.llm.prompts)  # type: ignore[attr-defined]

    chunks = list(wrapped().stream_complete(Q))
    assert [c.delta for c in chunks] == [BEST]

    async def astream() -> list[str]:
        gen = await wrapped().astream_chat(user(Q))
        return [c.delta or "" async for c in gen]

    assert asyncio.run(astream()) == [BEST]
    acomplete = asyncio.run(wrapped().acomplete(Q))
    assert acomplete.text == BEST

    engine = SimpleChatEngine.from_defaults(llm=wrapped())  # drop-in for a chat engine
    assert str(engine.chat(Q)) == BEST


def test_best_of_n_metadata_passes_through_except_function_calling(prm: OnnxPRM) -> None:
    inner = ScriptedLLM(script=[OK], chat_model=True, model="my-model", system_prompt="Sys.")
    meta = PRMBestOfNLLM(inner, prm).metadata
    assert (meta.model_name, meta.is_chat_model, meta.context_window, meta.num_output) == (
        "my-model", True, 2048, 77)
    llm = PRMBestOfNLLM(inner, prm)
    assert llm.system_prompt == "Sys."  # prompt settings copied, so predict() formats alike
    assert MockFunctionCallingLLM().metadata.is_function_calling_model is True
    assert PRMBestOfNLLM(MockFunctionCallingLLM(), prm).metadata.is_function_calling_model is False


def test_best_of_n_llm_serializes_and_deep_copies(prm: OnnxPRM) -> None:
    def worst(scores: Sequence[float]) -> float:
        return min(scores)

    inner = ScriptedLLM(script=[OK, BEST])
    llm = PRMBestOfNLLM(inner, prm, n=2, aggregate=worst)
    dumped = json.loads(llm.to_json())
    assert dumped["class_name"] == "PRMBestOfNLLM" and dumped["n"] == 2
    assert dumped["aggregate"] == "worst" and "prm" not in dumped
    assert dumped["llm"]["script"] == [OK, BEST]
    twin = copy.deepcopy(llm)
    assert twin.prm is prm and twin.llm is not inner  # the ONNX session is shared
    assert twin.complete(Q).text == BEST


def test_best_of_n_stops_early_at_the_threshold(prm: OnnxPRM, events: EventCollector) -> None:
    inner = ScriptedLLM(script=[BAD, HIGH, BEST, OK])
    response = PRMBestOfNLLM(inner, prm, n=4, threshold=0.7, max_concurrency=1).complete(Q)
    assert response.text == HIGH
    assert inner.calls == 2  # rounds of max_concurrency=1: stopped after the 2nd answer
    report = response.additional_kwargs["prm"]
    assert report["stopped_early"] is True and report["n"] == 2
    assert events.of(PRMCandidateSelectedEvent)[0].stopped_early is True


def test_best_of_n_survives_a_failed_candidate_and_reports_it(prm: OnnxPRM) -> None:
    inner = ScriptedLLM(script=[BEST, ConnectionError("reset"), OK])
    llm = PRMBestOfNLLM(inner, prm, n=3, max_concurrency=1,
                        retry=RetryPolicy.no_wait(max_attempts=1))
    report = llm.complete(Q).additional_kwargs["prm"]
    assert report["failed"] == 1 and report["candidate_scores"][1] is None
    assert report["index"] == 0

    retried = ScriptedLLM(script=[TimeoutError("slow"), BEST])
    text = PRMBestOfNLLM(retried, prm, n=1, retry=FAST).complete(Q).text
    assert text == BEST and retried.calls == 2  # the transient error was retried

    broken = ScriptedLLM(script=[ConnectionError("down")])
    with pytest.raises(AllCandidatesFailedError, match="all 2 candidates failed"):
        PRMBestOfNLLM(broken, prm, n=2, retry=RetryPolicy.no_wait(max_attempts=2)).complete(Q)


def test_best_of_n_question_fn_for_templated_prompts(prm: OnnxPRM) -> None:
    template = "Context: " + "w5 " * 80 + "\nQuestion: {q}\nAnswer:"
    inner = ScriptedLLM(script=[BAD, BEST])

    def question(prompt: str) -> str:
        return prompt.split("Question: ", 1)[1].split("\nAnswer:", 1)[0]

    too_long = PRMBestOfNLLM(inner, prm, n=2, retry=FAST)
    # the whole prompt is over max_length 64: a length error, reported as one, not retried
    with pytest.raises(AnswersTooLongError,
                       match="too long for the PRM .* nothing was retried"):
        too_long.complete(template.format(q=Q))
    assert inner.calls == 2
    fitted = PRMBestOfNLLM(inner, prm, n=2, retry=FAST, question_fn=question)
    response = fitted.complete(template.format(q=Q))
    assert response.text == BEST
    assert response.additional_kwargs["prm"]["score"] == pytest.approx(ref_min(prm, BEST),
                                                                        abs=1e-5)


# -- PRMBestOfNLLM in a standard RAG query engine ---------------------------------------------

#: Documents for a VectorStoreIndex; with LlamaIndex's default QA template the prompt is far
#: over the graph PRM's max_length of 64 tokens, the query alone (Q) is not.
DOCS = [
    "The numbers w1 and w2 are added in the first step of every solution. " * 4,
    "The answer is always written on its own line after the last step. " * 4,
    "Step tags separate the steps of a chain of reasoning. " * 4,
]


def rag_engine(llm: Any, **kwargs: Any) -> Any:
    """The standard way: an index over a few documents, the default QA template."""
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS],
                                            embed_model=MockEmbedding(embed_dim=8))
    return index.as_query_engine(llm=llm, **kwargs)


@pytest.mark.parametrize("chat_model", [False, True])
def test_best_of_n_llm_in_a_rag_query_engine_scores_against_the_query(
    prm: OnnxPRM, events: EventCollector, chat_model: bool
) -> None:
    inner = ScriptedLLM(script=[BAD, BEST, OK], chat_model=chat_model)
    engine = rag_engine(PRMBestOfNLLM(inner, prm, n=3, max_concurrency=1))
    response = engine.query(Q)
    assert str(response) == BEST
    assert inner.calls == 3
    # the LLM saw the whole prompt (retrieved context + query); the PRM saw the query only
    assert all("Context information is below" in p and Q in p for p in inner.prompts)
    assert all(len(p) > 300 for p in inner.prompts)
    (selected,) = events.of(PRMCandidateSelectedEvent)
    assert selected.question == Q
    assert selected.candidate_scores == pytest.approx(
        [ref_min(prm, t) for t in (BAD, BEST, OK)], abs=1e-5)


def test_best_of_n_llm_in_async_and_streaming_query_engines(prm: OnnxPRM) -> None:
    inner = ScriptedLLM(script=[BAD, BEST])
    response = asyncio.run(rag_engine(PRMBestOfNLLM(inner, prm, n=2)).aquery(Q))
    assert str(response) == BEST
    streaming = rag_engine(PRMBestOfNLLM(ScriptedLLM(script=[BAD, BEST]), prm, n=2),
                           streaming=True)
    assert "".join(streaming.query(Q).response_gen) == BEST


def test_best_of_n_llm_wraps_mock_llm_in_a_query_engine(prm: OnnxPRM) -> None:
    # MockLLM(max_tokens=k) answers k words: short answers, scored against the query.
    llm = PRMBestOfNLLM(MockLLM(max_tokens=5), prm, n=2)
    assert str(rag_engine(llm).query(Q)) == "text text text text text"
    # MockLLM() echoes its prompt: answers as long as the prompt are a length problem,
    # reported as one (not "all candidates failed ... retried"), and sampled only n times.
    echo = PRMBestOfNLLM(MockLLM(), prm, n=2, retry=FAST)
    with pytest.raises(AnswersTooLongError) as info:
        rag_engine(echo).query(Q)  # not swallowed into "Empty Response" by the synthesizer
    assert isinstance(info.value, AllCandidatesFailedError)
    assert all(isinstance(c, ChainTooLongError) for c in info.value.causes)
    assert info.value.max_length == 64 and info.value.n_tokens > 64
    message = str(info.value)
    assert "none of the 2 answers could be scored" in message
    assert "over the model's max_length of 64" in message and "nothing was retried" in message
    assert f"question scored was {len(Q)} characters" in message
    assert "long_chains='window'" in message and "question_fn=" in message


def test_best_of_n_llm_finds_the_query_in_a_formatted_default_prompt(prm: OnnxPRM) -> None:
    from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT

    from prm_plugins.adapters.llamaindex.llm import query_from_prompt

    prompt = DEFAULT_TEXT_QA_PROMPT.format(context_str="\n".join(DOCS), query_str=Q)
    assert query_from_prompt(prompt) == Q
    assert query_from_prompt("Query: not a template") is None
    response = PRMBestOfNLLM(ScriptedLLM(script=[BAD, BEST]), prm, n=2).complete(prompt)
    assert response.text == BEST and response.additional_kwargs["prm"]["question"] == Q


def test_best_of_n_llm_default_is_the_weighted_vote_when_answers_are_stated(
    prm: OnnxPRM,
) -> None:
    # Under the graph PRM, BEST > OK > BAD; BAD and OK state the same answer (7), which
    # together outweighs BEST's (5): the default votes, top_score is one argument away.
    bad, ok, best = BAD + "\nThe answer is 7.", OK + "\nThe answer is 7.", \
        BEST + "\nThe answer is 5."
    scores = [ref_min(prm, t) for t in (bad, ok, best)]
    assert scores[0] + scores[1] > scores[2] > max(scores[:2])
    voted = PRMBestOfNLLM(ScriptedLLM(script=[bad, ok, best]), prm, n=3,
                          max_concurrency=1).complete(Q)
    report = voted.additional_kwargs["prm"]
    assert voted.text == ok and report["selection"] == "weighted_vote"
    assert report["answer"] == "7"
    assert report["votes"] == pytest.approx({"7": scores[0] + scores[1], "5": scores[2]},
                                            abs=1e-5)
    top = PRMBestOfNLLM(ScriptedLLM(script=[bad, ok, best]), prm, n=3, max_concurrency=1,
                        selection="top_score").complete(Q)
    assert top.text == best and top.additional_kwargs["prm"]["selection"] == "top_score"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be an int >= 1"),
        ({"aggregate": "max"}, "unknown aggregate 'max'"),
        ({"threshold": 2}, "threshold must be a number in \\[0, 1\\], got 2"),
        ({"question_fn": "last"}, "question_fn must be a callable"),
    ],
)
def test_best_of_n_rejects_bad_options(prm: OnnxPRM, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        PRMBestOfNLLM(ScriptedLLM(script=[OK]), prm, **kwargs)


def test_best_of_n_rejects_a_non_llm_and_an_empty_question(prm: OnnxPRM) -> None:
    with pytest.raises(InvalidInputError, match="llm must be a LlamaIndex LLM"):
        PRMBestOfNLLM(object(), prm)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="needs a question"):
        PRMBestOfNLLM(ScriptedLLM(script=[OK]), prm).complete("   ")
    # without a user message, the rendered conversation is the question
    no_user = PRMBestOfNLLM(ScriptedLLM(script=[OK]), prm, n=1)
    response = no_user.chat([ChatMessage(role="system", content=Q)])
    assert response.message.content == OK


def test_best_of_n_llm_drives_a_react_agent(prm: OnnxPRM, events: EventCollector) -> None:
    answers = [REACT_DONE + BAD, REACT_DONE + BEST, REACT_DONE + OK]
    inner = ScriptedLLM(script=answers, chat_model=True)
    agent = ReActAgent(tools=[], llm=PRMBestOfNLLM(inner, prm, n=3))

    async def main() -> Any:
        return await agent.run(user_msg=Q)

    output = asyncio.run(main())
    assert inner.calls == 3
    # the PRM ranked the whole ReAct turns (question = the user message)
    ranked = [min(reference(prm, a)) for a in answers]
    assert max(range(3), key=ranked.__getitem__) == 1
    assert str(output) == BEST
    assert events.of(PRMCandidateSelectedEvent)[0].question == Q


# -- PRMStepEvaluator ------------------------------------------------------------------------


def test_evaluator_passes_fails_and_names_the_weakest_step(
    prm: OnnxPRM, events: EventCollector
) -> None:
    evaluator = PRMStepEvaluator(prm)
    good = evaluator.evaluate(query=Q, response=BEST)
    assert isinstance(good, EvaluationResult) and isinstance(good, PRMEvaluationResult)
    assert good.passing is True and good.flagged_step is None
    assert good.score == pytest.approx(ref_min(prm, BEST), abs=1e-5)
    assert good.feedback.startswith("All 2 steps look right")

    exp = reference(prm, TWO_FAIL)
    weak = evaluator.evaluate(query=Q, response=TWO_FAIL)
    assert weak.passing is False and weak.flagged_step == 1
    assert weak.step_scores == pytest.approx(exp, abs=1e-5)
    assert weak.feedback.startswith('Step 2 of 2 looks wrong: "w7 w7 w7 w35 w4 = 9" scores '
                                    f"{exp[1]:.2f}")
    first = PRMStepEvaluator(prm, flag="first_failing").evaluate(query=Q, response=TWO_FAIL)
    assert first.flagged_step == 0 and first.feedback.startswith("Step 1 of 2 looks wrong")

    assert asyncio.run(evaluator.aevaluate(query=Q, response=TWO_FAIL)) == weak

    failed = [e for e in events.of(PRMVerificationFailedEvent) if e.source == "evaluator"]
    assert [e.flagged_step for e in failed] == [1, 0, 1]
    assert failed[0].feedback == weak.feedback
    assert len([e for e in events.of(PRMStepsScoredEvent) if e.source == "evaluator"]) == 4


def test_evaluator_handles_empty_responses_and_missing_queries(prm: OnnxPRM) -> None:
    evaluator = PRMStepEvaluator(prm)
    empty = evaluator.evaluate(query=Q, response="  \n ")
    assert empty.passing is False and empty.invalid_result is True and empty.score == 0.0
    assert "empty" in (empty.feedback or "")
    assert evaluator.evaluate(query=Q, response=None).invalid_result is True
    with pytest.raises(InvalidInputError, match="needs the query"):
        evaluator.evaluate(response=BEST)
    with pytest.raises(InvalidInputError, match="flag must be"):
        PRMStepEvaluator(prm, flag="last")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="threshold must be a number"):
        PRMStepEvaluator(prm, threshold=-1)
    with pytest.raises(InvalidInputError, match="prm must be a StepScorer"):
        PRMStepEvaluator("default")  # type: ignore[arg-type]


def test_original_question_undoes_retry_query_nesting() -> None:
    once = ("Here is a previous bad answer.\nx\nHere is some feedback from the evaluator about "
            "the response given.\ny\nNow answer the question.\n" + Q)
    twice = "Here is a previous bad answer.\nz\nNow answer the question.\n" + once
    assert original_question(once) == Q and original_question(twice) == Q
    assert original_question(Q) == Q
    assert original_question("Now answer the question.\n") == "Now answer the question.\n"


@pytest.fixture()
def settings_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    """FeedbackQueryTransformation reads Settings.llm (OpenAI by default): use MockLLM."""
    monkeypatch.setattr(Settings, "_llm", MockLLM())


def query_engine(llm: Any) -> Any:
    docs = [Document(text="w1 w2 w3 w14 w15 w16 w17")]
    index = VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))
    return index.as_query_engine(llm=llm)


def test_evaluator_inside_retry_query_engine(
    prm: OnnxPRM, events: EventCollector, settings_llm: None
) -> None:
    llm = ScriptedLLM(script=[BAD, BEST])
    engine = RetryQueryEngine(query_engine(llm), PRMStepEvaluator(prm), max_retries=2)
    response = engine.query(Q)

    assert str(response) == BEST
    assert llm.calls == 2  # BAD failed the check, the retry answered BEST, which passed
    bad_feedback = 'Step 2 of 2 looks wrong: "w7 w7 w9 = 6"'
    assert bad_feedback not in llm.prompts[0]
    assert bad_feedback in llm.prompts[1] and BAD in llm.prompts[1]  # the retry saw both
    scored = [e for e in events.of(PRMStepsScoredEvent) if e.source == "evaluator"]
    assert [e.question for e in scored] == [Q, Q]  # the retry query was reduced to Q
    assert [e.passed for e in scored] == [False, True]
    assert len(events.of(PRMVerificationFailedEvent)) == 1


def test_retry_query_engine_stops_after_max_retries(
    prm: OnnxPRM, settings_llm: None
) -> None:
    llm = ScriptedLLM(script=[BAD])
    response = RetryQueryEngine(query_engine(llm), PRMStepEvaluator(prm), max_retries=2).query(Q)
    assert str(response) == BAD and llm.calls == 3


def test_evaluator_inside_batch_eval_runner(prm: OnnxPRM) -> None:
    runner = BatchEvalRunner({"prm": PRMStepEvaluator(prm)}, workers=2)
    texts = [BAD, OK, BEST, TWO_FAIL]
    results = runner.evaluate_response_strs(queries=[Q] * 4, response_strs=texts)["prm"]
    assert [r.passing for r in results] == [ref_min(prm, t) >= 0.5 for t in texts]
    assert [r.passing for r in results] == [False, True, True, False]
    assert [r.score for r in results] == pytest.approx([ref_min(prm, t) for t in texts],
                                                       abs=1e-5)
    assert [r.response for r in results] == texts


# -- PRMSelfCritiqueWorkflow -----------------------------------------------------------------


def run_workflow(wf: PRMSelfCritiqueWorkflow, **kwargs: Any) -> tuple[Any, list[Any]]:
    async def main() -> tuple[Any, list[Any]]:
        handler = wf.run(**kwargs)
        streamed = [ev async for ev in handler.stream_events()
                    if isinstance(ev, CritiqueRoundEvent)]
        return await handler, streamed

    return asyncio.run(main())


def test_workflow_revises_from_the_flagged_step_like_the_core(
    prm: OnnxPRM, events: EventCollector
) -> None:
    script = [BAD, "w16 w17 = 9"]
    llm = ScriptedLLM(script=script)
    result, streamed = run_workflow(PRMSelfCritiqueWorkflow(llm, prm, max_rounds=2),
                                    question=Q)

    bad_scores = reference(prm, BAD)
    feedback = (f'Step 2 of 2 looks wrong: "w7 w7 w9 = 6" scores {bad_scores[1]:.2f}, below '
                "the threshold 0.50. Keep step 1 and redo the solution from step 2.")
    assert llm.prompts == [Q, build_revision_prompt(Q, ["w14 = w15"], feedback)]
    assert result.passed and result.steps == steps_of(BEST) and result.revisions == 1
    assert result.verdict.score == pytest.approx(ref_min(prm, BEST), abs=1e-5)
    assert [r.kept_steps for r in result.history] == [0, 1]
    assert result.history[1].feedback == feedback

    core = SelfCritique(LlamaIndexGenerator(ScriptedLLM(script=script)), prm,
                        max_rounds=2).run(Q)
    assert result.to_dict() == core.to_dict()

    assert [(e.round, e.passed, e.feedback) for e in streamed] == [(0, False, feedback),
                                                                    (1, True, None)]
    (failed,) = events.of(PRMVerificationFailedEvent)
    assert (failed.source, failed.round, failed.flagged_step, failed.will_retry) == (
        "self_critique", 0, 1, True)
    assert failed.feedback == feedback


def test_workflow_stops_after_max_rounds_and_returns_the_best(prm: OnnxPRM) -> None:
    llm = ScriptedLLM(script=[TWO_FAIL, "w7 w7 w9 = 6", "w7 w35 = 6"])
    wf = PRMSelfCritiqueWorkflow(llm, prm, max_rounds=2, redo_from="weakest")
    result, streamed = run_workflow(wf, question=Q)
    assert llm.calls == 3 and len(result.history) == 3 and not result.passed
    scores = [r.verdict.score for r in result.history]
    assert result.verdict.score == max(scores)
    assert result.history[1].kept_steps == 1  # "weakest" redoes from step 2, keeping step 1
    assert [e.round for e in streamed] == [0, 1, 2]
    assert streamed[-1].feedback is None  # no revision follows the last round

    core = SelfCritique(LlamaIndexGenerator(ScriptedLLM(script=llm.script)), prm,
                        max_rounds=2, redo_from="weakest").run(Q)
    assert result.to_dict() == core.to_dict()


def test_workflow_critiques_a_given_solution_and_survives_a_failed_revision(
    prm: OnnxPRM
) -> None:
    llm = ScriptedLLM(script=[ConnectionError("down"), "w16 w17 = 9"])
    wf = PRMSelfCritiqueWorkflow(llm, prm, max_rounds=2,
                                 retry=RetryPolicy.no_wait(max_attempts=1))
    result, streamed = run_workflow(wf, question=Q, solution=BAD)
    assert llm.calls == 2  # no generation for round 0; round 1 failed, round 2 revised
    assert result.history[1].error == "ConnectionError: down"
    assert result.history[0].generated is None
    assert result.passed and result.steps == steps_of(BEST)
    assert [(e.round, e.error is not None) for e in streamed] == [(0, False), (1, True),
                                                                  (2, False)]


def test_workflow_raises_when_the_first_solution_cannot_be_generated(prm: OnnxPRM) -> None:
    wf = PRMSelfCritiqueWorkflow(ScriptedLLM(script=[""]), prm, retry=FAST)
    with pytest.raises(AllCandidatesFailedError, match="first solution could not be generated"):
        run_workflow(wf, question=Q)
    with pytest.raises(InvalidInputError, match="max_rounds must be an int >= 0"):
        PRMSelfCritiqueWorkflow(ScriptedLLM(script=[OK]), prm, max_rounds=-1)
    with pytest.raises(InvalidInputError, match="llm must be a LlamaIndex LLM"):
        PRMSelfCritiqueWorkflow(None, prm)  # type: ignore[arg-type]


# -- PRMVerifiedAgentRunner ------------------------------------------------------------------


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def scripted_function_llm(script: Sequence[Any], seen: list[list[Any]]) -> MockFunctionCallingLLM:
    """MockFunctionCallingLLM answering from ``script`` (ChatMessage or text), in order."""
    entries = iter(script)

    def respond(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        seen.append([(m.role.value, m.content) for m in messages])
        entry = next(entries)
        return entry if isinstance(entry, ChatMessage) else ChatMessage(role="assistant",
                                                                        content=entry)

    return MockFunctionCallingLLM(response_generator=respond)


def tool_call() -> ChatMessage:
    return ChatMessage(role="assistant", blocks=[
        ToolCallBlock(tool_call_id="call-1", tool_name="add", tool_kwargs={"a": 2, "b": 3})])


#: A reused Context warns that it skips the agent's memory; the runner hands it back.
MEMORY_WARNING = pytest.mark.filterwarnings(
    "ignore::workflows.context.state_store.UnserializableKeyWarning")


def run_agent(runner: PRMVerifiedAgentRunner, question: str = Q, **kwargs: Any) -> Any:
    async def main() -> Any:
        return await runner.run(question, **kwargs)

    return asyncio.run(main())


@MEMORY_WARNING
def test_runner_feeds_back_to_a_function_agent_in_the_same_context(
    prm: OnnxPRM, events: EventCollector
) -> None:
    seen: list[list[Any]] = []
    llm = scripted_function_llm([tool_call(), BAD, BEST, HIGH], seen)
    agent = FunctionAgent(tools=[add], llm=llm, streaming=False)
    result = run_agent(PRMVerifiedAgentRunner(agent, prm, max_feedback_rounds=2))

    assert result.passed and result.response == BEST and result.feedback_rounds == 1
    assert len(result.rounds) == 2 and result.rounds[0].response == BAD
    assert result.score == pytest.approx(ref_min(prm, BEST), abs=1e-5)
    feedback = result.rounds[0].feedback
    assert feedback.startswith("A step-by-step checker reviewed your answer. Step 2 of 2")
    # The third LLM call saw the whole exchange: question, tool call and result, the
    # first answer, then the feedback (one Context, memory kept across the runs).
    assert [c for _, c in seen[2]] == [Q, None, "5", BAD, feedback]
    assert isinstance(result.ctx, Context)
    failed = events.of(PRMVerificationFailedEvent)
    assert [(e.source, e.round, e.will_retry) for e in failed] == [("agent", 0, True)]
    assert [e.passed for e in events.of(PRMStepsScoredEvent) if e.source == "agent"] == [
        False, True]

    # The conversation goes on in the returned Context, memory included.
    again = run_agent(PRMVerifiedAgentRunner(agent, prm), "w2 = ?", ctx=result.ctx)
    assert again.response == HIGH and again.passed
    assert [c for _, c in seen[3]] == [Q, None, "5", BAD, feedback, BEST, "w2 = ?"]


@MEMORY_WARNING
def test_runner_feeds_back_on_an_answer_without_steps(
    prm: OnnxPRM, events: EventCollector
) -> None:
    seen: list[list[Any]] = []
    agent = FunctionAgent(tools=[], llm=scripted_function_llm(["  ", OK], seen),
                          streaming=False)
    result = run_agent(PRMVerifiedAgentRunner(agent, prm, max_feedback_rounds=1))
    assert result.rounds[0].verdict is None and result.rounds[0].score == 0.0
    assert "has no steps to check" in result.rounds[0].feedback
    assert result.response == OK and result.passed
    (failed,) = events.of(PRMVerificationFailedEvent)
    assert (failed.score, failed.flagged_step, failed.will_retry) == (0.0, None, True)


@MEMORY_WARNING
def test_runner_with_a_react_agent_stops_at_the_limit(prm: OnnxPRM) -> None:
    llm = ScriptedLLM(script=[REACT_DONE + BAD, REACT_DONE + TWO_FAIL, REACT_DONE + BAD],
                      chat_model=True)
    agent = ReActAgent(tools=[add], llm=llm)
    result = run_agent(PRMVerifiedAgentRunner(agent, prm, max_feedback_rounds=2))
    assert llm.calls == 3 and len(result.rounds) == 3 and result.feedback_rounds == 2
    assert not result.passed
    assert [r.response for r in result.rounds] == [BAD, TWO_FAIL, BAD]
    assert result.response == BAD  # best-scored; ties go to the later round
    assert result.output is result.rounds[2].output
    assert "Step 1 of 2 looks wrong" in llm.prompts[2]  # TWO_FAIL's feedback reached it

    last = run_agent(PRMVerifiedAgentRunner(
        ReActAgent(tools=[], llm=ScriptedLLM(script=llm.script, chat_model=True)), prm,
        max_feedback_rounds=1, return_best=False))
    assert last.response == TWO_FAIL and len(last.rounds) == 2


@MEMORY_WARNING
def test_runner_with_an_agent_workflow_and_a_custom_template(prm: OnnxPRM) -> None:
    seen: list[list[Any]] = []
    solver = FunctionAgent(name="solver", description="Solves.", tools=[add],
                           llm=scripted_function_llm([TWO_FAIL, HIGH], seen), streaming=False)
    workflow = AgentWorkflow(agents=[solver], root_agent="solver")
    runner = PRMVerifiedAgentRunner(
        workflow, prm, max_feedback_rounds=3,
        feedback_template="Round {round}: {feedback} (score {score} < {threshold})")
    result = run_agent(runner)
    assert result.passed and result.response == HIGH and len(result.rounds) == 2
    exp = reference(prm, TWO_FAIL)
    assert result.rounds[0].feedback == (
        f'Round 1: Step 1 of 2 looks wrong: "w7 w9 = 6" scores {exp[0]:.2f}, below the '
        f"threshold 0.50. Redo the solution from the start. (score {min(exp):.2f} < 0.50)")
    assert seen[1][-1] == ("user", result.rounds[0].feedback)


def test_runner_rejects_bad_options(prm: OnnxPRM) -> None:
    agent = ReActAgent(tools=[], llm=MockLLM())
    with pytest.raises(InvalidInputError, match="unknown placeholders \\['step'\\]"):
        PRMVerifiedAgentRunner(agent, prm, feedback_template="{step}")
    with pytest.raises(InvalidInputError, match="max_feedback_rounds must be an int >= 0"):
        PRMVerifiedAgentRunner(agent, prm, max_feedback_rounds=-1)
    with pytest.raises(InvalidInputError, match="agent must be a LlamaIndex agent workflow"):
        PRMVerifiedAgentRunner(MockLLM(), prm)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="question must be a non-empty str"):
        run_agent(PRMVerifiedAgentRunner(agent, prm), question=" ")


# -- real exported and default PRMs ----------------------------------------------------------

MATH_ANSWERS = [
    "Tom has 3 apples\nthen he buys 2 more\nso the answer is 5",
    "Tom has 3 apples\nhe sells 2\nso the answer is 1",
    "first add 3 and 2\nthe answer is 6",
]


def test_adapters_with_an_exported_token_classifier(
    tiny_token_classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory,
    export_small: Any,
) -> None:
    out = export_small(tiny_token_classifier_dir, tmp_path_factory.mktemp("li-tc") / "m",
                       "token-classification")
    exported = load_prm(out, device="cpu")
    question = "Tom has 3 apples and buys 2 more. How many apples does he have?"
    direct = [exported.score(question, steps_of(a)).min for a in MATH_ANSWERS]
    assert len(set(direct)) == 3  # random weights, but distinct scores

    response = PRMBestOfNLLM(ScriptedLLM(script=MATH_ANSWERS), exported, n=3,
                             max_concurrency=1).complete(question)
    assert response.text == MATH_ANSWERS[max(range(3), key=direct.__getitem__)]
    result = PRMStepEvaluator(exported, threshold=0.5).evaluate(query=question,
                                                                response=MATH_ANSWERS[0])
    assert result.score == pytest.approx(direct[0], abs=1e-6)
    assert result.passing == (direct[0] >= 0.5)


DEFAULT_MODEL = ROOT / "prm_plugins" / "models" / "default"


@pytest.mark.skipif(not (DEFAULT_MODEL / "prm.json").is_file(),
                    reason="the default PRM is not installed in this checkout yet")
def test_adapters_with_the_default_prm() -> None:
    default = load_prm(device="cpu")
    question = "Tom has 3 apples and buys 2 more. How many apples does he have?"
    direct = [default.score(question, steps_of(a)).min for a in MATH_ANSWERS]
    response = PRMBestOfNLLM(ScriptedLLM(script=MATH_ANSWERS), default, n=3,
                             max_concurrency=1).complete(question)
    best = max(range(3), key=lambda i: (direct[i], -i))
    assert response.text == MATH_ANSWERS[best]
    report = response.additional_kwargs["prm"]
    assert all(0.0 <= s <= 1.0 for s in report["step_scores"])
    evaluation = PRMStepEvaluator(default).evaluate(query=question, response=MATH_ANSWERS[1])
    assert evaluation.score == pytest.approx(direct[1], abs=1e-6)
    assert json.loads(json.dumps(report))["index"] == best
