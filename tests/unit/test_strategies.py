"""Strategies over a PRM: verify, best-of-N, votes, self-critique, beam search and DVTS.

Two scorers are used:

* the hand-built contract graph of ``graph_models`` run by a real :class:`OnnxPRM`; expected
  choices are computed independently with ``reference_probs`` (numpy), so these tests check
  the strategies end to end against a real scorer;
* :class:`ScriptedScorer`, a tiny in-test StepScorer whose step score is looked up by the
  step's text. It is used where a test needs round, context-free numbers chosen on purpose
  (a threshold crossed by exactly one candidate, a tree where beam search and greedy search
  disagree, vote weights), which the graph's running mean cannot produce on demand, and to
  record every ``score_batch`` call.

Generators are the seeded, scripted :class:`fake_generators.FakeGenerator`.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import tenacity

from prm_plugins import InvalidInputError, StepScores, load_prm
from prm_plugins.runtime import OnnxPRM
from prm_plugins.strategies import (
    DVTS,
    AllCandidatesFailedError,
    BestOfN,
    EmptyGenerationsError,
    RetryPolicy,
    SelfCritique,
    StepBeamSearch,
    TransientGeneratorError,
    abest_of_n,
    amajority_vote,
    aself_critique,
    averify,
    aweighted_best_of_n,
    best_of_n,
    build_revision_prompt,
    extract_a_colon,
    extract_final_answer,
    has_final_answer,
    majority_vote,
    self_critique,
    verify,
    weighted_best_of_n,
)

from support.fake_generators import FakeGenerator, MethodView
from support.graph_models import make_model_dir, reference_probs
from support.scripted_scorer import ScriptedScorer

Q = "w1 w2 + w3 = ?"
FAST = RetryPolicy.no_wait()


# -- scorers --------------------------------------------------------------------------------



class CountingScorer:
    """Wraps a real scorer and records the size of every score_batch call."""

    def __init__(self, prm: OnnxPRM) -> None:
        self.prm = prm
        self.format = prm.format
        self.batches: list[int] = []

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        self.batches.append(len(items))
        return self.prm.score_batch(items)

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score_batch([(question, steps)])[0]

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score(question, steps)


@pytest.fixture(scope="session")
def graph_prm(tmp_path_factory: pytest.TempPathFactory) -> OnnxPRM:
    model_dir: Path = make_model_dir(tmp_path_factory.mktemp("strategies") / "m")
    return load_prm(model_dir, device="cpu")


@pytest.fixture()
def prm(graph_prm: OnnxPRM) -> CountingScorer:
    return CountingScorer(graph_prm)


def reference(prm: OnnxPRM | CountingScorer, question: str, steps: list[str]) -> list[float]:
    """Per-step scores computed by hand from the graph's formula (no ONNX Runtime)."""
    r = prm.format.render(question, steps)
    probs = reference_probs(r.input_ids)
    return [float(probs[p]) for p in r.step_positions]


def aggregate(scores: list[float], how: str) -> float:
    return {"min": min(scores), "prod": math.prod(scores), "mean": sum(scores) / len(scores),
            "last": scores[-1]}[how]


# -- verify ---------------------------------------------------------------------------------

CHAIN = ["w14 = w15", "w7 w7 w9 = 6", "w16 w17 = 9"]


def test_verify_matches_hand_computed_scores(prm: CountingScorer) -> None:
    exp = reference(prm, Q, CHAIN)
    threshold = 0.5
    first_fail = next(i for i, s in enumerate(exp) if s < threshold)
    assert first_fail == 1 and exp[0] >= threshold  # the chain is built so step 2 fails
    v = verify(Q, "\n".join(CHAIN), prm, threshold=threshold)
    assert v.step_scores.scores == pytest.approx(exp, abs=1e-6)
    assert v.score == pytest.approx(min(exp), abs=1e-6)
    assert v.passed is False
    assert v.first_failing_step == 1
    assert v.weakest_step == min(range(3), key=exp.__getitem__)
    assert v.flagged_step == 1
    assert v.feedback.startswith('Step 2 of 3 looks wrong: "w7 w7 w9 = 6" scores ')
    assert f"{exp[1]:.2f}, below the threshold 0.50" in v.feedback
    assert "Keep step 1 and redo the solution from step 2." in v.feedback
    d = v.to_dict()
    assert json.loads(json.dumps(d))["first_failing_step"] == 1
    assert d["steps"] == CHAIN and d["passed"] is False

    loose = verify(Q, CHAIN, prm, threshold=min(exp) - 0.01)
    assert loose.passed and loose.first_failing_step is None and loose.flagged_step is None
    assert loose.feedback.startswith("All 3 steps look right")
    mean = verify(Q, CHAIN, prm, threshold=0.5, aggregate="mean")
    assert mean.score == pytest.approx(sum(exp) / 3, abs=1e-6)
    assert mean.passed == (sum(exp) / 3 >= 0.5)


def test_averify_equals_verify(prm: CountingScorer) -> None:
    assert asyncio.run(averify(Q, CHAIN, prm)) == verify(Q, CHAIN, prm)


