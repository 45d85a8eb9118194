"""LLMJudgePRM over LlamaIndex LLMs (issue 20, item 2).

LlamaIndex's ``MockLLM`` only echoes its prompt, so it stands for a model whose answers can
never be read. The scripted judge is :class:`ScriptedLLM`, a ``CustomLLM`` whose ``chat`` /
``achat`` answer from a script: a ``CustomLLM`` turns ``chat`` into ``complete`` and drops
``ChatResponse.logprobs`` and the usage on the way, and its ``achat`` blocks the event loop,
so both are overridden (with LlamaIndex's own ``llm_chat_callback``) to return the
``ChatResponse`` an OpenAI LLM returns: ``logprobs`` as per-position ``LogProb`` lists and
the token counts in ``additional_kwargs``.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
    LogProb,
    MessageRole,
)
from llama_index.core.llms import CustomLLM, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from pydantic import PrivateAttr

from prm_plugins import StepScorer
from prm_plugins.adapters.llamaindex.judge import LLMJudgePRM, llm_model_id
from prm_plugins.errors import InvalidInputError, JudgeError
from prm_plugins.plans import RetryPolicy

Q = "A farmer has 5 crates with 12 apples each. He sells 18 apples. How many are left?"
STEPS = ["He has 5 * 12 = 60 apples.", "After selling, 60 - 18 = 42 apples are left."]
GOOD = "Step 1: correct (confidence: high)\nStep 2: correct (confidence: medium)"
BAD = "Step 1: correct (confidence: high)\nStep 2: incorrect (confidence: high)"
FAST = RetryPolicy.no_wait(max_attempts=3, timeout=None)

Script = Sequence["str | ChatResponse"]


class ScriptedLLM(CustomLLM):
    """Answers each chat with the next scripted reply (cycling); records what it was sent."""

    delay: float = 0.0
    _script: list[Any] = PrivateAttr(default_factory=list)
    _at: int = PrivateAttr(default=0)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    sent: list[list[ChatMessage]] = []
    running: int = 0
    peak: int = 0

    def __init__(self, script: Script, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._script = list(script)
        self.sent = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted-judge")

    def _next(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        with self._lock:
            self.sent.append(list(messages))
            item = self._script[self._at % len(self._script)]
            self._at += 1
        if isinstance(item, ChatResponse):
            return item
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=item))

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._next(messages)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)
            return self._next(messages)
        finally:
            with self._lock:
                self.running -= 1

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise NotImplementedError("the judge uses chat")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError("the judge uses chat")


def with_logprobs(text: str, alternatives: dict[int, list[tuple[str, float]]],
                  usage: tuple[int, int] | None = None) -> ChatResponse:
    """An OpenAI-like ChatResponse: per position the alternatives only (chosen one first)."""
    pieces = re.findall(r"\s*\S+", text)
    positions = [[LogProb(token=t, logprob=math.log(p), bytes=[])
                  for t, p in alternatives.get(i, [(piece, 1.0)])]
                 for i, piece in enumerate(pieces)]
    extra = {} if usage is None else {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                      "total_tokens": sum(usage)}
    return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                        logprobs=positions, additional_kwargs=extra)


def test_verdict_scores_and_usage_from_a_llamaindex_llm() -> None:
    llm = ScriptedLLM([ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content=BAD),
        additional_kwargs={"prompt_tokens": 150, "completion_tokens": 22})])
    judge = LLMJudgePRM(llm, retry=FAST)
    scorer: StepScorer = judge
    assert isinstance(scorer, StepScorer) and judge.llm is llm
    s = judge.score(Q, STEPS)
    assert s.scores == [0.95, 0.05] and s.meta["score_source"] == "verdict"
    assert (s.meta["input_tokens"], s.meta["output_tokens"]) == (150, 22)
    (system, user), = llm.sent
    assert (system.role, user.role) == (MessageRole.SYSTEM, MessageRole.USER)
    assert "Step 1: He has 5 * 12 = 60 apples." in str(user.content)
    assert judge.model_id.startswith("ScriptedLLM ") and "scripted-judge" in judge.model_id


def test_logprob_scores_from_chat_response_logprobs() -> None:
    llm = ScriptedLLM([with_logprobs(BAD, {
        2: [(" correct", 0.6), (" incorrect", 0.3), (" fine", 0.1)],
        7: [(" incorrect", 0.8), (" correct", 0.2)]}, usage=(100, 30))])
    s = LLMJudgePRM(llm).score(Q, STEPS)
    assert s.meta["score_source"] == "logprobs"
    assert s.scores == pytest.approx([0.6 / 0.9, 0.2])


def test_logprobs_that_do_not_spell_the_answer_fall_back_to_verdicts() -> None:
    response = with_logprobs(BAD, {})
    assert response.logprobs is not None
    response.logprobs[3] = [LogProb(token="zzz", logprob=-0.1, bytes=[])]
    s = LLMJudgePRM(ScriptedLLM([response])).score(Q, STEPS)
    assert s.meta["score_source"] == "verdict" and s.scores == [0.95, 0.05]


def test_mock_llm_echo_is_never_readable_and_fails_the_chain() -> None:
    judge = LLMJudgePRM(MockLLM(), max_retries=1, retry=FAST)
    with pytest.raises(JudgeError, match="no readable answer after 2 tries") as info:
        judge.score(Q, STEPS)
    assert len(info.value.answers) == 2
    assert judge.usage.calls == 2 and judge.usage.failed_chains == 1


def test_malformed_answer_is_refused_and_asked_again() -> None:
    llm = ScriptedLLM(["Step 1: correct (confidence: high)", GOOD])
    s = LLMJudgePRM(llm, retry=FAST).score(Q, STEPS)
    assert s.scores == [0.95, 0.8] and s.meta["calls"] == 2
    roles = [m.role for m in llm.sent[1]]
    assert roles == [MessageRole.SYSTEM, MessageRole.USER, MessageRole.ASSISTANT,
                     MessageRole.USER]
    assert "step 2 has no verdict" in str(llm.sent[1][3].content)


def test_async_batch_limits_concurrency_caches_and_isolates_a_bad_chain() -> None:
    llm = ScriptedLLM([GOOD], delay=0.05)
    judge = LLMJudgePRM(llm, max_concurrency=2, retry=FAST)
    items = [(f"Question {k}?", STEPS) for k in range(6)]
    assert len(asyncio.run(judge.ascore_batch(items))) == 6
    assert llm.peak == 2
    again = asyncio.run(judge.ascore(*items[0]))
    assert again.meta["cache_hit"] is True and len(llm.sent) == 6

    mixed = ScriptedLLM([GOOD, "nonsense", "nonsense", BAD])
    judge = LLMJudgePRM(mixed, max_concurrency=1, max_retries=1, retry=FAST)
    results = asyncio.run(judge.ajudge_batch([(Q, STEPS), ("What is 1 + 1?", ["2"]),
                                              (Q, ["a", "b"])]))
    assert [type(r).__name__ for r in results] == ["StepScores", "JudgeError", "StepScores"]


def test_not_an_llm_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="must be a LlamaIndex LLM"):
        LLMJudgePRM(object())
    assert llm_model_id(MockLLM()) != llm_model_id(MockLLM(max_tokens=5))
