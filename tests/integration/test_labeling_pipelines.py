"""The LLM-grader, Monte Carlo rollout and hybrid labelling pipelines (and ``prm label
agreement`` / ``merge``).

Chat models are langchain_core's fakes (or a small ``BaseChatModel`` scripted per question);
generators are scripted fakes; every expected figure is computed by hand in the comments.
"""

from __future__ import annotations

import argparse
import asyncio
import doctest
import json
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from prm_plugins.cli import label as label_cli
from prm_plugins.errors import InvalidInputError
from prm_plugins.labeling import (
    GradedChain,
    GraderAnswerError,
    MonteCarloLabeler,
    cohen_kappa,
    label_agreement,
    merge_labels,
    parse_step_verdicts,
    propagate_first_error,
    read_stepwise_jsonl,
    rollout_rows,
    validate_stepwise_row,
    write_stepwise_jsonl,
)
from prm_plugins.strategies import RetryPolicy

from support.fake_generators import FakeGenerator

QUESTION = ("A farmer has 5 crates with 12 apples each. He sells 18 apples and gives away 7. "
            "How many apples are left?")
GOOD = ["The farmer has 5 * 12 = 60 apples.", "After selling, he has 60 - 18 = 42 apples.",
        "After giving some away, he has 42 - 7 = 35 apples left.", "The answer is 35."]
BAD = ["The farmer has 5 * 12 = 60 apples.", "After selling, he has 60 - 7 = 53 apples.",
       "After giving some away, he has 53 - 7 = 46 apples left.", "The answer is 46."]


# -- the verdict parser -----------------------------------------------------------------------
def test_parser_reads_one_verdict_per_step() -> None:
    answer = "\nStep 1: correct\n\n  step 2: INCORRECT.\nSTEP 3 : Correct  \n"
    assert parse_step_verdicts(answer, 3) == [True, False, True]


@pytest.mark.parametrize(
    ("answer", "n", "message"),
    [
        ("", 2, r"the answer is empty; expected 2 lines"),
        ("   \n\n", 1, r"the answer is empty"),
        ("Step 1: correct", 2, r"^step 2 has no verdict: expected 2 lines \(Step 1 to Step 2\), "
         r"got 1$"),
        ("Step 1: correct", 3, r"^steps 2, 3 have no verdict"),
        ("Step 1: correct\nStep 2: correct\nStep 3: correct", 2,
         r"line 3 grades step 3, which does not exist: the solution has 2 steps \(1 to 2\)"),
        ("Step 0: correct\nStep 1: correct", 1, r"line 1 grades step 0, which does not exist"),
        ("Step 1: correct\nStep 1: incorrect", 2,
         r"step 1 is graded twice \(lines 1 and 2\)"),
        ("Step 1: maybe\nStep 2: correct", 2,
         r"line 1: unknown verdict 'maybe' for step 1; the verdict must be 'correct' or "
         r"'incorrect'"),
        ("Step 1: correct, the product is right\nStep 2: correct", 2,
         r"unknown verdict 'correct, the product is right'"),
        ("Step 2: correct\nStep 1: correct", 2,
         r"steps are out of order: line 1 grades step 2 where step 1 was expected"),
        ("Here are my verdicts:\nStep 1: correct\nStep 2: correct", 2,
         r"line 1 is not a verdict line: 'Here are my verdicts:'"),
        ("Step 1: correct\nStep 2 - incorrect", 2, r"line 2 is not a verdict line"),
        ("1: correct\n2: correct", 2, r"line 1 is not a verdict line"),
    ],
)
def test_parser_refuses_malformed_answers(answer: str, n: int, message: str) -> None:
    with pytest.raises(GraderAnswerError, match=message) as info:
        parse_step_verdicts(answer, n)
    assert isinstance(info.value, InvalidInputError)
    assert info.value.answer == answer and info.value.n_steps == n


def test_propagate_first_error() -> None:
    assert propagate_first_error([True, False, True, True]) == [True, False, False, False]
    assert propagate_first_error([True, True]) == [True, True]
    assert propagate_first_error([False, True]) == [False, False]


# -- the grader -----------------------------------------------------------------------------
def _recording_model(responses: list[str]) -> Any:
    """A FakeListChatModel that also records the messages of every call."""
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    class RecordingFakeListChatModel(FakeListChatModel):
        seen: list[list[Any]] = []

        def _call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
            self.seen.append(list(messages))
            return super()._call(messages, *args, **kwargs)

    return RecordingFakeListChatModel(responses=responses, seen=[])


