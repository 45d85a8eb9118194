"""Adaptive best-of-N: it stops as soon as the weighted vote is decided, and never sooner.

Generators are the seeded, scripted :class:`FakeGenerator` (``max_concurrency=1`` where a
run is compared with another, so the k-th draw is the same in both). Most tests use the
table-driven :class:`ScriptedScorer`, whose round chain scores make the margins of the
stopping rule hand-computable (a margin exactly equal to the samples left, say); one test
runs the shipped default PRM (``load_prm()``) end to end.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from prm_plugins import load_prm
from prm_plugins.budget import Budget
from prm_plugins.errors import AllCandidatesFailedError, BudgetExhaustedError, InvalidInputError
from prm_plugins.plans import RetryPolicy
from prm_plugins.strategies.adaptive import (
    AdaptiveBestOfN,
    aadaptive_best_of_n,
    adaptive_best_of_n,
)
from prm_plugins.strategies.best_of_n import weighted_best_of_n
from prm_plugins.strategies.options import AdaptiveBestOfNOptions

from support.fake_generators import FakeGenerator
from support.scripted_scorer import ScriptedScorer

FAST = RetryPolicy.no_wait()


def sol(step: str, answer: str) -> str:
    return f"{step}\nThe answer is {answer}."


# -- the exact rule -------------------------------------------------------------------------


def test_stops_once_the_margin_exceeds_the_samples_left() -> None:
    # every candidate answers 5 with chain score 1.0 (steps not in the table score 1.0)
    gen = FakeGenerator([sol("s", "5")])
    r = adaptive_best_of_n("q", gen, ScriptedScorer({}), max_n=16, round_size=4)
    # round 1: 4 vs 12 left; round 2: 8 vs 8 left (a tie is not safe); round 3: 12 > 4
    assert [(x.total, x.margin, x.remaining, x.decided) for x in r.rounds] == [
        (4, 4.0, 12, False), (8, 8.0, 8, False), (12, 12.0, 4, True)]
    assert r.stopped_by == "decided" and r.answer == "5"
    assert r.samples_used == 12 == gen.calls["sample"] and r.samples_saved == 4


def test_never_stops_while_the_runner_up_could_still_win() -> None:
    # round 1 gives "1" weight 1.8 with 2 samples left: the runner-up could reach 2.0
    gen = FakeGenerator([sol("a", "1"), sol("a", "1"), sol("b", "2"), sol("b", "2")])
    scorer = ScriptedScorer({"a": 0.9})
    r = adaptive_best_of_n("q", gen, scorer, max_n=4, round_size=2, max_concurrency=1)
    assert not r.rounds[0].decided and r.rounds[0].margin == pytest.approx(1.8)
    assert r.rounds[0].remaining == 2
    assert r.samples_used == 4 and r.stopped_by == "max_n"
    assert r.answer == "2"  # and it did get overtaken: 2.0 > 1.8


def test_the_same_lead_with_weight_one_is_decided() -> None:
    gen = FakeGenerator([sol("a", "1")] * 3 + [sol("b", "2")] * 2)
    r = adaptive_best_of_n("q", gen, ScriptedScorer({}), max_n=5, round_size=3,
                           max_concurrency=1)
    assert r.rounds[0].margin == 3.0 and r.rounds[0].remaining == 2
    assert r.stopped_by == "decided" and r.samples_used == 3 and r.samples_saved == 2
    full = weighted_best_of_n("q", FakeGenerator([sol("a", "1")] * 3 + [sol("b", "2")] * 2),
                              ScriptedScorer({}), n=5, max_concurrency=1)
    assert full.answer_key == r.answer_key == "1"


POOL = [sol(step, ans) for step, ans in (("x1", "1"), ("x2", "1"), ("y1", "2"), ("y2", "2"),
                                         ("z1", "3"), ("w1", "4"), ("none", "one"))]


@pytest.mark.parametrize("round_size", [1, 2, 4])
def test_an_early_stop_never_changes_the_answer_over_seeds(round_size: int) -> None:
    """Over 60 seeded question runs, every early stop gives the full run's answer."""
    rng = random.Random(7)
    early = 0
    for seed in range(60):
        table = {s: round(rng.uniform(0.4, 1.0), 2) for s in
                 ("x1", "x2", "y1", "y2", "z1", "w1", "none")}
        # a per-seed skew towards some answers (else the rule rarely fires: see the report)
        weights = [rng.choice([0, 1, 1, 2, 8]) for _ in POOL]
        pool = [t for t, k in zip(POOL, weights, strict=True) for _ in range(k)] or POOL
        r = adaptive_best_of_n("q", FakeGenerator(pool, seed=seed), ScriptedScorer(table),
                               max_n=16, round_size=round_size, max_concurrency=1)
        full = weighted_best_of_n("q", FakeGenerator(pool, seed=seed), ScriptedScorer(table),
                                  n=16, max_concurrency=1)
        assert r.samples_used + r.samples_saved == 16
        assert [c.text for c in r.candidates] == [c.text for c in full.candidates][
            :r.samples_used]
        if r.stopped_by == "decided":
            early += r.samples_used < 16
            assert r.answer_key == full.answer_key, (seed, r.rounds[-1])
        else:
            assert r.stopped_by == "max_n" and r.samples_used == 16
            assert r.answer_key == full.answer_key
        for past in r.rounds[:-1]:  # it went on after each of these: none was decided
            assert not past.decided and past.margin <= past.remaining
    assert early >= 5  # the rule does fire on these skewed pools (48, 32, 9 of 60)