def test_verify_feedback_truncates_and_explains_an_aggregate_failure() -> None:
    long_step = ("carry " * 60).strip()
    scorer = ScriptedScorer({"a": 0.6, long_step: 0.55})
    v = verify("q", ["a", long_step], scorer, threshold=0.7, aggregate="mean")
    assert not v.passed and v.first_failing_step == 0  # 0.6 < 0.7
    v = verify("q", ["a", long_step], scorer, threshold=0.5, aggregate="prod")
    assert not v.passed and v.first_failing_step is None and v.flagged_step == 1
    assert "is the weakest step (0.55) and the chain score 0.33 (prod)" in v.feedback
    quoted = v.feedback.split('"')[1]
    assert quoted.endswith("...") and len(quoted) <= 160


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 1.5}, "threshold must be a number in \\[0, 1\\], got 1.5"),
        ({"threshold": -0.1}, "threshold"),
        ({"aggregate": "max"}, "unknown aggregate 'max'"),
        ({"split": "paragraphs"}, "unknown split 'paragraphs'"),
    ],
)
def test_verify_rejects_bad_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        verify("q", ["a"], ScriptedScorer({}), **kwargs)


def test_verify_rejects_a_solution_without_steps() -> None:
    with pytest.raises(InvalidInputError, match="no steps to verify"):
        verify("q", "  \n ", ScriptedScorer({}))
    with pytest.raises(InvalidInputError, match="at least one step"):
        verify("q", [], ScriptedScorer({}))


# -- best-of-N ------------------------------------------------------------------------------

SOLUTIONS = ["w4 + 5 = w6\nw7 = 8", "w9 w10 = 3\nw11 .", "w12 + w13 = 4", "w14 = w15\nw16 w17 = 9"]


@pytest.mark.parametrize("how", ["min", "prod", "mean", "last"])
def test_best_of_n_picks_the_hand_computed_best(prm: CountingScorer, how: str) -> None:
    chains = [s.split("\n") for s in SOLUTIONS]
    expected = [aggregate(reference(prm, Q, c), how) for c in chains]
    winner = max(range(4), key=expected.__getitem__)
    assert sorted(expected)[-1] - sorted(expected)[-2] > 1e-4  # a clear winner
    result = best_of_n(Q, FakeGenerator(SOLUTIONS), prm, n=4, aggregate=how)
    assert result.best.index == winner
    assert result.text == SOLUTIONS[winner]
    assert result.score == pytest.approx(expected[winner], abs=1e-6)
    assert [c.score for c in result.candidates] == pytest.approx(expected, abs=1e-6)
    assert [c.steps for c in result.candidates] == chains
    assert prm.batches == [4]  # every candidate in one batched call
    assert result.generator_calls == 4 and result.attempts == 4 and not result.stopped_early
    assert json.loads(json.dumps(result.to_dict()))["best"] == winner


def test_best_of_n_accepts_a_callable_aggregate(prm: CountingScorer) -> None:
    def second_step_or_first(scores: Sequence[float]) -> float:
        return scores[1] if len(scores) > 1 else scores[0]

    expected = [second_step_or_first(reference(prm, Q, s.split("\n"))) for s in SOLUTIONS]
    r = BestOfN(FakeGenerator(SOLUTIONS), prm, n=4, aggregate=second_step_or_first).run(Q)
    assert r.best.index == max(range(4), key=expected.__getitem__)


def test_failed_candidates_are_reported_not_fatal() -> None:
    scorer = ScriptedScorer({"a": 0.4, "c": 0.7})
    gen = FakeGenerator(["a\nb", ValueError("boom"), "   ", "c"])
    r = best_of_n("q", gen, scorer, n=4, max_concurrency=1, retry=FAST)
    assert r.best.index == 3 and r.score == 0.7
    assert [c.ok for c in r.candidates] == [True, False, False, True]
    assert r.candidates[1].failed_at == "generation"
    assert r.candidates[1].error == "ValueError: boom"
    assert r.candidates[1].attempts == 1  # not transient: no retry
    assert r.candidates[2].failed_at == "empty"
    assert [c.index for c in r.failed] == [1, 2]
    assert scorer.batches == [2]  # only the usable candidates are scored, in one call


def test_transient_errors_are_retried_and_counted() -> None:
    gen = FakeGenerator([TimeoutError("slow"), ConnectionError("reset"),
                         TransientGeneratorError("rate limited"), "a"])
    r = best_of_n("q", gen, ScriptedScorer({}), n=1, retry=RetryPolicy.no_wait(max_attempts=4))
    assert r.best.text == "a"
    assert r.best.attempts == 4 and r.attempts == 4 and r.generator_calls == 1
    assert gen.calls["sample"] == 4

    gen = FakeGenerator([TimeoutError("slow"), TimeoutError("slower"), "a"])
    with pytest.raises(AllCandidatesFailedError, match="TimeoutError: slower") as info:
        best_of_n("q", gen, ScriptedScorer({}), n=1, retry=RetryPolicy.no_wait(max_attempts=2))
    assert gen.calls["sample"] == 2
    assert [type(e) for e in info.value.causes] == [TimeoutError]
    assert info.value.candidates[0].attempts == 2


def test_a_generator_that_always_fails_raises_with_the_causes() -> None:
    gen = FakeGenerator(fail_always=ConnectionError("server down"))
    with pytest.raises(AllCandidatesFailedError) as info:
        best_of_n("q", gen, ScriptedScorer({}), n=3, retry=RetryPolicy.no_wait(max_attempts=3))
    assert gen.calls["sample"] == 9  # 3 candidates x 3 attempts
    assert "all 3 candidates failed: 3x ConnectionError: server down" in str(info.value)
    assert all(isinstance(e, ConnectionError) for e in info.value.causes)
    assert not isinstance(info.value, InvalidInputError)