@pytest.fixture(scope="session")
def keyed_model_cls() -> type:
    """A BaseChatModel whose answer depends on the question (order-independent, so batches
    graded concurrently are deterministic); counts calls and the peak number in flight."""
    pytest.importorskip("langchain_core")
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from pydantic import ConfigDict, Field, PrivateAttr

    class KeyedChatModel(BaseChatModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        answers: dict[str, list[str]]
        delay: float = 0.0
        calls: Counter[str] = Field(default_factory=Counter)
        in_flight: int = 0
        peak: int = 0
        _lock: Any = PrivateAttr(default_factory=threading.Lock)

        @property
        def _llm_type(self) -> str:
            return "keyed-fake"

        def _answer(self, messages: list[Any]) -> str:
            prompt = next(m.content for m in messages if m.type == "human")
            question = prompt.split("Question:\n", 1)[1].split("\n\n", 1)[0]
            with self._lock:
                k = self.calls[question]
                self.calls[question] += 1
            script = self.answers[question]
            return script[min(k, len(script) - 1)]

        def _enter(self) -> None:
            with self._lock:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)

        def _exit(self) -> None:
            with self._lock:
                self.in_flight -= 1

        def _generate(self, messages: list[Any], stop: Any = None, run_manager: Any = None,
                      **kwargs: Any) -> ChatResult:
            self._enter()
            try:
                time.sleep(self.delay)
                text = self._answer(messages)
            finally:
                self._exit()
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

        async def _agenerate(self, messages: list[Any], stop: Any = None,
                             run_manager: Any = None, **kwargs: Any) -> ChatResult:
            self._enter()
            try:
                await asyncio.sleep(self.delay)
                text = self._answer(messages)
            finally:
                self._exit()
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    return KeyedChatModel


def test_grader_labels_and_propagates_from_the_first_error() -> None:
    from prm_plugins.labeling import LLMStepGrader

    model = _recording_model(["Step 1: correct\nStep 2: incorrect\nStep 3: correct\n"
                              "Step 4: correct"])
    graded = LLMStepGrader(model).grade(QUESTION, BAD, id="apples/bad")
    assert graded.ok and graded.model_calls == 1 and graded.attempts == 1
    assert graded.verdicts == [True, False, True, True]
    assert graded.labels == [True, False, False, False]  # bad from the first error on
    assert graded.first_error == 1
    row = graded.to_row(model="fake")
    assert row == {
        "id": "apples/bad", "prompt": QUESTION, "completions": BAD,
        "labels": [True, False, False, False], "source": "llm-grader", "first_error": 1,
        "verdicts": [True, False, True, True], "grader_calls": 1, "grader_model": "fake",
    }
    validate_stepwise_row(row)
    # what the model was sent: a system message, then the question and the numbered steps
    (messages,) = model.seen
    assert [m.type for m in messages] == ["system", "human"]
    assert "Answer only with the verdict lines" in messages[0].content
    prompt = messages[1].content
    assert prompt.startswith(f"Question:\n{QUESTION}\n\nSolution (4 steps):\n")
    assert "Step 2: After selling, he has 60 - 7 = 53 apples.\n" in prompt
    assert prompt.endswith("Answer with exactly 4 lines (Step 1 to Step 4, in order), each of "
                           "the form 'Step k: correct' or 'Step k: incorrect', and nothing else.")


def test_grader_propagate_false_keeps_raw_verdicts() -> None:
    from prm_plugins.labeling import LLMStepGrader

    model = _recording_model(["Step 1: correct\nStep 2: incorrect\nStep 3: correct\n"
                              "Step 4: incorrect"])
    graded = LLMStepGrader(model, propagate=False).grade(QUESTION, BAD)
    assert graded.labels == [True, False, True, False]
    row = graded.to_row()
    assert "first_error" not in row and row["labels"] == [True, False, True, False]
    validate_stepwise_row(row)


