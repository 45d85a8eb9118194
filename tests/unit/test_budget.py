"""Budget, BudgetMeter and BudgetSpent: limits, trimming, charging and the report."""

from __future__ import annotations

import json
import threading

import pytest

from prm_plugins.budget import LIMITS, Budget, BudgetMeter, BudgetSpent, estimate_tokens
from prm_plugins.errors import AllCandidatesFailedError, BudgetExhaustedError, InvalidInputError


class FakeClock:
    """A settable monotonic clock, so wall-time limits are tested without sleeping."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- Budget ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["generated_tokens", "generator_calls", "prm_calls"])
@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "10"])
def test_count_limits_refuse_non_positive_ints(name: str, bad: object) -> None:
    with pytest.raises(InvalidInputError, match=rf"Budget\.{name} must be an int >= 1 or None"):
        Budget(**{name: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "5"])
def test_seconds_refuses_non_positive_or_non_finite(bad: object) -> None:
    with pytest.raises(InvalidInputError, match=r"Budget\.seconds must be a finite number"):
        Budget(seconds=bad)  # type: ignore[arg-type]


def test_seconds_becomes_float_and_count_tokens_must_be_callable() -> None:
    assert Budget(seconds=3).seconds == 3.0
    assert isinstance(Budget(seconds=3).seconds, float)
    with pytest.raises(InvalidInputError, match="count_tokens must be a callable"):
        Budget(count_tokens=12)  # type: ignore[arg-type]


def test_budget_check_and_limits() -> None:
    b = Budget(generator_calls=4, seconds=2.5)
    assert Budget.check(b) is b and Budget.check(None) is None
    with pytest.raises(InvalidInputError, match="budget must be a prm_plugins.budget.Budget"):
        Budget.check({"generator_calls": 4})
    assert b.limits() == {"generator_calls": 4, "generated_tokens": None, "prm_calls": None,
                          "seconds": 2.5}
    assert list(b.limits()) == list(LIMITS)
    assert Budget().unlimited and not b.unlimited


def test_estimate_tokens_counts_words_numbers_and_punctuation() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("   \n ") == 0
    assert estimate_tokens("The answer is 12.") == 5
    assert estimate_tokens("12.5 and 1,000") == 3  # decimals and grouped digits are one token
    assert estimate_tokens("$3 * 4 = $12") == 7


# -- the meter ---------------------------------------------------------------------------

def test_unlimited_meter_counts_everything_and_never_trims() -> None:
    meter = BudgetMeter(None)
    assert meter.can_generate(1000) == 1000 and meter.can_score(1000) == 1000
    meter.charge_calls(3)
    assert meter.charge_generation(["a b c", "d"]) == 4
    meter.charge_scoring(7)
    assert meter.exhausted() is None
    spent = meter.spent()
    assert (spent.generator_calls, spent.generated_tokens, spent.prm_calls) == (3, 4, 7)
    assert spent.exhausted is None and spent.token_overshoot == 0
    assert meter.remaining_generator_calls() is None and meter.remaining_tokens() is None


def test_generator_calls_trim_and_are_never_exceeded() -> None:
    meter = BudgetMeter(Budget(generator_calls=5))
    assert meter.can_generate(3) == 3
    meter.charge_calls(3)
    assert meter.spent().exhausted is None
    assert meter.remaining_generator_calls() == 2
    assert meter.can_generate(4) == 2  # trimmed to what fits
    assert meter.spent().exhausted == "generator_calls"
    meter.charge_calls(2)
    assert meter.can_generate(1) == 0
    assert meter.exhausted() == "generator_calls"
    assert meter.spent().generator_calls == 5


def test_token_limit_checked_before_each_round_and_overshoot_reported() -> None:
    meter = BudgetMeter(Budget(generated_tokens=10))
    assert meter.can_generate(2) == 2
    meter.charge_calls(2)
    meter.charge_generation(["one two three four", "five six"])  # 6 tokens, under 10
    assert meter.remaining_tokens() == 4
    assert meter.can_generate(2) == 2  # still under: the round is issued whole
    meter.charge_calls(2)
    meter.charge_generation(["a b c d e", "f g"])  # 13 now: the round overshoots by 3
    assert meter.can_generate(1) == 0
    spent = meter.spent()
    assert spent.exhausted == "generated_tokens"
    assert spent.generated_tokens == 13 and spent.token_overshoot == 3
    assert meter.remaining_tokens() == 0


def test_prm_calls_trim_scoring() -> None:
    meter = BudgetMeter(Budget(prm_calls=5))
    assert meter.can_score(4) == 4
    meter.charge_scoring(4)
    assert meter.can_score(3) == 1
    meter.charge_scoring(1)
    assert meter.can_score(1) == 0
    assert meter.remaining_prm_calls() == 0
    assert meter.spent().exhausted == "prm_calls"
    # the PRM-call limit does not stop generation (e.g. a majority vote needs no scorer)
    assert meter.can_generate(2) == 2


def test_wall_time_from_the_meter_start() -> None:
    clock = FakeClock()
    meter = BudgetMeter(Budget(seconds=5), clock=clock)
    clock.now += 4.9
    assert meter.can_generate(3) == 3 and meter.can_score(3) == 3
    assert meter.exhausted() is None
    clock.now += 0.2
    assert meter.elapsed() == pytest.approx(5.1)
    assert meter.can_generate(3) == 0
    assert meter.can_score(3) == 3  # what a round generated is still scored
    spent = meter.spent()
    assert spent.exhausted == "seconds" and spent.seconds == pytest.approx(5.1)


def test_first_limit_hit_is_the_one_reported() -> None:
    clock = FakeClock()
    meter = BudgetMeter(Budget(generator_calls=2, seconds=1), clock=clock)
    meter.charge_calls(2)
    assert meter.exhausted() == "generator_calls"
    clock.now += 10
    assert meter.spent().exhausted == "generator_calls"  # latched, not replaced


def test_asking_for_nothing_is_not_exhaustion() -> None:
    meter = BudgetMeter(Budget(generator_calls=1))
    meter.charge_calls(1)
    assert meter.can_generate(0) == 0
    assert meter.spent().exhausted is None


def test_custom_count_tokens_is_used_and_checked() -> None:
    meter = BudgetMeter(Budget(count_tokens=len))
    assert meter.charge_generation(["abcd", "ef"]) == 6
    with pytest.raises(InvalidInputError, match="count_tokens must return an int >= 0"):
        BudgetMeter(Budget(count_tokens=lambda t: -1)).charge_generation(["x"])
    with pytest.raises(InvalidInputError, match="count_tokens raised ZeroDivisionError"):
        BudgetMeter(Budget(count_tokens=lambda t: 1 // 0)).charge_generation(["x"])


def test_meter_is_thread_safe() -> None:
    meter = BudgetMeter(None)

    def work() -> None:
        for _ in range(500):
            meter.charge_calls(1)
            meter.charge_generation(["a b"])
            meter.charge_scoring(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = meter.spent()
    assert (spent.generator_calls, spent.generated_tokens, spent.prm_calls) == (2000, 4000, 2000)


def test_spent_to_dict_is_json_ready() -> None:
    meter = BudgetMeter(Budget(generated_tokens=3, prm_calls=9))
    meter.charge_generation(["one two three four five"])
    meter.can_generate(1)
    d = meter.spent().to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["exhausted"] == "generated_tokens" and d["token_overshoot"] == 2
    assert d["limits"]["prm_calls"] == 9 and d["limits"]["seconds"] is None
    assert BudgetSpent().to_dict()["generated_tokens"] == 0


def test_budget_exhausted_error_is_an_all_candidates_failed_error() -> None:
    spent = BudgetSpent(generator_calls=2, exhausted="generator_calls")
    err = BudgetExhaustedError("nothing fit", limit="generator_calls", spent=spent)
    assert isinstance(err, AllCandidatesFailedError)
    assert err.limit == "generator_calls" and err.spent is spent and err.causes == []