def test_empty_generations_from_every_call_are_invalid_input() -> None:
    with pytest.raises(EmptyGenerationsError, match="all 3 generator calls returned empty"):
        best_of_n("q", FakeGenerator(["", " \n "]), ScriptedScorer({}), n=3)
    with pytest.raises(InvalidInputError):
        best_of_n("q", FakeGenerator([""]), ScriptedScorer({}), n=2)
    with pytest.raises(AllCandidatesFailedError):
        best_of_n("q", FakeGenerator([""]), ScriptedScorer({}), n=2)


def test_early_stop_reduces_generator_calls() -> None:
    scorer = ScriptedScorer({"bad": 0.2, "good": 0.9, "meh": 0.6})
    script = ["bad", "meh", "good", "bad", "bad", "bad", "bad", "bad"]

    gen = FakeGenerator(script)
    r = best_of_n("q", gen, scorer, n=8, threshold=0.8, max_concurrency=2)
    # Rounds of 2: round 1 ("bad", "meh") stays under 0.8; round 2 finds "good".
    assert r.stopped_early and r.text == "good"
    assert gen.calls["sample"] == 4 and r.generator_calls == 4 and len(r.candidates) == 4
    assert scorer.batches == [2, 2]

    scorer.batches.clear()
    gen = FakeGenerator(script)
    r = best_of_n("q", gen, scorer, n=8, max_concurrency=2)
    assert gen.calls["sample"] == 8 and not r.stopped_early and r.text == "good"
    assert scorer.batches == [8]

    scorer.batches.clear()
    r = best_of_n("q", FakeGenerator(["bad"]), scorer, n=5, threshold=0.95, max_concurrency=2)
    assert r.generator_calls == 5 and not r.stopped_early and scorer.batches == [2, 2, 1]


def test_a_chain_the_scorer_rejects_fails_alone() -> None:
    scorer = ScriptedScorer({"a": 0.5, "b": 0.6}, too_long=["huge"])
    r = best_of_n("q", FakeGenerator(["a", "huge", "b"]), scorer, n=3, max_concurrency=1)
    assert r.text == "b"
    assert r.candidates[1].failed_at == "scoring"
    assert "ChainTooLongError" in (r.candidates[1].error or "")
    assert scorer.batches == [3, 1, 1, 1]  # the batch failed, then one by one


def test_sampling_is_concurrent_and_bounded() -> None:
    gen = FakeGenerator(["a"], delay=0.1)
    start = time.perf_counter()
    best_of_n("q", gen, ScriptedScorer({}), n=4, max_concurrency=4)
    assert time.perf_counter() - start < 0.35  # 4 x 0.1 s sequentially
    assert gen.peak_in_flight == 4
    gen = FakeGenerator(["a"], delay=0.02)
    asyncio.run(abest_of_n("q", gen, ScriptedScorer({}), n=6, max_concurrency=2))
    assert gen.peak_in_flight == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be an int >= 1"),
        ({"n": True}, "n must be an int >= 1"),
        ({"threshold": 1.01}, "threshold must be a number in \\[0, 1\\]"),
        ({"threshold": -0.5}, "threshold must be a number in \\[0, 1\\]"),
        ({"max_concurrency": 0}, "max_concurrency must be an int >= 1"),
        ({"aggregate": "median"}, "unknown aggregate"),
        ({"split": "sentences"}, "unknown split"),
        ({"retry": 3}, "retry must be a RetryPolicy"),
    ],
)
def test_best_of_n_rejects_bad_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        best_of_n("q", FakeGenerator(["a"]), ScriptedScorer({}), **kwargs)


def test_bad_questions_generators_and_scorers_are_named() -> None:
    with pytest.raises(InvalidInputError, match="question must be a non-empty str"):
        best_of_n("  ", FakeGenerator(["a"]), ScriptedScorer({}))
    with pytest.raises(InvalidInputError, match="StepScorer protocol"):
        best_of_n("q", FakeGenerator(["a"]), object())  # type: ignore[arg-type]
    async_only = MethodView(FakeGenerator(["a"]), "asample")
    with pytest.raises(InvalidInputError, match="It has asample\\(\\): call the strategy's async"):
        best_of_n("q", async_only, ScriptedScorer({}))
    with pytest.raises(InvalidInputError, match="has neither"):
        asyncio.run(abest_of_n("q", object(), ScriptedScorer({})))