def test_grader_reasks_with_the_parse_error_then_accepts() -> None:
    from prm_plugins.labeling import LLMStepGrader

    model = _recording_model([
        "Steps 1-3 look fine.\nStep 4: correct",                    # not a verdict line
        "Step 1: correct\nStep 2: correct\nStep 3: correct",          # step 4 missing
        "Step 1: correct\nStep 2: correct\nStep 3: correct\nStep 4: correct",
    ])
    graded = LLMStepGrader(model, max_retries=2).grade(QUESTION, GOOD)
    assert graded.ok and graded.labels == [True] * 4
    assert graded.model_calls == 3 and len(graded.answers) == 3
    assert len(graded.parse_errors) == 2
    assert graded.parse_errors[0].startswith("line 1 is not a verdict line: 'Steps 1-3 look fine.'")
    assert graded.parse_errors[1].startswith("step 4 has no verdict")
    first, second, third = model.seen
    assert [m.type for m in second] == ["system", "human", "ai", "human"]
    assert second[2].content == "Steps 1-3 look fine.\nStep 4: correct"
    assert second[3].content.startswith(
        "Your answer could not be read: line 1 is not a verdict line: 'Steps 1-3 look fine.'")
    assert second[3].content.endswith("Answer with exactly 4 lines (Step 1 to Step 4, in order),"
                                      " each of the form 'Step k: correct' or 'Step k: "
                                      "incorrect', and nothing else.")
    # the whole conversation is resent, with the second refusal appended
    assert [m.type for m in third] == ["system", "human", "ai", "human", "ai", "human"]
    assert "step 4 has no verdict" in third[5].content
    assert graded.to_row()["grader_calls"] == 3


def test_grader_gives_up_after_max_retries_and_reports_the_chain_as_failed() -> None:
    from prm_plugins.labeling import LLMStepGrader, graded_rows

    model = _recording_model(["Step 1: correct\nStep 1: correct\nStep 2: correct"])
    graded = LLMStepGrader(model, max_retries=1).grade("What is 2 + 3?", ["2 + 3 = 5",
                                                                         "The answer is 5."])
    assert not graded.ok and graded.labels is None and graded.model_calls == 2
    assert graded.error is not None
    assert graded.error.startswith("no readable answer after 2 tries; last error: step 1 is "
                                   "graded twice (lines 1 and 2)")
    with pytest.raises(InvalidInputError, match="was not graded"):
        graded.to_row()
    assert graded_rows([graded]) == []
    # max_retries=0: one try only
    once = LLMStepGrader(_recording_model(["nonsense"]), max_retries=0).grade("q", ["a"])
    assert not once.ok and once.model_calls == 1


def test_grader_retries_transient_model_errors_and_fails_on_others() -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from prm_plugins.labeling import LLMStepGrader

    class Flaky(FakeListChatModel):
        failures: list[BaseException] = []

        def _call(self, *args: Any, **kwargs: Any) -> str:
            if self.failures:
                raise self.failures.pop(0)
            return super()._call(*args, **kwargs)

    ok_model = Flaky(responses=["Step 1: correct"], failures=[TimeoutError("slow"),
                                                              ConnectionError("reset")])
    graded = LLMStepGrader(ok_model, retry=RetryPolicy.no_wait(3)).grade("q", ["a"])
    assert graded.ok and graded.model_calls == 1 and graded.attempts == 3
    bad_model = Flaky(responses=["Step 1: correct"], failures=[ValueError("bad request")])
    failed = LLMStepGrader(bad_model, retry=RetryPolicy.no_wait(3)).grade("q", ["a"])
    assert not failed.ok and failed.attempts == 1
    assert failed.error == "chat model call failed: ValueError: bad request"


def test_grader_batch_sync_and_async_bounded_and_in_order(keyed_model_cls: type) -> None:
    from prm_plugins.labeling import LLMStepGrader

    answers = {f"q{k}": ["Step 1: correct\nStep 2: " + ("incorrect" if k % 2 else "correct")]
               for k in range(6)}
    answers["q3"] = ["garbage"]  # never readable: fails, the batch goes on
    chains: list[Any] = [(f"q{k}", ["s1", "s2"]) for k in range(6)]
    chains[4] = {"prompt": "q4", "completions": ["s1", "s2"], "labels": [False, False],
                 "id": "row-4"}

    model = keyed_model_cls(answers=answers, delay=0.02)
    grader = LLMStepGrader(model, max_retries=1, max_concurrency=2)
    results = grader.grade_batch(chains)
    assert [r.question for r in results] == [f"q{k}" for k in range(6)]
    assert [r.labels for r in results] == [[True, True], [True, False], [True, True], None,
                                           [True, True], [True, False]]
    assert results[4].id == "row-4" and grader.rows(results)[3]["id"] == "row-4"
    assert model.calls["q3"] == 2 and model.calls["q0"] == 1
    assert model.peak == 2  # bounded, and concurrent

    amodel = keyed_model_cls(answers=answers, delay=0.02)
    agrader = LLMStepGrader(amodel, max_retries=1, max_concurrency=3)
    aresults = asyncio.run(agrader.agrade_batch(chains))
    assert [r.labels for r in aresults] == [r.labels for r in results]
    assert amodel.peak == 3
    one = asyncio.run(agrader.agrade("q1", ["s1", "s2"]))
    assert one.labels == [True, False]