# -- the confidence rule and the budget ----------------------------------------------------


def test_confidence_rule_stops_early_and_says_so() -> None:
    texts = [sol("a", "5"), sol("a", "5"), sol("a", "5"), sol("b", "6")]
    table = {"a": 0.9, "b": 0.2}
    r = adaptive_best_of_n("q", FakeGenerator(texts), ScriptedScorer(table), max_n=16,
                           round_size=4, confidence=0.75, max_concurrency=1)
    # 2.7 of 2.9 (0.93) after 4 votes, far from decided (margin 2.5, 12 left)
    assert r.stopped_by == "confidence" and r.samples_used == 4
    assert not r.rounds[0].decided and r.answer == "5"
    # min_votes holds it back
    held = adaptive_best_of_n("q", FakeGenerator(texts), ScriptedScorer(table), max_n=16,
                              round_size=4, confidence=0.75, min_votes=5, max_concurrency=1)
    assert held.samples_used > 4


def test_a_call_budget_tightens_the_rule() -> None:
    gen = FakeGenerator([sol("s", "5")])
    r = adaptive_best_of_n("q", gen, ScriptedScorer({}), max_n=16, round_size=4,
                           budget=Budget(generator_calls=6))
    # 4 drawn, only 2 more allowed by the budget: 4 > 2 decides
    assert r.rounds[0].remaining == 2 and r.stopped_by == "decided"
    assert r.samples_used == 4 and r.budget is not None and r.budget.exhausted is None


def test_budget_stops_an_undecided_vote() -> None:
    texts = [sol("a", "1"), sol("b", "2")]
    scorer = ScriptedScorer({})
    r = adaptive_best_of_n("q", FakeGenerator(texts), scorer, max_n=16, round_size=4,
                           budget=Budget(generator_calls=5), max_concurrency=1)
    assert [x.drawn for x in r.rounds] == [4, 1]
    assert r.stopped_by == "budget" and r.samples_used == 5 and scorer.chains_scored == 5
    assert r.budget is not None and r.budget.exhausted == "generator_calls"
    assert r.answer == "1"  # 3 votes against 2


def test_budget_exhausted_before_anything_usable() -> None:
    with pytest.raises(BudgetExhaustedError, match="adaptive_best_of_n"):
        adaptive_best_of_n("q", FakeGenerator([""]), ScriptedScorer({}), max_n=8,
                           round_size=2, budget=Budget(generator_calls=2))


def test_scores_outside_zero_one_fail_the_candidate() -> None:
    with pytest.raises(AllCandidatesFailedError, match=r"outside \[0, 1\]"):
        adaptive_best_of_n("q", FakeGenerator([sol("s", "5")]), ScriptedScorer({}), max_n=2,
                           round_size=2, aggregate=lambda scores: 2.0)


def test_failed_candidates_do_not_vote_and_are_reported() -> None:
    gen = FakeGenerator([sol("s", "5"), ValueError("boom"), ""])
    r = adaptive_best_of_n("q", gen, ScriptedScorer({}), max_n=6, round_size=3,
                           retry=FAST, max_concurrency=1)
    assert r.samples_used == 6 and r.counts == {"5": 2}
    assert sorted(c.failed_at or "" for c in r.candidates if not c.ok) == [
        "empty", "empty", "generation", "generation"]