def test_retry_policy_backoff_and_validation() -> None:
    policy = RetryPolicy(initial_wait=0.5, max_wait=3.0, exp_base=2.0, jitter=0.0)
    assert [policy.backoff(k) for k in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    wait = policy._wait()
    for k in (1, 2, 3, 4):
        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = k
        assert wait(state) == pytest.approx(policy.backoff(k))
    for bad in ({"max_attempts": 0}, {"initial_wait": -1}, {"exp_base": 0.5},
                {"retry_on": (int,)}):
        with pytest.raises(InvalidInputError):
            RetryPolicy(**bad)  # type: ignore[arg-type]


def test_retry_waits_back_off_for_real() -> None:
    gen = FakeGenerator([TimeoutError(), TimeoutError(), "a"])
    policy = RetryPolicy(max_attempts=3, initial_wait=0.03, max_wait=0.05, jitter=0.0)
    start = time.perf_counter()
    best_of_n("q", gen, ScriptedScorer({}), n=1, retry=policy)
    assert time.perf_counter() - start >= 0.03 + 0.05 - 0.005


# -- votes ----------------------------------------------------------------------------------

VOTE_TABLE = {"p1": 0.9, "p2": 0.8, "p3": 0.3, "p4": 0.25, "p5": 0.2}


def test_weighted_vote_majority_vote_and_best_of_n_disagree_as_computed() -> None:
    # chain scores (min; answer steps score 1.0): 0.9 and 0.8 say 5; 0.3, 0.25, 0.2 say 7.
    texts = ["p1\nThe answer is 5.", "p2\n#### 5", "p3\n#### 7", "p4\nA: 7",
             "p5\nSo it is \\boxed{7}"]
    scorer = ScriptedScorer(VOTE_TABLE)
    weighted = weighted_best_of_n("q", FakeGenerator(texts), scorer, n=5)
    assert weighted.answer == "5" and weighted.answer_key == "5" and weighted.best.index == 0
    assert weighted.weights == pytest.approx({"5": 1.7, "7": 0.75})
    assert weighted.counts == {"5": 2, "7": 3}
    assert [c.answer for c in weighted.candidates] == ["5", "5", "7", "7", "7"]
    assert scorer.batches == [5]

    majority = majority_vote("q", FakeGenerator(texts), n=5)
    assert majority.answer == "7" and majority.best.index == 2
    assert majority.weights == {"5": 2.0, "7": 3.0} and majority.method == "majority"
    assert all(c.score is None for c in majority.candidates)

    # Best-of-N's top score takes the single best chain; the weighted vote (best-of-N's
    # default when most candidates state an answer) pools weaker agreeing ones.
    texts = ["p1\nThe answer is 5.", "p2\n#### 7", "p3\n#### 7"]
    top = best_of_n("q", FakeGenerator(texts), scorer, n=3, selection="top_score")
    assert top.text == texts[0] and top.selection == "top_score" and top.answer is None
    default = best_of_n("q", FakeGenerator(texts), scorer, n=3)
    assert default.selection == "weighted_vote" and default.text == texts[1]
    assert default.answer == "7" and default.votes == pytest.approx({"5": 0.9, "7": 1.1})
    assert default.score == pytest.approx(0.8) and default.best.answer == "7"
    # No stated answers (the last-number fallback does not count): the top score.
    plain = ["p1\nso 5", "p2\nso 7", "p3\nso 7"]
    assert best_of_n("q", FakeGenerator(plain), scorer, n=3).selection == "top_score"
    assert best_of_n("q", FakeGenerator(plain), scorer, n=3,
                     selection="weighted_vote").text == plain[1]
    with pytest.raises(InvalidInputError, match="selection must be one of .* got 'best'"):
        best_of_n("q", FakeGenerator(plain), scorer, n=3, selection="best")  # type: ignore[arg-type]
    weighted = weighted_best_of_n("q", FakeGenerator(texts), scorer, n=3)
    assert weighted.answer == "7" and weighted.best.index == 1  # 0.8 + 0.3 > 0.9
    assert json.loads(json.dumps(weighted.to_dict()))["answer_key"] == "7"


def test_votes_accept_a_custom_extractor_and_survive_no_answers() -> None:
    texts = ["p1\nresult: 4", "p2\nresult: 9", "p3\nresult: 9"]
    scorer = ScriptedScorer(VOTE_TABLE)
    r = weighted_best_of_n("q", FakeGenerator(texts), scorer, n=3,
                           extractor=lambda t: t.rsplit(":", 1)[-1].strip())
    assert r.answer == "9"
    r = weighted_best_of_n("q", FakeGenerator(["p1", "p2"]), scorer, n=2,
                           extractor=lambda t: None)
    assert r.answer is None and r.best.index == 0


def test_answer_extractors() -> None:
    assert extract_final_answer("x\n#### 1,234") == "1,234"
    assert extract_final_answer("The answer is 18 apples.") == "18"
    assert extract_final_answer("Q: what?\nA: 42") == "42"
    assert extract_final_answer("so \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_final_answer("we get 3 then 5") == "5"
    assert extract_final_answer("no digits", fallback_last_number=False) is None
    assert extract_a_colon("A: Paris.") == "Paris"
    assert has_final_answer("#### 4") and has_final_answer("A: 4")
    assert not has_final_answer("3 + 1 = 4")


# -- self-critique --------------------------------------------------------------------------

CRITIQUE_TABLE = {"s1": 0.9, "s2 bad": 0.1, "s2 good": 0.8, "s3": 0.7, "s3 bad": 0.3,
                  "s4 bad": 0.2, "s2 worse": 0.05}


def test_self_critique_redoes_from_the_first_failing_step() -> None:
    gen = FakeGenerator(["s1\ns2 bad\ns3"], revisions=["s2 good\ns3"])
    scorer = ScriptedScorer(CRITIQUE_TABLE)
    r = self_critique("q", gen, scorer, threshold=0.5, max_rounds=2)
    assert r.passed and r.steps == ["s1", "s2 good", "s3"]
    assert r.solution == "s1\ns2 good\ns3"
    assert r.verdict.score == 0.7
    assert [h.round for h in r.history] == [0, 1] and r.revisions == 1
    assert r.generator_calls == 2 and r.attempts == 2
    ((_, (question, prefix, feedback)),) = [e for e in gen.log if e[0] == "revise"]
    assert question == "q" and prefix == ["s1"]  # the verified prefix is kept
    assert feedback == ('Step 2 of 3 looks wrong: "s2 bad" scores 0.10, below the threshold '
                        "0.50. Keep step 1 and redo the solution from step 2.")
    assert r.history[1].kept_steps == 1 and r.history[1].feedback == feedback
    assert r.history[0].verdict is not None and not r.history[0].verdict.passed
    assert json.loads(json.dumps(r.to_dict()))["passed"] is True


def test_self_critique_without_revise_prompts_sample() -> None:
    fake = FakeGenerator(["s1\ns2 bad\ns3", "s2 good\ns3"])
    r = self_critique("q", MethodView(fake, "sample"), ScriptedScorer(CRITIQUE_TABLE))
    assert r.passed and r.steps == ["s1", "s2 good", "s3"]
    prompt = fake.log[1][1][0]
    assert prompt == build_revision_prompt("q", ["s1"], r.history[1].feedback or "")
    assert "Step 1: s1" in prompt and "starting with step 2" in prompt


def test_self_critique_stops_after_max_rounds_and_returns_the_best_round() -> None:
    # Round 0 scores 0.1 (min); revisions score 0.05 then 0.3: the last round is best.
    gen = FakeGenerator(["s1\ns2 bad\ns3"], revisions=["s2 worse", "s2 good\ns3 bad"])
    scorer = ScriptedScorer(CRITIQUE_TABLE)
    r = self_critique("q", gen, scorer, threshold=0.5, max_rounds=2)
    assert not r.passed and len(r.history) == 3
    assert [h.verdict.score for h in r.history if h.verdict] == [0.1, 0.05, 0.3]
    assert r.steps == ["s1", "s2 good", "s3 bad"] and r.verdict.score == 0.3
    # round 2 redid round 1's chain from its failing step 2 ("s2 worse")
    assert gen.log[-1][1][1] == ["s1"]

    gen = FakeGenerator(["s1\ns2 bad\ns3"], revisions=["s2 worse"])
    r = self_critique("q", gen, scorer, max_rounds=1)
    assert r.steps == ["s1", "s2 bad", "s3"]  # round 0 (0.1) beats round 1 (0.05)
    gen = FakeGenerator(["s1\ns2 bad\ns3"], revisions=["s2 worse"])
    r = self_critique("q", gen, scorer, max_rounds=1, return_best=False)
    assert r.steps == ["s1", "s2 worse"]
    gen = FakeGenerator(["s1\ns2 bad\ns3"], revisions=["s2 good"])
    r = self_critique("q", gen, scorer, max_rounds=0)
    assert len(r.history) == 1 and gen.calls["revise"] == 0


def test_self_critique_can_redo_from_the_weakest_step() -> None:
    scorer = ScriptedScorer(CRITIQUE_TABLE)
    gen = FakeGenerator(["s1\ns3 bad\ns4 bad"], revisions=["s1"])
    SelfCritique(gen, scorer, max_rounds=1, redo_from="weakest").run("q")
    _, prefix, feedback = gen.log[-1][1]
    assert prefix == ["s1", "s3 bad"] and feedback.startswith('Step 3 of 3 looks wrong: "s4 bad"')
    gen = FakeGenerator(["s1\ns3 bad\ns4 bad"], revisions=["s1"])
    SelfCritique(gen, scorer, max_rounds=1).run("q")
    assert gen.log[-1][1][1] == ["s1"]


def test_self_critique_records_a_failed_round_and_goes_on() -> None:
    gen = FakeGenerator(["s1\ns2 bad"], revisions=[ValueError("no"), "", "s2 good"])
    r = self_critique("q", gen, ScriptedScorer(CRITIQUE_TABLE), max_rounds=3, retry=FAST)
    assert r.passed and [h.error for h in r.history] == [
        None, "ValueError: no", "empty generation (no steps)", None]
    assert r.generator_calls == 4


def test_self_critique_on_a_given_solution_with_the_graph_model(prm: CountingScorer) -> None:
    exp = reference(prm, Q, CHAIN)
    fixed = ["w14 = w15", "w16 w16 = 2"]
    gen = FakeGenerator(revisions=["w16 w16 = 2"])
    r = self_critique(Q, gen, prm, solution=CHAIN, threshold=0.5, max_rounds=1)
    assert gen.calls == {"revise": 1}  # no sample: the solution was given
    assert r.history[0].verdict is not None
    assert r.history[0].verdict.step_scores.scores == pytest.approx(exp, abs=1e-6)
    assert r.steps == fixed
    assert r.verdict.step_scores.scores == pytest.approx(reference(prm, Q, fixed), abs=1e-6)
    assert r.passed == (min(reference(prm, Q, fixed)) >= 0.5)


def test_self_critique_first_generation_failures() -> None:
    with pytest.raises(EmptyGenerationsError):
        self_critique("q", FakeGenerator([""]), ScriptedScorer({}))
    with pytest.raises(AllCandidatesFailedError, match="TimeoutError"):
        self_critique("q", FakeGenerator(fail_always=TimeoutError()), ScriptedScorer({}),
                      retry=FAST)
    with pytest.raises(InvalidInputError, match="max_rounds"):
        SelfCritique(FakeGenerator(), ScriptedScorer({}), max_rounds=-1)
    with pytest.raises(InvalidInputError, match="threshold must be a number in \\[0, 1\\]"):
        SelfCritique(FakeGenerator(), ScriptedScorer({}), threshold=2)
    with pytest.raises(InvalidInputError, match="redo_from"):
        SelfCritique(FakeGenerator(), ScriptedScorer({}), redo_from="last")  # type: ignore[arg-type]


# -- step-level search ----------------------------------------------------------------------

# Step scores are context-free and the value is the last step's score ("last").
SEARCH_TABLE = {"a": 0.9, "b": 0.6, "c": 0.3, "d": 0.2,
                "a1 The answer is 1": 0.2, "a2 The answer is 2": 0.3,
                "b1 The answer is 3": 0.95, "b2": 0.5,
                "b21 The answer is 4": 0.4, "b22 The answer is 5": 0.1,
                "c1 The answer is 6": 0.7, "c2 The answer is 7": 0.8}
TREE = {(): ["a", "b", "c", "d"],
        ("a",): ["a1 The answer is 1", "a2 The answer is 2"],
        ("b",): ["b1 The answer is 3", "b2"],
        ("b", "b2"): ["b21 The answer is 4", "b22 The answer is 5"],
        ("c",): ["c1 The answer is 6", "c2 The answer is 7"],
        ("d",): ["d1 The answer is 8", "d2 The answer is 9"]}


def test_beam_search_follows_the_hand_computed_beams() -> None:
    scorer = ScriptedScorer(SEARCH_TABLE)
    gen = FakeGenerator(tree=TREE)
    r = StepBeamSearch(gen, scorer, n=4, beam_width=2, max_steps=5).run("q")
    # it 1: a .9, b .6 kept. it 2: b1 .95 (done), b2 .5 kept; a2 .3, a1 .2 pruned.
    # it 3: b2 -> b21 .4 (done) fills the last beam.
    assert r.steps == ["b", "b1 The answer is 3"] and r.score == 0.95 and r.best.complete
    assert [(c.steps[-1], c.score) for c in r.finished] == [
        ("b1 The answer is 3", 0.95), ("b21 The answer is 4", 0.4)]
    assert r.unfinished == [] and r.iterations == 3
    assert r.generator_calls == 4  # 1 root call + 2 beams + 1 beam
    assert [args[1:] for _, args in gen.log] == [
        ([], 4), (["a"], 2), (["b"], 2), (["b", "b2"], 2)]
    assert scorer.batches == [4, 4, 2]
    assert r.tokens_scored == 4 * 1 + 4 * 2 + 2 * 3  # no format.render: steps are counted
    assert json.loads(json.dumps(r.to_dict()))["method"] == "beam"


def test_dvts_expands_independent_greedy_subtrees() -> None:
    scorer = ScriptedScorer(SEARCH_TABLE)
    r = DVTS(FakeGenerator(tree=TREE), scorer, n=4, beam_width=2).run("q")
    # subtree 0 = {a, b} -> a -> a2 (.3); subtree 1 = {c, d} -> c -> c2 (.8)
    assert [c.steps for c in r.finished] == [["c", "c2 The answer is 7"],
                                             ["a", "a2 The answer is 2"]]
    assert r.score == 0.8 and r.method == "dvts" and r.generator_calls == 3
    # One subtree is plain greedy search, which misses b1 (0.95) that beam search finds.
    greedy = DVTS(FakeGenerator(tree=TREE), scorer, n=2, beam_width=2).run("q")
    assert greedy.steps == ["a", "a2 The answer is 2"]


def test_search_with_the_graph_model_matches_reference(prm: CountingScorer) -> None:
    tree = {(): ["w1 + 2 = 3", "w13 w14 = 5"],
            ("w1 + 2 = 3",): ["w7 w9 = 1 #### 1", "w36 = 2 #### 2"],
            ("w13 w14 = 5",): ["w34 w37 = 4 #### 4", "w4 w5 = 6 #### 6"]}
    r = StepBeamSearch(FakeGenerator(tree=tree), prm, n=4, beam_width=2, aggregate="min").run(Q)
    # The beam (2 of 2 prefixes) keeps every prefix, so the winner is the best of all 4
    # complete chains by the hand-computed min step score.
    chains = [[p, s] for p in tree[()] for s in tree[(p,)]]
    values = [min(reference(prm, Q, c)) for c in chains]
    assert r.steps == chains[max(range(4), key=values.__getitem__)]
    assert r.score == pytest.approx(max(values), abs=1e-6)
    assert sorted(c.score for c in r.finished) == pytest.approx(sorted(values)[-2:], abs=1e-6)
    assert prm.batches == [2, 4]  # root proposals deduplicated from 4 to 2
    rendered = [[p] for p in tree[()]] + chains
    assert r.tokens_scored == sum(len(prm.format.render(Q, c)) for c in rendered)


def test_search_dedupes_identical_prefixes_and_honours_is_complete() -> None:
    scorer = ScriptedScorer({"x": 0.9, "y": 0.5, "x end": 0.8})
    tree = {(): ["x", "x", "y", "y"], ("x",): ["x end", "x end"], ("y",): ["y end", "y end"]}
    r = StepBeamSearch(FakeGenerator(tree=tree), scorer, n=4, beam_width=2,
                       is_complete=lambda step: step.endswith("end")).run("q")
    assert scorer.batches == [2, 2]  # 4 proposals -> 2 prefixes; 4 children -> 2
    assert [c.steps for c in r.finished] == [["y", "y end"], ["x", "x end"]]  # y end: 1.0


def test_search_stops_at_max_steps_with_open_chains() -> None:
    r = StepBeamSearch(FakeGenerator(default_steps=["more", "again"]), ScriptedScorer({}),
                       n=2, beam_width=1, max_steps=3).run("q")
    assert r.iterations == 3 and r.finished == [] and not r.best.complete
    assert len(r.best.steps) == 3 and len(r.unfinished) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 4, "beam_width": 8}, "beam_width \\(8\\) must not exceed n \\(4\\)"),
        ({"n": 6, "beam_width": 4}, "n \\(6\\) must be a multiple of beam_width \\(4\\)"),
        ({"n": 0}, "n must be an int >= 1"),
        ({"beam_width": 0}, "beam_width must be an int >= 1"),
        ({"max_steps": 0}, "max_steps must be an int >= 1"),
        ({"is_complete": "yes"}, "is_complete must be a callable"),
        ({"aggregate": "best"}, "unknown aggregate"),
    ],
)
def test_search_rejects_bad_options(kwargs: dict[str, Any], match: str) -> None:
    for cls in (StepBeamSearch, DVTS):
        with pytest.raises(InvalidInputError, match=match):
            cls(FakeGenerator(), ScriptedScorer({}), **kwargs)