def test_grader_refuses_bad_input_before_calling_the_model(keyed_model_cls: type) -> None:
    from prm_plugins.labeling import LLMStepGrader

    with pytest.raises(InvalidInputError, match="LangChain chat model .* received object"):
        LLMStepGrader(object())
    model = keyed_model_cls(answers={})
    with pytest.raises(InvalidInputError, match="max_retries must be an int >= 0"):
        LLMStepGrader(model, max_retries=-1)
    grader = LLMStepGrader(model)
    with pytest.raises(InvalidInputError, match=r"chain 1: steps must be a non-empty list"):
        grader.grade_batch([("q", ["a"]), ("q", [])])
    with pytest.raises(InvalidInputError, match=r"chain 0: step\(s\) \[1\] are empty"):
        grader.grade_batch([{"question": "q", "steps": ["a", "  "]}])
    assert sum(model.calls.values()) == 0


# -- Monte Carlo rollouts -------------------------------------------------------------------
class PrefixScriptGenerator:
    """Answers ``sample(prompt, n)`` from a script keyed by the prefix length (the number of
    ``Step k:`` lines in the prompt), shuffled with a seed: the order of the completions
    changes with the seed, their answers do not. Raises ``ValueError`` for a prompt containing
    ``BROKEN``."""

    def __init__(self, script: dict[int, list[str]], seed: int = 0) -> None:
        self.script = script
        self.seed = seed
        self.calls: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def sample(self, prompt: str, n: int) -> list[str]:
        with self._lock:
            self.calls.append((prompt, n))
        if "BROKEN" in prompt:
            raise ValueError("model crashed")
        k = len(re.findall(r"^Step \d+: ", prompt, flags=re.MULTILINE))
        out = list(self.script[k][:n])
        random.Random(f"{self.seed}:{prompt}").shuffle(out)
        return out


# Rollouts of BAD (gold 35). By hand:
#   prefix 1 (correct so far): answers 35, 35.00, 53, #### 35 -> 3 of 4 reach 35: soft 0.75
#   prefix 2 (60 - 7 = 53, wrong): answers 46, 46, 35 (recovers), 53 -> 1 of 4: soft 0.25
#   prefix 3: 46 four times -> 0.0
#   step 4 (last): the chain's own answer 46 != 35 -> 0.0 (not rolled out)
ROLLOUT_SCRIPT = {
    1: ["60 - 18 = 42\n42 - 7 = 35\nThe answer is 35.", "The answer is 35.00.",
        "60 - 7 = 53\nThe answer is 53.", "42 - 7 = 35\n#### 35"],
    2: ["53 - 7 = 46\nThe answer is 46.", "The answer is 46.",
        "Oops, he sold 18: 60 - 18 - 7 = 35. The answer is 35.", "The answer is 53."],
    3: ["The answer is 46."] * 4,
}


@pytest.mark.parametrize("seed", [0, 1])
def test_rollouts_soft_and_hard_labels_by_hand(seed: int) -> None:
    gen = PrefixScriptGenerator(ROLLOUT_SCRIPT, seed=seed)
    labeler = MonteCarloLabeler(gen, n_rollouts=4)
    r = labeler.label(QUESTION, BAD, "35", id="apples/bad")
    assert r.ok
    assert r.soft_labels == [0.75, 0.25, 0.0, 0.0]
    assert r.labels == [True, True, False, False]  # HE: at least one rollout reaches 35
    assert r.rollouts == [4, 4, 4, 0] and r.correct == [3, 1, 0, 0]
    assert r.generator_calls == 3 and r.attempts == 3 and len(gen.calls) == 3
    # one call per non-final prefix, asking for n completions of a prompt with that prefix
    prompts = sorted(gen.calls, key=lambda c: len(c[0]))
    for k, (prompt, n) in enumerate(prompts, start=1):
        assert n == 4
        assert prompt.startswith(QUESTION + "\n\nSteps so far (keep them as they are):\n")
        assert f"Step {k}: {BAD[k - 1]}" in prompt and f"Step {k + 1}:" not in prompt
        assert f"Continue the solution from step {k + 1}" in prompt
    row = r.to_row()
    validate_stepwise_row(row)
    assert row["labels"] == [True, True, False, False]
    assert row["soft_labels"] == [0.75, 0.25, 0.0, 0.0]
    assert row["source"] == "mc-rollouts" and row["gold_answer"] == "35" and row["id"] == \
        "apples/bad"

    strict = MonteCarloLabeler(PrefixScriptGenerator(ROLLOUT_SCRIPT, seed=seed), n_rollouts=4,
                               threshold=0.5)
    assert strict.label(QUESTION, BAD, "35").labels == [True, False, False, False]


