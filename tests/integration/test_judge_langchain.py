"""LLMJudgePRM over LangChain chat models (issue 20, item 2).

Every model here is one of LangChain's own fakes: ``FakeListChatModel`` (scripted answers, in
call order, with an optional ``sleep``) and ``GenericFakeChatModel`` (scripted ``AIMessage``
objects, which carry ``response_metadata["logprobs"]`` in OpenAI's shape and
``usage_metadata``, as langchain-openai's messages do). What was sent to the model is read
with a real LangChain callback handler.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage

from prm_plugins import StepScorer
from prm_plugins.adapters.langchain.judge import LLMJudgePRM, chat_model_id
from prm_plugins.backends.judge import JudgePRM
from prm_plugins.errors import InvalidInputError, JudgeError
from prm_plugins.evaluation.steps import evaluate_steps
from prm_plugins.plans import RetryPolicy
from prm_plugins.scoring import score_isolated
from prm_plugins.strategies import best_of_n

from support.fake_generators import FakeGenerator

Q = "A farmer has 5 crates with 12 apples each. He sells 18 apples. How many are left?"
STEPS = ["He has 5 * 12 = 60 apples.", "After selling, 60 - 18 = 42 apples are left."]
GOOD = "Step 1: correct (confidence: high)\nStep 2: correct (confidence: medium)"
BAD = "Step 1: correct (confidence: high)\nStep 2: incorrect (confidence: high)"
FAST = RetryPolicy.no_wait(max_attempts=3, timeout=None)


class Recorder(BaseCallbackHandler):
    """Records each chat-model request and how many were running at once."""

    def __init__(self) -> None:
        self.requests: list[list[Any]] = []
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        with self._lock:
            self.requests.append(list(messages[0]))
            self.running += 1
            self.peak = max(self.peak, self.running)

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        with self._lock:
            self.running -= 1

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        with self._lock:
            self.running -= 1


def fake(*responses: str, sleep: float | None = None) -> tuple[FakeListChatModel, Recorder]:
    rec = Recorder()
    return FakeListChatModel(responses=list(responses), sleep=sleep, callbacks=[rec]), rec


def tokens(text: str, alternatives: dict[int, list[tuple[str, float]]]) -> dict[str, Any]:
    """OpenAI-style ``logprobs`` for ``text`` cut at spaces and newlines; token ``i`` gets the
    alternatives ``alternatives[i]`` (probabilities), the chosen one first."""
    pieces = re.findall(r"\s*\S+", text)
    assert "".join(pieces) == text
    content = []
    for i, piece in enumerate(pieces):
        alts = alternatives.get(i, [(piece, 1.0)])
        assert alts[0][0] == piece, (alts[0][0], piece)
        content.append({"token": piece, "logprob": math.log(alts[0][1]), "bytes": None,
                        "top_logprobs": [{"token": t, "logprob": math.log(p), "bytes": None}
                                         for t, p in alts]})
    return {"content": content, "refusal": None}


def message(text: str, logprobs: Any = None, usage: tuple[int, int] | None = None) -> AIMessage:
    extra: dict[str, Any] = {}
    if usage is not None:
        extra["usage_metadata"] = {"input_tokens": usage[0], "output_tokens": usage[1],
                                   "total_tokens": sum(usage)}
    return AIMessage(content=text, response_metadata={} if logprobs is None
                     else {"logprobs": logprobs, "model_name": "fake"}, **extra)


# -- scores from the verdicts --------------------------------------------------------------
def test_verdict_scores_follow_the_documented_table() -> None:
    model, rec = fake(BAD)
    judge = LLMJudgePRM(model, retry=FAST)
    assert isinstance(judge, StepScorer) and isinstance(judge, JudgePRM)
    s = judge.score(Q, STEPS)
    assert s.scores == [0.95, 0.05]
    assert s.first_error(0.5) == 1
    assert s.meta["score_source"] == "verdict"
    assert s.meta["verdicts"] == [True, False] and s.meta["confidences"] == ["high", "high"]
    assert s.meta["calls"] == 1 and s.meta["cache_hit"] is False
    assert s.meta["logprobs_unused"] == "the reply has no token log-probabilities"
    # one request: the grader's system prompt, then the numbered steps with the format
    (system, human), = rec.requests
    assert "meticulous grader" in system.content
    assert "Step 2: After selling, 60 - 18 = 42 apples are left." in human.content
    assert "(confidence: C)" in human.content and "exactly 2 lines" in human.content


def test_calibration_table_and_callable() -> None:
    table = {(c, lv): (0.7 if c else 0.3) for c in (True, False)
             for lv in ("high", "medium", "low", None)}
    assert LLMJudgePRM(fake(BAD)[0], calibration=table).score(Q, STEPS).scores == [0.7, 0.3]
    judge = LLMJudgePRM(fake(BAD)[0], calibration=lambda ok, level: 0.6 if ok else 0.1)
    assert judge.score(Q, STEPS).scores == [0.6, 0.1]
    with pytest.raises(InvalidInputError, match="no entry for"):
        LLMJudgePRM(fake(BAD)[0], calibration={(True, "high"): 0.9})
    bad = LLMJudgePRM(fake(BAD)[0], calibration=lambda ok, level: 1.5)
    with pytest.raises(InvalidInputError, match="must give a probability"):
        bad.score(Q, STEPS)


def test_plain_grader_lines_without_confidence() -> None:
    judge = LLMJudgePRM(fake("Step 1: correct\nStep 2: incorrect")[0], confidence=False)
    assert judge.score(Q, STEPS).scores == [0.9, 0.1]


# -- scores from log-probabilities -----------------------------------------------------------
def test_logprob_scores_read_the_verdict_token() -> None:
    # tokens: "Step"," 1:"," correct"," (confidence:"," high)","\nStep"," 2:"," incorrect",...
    lp = tokens(BAD, {2: [(" correct", 0.7), (" incorrect", 0.2), (" right", 0.1)],
                      7: [(" incorrect", 0.6), (" correct", 0.3), (" wrong", 0.1)]})
    model = GenericFakeChatModel(messages=iter([message(BAD, lp, usage=(120, 30))]))
    s = LLMJudgePRM(model).score(Q, STEPS)
    assert s.meta["score_source"] == "logprobs"
    assert s.scores == pytest.approx([0.7 / 0.9, 0.3 / 0.9])
    assert s.meta["verdicts"] == [True, False]
    assert (s.meta["input_tokens"], s.meta["output_tokens"]) == (120, 30)


def test_logprobs_of_a_verdict_split_into_pieces_and_without_alternatives() -> None:
    text = "Step 1: correct (confidence: high)\nStep 2: in" + "correct (confidence: low)"
    pieces = re.findall(r"\s*\S+", text.replace(" in" + "correct", " in correct"))
    pieces[pieces.index(" correct", 3)] = "correct"   # " in" + "correct"
    assert "".join(pieces) == text
    content = [{"token": t, "logprob": 0.0, "top_logprobs": []} for t in pieces]
    content[2] = {"token": " correct", "logprob": math.log(0.9), "top_logprobs": []}
    k = pieces.index(" in")
    content[k] = {"token": " in", "logprob": math.log(0.5), "top_logprobs": [
        {"token": " in", "logprob": math.log(0.5)}, {"token": " inc", "logprob": math.log(0.1)},
        {"token": " correct", "logprob": math.log(0.3)},
        {"token": " Correct", "logprob": math.log(0.05)},
        {"token": " maybe", "logprob": math.log(0.05)}]}
    model = GenericFakeChatModel(messages=iter([message(text, {"content": content})]))
    s = LLMJudgePRM(model).score(Q, STEPS)
    # step 1: only the chosen token, P = exp(logprob); step 2: (0.3 + 0.05) / 0.95
    assert s.scores == pytest.approx([0.9, 0.35 / 0.95])


@pytest.mark.parametrize("logprobs", [{"content": [{"token": 5}]}, {"content": "garbage"},
                                      "garbage", {"content": [{"token": "Step 1: correct",
                                                               "logprob": -0.1}]}])
def test_unusable_logprobs_fall_back_to_the_verdicts(logprobs: Any) -> None:
    model = GenericFakeChatModel(messages=iter([message(BAD, logprobs)]))
    s = LLMJudgePRM(model).score(Q, STEPS)
    assert s.meta["score_source"] == "verdict" and s.scores == [0.95, 0.05]
    assert s.meta["logprobs_unused"]


def test_logprobs_required_but_absent_fails_the_chain() -> None:
    judge = LLMJudgePRM(fake(BAD)[0], scores_from="logprobs")
    with pytest.raises(JudgeError, match="scores_from='logprobs' but the reply has no token"):
        judge.score(Q, STEPS)
    assert judge.usage.failed_chains == 1


def test_scores_from_verdict_ignores_logprobs() -> None:
    lp = tokens(BAD, {2: [(" correct", 0.7), (" incorrect", 0.3)]})
    model = GenericFakeChatModel(messages=iter([message(BAD, lp)]))
    s = LLMJudgePRM(model, scores_from="verdict").score(Q, STEPS)
    assert s.meta["score_source"] == "verdict" and "logprobs_unused" not in s.meta


# -- malformed answers, re-asks, failures ----------------------------------------------------
@pytest.mark.parametrize("garbage", [
    "Step 1: correct (confidence: high)",                              # a step missing
    GOOD + "\nStep 3: correct (confidence: high)",                      # a step too many
    "Step 1: correct\nStep 2: correct",                                 # no confidence
    "Step 1: correct (confidence: very)\nStep 2: correct (confidence: high)",
    "Looks fine to me!",                                                # garbage
    "",
])
def test_a_malformed_answer_is_refused_and_asked_again(garbage: str) -> None:
    model, rec = fake(garbage, GOOD)
    s = LLMJudgePRM(model, retry=FAST).score(Q, STEPS)
    assert s.scores == [0.95, 0.8]
    assert s.meta["calls"] == 2 and len(s.meta["parse_errors"]) == 1
    second = rec.requests[1]
    assert [m.type for m in second] == ["system", "human", "ai", "human"]
    assert second[2].content == garbage
    assert second[3].content.startswith("Your answer could not be read: ")
    assert s.meta["parse_errors"][0].rstrip(".") in second[3].content


def test_a_chain_whose_answers_never_parse_fails_with_a_clear_error() -> None:
    model, rec = fake("Step 1: correct (confidence: high)")
    judge = LLMJudgePRM(model, max_retries=2)
    with pytest.raises(JudgeError, match=r"no readable answer after 3 tries; last error: step 2 "
                                         r"has no verdict") as info:
        judge.score(Q, STEPS)
    assert len(info.value.answers) == 3 and len(rec.requests) == 3
    assert judge.usage.calls == 3 and judge.usage.failed_chains == 1


def test_transient_model_errors_are_retried() -> None:
    class Flaky:
        """An iterator of scripted messages whose first ``next`` raises ConnectionError."""

        def __init__(self) -> None:
            self.failed = False

        def __iter__(self) -> Flaky:
            return self

        def __next__(self) -> AIMessage:
            if not self.failed:
                self.failed = True
                raise ConnectionError("connection reset")
            return message(GOOD)

    s = LLMJudgePRM(GenericFakeChatModel(messages=Flaky()), retry=FAST).score(Q, STEPS)
    assert s.scores == [0.95, 0.8] and s.meta["calls"] == 1 and s.meta["attempts"] == 2


def test_a_bad_chain_fails_alone() -> None:
    never = "I think it is all fine."
    model, rec = fake(GOOD, never, never, never, BAD)
    judge = LLMJudgePRM(model, max_concurrency=1, retry=FAST)
    items = [(Q, STEPS), ("What is 1 + 1?", ["1 + 1 = 2"]), (Q, STEPS[:1] + ["60 - 18 = 40"])]
    results = judge.judge_batch(items)
    assert results[0].scores == [0.95, 0.8]
    assert isinstance(results[1], JudgeError) and "no readable answer" in str(results[1])
    assert results[2].scores == [0.95, 0.05]
    assert len(rec.requests) == 5


def test_score_batch_raises_and_isolation_is_answered_from_that_batch() -> None:
    never = "I think it is all fine."
    model, rec = fake(GOOD, never, never, never, BAD)
    judge = LLMJudgePRM(model, max_concurrency=1, retry=FAST, cache_size=0)
    items = [(Q, STEPS), ("What is 1 + 1?", ["1 + 1 = 2"]), (Q, STEPS[:1] + ["60 - 18 = 40"])]
    with pytest.raises(JudgeError, match=r"^1 of 3 chains could not be judged \(chain 1: ") as e:
        judge.score_batch(items)
    assert list(e.value.failed) == [1]
    out = score_isolated(judge.score_batch, items, score_one=lambda it: judge.score(*it))
    assert out.isolated
    assert out.results[0].scores == [0.95, 0.8] and out.results[2].scores == [0.95, 0.05]
    assert isinstance(out.results[1], JudgeError)
    assert len(rec.requests) == 5   # nothing asked twice, even with the cache off


def test_async_batch_isolates_a_bad_chain() -> None:
    model, _ = fake(GOOD, "nonsense", "nonsense", "nonsense", BAD, "nonsense")
    judge = LLMJudgePRM(model, max_concurrency=1, retry=FAST)
    items = [(Q, STEPS), ("What is 1 + 1?", ["1 + 1 = 2"]), (Q, ["a", "b"])]
    results = asyncio.run(judge.ajudge_batch(items))
    assert [type(r).__name__ for r in results] == ["StepScores", "JudgeError", "StepScores"]
    assert results[2].scores == [0.95, 0.05]
    with pytest.raises(JudgeError):
        asyncio.run(judge.ascore_batch(items[1:2]))


def test_bad_input_is_refused_before_any_call() -> None:
    model, rec = fake(GOOD)
    judge = LLMJudgePRM(model)
    with pytest.raises(InvalidInputError, match="steps must be a non-empty list"):
        judge.score(Q, [])
    with pytest.raises(InvalidInputError, match="are empty or not str"):
        judge.score(Q, ["a", "  "])
    with pytest.raises(InvalidInputError, match="not one str"):
        judge.score(Q, "one string")
    with pytest.raises(InvalidInputError, match="question must be a non-empty str"):
        judge.score_batch([("", ["a"])])
    with pytest.raises(InvalidInputError, match="must be a LangChain chat model"):
        LLMJudgePRM(object())
    with pytest.raises(InvalidInputError, match="scores_from must be one of"):
        LLMJudgePRM(model, scores_from="magic")
    assert rec.requests == []


# -- cache, concurrency, cost ---------------------------------------------------------------
def test_cache_hits_cost_nothing_and_are_keyed_by_model_prompt_and_chain() -> None:
    model, rec = fake(BAD, GOOD)
    judge = LLMJudgePRM(model, cache_size=1)
    first = judge.score(Q, STEPS)
    again = judge.score(Q, list(STEPS))
    assert again.scores == first.scores and again.meta["cache_hit"] is True
    assert again.meta["calls"] == 0 and len(rec.requests) == 1
    judge.score(Q, ["He has 60 apples.", "42 are left."])       # another chain: a call...
    judge.score(Q, STEPS)                                      # ...which evicted the first
    assert len(rec.requests) == 3 and judge.usage.cache_hits == 1
    # another model, or the same model with other settings, never shares verdicts
    other = FakeListChatModel(responses=[GOOD])
    assert chat_model_id(other) != chat_model_id(model)
    assert chat_model_id(model.bind(temperature=0.0)) != chat_model_id(model)
    assert chat_model_id(FakeListChatModel(responses=[BAD, GOOD])) == chat_model_id(model)
    off = LLMJudgePRM(fake(GOOD)[0], cache_size=0)
    off.score(Q, STEPS)
    assert off.score(Q, STEPS).meta["cache_hit"] is False and off.usage.calls == 2


def test_concurrency_is_limited_in_threads_and_in_asyncio() -> None:
    model, rec = fake(GOOD, sleep=0.05)
    judge = LLMJudgePRM(model, max_concurrency=2, cache_size=0)
    items = [(f"Question {k}?", STEPS) for k in range(6)]
    assert len(judge.score_batch(items)) == 6
    assert rec.peak == 2
    rec.peak = 0
    assert len(asyncio.run(judge.ascore_batch(items))) == 6
    assert rec.peak == 2


def test_cost_is_on_each_result_and_on_the_judge() -> None:
    replies = iter([message("garbage", usage=(100, 5)), message(GOOD, usage=(140, 20)),
                    message(BAD, usage=(90, 18))])
    judge = LLMJudgePRM(GenericFakeChatModel(messages=replies), max_concurrency=1)
    a = judge.score(Q, STEPS)
    b = judge.score("What is 1 + 1?", ["1 + 1 = 2", "So 2."])
    judge.score(Q, STEPS)
    assert (a.meta["calls"], a.meta["input_tokens"], a.meta["output_tokens"]) == (2, 240, 25)
    assert (b.meta["calls"], b.meta["input_tokens"], b.meta["output_tokens"]) == (1, 90, 18)
    assert judge.usage.as_dict() == {
        "chains": 3, "failed_chains": 0, "calls": 3, "attempts": 3, "input_tokens": 330,
        "output_tokens": 43, "calls_without_usage": 0, "cache_hits": 1}


# -- the judge wherever a PRM goes -----------------------------------------------------------
def test_prm_eval_steps_metrics_with_the_judge(tmp_path: Path) -> None:
    rows = [
        {"problem": "What is 2 + 2?", "steps": ["2 + 2 = 4", "The answer is 4."], "label": -1},
        {"problem": "What is 3 * 4 + 1?", "steps": ["3 * 4 = 12", "12 + 1 = 14", "So 14."],
         "label": 1},
        {"problem": "What is 10 - 3?", "steps": ["10 - 3 = 6", "The answer is 6."], "label": 0},
    ]
    data = tmp_path / "pb.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, _ = fake(
        "Step 1: correct (confidence: high)\nStep 2: correct (confidence: high)",
        "Step 1: correct (confidence: high)\nStep 2: incorrect (confidence: high)\n"
        "Step 3: incorrect (confidence: high)",
        "Step 1: correct (confidence: high)\nStep 2: correct (confidence: high)",
    )
    judge = LLMJudgePRM(model, max_concurrency=1)
    report = evaluate_steps(judge, data, "processbench")
    overall = report["overall"]
    # row 1 right (no error), row 2 right (first error at 1), row 3 missed (error at 0)
    assert (overall["error_acc"], overall["correct_acc"]) == (0.5, 1.0)
    assert overall["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    # labelled steps: correct 0.95, 0.95, 0.95; erroneous 0.05 and 0.95 (ties count half)
    assert overall["step_auroc"] == pytest.approx((3 + 1.5) / 6)
    assert report["n_scored"] == 3 and judge.usage.calls == 3


def test_the_judge_drops_into_best_of_n_unchanged() -> None:
    good = "5 * 12 = 60 apples.\n60 - 18 = 42 apples.\nThe answer is 42."
    bad = "5 * 12 = 60 apples.\n60 - 8 = 52 apples.\nThe answer is 52."
    model, _ = fake(
        "Step 1: correct (confidence: high)\nStep 2: incorrect (confidence: high)\n"
        "Step 3: incorrect (confidence: medium)",
        "Step 1: correct (confidence: high)\nStep 2: correct (confidence: high)\n"
        "Step 3: correct (confidence: high)",
    )
    judge = LLMJudgePRM(model, max_concurrency=1)
    result = best_of_n(Q, FakeGenerator(solutions=[bad, good]), judge, n=2, max_concurrency=1,
                       selection="top_score")
    assert result.best.text == good and result.score == 0.95
    assert [c.step_scores.scores for c in result.candidates  # type: ignore[union-attr]
            ] == [[0.95, 0.05, 0.2], [0.95] * 3]
    assert result.candidates[1].step_scores.meta["score_source"] == "verdict"  # type: ignore[union-attr]