def test_search_first_call_failures() -> None:
    with pytest.raises(EmptyGenerationsError, match="only empty steps"):
        StepBeamSearch(FakeGenerator(default_steps=[" "]), ScriptedScorer({}), n=2).run("q")
    gen = FakeGenerator(fail_always=TransientGeneratorError("busy"))
    with pytest.raises(AllCandidatesFailedError, match="busy") as info:
        DVTS(gen, ScriptedScorer({}), n=2, retry=FAST).run("q")
    assert gen.calls["propose_next_steps"] == 3 and len(info.value.causes) == 1


def test_a_failing_beam_is_dropped_and_reported() -> None:
    class FlakyTree(FakeGenerator):
        def propose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
            if prefix == ["a"]:
                raise ValueError("beam a broke")
            return super().propose_next_steps(question, prefix, n)

    r = StepBeamSearch(FlakyTree(tree=TREE), ScriptedScorer(SEARCH_TABLE), n=4,
                       beam_width=2, retry=FAST).run("q")
    assert r.errors[0] == "ValueError: beam a broke"
    assert r.steps == ["b", "b1 The answer is 3"]


# -- async forms, cancellation, determinism -------------------------------------------------


def test_async_forms_give_the_sync_results(prm: CountingScorer) -> None:
    async def both() -> list[Any]:
        return [
            await abest_of_n(Q, FakeGenerator(SOLUTIONS), prm, n=4),
            await aweighted_best_of_n("q", FakeGenerator(["p1\n#### 5"]), ScriptedScorer(
                VOTE_TABLE), n=2),
            await amajority_vote("q", FakeGenerator(["A: 1", "A: 2", "A: 2"]), n=3),
            await aself_critique("q", FakeGenerator(["s1\ns2 bad"], revisions=["s2 good"]),
                                 ScriptedScorer(CRITIQUE_TABLE)),
            await StepBeamSearch(FakeGenerator(tree=TREE), ScriptedScorer(SEARCH_TABLE), n=4,
                                 beam_width=2).arun("q"),
            await DVTS(FakeGenerator(tree=TREE), ScriptedScorer(SEARCH_TABLE), n=4,
                       beam_width=2).arun("q"),
        ]

    sync = [
        best_of_n(Q, FakeGenerator(SOLUTIONS), prm, n=4),
        weighted_best_of_n("q", FakeGenerator(["p1\n#### 5"]), ScriptedScorer(VOTE_TABLE), n=2),
        majority_vote("q", FakeGenerator(["A: 1", "A: 2", "A: 2"]), n=3),
        self_critique("q", FakeGenerator(["s1\ns2 bad"], revisions=["s2 good"]),
                      ScriptedScorer(CRITIQUE_TABLE)),
        StepBeamSearch(FakeGenerator(tree=TREE), ScriptedScorer(SEARCH_TABLE), n=4,
                       beam_width=2).run("q"),
        DVTS(FakeGenerator(tree=TREE), ScriptedScorer(SEARCH_TABLE), n=4, beam_width=2).run("q"),
    ]
    for a, s in zip(asyncio.run(both()), sync, strict=True):
        assert a.to_dict() == s.to_dict()
    assert sync[2].answer == "2"