def test_rollouts_last_step_rolled_out_and_custom_checker() -> None:
    script = {1: ["x"] * 2, 2: ["y", "x"]}
    gen = PrefixScriptGenerator(script)
    seen: list[tuple[str, str]] = []

    def checker(text: str, gold: str) -> bool:
        seen.append((text, gold))
        return text == gold

    labeler = MonteCarloLabeler(gen, n_rollouts=2, answer_checker=checker,
                                rollout_last_step=True, keep_completions=True)
    r = labeler.label("q", ["a", "b"], "x")
    assert r.soft_labels == [1.0, 0.5] and r.labels == [True, True]
    assert r.generator_calls == 2 and r.rollouts == [2, 2]
    assert r.completions is not None and sorted(r.completions[1]) == ["x", "y"]
    assert sorted(seen) == [("x", "x")] * 3 + [("y", "x")]


def test_rollouts_retry_transient_errors_with_the_retry_policy() -> None:
    # n=2, one non-final prefix: attempt 1 draws TimeoutError (raised), attempt 2 draws "35", "35"
    gen = FakeGenerator(solutions=[TimeoutError("slow"), "The answer is 35.",
                                   "So 35 apples are left. The answer is 35."])
    labeler = MonteCarloLabeler(gen, n_rollouts=2, retry=RetryPolicy.no_wait(3),
                                max_concurrency=1)
    r = labeler.label(QUESTION, ["The farmer has 60 apples.", "The answer is 35."], "35")
    assert r.ok and r.soft_labels == [1.0, 1.0] and r.labels == [True, True]
    assert r.generator_calls == 1 and r.attempts == 2 and gen.calls["sample"] == 2


def test_rollouts_a_failed_chain_does_not_sink_the_batch() -> None:
    gen = PrefixScriptGenerator(ROLLOUT_SCRIPT)
    labeler = MonteCarloLabeler(gen, n_rollouts=4, retry=RetryPolicy.no_wait(3))
    results = labeler.label_batch([
        {"prompt": QUESTION, "completions": BAD, "gold_answer": "35", "labels": [True] * 4},
        ("BROKEN question", ["a", "b"], 3),
    ])
    assert results[0].ok and results[0].soft_labels == [0.75, 0.25, 0.0, 0.0]
    assert not results[1].ok and results[1].labels == []
    assert results[1].error == "step 1: generator call failed: ValueError: model crashed"
    rows = rollout_rows(results)
    assert len(rows) == 1 and rows[0]["prompt"] == QUESTION
    # ValueError is not transient: one attempt only
    assert sum("BROKEN" in p for p, _ in gen.calls) == 1
    with pytest.raises(InvalidInputError, match="has no labels"):
        results[1].to_row()


def test_rollouts_async_matches_sync_and_rows_round_trip(tmp_path: Path) -> None:
    chains = [(QUESTION, BAD, "35"), (QUESTION, GOOD, 35)]
    script = {**ROLLOUT_SCRIPT}
    sync = MonteCarloLabeler(PrefixScriptGenerator(script), n_rollouts=4).label_batch(chains)
    agen = PrefixScriptGenerator(script)
    async_ = asyncio.run(MonteCarloLabeler(agen, n_rollouts=4).alabel_batch(chains))
    assert [r.soft_labels for r in async_] == [r.soft_labels for r in sync]
    # GOOD's prefixes get the same scripted rollouts (keyed by prefix length); its own answer
    # is 35, so its last step is good
    assert sync[1].soft_labels == [0.75, 0.25, 0.0, 1.0] and sync[1].gold_answer == "35"
    assert len(agen.calls) == 6
    path = tmp_path / "mc.jsonl"
    assert write_stepwise_jsonl(rollout_rows(sync), path) == 2
    back = read_stepwise_jsonl(path)
    assert back[0]["soft_labels"] == [0.75, 0.25, 0.0, 0.0]
    assert back[1]["labels"] == [True, True, False, True]


