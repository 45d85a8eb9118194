"""Every strategy under a Budget: what it may issue, where it stops, what it reports.

Generators are the scripted :class:`FakeGenerator`; the scorer is the table-driven
:class:`ScriptedScorer` (round numbers chosen so the cut-off points are hand-computed).
Wall time runs on a fake clock (``prm_plugins.budget.monotonic`` patched) that the
generator advances, so no test sleeps or depends on machine speed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from prm_plugins import budget as budget_module
from prm_plugins.budget import Budget, BudgetMeter, estimate_tokens
from prm_plugins.errors import BudgetExhaustedError, InvalidInputError
from prm_plugins.plans import GenerateCalls, Plan, RetryPolicy, ScoreChains, SyncRunner
from prm_plugins.strategies import (
    DVTS,
    BestOfN,
    BestOfNOptions,
    SearchOptions,
    SelfCritique,
    SelfCritiqueOptions,
    StepBeamSearch,
    abest_of_n,
    best_of_n,
    majority_vote,
    self_critique,
    weighted_best_of_n,
)

from support.fake_generators import FakeGenerator
from support.scripted_scorer import ScriptedScorer

FAST = RetryPolicy.no_wait()
WORDS = Budget(count_tokens=lambda text: len(text.split())).count_tokens


class Clock:
    """A fake monotonic clock; ``tick`` seconds pass on every generator call.

    With ``after_start`` set, every read after the first (the meter's start) returns it:
    time that has run out before the strategy's first request.
    """

    def __init__(self, tick: float) -> None:
        self.now = 0.0
        self.tick = tick
        self.after_start: float | None = None
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        if self.after_start is not None and self.reads > 1:
            return self.after_start
        return self.now


class ClockedGenerator(FakeGenerator):
    """A FakeGenerator whose every call takes ``clock.tick`` seconds of fake time."""

    def __init__(self, clock: Clock, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    def _answer(self, method: str, args: tuple[Any, ...]) -> Any:
        self.clock.now += self.clock.tick
        return super()._answer(method, args)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock(tick=1.0)
    monkeypatch.setattr(budget_module, "monotonic", fake)
    yield fake


# -- best-of-N and the votes ---------------------------------------------------------------

VOTES = ["p1\nThe answer is 5.", "p2\nThe answer is 7.", "p3\nThe answer is 7."]
TABLE = {"p1": 0.9, "p2": 0.4, "p3": 0.3}


def test_without_a_budget_results_report_none() -> None:
    r = best_of_n("q", FakeGenerator(VOTES), ScriptedScorer(TABLE), n=3)
    assert r.budget is None and r.to_dict()["budget"] is None


def test_an_unlimited_budget_measures_the_run() -> None:
    scorer = ScriptedScorer(TABLE)
    r = best_of_n("q", FakeGenerator(VOTES), scorer, n=3, budget=Budget())
    assert r.budget is not None
    assert r.budget.generator_calls == r.generator_calls == 3
    assert r.budget.prm_calls == scorer.chains_scored == 3
    assert r.budget.generated_tokens == sum(estimate_tokens(t) for t in VOTES)
    assert r.budget.exhausted is None
    assert json.loads(json.dumps(r.to_dict()))["budget"]["generator_calls"] == 3


def test_generator_call_limit_trims_the_round() -> None:
    gen, scorer = FakeGenerator(VOTES), ScriptedScorer(TABLE)
    r = best_of_n("q", gen, scorer, n=8, budget=Budget(generator_calls=2))
    assert gen.calls["sample"] == 2 and len(r.candidates) == 2
    assert scorer.batches == [2]  # one round, trimmed: no failed candidates for the rest
    assert not r.failed
    assert r.budget is not None and r.budget.exhausted == "generator_calls"
    assert r.text == VOTES[0]  # the best of what it had


def test_prm_call_limit_draws_only_what_can_be_scored() -> None:
    gen, scorer = FakeGenerator(VOTES), ScriptedScorer(TABLE)
    r = best_of_n("q", gen, scorer, n=6, budget=Budget(prm_calls=2))
    assert gen.calls["sample"] == 2 and scorer.chains_scored == 2
    assert r.budget is not None and r.budget.exhausted == "prm_calls"


def test_token_limit_is_checked_before_each_round_and_overshoot_reported() -> None:
    gen = FakeGenerator(["a b c d e"])  # 5 tokens each (whitespace words)
    budget = Budget(generated_tokens=12, count_tokens=WORDS)
    r = best_of_n("q", gen, ScriptedScorer({}), n=8, max_concurrency=2, budget=budget)
    # rounds of max_concurrency=2: 10 tokens (< 12, go on), 20 tokens (stop)
    assert gen.calls["sample"] == 4 and r.generator_calls == 4
    assert r.budget is not None
    assert r.budget.generated_tokens == 20 and r.budget.token_overshoot == 8
    assert r.budget.token_overshoot <= 2 * 5  # at most one round's tokens
    assert r.budget.exhausted == "generated_tokens"


def test_wall_time_limit_stops_between_rounds_and_scores_the_last_round(clock: Clock) -> None:
    gen = ClockedGenerator(clock, VOTES)
    scorer = ScriptedScorer(TABLE)
    r = best_of_n("q", gen, scorer, n=8, max_concurrency=1, budget=Budget(seconds=2.5))
    # calls end at t = 1, 2, 3; the check before the 4th finds 3 >= 2.5
    assert gen.calls["sample"] == 3 and scorer.chains_scored == 3 and not r.failed
    assert r.budget is not None and r.budget.exhausted == "seconds"
    assert r.budget.seconds == pytest.approx(3.0)


def test_budget_exhausted_error_when_nothing_usable() -> None:
    with pytest.raises(BudgetExhaustedError, match="generator_calls limit") as info:
        best_of_n("q", FakeGenerator([""]), ScriptedScorer({}), n=4,
                  budget=Budget(generator_calls=2))
    assert info.value.limit == "generator_calls" and len(info.value.candidates) == 2
    assert info.value.spent.generator_calls == 2
    # and without a budget the same generator gives the usual empty-generation error
    with pytest.raises(Exception, match="returned empty text") as plain:
        best_of_n("q", FakeGenerator([""]), ScriptedScorer({}), n=2)
    assert not isinstance(plain.value, BudgetExhaustedError)


def test_votes_carry_the_budget() -> None:
    scorer = ScriptedScorer(TABLE)
    v = weighted_best_of_n("q", FakeGenerator(VOTES), scorer, n=3,
                           budget=Budget(generator_calls=1))
    assert v.answer == "5" and v.budget is not None and v.budget.generator_calls == 1
    m = majority_vote("q", FakeGenerator(VOTES), n=9, budget=Budget(generator_calls=3))
    assert m.answer == "7" and m.budget is not None and m.budget.exhausted == "generator_calls"
    assert m.budget.prm_calls == 0 and m.to_dict()["budget"]["generator_calls"] == 3


def test_async_best_of_n_spends_the_same() -> None:
    budget = Budget(generated_tokens=12, count_tokens=WORDS)
    sync = best_of_n("q", FakeGenerator(["a b c d e"]), ScriptedScorer({}), n=8,
                     max_concurrency=2, budget=budget)
    other = asyncio.run(abest_of_n("q", FakeGenerator(["a b c d e"]), ScriptedScorer({}), n=8,
                                   max_concurrency=2, budget=budget))
    assert sync.budget is not None and other.budget is not None
    for key in ("generated_tokens", "generator_calls", "prm_calls", "exhausted"):
        assert getattr(sync.budget, key) == getattr(other.budget, key)


def test_options_carry_and_check_the_budget() -> None:
    b = Budget(generator_calls=2)
    assert BestOfN.from_options(FakeGenerator(VOTES), ScriptedScorer(TABLE),
                                BestOfNOptions(n=4, budget=b)).budget is b
    assert SelfCritiqueOptions(budget=b).budget is b and SearchOptions(budget=b).budget is b
    for make in (lambda: BestOfNOptions(budget={"generator_calls": 2}),  # type: ignore[arg-type]
                 lambda: SelfCritiqueOptions(budget=3),  # type: ignore[arg-type]
                 lambda: SearchOptions(budget="big")):  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="budget must be a prm_plugins.budget.Budget"):
            make()


# -- self-critique --------------------------------------------------------------------------

CRITIQUE = {"s1": 0.9, "s2 bad": 0.1, "s2 worse": 0.05, "s2 good": 0.8}


def test_self_critique_stops_revising_when_the_budget_runs_out() -> None:
    gen = FakeGenerator(["s1\ns2 bad"], revisions=["s2 worse"])
    critic = SelfCritique(gen, ScriptedScorer(CRITIQUE), max_rounds=5,
                          budget=Budget(generator_calls=3), retry=FAST)
    r = critic.run("q")
    assert r.generator_calls == 3 and len(r.history) == 3  # first + 2 revisions
    assert r.budget is not None and r.budget.exhausted == "generator_calls"
    assert r.steps == ["s1", "s2 bad"]  # the best round so far


def test_self_critique_prm_budget_allows_no_revision() -> None:
    gen = FakeGenerator(["s1\ns2 bad"], revisions=["s2 good"])
    r = self_critique("q", gen, ScriptedScorer(CRITIQUE), max_rounds=3, budget=Budget(prm_calls=1))
    assert gen.calls["revise"] == 0 and not r.passed
    assert r.budget is not None and r.budget.exhausted == "prm_calls"


def test_self_critique_raises_when_not_even_the_first_solution_fits(clock: Clock) -> None:
    clock.after_start = 5.0
    gen = FakeGenerator(["s1\ns2 bad"])
    critic = SelfCritique(gen, ScriptedScorer(CRITIQUE), budget=Budget(seconds=1.0))
    with pytest.raises(BudgetExhaustedError, match="seconds limit"):
        critic.run("q")
    assert gen.calls["sample"] == 0


# -- step search ----------------------------------------------------------------------------

SEARCH = {"a": 0.9, "b": 0.6, "c": 0.3, "d": 0.2,
          "a1 The answer is 1": 0.2, "a2 The answer is 2": 0.3,
          "b1 The answer is 3": 0.95, "b2": 0.5}
TREE = {(): ["a", "b", "c", "d"],
        ("a",): ["a1 The answer is 1", "a2 The answer is 2"],
        ("b",): ["b1 The answer is 3", "b2"]}


def test_beam_search_expands_only_the_best_prefix_that_fits() -> None:
    gen = FakeGenerator(tree=TREE)
    r = StepBeamSearch(gen, ScriptedScorer(SEARCH), n=4, beam_width=2,
                       budget=Budget(generator_calls=2)).run("q")
    # call 1 proposes a .9, b .6, c, d; call 2 may expand only "a" (the best beam)
    assert gen.calls["propose_next_steps"] == 2
    assert [step for _, (_, prefix, _) in gen.log for step in prefix] == ["a"]
    assert r.best.steps == ["a", "a2 The answer is 2"] and r.best.complete
    assert r.budget is not None and r.budget.exhausted == "generator_calls"
    # without the budget the same search finds b1 (0.95)
    free = StepBeamSearch(FakeGenerator(tree=TREE), ScriptedScorer(SEARCH), n=4,
                          beam_width=2).run("q")
    assert free.best.steps == ["b", "b1 The answer is 3"] and free.budget is None


def test_beam_search_prm_budget_scores_only_what_fits() -> None:
    scorer = ScriptedScorer(SEARCH)
    r = StepBeamSearch(FakeGenerator(tree=TREE), scorer, n=4, beam_width=2,
                       budget=Budget(prm_calls=5)).run("q")
    assert scorer.chains_scored == 5 and scorer.batches == [4, 1]
    assert r.best.steps == ["a", "a1 The answer is 1"]
    assert r.budget is not None and r.budget.prm_calls == 5
    assert r.budget.exhausted == "prm_calls"


def test_dvts_stops_with_its_open_chains(clock: Clock) -> None:
    gen = ClockedGenerator(clock, tree=TREE)
    r = DVTS(gen, ScriptedScorer(SEARCH), n=4, beam_width=2, budget=Budget(seconds=0.5)).run("q")
    assert gen.calls["propose_next_steps"] == 1 and r.iterations == 1
    assert r.best.steps == ["a"] and not r.best.complete
    assert [c.steps for c in r.unfinished] == [["a"], ["c"]]
    assert r.budget is not None and r.budget.exhausted == "seconds"


def test_search_raises_when_no_first_step_fits(clock: Clock) -> None:
    clock.after_start = 9.0
    with pytest.raises(BudgetExhaustedError, match="beam: the first step was not proposed"):
        StepBeamSearch(FakeGenerator(tree=TREE), ScriptedScorer(SEARCH), n=4, beam_width=2,
                       budget=Budget(seconds=1)).run("q")


# -- the runner ----------------------------------------------------------------------------

def test_runner_answers_requests_past_the_budget_with_budget_errors() -> None:
    """A plan that does not ask the meter first still gets one answer per request item."""

    def plan() -> Plan[tuple[list[Any], list[Any]]]:
        outcomes = yield GenerateCalls("sample", [("q", 1)] * 3)
        scored = yield ScoreChains([("q", ["p1"]), ("q", ["p2"]), ("q", ["p3"])])
        return outcomes, scored

    meter = BudgetMeter(Budget(generator_calls=2, prm_calls=1))
    gen = FakeGenerator(["p1"])
    outcomes, scored = SyncRunner(gen, ScriptedScorer(TABLE), retry=FAST, max_concurrency=2,
                                  meter=meter).run(plan())
    assert gen.calls["sample"] == 2
    assert [o.ok for o in outcomes] == [True, True, False]
    assert isinstance(outcomes[2].error, BudgetExhaustedError)
    assert outcomes[2].attempts == 0
    assert scored[0].scores == [0.9]
    assert all(isinstance(s, BudgetExhaustedError) for s in scored[1:])
    spent = meter.spent()
    assert (spent.generator_calls, spent.prm_calls, spent.generated_tokens) == (2, 1, 4)