def test_async_form_runs_a_sync_only_generator_in_threads() -> None:
    fake = FakeGenerator(["a", "b"], delay=0.01)
    scorer = ScriptedScorer({"a": 0.1, "b": 0.9})
    r = asyncio.run(abest_of_n("q", MethodView(fake, "sample"), scorer, n=2))
    assert r.text == "b" and fake.calls["sample"] == 2


def _cancel_midway(make_call: Any, fake: FakeGenerator, in_flight: int = 1) -> tuple[int, int]:
    """Start a strategy call, cancel it once ``in_flight`` generator calls are running, and
    return (extra tasks, extra threads) left once the in-flight work has wound down.

    Waiting for all the expected calls (not only the first) keeps the counts the tests check
    independent of how fast a loaded machine starts them."""

    async def main() -> tuple[int, int]:
        threads_before = threading.active_count()
        tasks_before = asyncio.all_tasks()
        task = asyncio.create_task(make_call())
        for _ in range(1000):
            await asyncio.sleep(0.005)
            if fake.in_flight >= in_flight:
                break
        assert fake.in_flight >= in_flight, (
            f"only {fake.in_flight} of {in_flight} generator calls started")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        extra_tasks = len(asyncio.all_tasks() - tasks_before)
        deadline = time.monotonic() + 2.0  # a blocking call already running must return
        while threading.active_count() > threads_before and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return extra_tasks, threading.active_count() - threads_before

    return asyncio.run(main())


