"""Particle filtering (prm_plugins.strategies.particles) and its resamplers.

Generators are the seeded, scripted :class:`support.fake_generators.FakeGenerator`: its next
steps depend only on the prefix and how often that prefix was asked, never on thread timing,
so runs can be compared exactly. The scorer is :func:`table_scorer`, a tiny
StepScorer whose step score is looked up by the step's text: the weights, the resampling and
the choice of answer are hand-computed here from round, context-free numbers, which a real
PRM cannot give on demand. One test runs the shipped default PRM to check that the
particles' likelihoods are what that scorer says.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
from collections import Counter
from typing import Any

import pytest

import prm_plugins.budget as budget_module
from prm_plugins import InvalidInputError, load_prm
from prm_plugins.budget import Budget, estimate_tokens
from prm_plugins.errors import BudgetExhaustedError
from prm_plugins.runtime import default_model_dir
from prm_plugins.strategies import (
    AllCandidatesFailedError,
    EmptyGenerationsError,
    ParticleFilter,
    ParticleFilterOptions,
    RetryPolicy,
    TransientGeneratorError,
    aparticle_filter,
    particle_filter,
)
from prm_plugins.strategies.resampling import (
    effective_sample_size,
    log_weights,
    multinomial_resample,
    normalize,
    systematic_resample,
)

from support.fake_generators import FakeGenerator
from support.scripted_scorer import ScriptedScorer


def table_scorer(table: dict[str, float], default: float = 0.5,
                 too_long: tuple[str, ...] = ()) -> ScriptedScorer:
    """A scorer with a score per step text, 0.5 for unlisted steps (see the module docstring
    for why)."""
    return ScriptedScorer(table, default=default, too_long=too_long)

FAST = RetryPolicy.no_wait()



# A small tree with good (a...) and bad (b...) branches; every leaf states an answer.
TABLE = {"a": 0.8, "b": 0.3, "a1": 0.7, "a2": 0.4, "b1": 0.6, "b2": 0.2,
         "The answer is 1.": 0.9, "The answer is 2.": 0.5, "The answer is 3.": 0.2}
TREE = {(): ["a", "b"],
        ("a",): ["a1", "a2"], ("b",): ["b1", "b2"],
        ("a", "a1"): ["The answer is 1."], ("a", "a2"): ["The answer is 2."],
        ("b", "b1"): ["The answer is 2."], ("b", "b2"): ["The answer is 3."]}


def _run(**kwargs: Any) -> Any:
    gen = kwargs.pop("generator", None) or FakeGenerator(tree=TREE, seed=5)
    return ParticleFilter(gen, table_scorer(TABLE), **kwargs).run("q")


# -- weights and resamplers ------------------------------------------------------------------


def test_log_weights_and_softmax_are_the_documented_formulas() -> None:
    p = [0.8, 0.3]
    assert log_weights(p, "logit") == pytest.approx([math.log(4.0), math.log(3 / 7)])
    assert log_weights(p, "log") == pytest.approx([math.log(0.8), math.log(0.3)])
    assert log_weights(p, "score") == [0.8, 0.3]
    # "log" at T=1: weights proportional to the likelihoods; "logit": to the odds 4 : 3/7.
    assert normalize(log_weights(p, "log")) == pytest.approx([8 / 11, 3 / 11])
    assert normalize(log_weights(p, "logit")) == pytest.approx([28 / 31, 3 / 31])
    # temperature T: proportional to likelihood ** (1 / T)
    assert normalize(log_weights(p, "log"), 0.5) == pytest.approx([64 / 73, 9 / 73])
    # scores of exactly 0 and 1 are clipped, never an infinite log-weight
    assert all(math.isfinite(x) for x in log_weights([0.0, 1.0], "logit"))
    assert effective_sample_size([0.5, 0.5]) == 2.0


def test_systematic_resampling_gives_floor_or_ceil_of_n_w() -> None:
    rng = random.Random(0)
    for trial in range(300):
        k = rng.randint(1, 7)
        raw = [rng.random() ** 3 for _ in range(k)]
        weights = [x / sum(raw) for x in raw]
        n = rng.choice([1, 4, 9, 16, 33])
        counts = Counter(systematic_resample(weights, n, random.Random(trial)))
        for i, w in enumerate(weights):
            assert abs(counts[i] - n * w) < 1 + 1e-9, (weights, n, counts)
        assert sum(counts.values()) == n


def test_multinomial_frequencies_match_the_weights_and_skip_zero_weights() -> None:
    weights = [0.5, 0.3, 0.2, 0.0]
    draws = multinomial_resample(weights, 20000, random.Random(1))
    freq = Counter(draws)
    assert freq[3] == 0
    for i in range(3):  # binomial sd <= 0.0036; 0.015 is over 4 sd
        assert abs(freq[i] / 20000 - weights[i]) < 0.015
    assert systematic_resample([0.0, 1.0, 0.0], 5, random.Random(2)) == [1] * 5


def test_systematic_resampling_has_lower_variance_than_multinomial() -> None:
    weights, n = [0.37, 0.33, 0.30], 10
    sys_counts = [systematic_resample(weights, n, random.Random(s)).count(0) for s in range(400)]
    mul_counts = [multinomial_resample(weights, n, random.Random(s)).count(0) for s in range(400)]
    assert set(sys_counts) <= {3, 4}  # floor / ceil of 3.7
    assert statistics.pvariance(sys_counts) < 0.3  # at most 0.7 * 0.3 = 0.21
    assert statistics.pvariance(mul_counts) > 1.5  # binomial: 10 * 0.37 * 0.63 = 2.33
    assert statistics.mean(mul_counts) == pytest.approx(3.7, abs=0.25)


# -- the filter ------------------------------------------------------------------------------


def test_first_iteration_weights_are_hand_computed() -> None:
    gen = FakeGenerator(tree=TREE)  # unseeded: the root call k answers TREE[()][k % 2]
    r = ParticleFilter(gen, table_scorer(TABLE), n=4, weighting="log", seed=0).run("q")
    first = r.history[0]
    assert first["likelihoods"] == [0.8, 0.3, 0.8, 0.3]
    assert first["weights"] == pytest.approx([8 / 22, 3 / 22, 8 / 22, 3 / 22])
    assert first["ess"] == pytest.approx(1 / (2 * (8 / 22) ** 2 + 2 * (3 / 22) ** 2))
    assert len(first["ancestors"]) == 4
    # one call per live particle per iteration, one step asked each time
    assert all(args[2] == 1 for _, args in gen.log)
    assert gen.log[0][1][1] == [] and len([a for _, a in gen.log if a[1] == []]) == 4


def test_the_same_seed_gives_the_same_result_and_seeds_matter() -> None:
    for resampling in ("multinomial", "systematic"):
        runs = [_run(n=6, seed=11, resampling=resampling).to_dict() for _ in range(2)]
        assert runs[0] == runs[1]
        assert json.loads(json.dumps(runs[0]))["seed"] == 11
    ancestries = {json.dumps([h["ancestors"] for h in _run(n=6, seed=s).history])
                  for s in range(8)}
    assert len(ancestries) > 1


def test_ancestry_follows_the_recorded_resampling() -> None:
    r = _run(n=6, seed=3)
    assert r.iterations == 3 and all(p.finished for p in r.particles)
    for k, p in enumerate(r.particles):
        assert len(p.ancestry) == r.iterations - 1
        for t, parent in enumerate(p.ancestry):
            assert parent in r.history[t]["ancestors"]
        assert p.ancestry[-1] == r.history[-2]["ancestors"][k]
        assert r.history[-1]["ancestors"] == []  # the last population is not resampled
    assert sum(p.weight for p in r.particles) == pytest.approx(1.0)


def test_temperature_sharpens_or_flattens_the_resampling() -> None:
    cold = _run(n=8, seed=1, temperature=0.05, generator=FakeGenerator(tree=TREE))
    warm = _run(n=8, seed=1, temperature=1.0, generator=FakeGenerator(tree=TREE))
    hot = _run(n=8, seed=1, temperature=100.0, generator=FakeGenerator(tree=TREE))
    ess = [x.history[0]["ess"] for x in (cold, warm, hot)]
    assert ess[0] < ess[1] < ess[2] and ess[2] > 7.9 and ess[0] < 4.01
    # cold: every particle descends from an "a" particle (the even slots)
    assert all(j % 2 == 0 for j in cold.history[0]["ancestors"])
    assert cold.answer == "1"


def test_finished_particles_stop_growing_and_stay_in_the_population() -> None:
    tree = {(): ["The answer is 7.", "x"], ("x",): ["y"], ("x", "y"): [""]}
    gen = FakeGenerator(tree=tree)
    # equal weights and systematic resampling: each particle is copied exactly once
    r = ParticleFilter(gen, table_scorer({"The answer is 7.": 0.6, "x": 0.6, "y": 0.6}),
                       n=4, seed=0, resampling="systematic").run("q")
    assert all(args[1][:1] != ["The answer is 7."] for _, args in gen.log)  # never extended
    assert r.history[0]["finished"] == [True, False, True, False]
    assert [(p.steps, p.complete, p.finished) for p in r.particles] == [
        (["The answer is 7."], True, True), (["x", "y"], False, True),
        (["The answer is 7."], True, True), (["x", "y"], False, True)]
    # an empty proposal finished ["x", "y"] as it was, without a final answer
    assert r.iterations == 3 and [a[1] for _, a in gen.log[-2:]] == [["x", "y"]] * 2
    assert all(p.finished for p in r.particles) and r.errors == []
    assert r.best.complete and r.answer == "7"


def test_max_steps_stops_open_particles() -> None:
    r = ParticleFilter(FakeGenerator(default_steps=["more", "again"]), table_scorer({}),
                       n=3, max_steps=4, seed=0).run("q")
    assert r.iterations == 4 and len(r.history) == 4
    assert not r.best.complete and len(r.best.steps) == 4
    assert r.generator_calls == 12


def test_vote_and_best_disagree_as_computed() -> None:
    tree = {(): ["The answer is 1.", "The answer is 2.", "The answer is 2.",
                 "The answer is 2."]}
    scorer = table_scorer({"The answer is 1.": 0.9, "The answer is 2.": 0.6})
    best = ParticleFilter(FakeGenerator(tree=tree), scorer, n=4, weighting="log").run("q")
    vote = ParticleFilter(FakeGenerator(tree=tree), scorer, n=4, weighting="log",
                          select="vote").run("q")
    # weights 0.9 : 0.6 : 0.6 : 0.6; "2" sums 1.8 / 2.7
    assert best.answer == "1" and best.best.weight == pytest.approx(1 / 3)
    assert vote.answer == "2" and vote.votes == pytest.approx({"1": 1 / 3, "2": 2 / 3})
    assert best.chains_scored == 2  # identical chains are scored once
    assert scorer.batches == [2, 2]


def test_failed_particles_are_dropped_reported_and_refilled() -> None:
    class BrokenB(FakeGenerator):
        def propose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
            if prefix == ["b"]:
                raise ValueError("b broke")
            return super().propose_next_steps(question, prefix, n)

    scorer = table_scorer(TABLE, too_long=["a2"])
    r = ParticleFilter(BrokenB(tree=TREE), scorer, n=6, seed=2, temperature=100.0,
                       retry=FAST).run("q")
    b_calls = r.history[0]["ancestors"].count(1) + r.history[0]["ancestors"].count(3) + \
        r.history[0]["ancestors"].count(5)
    assert any(e.endswith("ValueError: b broke") for e in r.errors)
    assert all(e.startswith("iteration 2, particle ") for e in r.errors)
    assert any("scoring: ChainTooLongError" in e for e in r.errors)
    assert r.failed == len(r.errors) >= b_calls > 0
    assert len(r.particles) == 6 and all(p.steps[0] == "a" for p in r.particles)
    assert all("a2" not in p.steps for p in r.particles) and r.answer == "1"


def test_when_every_first_step_fails_the_error_says_why() -> None:
    with pytest.raises(AllCandidatesFailedError, match="every particle failed") as info:
        ParticleFilter(FakeGenerator(fail_always=ValueError("down")), table_scorer({}),
                       n=3, retry=FAST).run("q")
    assert len(info.value.causes) == 3 and "3x ValueError: down" in str(info.value)
    gen = FakeGenerator(fail_always=TransientGeneratorError("busy"))
    with pytest.raises(AllCandidatesFailedError):
        ParticleFilter(gen, table_scorer({}), n=2, retry=FAST).run("q")
    assert gen.calls["propose_next_steps"] == 2 * 3  # retried per the policy
    with pytest.raises(EmptyGenerationsError, match="only empty steps"):
        ParticleFilter(FakeGenerator(default_steps=[" "]), table_scorer({}), n=2).run("q")
    with pytest.raises(AllCandidatesFailedError, match="scoring: ChainTooLongError"):
        ParticleFilter(FakeGenerator(tree=TREE), table_scorer(TABLE, too_long=["a", "b"]),
                       n=2).run("q")


def test_when_a_later_iteration_fails_entirely_the_last_population_is_returned() -> None:
    class FirstOnly(FakeGenerator):
        def propose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
            if prefix:
                raise ValueError("gone")
            return super().propose_next_steps(question, prefix, n)

    r = ParticleFilter(FirstOnly(tree=TREE), table_scorer(TABLE), n=4, seed=0,
                       retry=FAST).run("q")
    assert r.iterations == 2 and r.failed == 4 and len(r.particles) == 4
    assert all(len(p.steps) == 1 for p in r.particles) and not r.best.complete
    assert r.best.steps == ["a"]


def test_async_gives_the_sync_result() -> None:
    for resampling in ("multinomial", "systematic"):
        kwargs: dict[str, Any] = {"n": 6, "seed": 4, "resampling": resampling,
                                  "select": "vote"}
        sync = particle_filter("q", FakeGenerator(tree=TREE, seed=9), table_scorer(TABLE),
                               **kwargs)
        async_ = asyncio.run(aparticle_filter("q", FakeGenerator(tree=TREE, seed=9),
                                              table_scorer(TABLE), **kwargs))
        assert async_.to_dict() == sync.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be an int >= 1"),
        ({"max_steps": 0}, "max_steps must be an int >= 1"),
        ({"temperature": 0}, "temperature must be a finite number > 0"),
        ({"temperature": float("inf")}, "temperature must be a finite number > 0"),
        ({"likelihood": "min"}, "likelihood must be one of 'last', 'product', 'model'"),
        ({"weighting": "exp"}, "weighting must be one of"),
        ({"resampling": "stratified"}, "resampling must be one of"),
        ({"select": "majority"}, "select must be one of 'best', 'vote'"),
        ({"seed": 1.5}, "seed must be an int or None"),
        ({"is_complete": "yes"}, "is_complete must be a callable"),
        ({"retry": 3}, "retry must be a RetryPolicy"),
        ({"budget": 100}, "budget must be a prm_plugins.budget.Budget"),
    ],
)
def test_bad_options_are_named(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        ParticleFilterOptions(**kwargs)
    with pytest.raises(InvalidInputError, match=match):
        ParticleFilter(FakeGenerator(), table_scorer({}), **kwargs)


def test_product_likelihood_multiplies_the_step_scores() -> None:
    r = _run(n=4, seed=0, likelihood="product", max_steps=2)
    for p in r.particles:
        assert p.likelihood == pytest.approx(math.prod(p.step_scores))


def test_model_likelihood_scores_the_partial_chain_as_one_step() -> None:
    scorer = table_scorer({"a": 0.8, "b": 0.3, "a\na1": 0.2, "a\na2": 0.9, "b\nb1": 0.1,
                          "b\nb2": 0.1}, default=0.6)
    r = ParticleFilter(FakeGenerator(tree=TREE), scorer, n=4, seed=0, likelihood="model",
                       temperature=0.05, max_steps=2).run("q")
    # step 2 by its own score would prefer a1 (0.7) over a2 (0.4); as one step, "a\na2" wins
    assert r.best.steps == ["a", "a2"] and r.best.step_scores == [0.9]
    assert r.best.likelihood == 0.9
    last = ParticleFilter(FakeGenerator(tree=TREE), table_scorer(TABLE), n=4, seed=0,
                          temperature=0.05, max_steps=2).run("q")
    assert last.best.steps == ["a", "a1"]


@pytest.mark.skipif(not (default_model_dir() / "prm.json").is_file(),
                    reason="the default PRM is not in this checkout")
def test_with_the_shipped_prm_likelihoods_are_its_last_step_scores() -> None:
    prm = load_prm()
    question = "Tom has 3 apples and buys 2 more. How many apples does he have?"
    tree = {(): ["3 + 2 = 5", "3 * 2 = 6"],
            ("3 + 2 = 5",): ["The answer is 5."], ("3 * 2 = 6",): ["The answer is 6."]}
    r = ParticleFilter(FakeGenerator(tree=tree), prm, n=4, seed=0).run(question)
    assert r.iterations == 2 and all(p.complete for p in r.particles)
    for p in r.particles:
        expected = prm.score(question, p.steps).scores
        assert p.step_scores == pytest.approx(expected, abs=1e-6)
        assert p.likelihood == pytest.approx(expected[-1], abs=1e-6)
    assert r.tokens_scored > r.chains_scored  # rendered lengths, not step counts


# -- budget ----------------------------------------------------------------------------------


def test_without_a_budget_nothing_is_reported_and_budget_measures() -> None:
    assert _run(n=4, seed=0).budget is None
    r = _run(n=4, seed=0, budget=Budget())
    assert r.budget is not None and r.budget.exhausted is None
    assert r.budget.generator_calls == r.generator_calls
    assert r.budget.prm_calls == r.chains_scored
    steps = {s for p in r.particles for s in p.steps}
    assert r.budget.generated_tokens >= sum(estimate_tokens(s) for s in steps)
    assert r.budget.to_dict() == r.to_dict()["budget"]
    unlimited = {k: v for k, v in _run(n=4, seed=0).to_dict().items() if k != "budget"}
    assert {k: v for k, v in r.to_dict().items() if k != "budget"} == unlimited


def test_generator_call_limit_is_exact_and_stops_without_resampling() -> None:
    gen = FakeGenerator(tree=TREE, seed=5)
    r = ParticleFilter(gen, table_scorer(TABLE), n=4, seed=0,
                       budget=Budget(generator_calls=6)).run("q")
    # iteration 1: 4 calls; iteration 2: 2 of the 4 live particles fit, the others keep
    # their first step; the filter stops after scoring, without resampling.
    assert gen.calls["propose_next_steps"] == 6 == r.generator_calls
    assert r.budget is not None and r.budget.generator_calls == 6
    assert r.budget.exhausted == "generator_calls" and r.iterations == 2
    assert sorted(len(p.steps) for p in r.particles) == [1, 1, 2, 2]
    assert r.history[-1]["ancestors"] == [] and r.errors == []


def test_prm_call_limit_is_exact_and_unscored_particles_keep_their_state() -> None:
    scorer = table_scorer(TABLE)
    r = ParticleFilter(FakeGenerator(tree=TREE), scorer, n=4, seed=0,
                       budget=Budget(prm_calls=3)).run("q")
    # iteration 1 scores the 2 distinct chains ("a", "b"); iteration 2 only 1 more
    assert sum(scorer.batches) == 3 and r.budget is not None and r.budget.prm_calls == 3
    assert r.budget.exhausted == "prm_calls" and r.iterations == 2 and r.failed == 0
    # the 2 particles whose new chains were not scored keep their first step
    assert sorted(len(p.steps) for p in r.particles) == [1, 1, 2, 2]
    assert all(p.step_scores == [TABLE[s] for s in p.steps] for p in r.particles)


def test_token_limit_is_overshot_by_at_most_one_iteration() -> None:
    for limit in (1, 3, 5, 9):
        r = _run(n=4, seed=1, budget=Budget(generated_tokens=limit))
        assert r.budget is not None and r.budget.exhausted == "generated_tokens"
        assert r.budget.generated_tokens >= limit
        # one iteration asks 4 particles for one step each; the longest step has 4 tokens
        assert r.budget.token_overshoot <= 4 * 4
        assert r.budget.token_overshoot == r.budget.generated_tokens - limit


def test_wall_time_and_nothing_fitting(monkeypatch: pytest.MonkeyPatch) -> None:
    times = iter([0.0] + [10.0] * 100)  # the meter starts at 0; every later read is 10 s
    monkeypatch.setattr(budget_module, "monotonic", lambda: next(times))
    with pytest.raises(BudgetExhaustedError, match="first step was not proposed") as info:
        _run(n=4, seed=0, budget=Budget(seconds=5))
    assert info.value.limit == "seconds" and info.value.spent.generator_calls == 0


def test_async_spends_what_sync_spends() -> None:
    budget = Budget(generator_calls=7, prm_calls=5)
    sync = _run(n=4, seed=2, budget=budget)
    async_ = asyncio.run(ParticleFilter(FakeGenerator(tree=TREE, seed=5), table_scorer(TABLE),
                                        n=4, seed=2, budget=budget).arun("q"))
    strip = ("seconds",)
    a, b = async_.to_dict(), sync.to_dict()
    for d in (a, b):
        d["budget"] = {k: v for k, v in d["budget"].items() if k not in strip}
    assert a == b