def test_rollouts_refuse_bad_arguments() -> None:
    gen = PrefixScriptGenerator(ROLLOUT_SCRIPT)
    with pytest.raises(InvalidInputError, match="n_rollouts must be an int >= 1"):
        MonteCarloLabeler(gen, n_rollouts=0)
    with pytest.raises(InvalidInputError, match=r"threshold must be a number in \[0, 1\)"):
        MonteCarloLabeler(gen, threshold=1.0)
    labeler = MonteCarloLabeler(gen)
    with pytest.raises(InvalidInputError, match="chain 0: a gold answer is needed"):
        labeler.label_batch([{"prompt": "q", "completions": ["a"]}])
    with pytest.raises(InvalidInputError, match="has no such method"):
        MonteCarloLabeler(object()).label("q", ["a", "b"], "1")
    assert gen.calls == []


# -- agreement and merging ------------------------------------------------------------------
def _row(q: str, labels: list[bool], **extra: Any) -> dict[str, Any]:
    return {"prompt": q, "completions": [f"{q} step {k + 1}" for k in range(len(labels))],
            "labels": labels, **extra}


T, F = True, False
HUMAN = [_row("qa", [T, F, F]), _row("qb", [T, T]), _row("qc", [F]), _row("qe", [T, F])]
GRADED = [_row("qa", [T, T, F]), _row("qb", [T, F]), _row("qd", [T, T]), _row("qe", [T, F])]
# Overlap qa, qb, qe (qc human-only, qd grader-only). Steps, human vs grader:
#   human  T F F | T T | T F     grader T T F | T F | T F
#   both good: qa1 qb1 qe1 = 3; both bad: qa3 qe2 = 2; human bad/grader good: qa2 = 1;
#   human good/grader bad: qb2 = 1. Accuracy 5/7.
#   P(good): human 4/7, grader 4/7; p_e = (4/7)^2 + (3/7)^2 = 25/49;
#   kappa = (35/49 - 25/49) / (24/49) = 10/24 = 5/12.
#   first errors: qa 1 vs 2, qb none vs 1, qe 1 vs 1 -> 1/3 agree.
#   bad-step precision 2/(2+1), recall 2/(2+1).


def _check_figures(report: dict[str, Any], *, human_only: int = 1,
                   grader_only: int = 1) -> None:
    assert report["chains"] == 3 and report["steps"] == 7
    assert report["step_accuracy"] == pytest.approx(5 / 7)
    assert report["cohen_kappa"] == pytest.approx(5 / 12)
    assert report["first_error_agreement"] == pytest.approx(1 / 3)
    assert report["bad_step_precision"] == pytest.approx(2 / 3)
    assert report["bad_step_recall"] == pytest.approx(2 / 3)
    assert report["confusion"] == {"both_good": 3, "both_bad": 2, "human_good_grader_bad": 1,
                                   "human_bad_grader_good": 1}
    assert report["human_only"] == human_only and report["grader_only"] == grader_only


def test_agreement_figures_by_hand() -> None:
    report = label_agreement(HUMAN, GRADED)
    _check_figures(report.as_dict())
    assert "3 chains (7 steps) labelled by both: step accuracy 71.4%, Cohen's kappa 0.417" in (
        report.summary())


def test_cohen_kappa_edge_cases() -> None:
    assert cohen_kappa([T, F], [T, F]) == 1.0
    assert cohen_kappa([T, F], [F, T]) == -1.0
    assert cohen_kappa([T, T], [T, T]) is None  # chance agreement is 1: undefined
    assert cohen_kappa([], []) is None
    with pytest.raises(InvalidInputError, match="one length; got 2 and 1"):
        cohen_kappa([T, F], [T])
    empty = label_agreement(HUMAN[:1], GRADED[2:3])
    assert empty.chains == 0 and empty.step_accuracy is None and empty.cohen_kappa is None