def test_cancelling_an_async_call_leaks_no_tasks() -> None:
    fake = FakeGenerator(["a"], delay=5.0)
    extra = _cancel_midway(lambda: abest_of_n("q", fake, ScriptedScorer({}), n=8,
                                              max_concurrency=4), fake, in_flight=4)
    assert extra == (0, 0)
    assert fake.cancelled == 4 and fake.in_flight == 0 and fake.calls["sample"] == 4

    fake = FakeGenerator(tree=TREE, delay=5.0)
    search = StepBeamSearch(fake, ScriptedScorer(SEARCH_TABLE), n=4, beam_width=2)
    assert _cancel_midway(lambda: search.arun("q"), fake) == (0, 0)
    assert fake.cancelled == 1


def test_cancelling_with_a_sync_generator_leaks_no_threads() -> None:
    fake = FakeGenerator(["a"], delay=0.2)
    view = MethodView(fake, "sample")
    extra = _cancel_midway(lambda: abest_of_n("q", view, ScriptedScorer({}), n=8,
                                              max_concurrency=2), fake, in_flight=2)
    assert extra == (0, 0)
    assert fake.in_flight == 0 and fake.calls["sample"] == 2  # queued calls were dropped


def test_retries_stop_when_cancelled() -> None:
    fake = FakeGenerator(fail_always=TimeoutError(), delay=0.01)
    policy = RetryPolicy(max_attempts=50, initial_wait=10.0, max_wait=10.0, jitter=0.0)

    async def main() -> int:
        task = asyncio.create_task(abest_of_n("q", fake, ScriptedScorer({}), n=1, retry=policy))
        await asyncio.sleep(0.1)  # first attempt failed; now sleeping 10 s before retry 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return fake.calls["sample"]

    start = time.perf_counter()
    assert asyncio.run(main()) == 1
    assert time.perf_counter() - start < 1.0