def test_an_extractor_that_raises_does_not_sink_the_run() -> None:
    def picky(text: str) -> str | None:
        if "b" in text:
            raise RuntimeError("cannot read this one")
        return "7"

    gen = FakeGenerator(["a\nx", "b\ny"])
    r = adaptive_best_of_n("q", gen, ScriptedScorer({}), max_n=4, round_size=2,
                           extractor=picky, max_concurrency=1)
    assert r.weights == {"7": 2.0} and r.answer == "7"


# -- forms, results, options ---------------------------------------------------------------


def test_async_gives_the_sync_result_and_to_dict_is_json_ready() -> None:
    def make() -> FakeGenerator:
        return FakeGenerator(POOL, seed=3)

    sync = adaptive_best_of_n("q", make(), ScriptedScorer({"x1": 0.8}), max_n=12,
                              round_size=3, max_concurrency=1)
    other = asyncio.run(aadaptive_best_of_n("q", make(), ScriptedScorer({"x1": 0.8}), max_n=12,
                                            round_size=3, max_concurrency=1))
    assert other.to_dict() == sync.to_dict()
    d = json.loads(json.dumps(sync.to_dict()))
    assert d["samples_saved"] == sync.samples_saved and d["budget"] is None
    assert len(d["rounds"]) == len(sync.rounds) and d["stopped_by"] == sync.stopped_by


def test_options_are_checked_and_reused() -> None:
    for bad, match in (({"max_n": 4, "round_size": 8}, "round_size"),
                       ({"confidence": 0.5}, "confidence"),
                       ({"confidence": True}, "confidence"),
                       ({"extractor": "last"}, "extractor"),
                       ({"min_votes": 0}, "min_votes"),
                       ({"budget": 5}, "budget")):
        with pytest.raises(InvalidInputError, match=match):
            AdaptiveBestOfNOptions(**bad)  # type: ignore[arg-type]
    opts = AdaptiveBestOfNOptions(max_n=8, round_size=2, confidence=0.9)
    ada = AdaptiveBestOfN.from_options(FakeGenerator([sol("s", "1")]), ScriptedScorer({}), opts)
    assert ada.max_n == 8 and ada.round_size == 2 and ada.confidence == 0.9
    r = ada.run("q")  # after 2 rounds: 4 votes, all for "1" (margin 4, not > 4 left)
    assert r.samples_used == 4 and r.stopped_by == "confidence"


QUESTION = ("Janet's ducks lay 16 eggs a day. She eats 3 and bakes with 4. She sells the "
            "rest at $2 each. How much does she make?")
RIGHT = ["16 - 3 - 4 = 9\n9 * 2 = 18\nThe answer is 18.",
         "She has 16 - 3 - 4 = 9 eggs left.\nShe makes 9 * 2 = $18.\nThe answer is 18."]
WRONG = "16 - 3 = 13\n13 * 2 = 26\nThe answer is 26."


def test_with_the_shipped_prm() -> None:
    """End to end with the real default PRM (its chain scores here are about 0.5).

    Unanimous candidates decide after 12 of 16 (margin ~6 > 4 left); with one wrong answer
    in four the margin never passes the samples left, so all 16 are drawn.
    """
    prm = load_prm()
    r = adaptive_best_of_n(QUESTION, FakeGenerator(RIGHT), prm, max_n=16, round_size=4,
                           max_concurrency=1)
    full = weighted_best_of_n(QUESTION, FakeGenerator(RIGHT), prm, n=16, max_concurrency=1)
    assert r.answer_key == full.answer_key == "18"
    assert all(c.score is not None and 0.0 <= c.score <= 1.0 for c in r.candidates)
    assert r.stopped_by == "decided" and r.samples_used == 12 and r.samples_saved == 4
    mixed = [RIGHT[0], RIGHT[1], RIGHT[0], WRONG]
    m = adaptive_best_of_n(QUESTION, FakeGenerator(mixed), prm, max_n=16, round_size=4,
                           max_concurrency=1)
    assert m.stopped_by == "max_n" and m.samples_used == 16 and m.answer_key == "18"
    assert all(not x.decided for x in m.rounds[:-1])