def test_merge_human_labels_win() -> None:
    merged = merge_labels(HUMAN, GRADED)
    assert [(r["prompt"], r["labels"], r["source"]) for r in merged] == [
        ("qa", [T, F, F], "human"), ("qb", [T, T], "human"), ("qc", [F], "human"),
        ("qe", [T, F], "human"), ("qd", [T, T], "llm-grader")]
    conflict = [_row("qa", [T, T, T]), _row("qa", [T, F, F])]
    with pytest.raises(InvalidInputError, match="human row 1 repeats an earlier chain with "
                                                "other labels"):
        merge_labels(conflict, [])
    with pytest.raises(InvalidInputError, match=r"grader row 0: .*1 completions but 2 labels"):
        label_agreement([], [{"prompt": "q", "completions": ["a"], "labels": [T, F]}])


def test_build_hybrid_dataset(keyed_model_cls: type) -> None:
    from prm_plugins.labeling import LLMStepGrader, abuild_hybrid_dataset, build_hybrid_dataset

    def verdicts(labels: list[bool]) -> list[str]:
        return ["\n".join(f"Step {k}: {'correct' if v else 'incorrect'}"
                          for k, v in enumerate(labels, start=1))]

    answers = {r["prompt"]: verdicts(r["labels"]) for r in GRADED}
    answers["qc"] = ["I cannot tell."]  # the grader fails on a human chain: human labels kept
    answers["qf"] = ["Looks fine to me."]  # and on an unlabelled chain: left out
    unlabelled = [(r["prompt"], r["completions"]) for r in (GRADED[0], GRADED[2])] + [
        ("qf", ["qf step 1"])]

    for run in ("sync", "async"):
        model = keyed_model_cls(answers=answers)
        grader = LLMStepGrader(model, max_retries=1, max_concurrency=2)
        if run == "sync":
            result = build_hybrid_dataset(HUMAN, unlabelled, grader)
        else:
            result = asyncio.run(abuild_hybrid_dataset(HUMAN, unlabelled, grader))
        # qa is human-labelled: graded once, not twice
        assert model.calls == {"qa": 1, "qb": 1, "qc": 2, "qe": 1, "qd": 1, "qf": 2}
        _check_figures(result.agreement.as_dict())
        assert [(r["prompt"], r["labels"], r["source"]) for r in result.rows] == [
            ("qa", [T, F, F], "human"), ("qb", [T, T], "human"), ("qc", [F], "human"),
            ("qe", [T, F], "human"), ("qd", [T, T], "llm-grader")]
        assert sorted(g.question for g in result.failed) == ["qc", "qf"]
        summary = result.as_dict()
        assert summary["human_rows"] == 4 and summary["grader_rows"] == 1
        assert summary["grading_failed"] == 2 and summary["graded"] == 6
        for row in result.rows:
            validate_stepwise_row(row)


# -- CLI ------------------------------------------------------------------------------------
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prm")
    sub = parser.add_subparsers(dest="verb")
    label_cli.add_parser(sub)
    return parser.parse_args(argv)


def test_cli_agreement_and_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    human, graded = tmp_path / "human.jsonl", tmp_path / "graded.jsonl"
    write_stepwise_jsonl(HUMAN, human)
    write_stepwise_jsonl([{**r, "source": "llm-grader"} for r in GRADED], graded)

    args = _parse(["label", "agreement", "--human", str(human), "--graded", str(graded),
                   "--json"])
    assert label_cli.run(args) == 0
    _check_figures(json.loads(capsys.readouterr().out))
    assert label_cli.run(_parse(["label", "agreement", "--human", str(human), "--graded",
                                 str(graded)])) == 0
    assert "Cohen's kappa 0.417, first-error agreement 33.3%" in capsys.readouterr().out

    out = tmp_path / "merged.jsonl"
    merge = _parse(["label", "merge", "--human", str(human), "--graded", str(graded), "--out",
                    str(out), "--json"])
    assert label_cli.run(merge) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows_written"] == 5 and summary["agreement"]["chains"] == 3
    assert [(r["prompt"], r["labels"]) for r in read_stepwise_jsonl(out)] == [
        ("qa", [T, F, F]), ("qb", [T, T]), ("qc", [F]), ("qe", [T, F]), ("qd", [T, T])]

    # no overlap, a missing file, a bad row: exit 2 with a message
    other = tmp_path / "other.jsonl"
    write_stepwise_jsonl([_row("zz", [T])], other)
    assert label_cli.run(_parse(["label", "agreement", "--human", str(human), "--graded",
                                 str(other)])) == 2
    assert "no chain is in both files (4 human, 1 graded chains)" in capsys.readouterr().err
    assert label_cli.run(_parse(["label", "agreement", "--human", str(tmp_path / "nope"),
                                 "--graded", str(graded)])) == 2
    err = capsys.readouterr().err
    assert "--human file" in err and "not found" in err
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(_row("qa", [T, F, F])) + "\n{oops\n", encoding="utf-8")
    assert label_cli.run(_parse(["label", "merge", "--human", str(broken), "--graded",
                                 str(graded), "--out", str(tmp_path / "m2.jsonl")])) == 2
    assert ":2: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "m2.jsonl").exists()