def test_results_are_deterministic_under_a_seeded_fake() -> None:
    script = [f"w{i} = {i % 10}" for i in range(12)]
    table = {s: (i * 7 % 12) / 12 for i, s in enumerate(script)}

    def run_sync(concurrency: int) -> Any:
        return best_of_n("q", FakeGenerator(script, seed=3), ScriptedScorer(table), n=6,
                         max_concurrency=concurrency)

    def run_async() -> Any:
        return asyncio.run(abest_of_n("q", FakeGenerator(script, seed=3), ScriptedScorer(table),
                                      n=6, max_concurrency=3))

    first = run_sync(1).to_dict()
    assert run_sync(1).to_dict() == first
    assert run_async().to_dict() == run_async().to_dict() == first
    assert FakeGenerator(script, seed=4).sample("q", 6) != FakeGenerator(script, seed=3).sample(
        "q", 6)
    # With threads the draws may land on other slots, but the pool and the choice do not change.
    threaded = run_sync(6)
    assert threaded.text == first["text"]
    assert sorted(c.text for c in threaded.candidates) == sorted(
        c["text"] for c in first["candidates"])

    tree = {(): ["a", "b", "c", "d"], ("a",): ["a1", "a2", "a3"], ("b",): ["b1", "b2", "b3"],
            ("c",): ["c1", "c2"], ("d",): ["d1"]}
    scorer_table = {"a": 0.4, "b": 0.7, "c": 0.6, "d": 0.1, "a1": 0.3, "b2": 0.8, "c2": 0.9}
    runs = [StepBeamSearch(FakeGenerator(tree=tree, seed=11, default_steps=["A: 1"]),
                           ScriptedScorer(scorer_table), n=4, beam_width=2).run("q").to_dict()
            for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_feedback_words_counts_and_close_calls_so_they_read_right() -> None:
    from prm_plugins.strategies.verify import make_verdict, step_feedback

    one = make_verdict(StepScores(["3 + 4 = 7"], [0.91]), 0.5, "min")
    assert one.feedback.startswith("The only step looks right")
    # 0.4996 is below 0.5: the text must not read "0.50, below the threshold 0.50"
    close = step_feedback(StepScores(["a", "b"], [0.9, 0.4996]), 1, 0.5)
    assert "scores 0.4996, below the threshold 0.5000" in close
    far = step_feedback(StepScores(["a", "b"], [0.9, 0.04]), 1, 0.5)
    assert "scores 0.04, below the threshold 0.50" in far
