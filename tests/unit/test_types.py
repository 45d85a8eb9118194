from __future__ import annotations

import math

import pytest

from prm_plugins import InvalidInputError, StepScores, aggregate_scores


def test_aggregations_match_their_formulas() -> None:
    s = StepScores(steps=["a", "b", "c"], scores=[0.9, 0.4, 0.8], question="q")
    assert s.min == 0.4
    assert s.prod == pytest.approx(0.9 * 0.4 * 0.8)
    assert s.mean == pytest.approx((0.9 + 0.4 + 0.8) / 3)
    assert s.last == 0.8
    assert s.geomean == pytest.approx((0.9 * 0.4 * 0.8) ** (1 / 3))
    assert s.aggregate(lambda xs: max(xs)) == 0.9
    assert s.aggregate("min") == s.min


def test_geomean_survives_a_zero_score() -> None:
    assert math.isfinite(aggregate_scores([0.0, 0.5], "geomean"))
    assert aggregate_scores([0.0, 0.5], "geomean") < 1e-5


def test_first_error_and_weakest_step() -> None:
    s = StepScores(steps=["a", "b", "c", "d"], scores=[0.9, 0.3, 0.2, 0.7])
    assert s.first_error(0.5) == 1
    assert s.first_error(0.25) == 2
    assert s.first_error(0.1) is None
    assert s.weakest_step == 2
    tie = StepScores(steps=["a", "b"], scores=[0.3, 0.3])
    assert tie.weakest_step == 0


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", None])
def test_threshold_out_of_range_is_rejected(bad: object) -> None:
    s = StepScores(steps=["a"], scores=[0.5])
    with pytest.raises(InvalidInputError, match="threshold must be a number in"):
        s.first_error(bad)  # type: ignore[arg-type]


def test_one_score_per_step_is_enforced() -> None:
    with pytest.raises(InvalidInputError, match="2 steps and 1 scores"):
        StepScores(steps=["a", "b"], scores=[0.5])


def test_unknown_aggregation_and_empty_scores() -> None:
    with pytest.raises(InvalidInputError, match="unknown aggregation 'max'"):
        aggregate_scores([0.5], "max")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="empty"):
        aggregate_scores([], "min")


def test_to_dict_is_json_ready() -> None:
    s = StepScores(steps=["a"], scores=[0.25], question="q")
    assert s.to_dict() == {"question": "q", "steps": ["a"], "step_scores": [0.25]}