# -- packaging ------------------------------------------------------------------------------
def test_labeling_import_stays_light() -> None:
    code = (
        "import sys, json, prm_plugins.labeling as L;"
        "before = [m for m in ('langchain_core', 'tenacity') if m in sys.modules];"
        "import prm_plugins.labeling.grader, prm_plugins.labeling.rollouts,"
        " prm_plugins.labeling.hybrid;"
        "L.LLMStepGrader, L.MonteCarloLabeler, L.label_agreement;"
        "print(json.dumps([before, 'langchain_core' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[], False]


def test_new_names_are_exported() -> None:
    import prm_plugins.labeling as labeling

    for name in ("LLMStepGrader", "GradedChain", "GraderAnswerError", "parse_step_verdicts",
                 "MonteCarloLabeler", "RolloutLabels", "build_rollout_prompt",
                 "AgreementReport", "HybridResult", "build_hybrid_dataset", "label_agreement",
                 "merge_labels", "cohen_kappa"):
        assert name in labeling.__all__ and getattr(labeling, name) is not None
    assert GradedChain is labeling.grader.GradedChain
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        labeling.nope  # noqa: B018


def test_docstring_examples() -> None:
    pytest.importorskip("langchain_core")
    import prm_plugins.adapters.langchain.grader as lc_grader
    from prm_plugins.labeling import grader, hybrid, rollouts, verdicts

    for module in (grader, verdicts, hybrid, rollouts, lc_grader):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# -- the core grader is framework-free; LangChain messages come from the adapter -------------
class _PlainChat:
    """Not a LangChain model: an ``invoke`` that records what it is sent."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.seen: list[Any] = []

    def invoke(self, messages: Any) -> str:
        self.seen.append(messages)
        return self.answer


def test_core_grader_sends_role_text_pairs_and_builds_no_langchain_objects() -> None:
    from prm_plugins.labeling import LLMStepGrader

    model = _PlainChat("Step 1: correct\nStep 2: incorrect")
    graded = LLMStepGrader(model).grade("What is 2 + 3?", ["2 + 3 = 5", "The answer is 6."])
    assert graded.labels == [True, False]
    (sent,) = model.seen
    assert [role for role, _ in sent] == ["system", "human"]
    assert all(type(m) is tuple and all(type(x) is str for x in m) for m in sent)
    assert sent[1][1].startswith("Question:\nWhat is 2 + 3?\n\nSolution (2 steps):\n")
    # no module of the core grader imports LangChain
    code = ("import sys, prm_plugins.labeling.grader, prm_plugins.labeling.verdicts;"
            "print(sorted(m for m in sys.modules if m.startswith('langchain')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_langchain_adapter_builds_the_messages() -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    from prm_plugins.adapters.langchain.grader import to_langchain_messages
    from prm_plugins.labeling import LLMStepGrader

    model = _PlainChat("Steps look fine")  # unreadable: re-asked once, then failed
    graded = LLMStepGrader(model, max_retries=1, to_messages=to_langchain_messages).grade(
        "q", ["a"])
    assert not graded.ok and graded.model_calls == 2
    first, second = model.seen
    assert [type(m) for m in first] == [SystemMessage, HumanMessage]
    assert [type(m) for m in second] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
    assert second[2].content == "Steps look fine"
    assert second[3].content.startswith("Your answer could not be read: line 1 is not a "
                                        "verdict line: 'Steps look fine'")
    with pytest.raises(InvalidInputError, match="unknown message role 'tool' in a grading "
                                                "conversation; expected one of system, human, ai"):
        to_langchain_messages([("tool", "x")])
    with pytest.raises(InvalidInputError, match="to_messages must be a function of a list of "
                                                "\\(role, text\\) pairs, got str"):
        LLMStepGrader(model, to_messages="langchain")  # type: ignore[arg-type]
