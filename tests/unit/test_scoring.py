"""prm_plugins.scoring: score the batch, then one by one when the batch fails."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from prm_plugins.errors import PRMError, ScorerOutputError
from prm_plugins.scoring import IsolatedScores, ascore_isolated, score_isolated


class Scorer:
    """Scores a str by its length; refuses "bad" (ValueError) and "hang" (TimeoutError)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def score_batch(self, items: Sequence[str]) -> list[int]:
        self.calls.append(list(items))
        if "hang" in items:
            raise TimeoutError("the scorer hangs")
        if "bad" in items:
            raise ValueError("cannot score 'bad'")
        if "invalid" in items:
            raise PRMError("the caller's own input is invalid")
        return [len(s) for s in items]

    async def ascore_batch(self, items: Sequence[str]) -> list[int]:
        return self.score_batch(items)


def test_a_batch_that_returns_is_handed_back_as_it_is() -> None:
    scorer = Scorer()
    out = score_isolated(scorer.score_batch, ["ab", "abc"])
    assert (out.results, out.batch_error, out.isolated) == ([2, 3], None, False)
    assert scorer.calls == [["ab", "abc"]]


def test_a_failed_batch_is_scored_one_by_one_and_only_the_bad_item_fails() -> None:
    scorer = Scorer()
    seen: list[tuple[str, int]] = []
    out = score_isolated(scorer.score_batch, ["ab", "bad", "c"],
                         on_batch_error=lambda exc, n: seen.append((type(exc).__name__, n)))
    assert out.isolated and isinstance(out.batch_error, ValueError)
    assert out.results[0] == 2 and out.results[2] == 1
    assert isinstance(out.results[1], ValueError) and "'bad'" in str(out.results[1])
    assert scorer.calls == [["ab", "bad", "c"], ["ab"], ["bad"], ["c"]]
    assert seen == [("ValueError", 3)]


def test_one_item_gets_the_batch_error_without_a_second_call() -> None:
    scorer = Scorer()
    out = score_isolated(scorer.score_batch, ["bad"])
    assert out.results == [out.batch_error] and isinstance(out.batch_error, ValueError)
    assert scorer.calls == [["bad"]]


def test_propagated_errors_concern_the_whole_batch() -> None:
    scorer = Scorer()
    with pytest.raises(PRMError, match="own input"):
        score_isolated(scorer.score_batch, ["ab", "invalid"], propagate=(PRMError,))
    assert scorer.calls == [["ab", "invalid"]]


def test_stop_on_answers_the_rest_without_calling_the_scorer_again() -> None:
    scorer = Scorer()
    out = score_isolated(scorer.score_batch, ["ab", "hang", "c", "d"], stop_on=(TimeoutError,))
    assert out.results[0] == 2
    assert all(r is out.results[1] for r in out.results[1:])
    assert isinstance(out.results[1], TimeoutError)
    assert scorer.calls == [["ab", "hang", "c", "d"], ["ab"], ["hang"]]


def test_skipped_items_are_not_scored_again() -> None:
    scorer = Scorer()
    out = score_isolated(scorer.score_batch, ["ab", "bad", "c"], skip=lambda s: s == "c")
    assert out.results[0] == 2 and out.results[2] is None
    assert ["c"] not in scorer.calls


def test_a_single_call_that_returns_the_wrong_count_is_that_items_error() -> None:
    def score_batch(items: list[str]) -> list[int]:
        if len(items) > 1:
            raise RuntimeError("batch failed")
        return [] if items == ["empty"] else [1]

    out = score_isolated(score_batch, ["x", "empty"])
    assert out.results[0] == 1
    assert isinstance(out.results[1], ScorerOutputError)
    assert "returned 0 results for 1 chain" in str(out.results[1])


def test_a_custom_score_one_is_used_after_a_failed_batch() -> None:
    scorer = Scorer()
    out = score_isolated(scorer.score_batch, ["ab", "bad"],
                         score_one=lambda s: scorer.score_batch([s]))
    assert out.results[0] == [2]


def test_no_items_no_call() -> None:
    scorer = Scorer()
    assert score_isolated(scorer.score_batch, []).results == []
    assert asyncio.run(ascore_isolated(scorer.ascore_batch, [])).results == []
    assert scorer.calls == []


def test_the_async_form_follows_the_same_rules() -> None:
    scorer = Scorer()

    async def run() -> list[IsolatedScores[Any]]:
        return [
            await ascore_isolated(scorer.ascore_batch, ["ab", "abc"]),
            await ascore_isolated(scorer.ascore_batch, ["ab", "bad", "c"]),
            await ascore_isolated(scorer.ascore_batch, ["ab", "hang", "c"],
                                  stop_on=(TimeoutError,)),
            await ascore_isolated(scorer.ascore_batch, ["ab", "bad", "c"],
                                  skip=lambda s: s == "ab"),
        ]

    ok, isolated, stopped, skipped = asyncio.run(run())
    assert ok.results == [2, 3] and not ok.isolated
    assert isolated.results[0] == 2 and isolated.results[2] == 1
    assert isinstance(isolated.results[1], ValueError)
    assert isinstance(stopped.results[1], TimeoutError) and stopped.results[2] is stopped.results[1]
    assert skipped.results[0] is None and skipped.results[2] == 1
    with pytest.raises(PRMError):
        asyncio.run(ascore_isolated(scorer.ascore_batch, ["invalid", "x"],
                                    propagate=(PRMError,)))


def test_on_answer_hands_each_answer_on_as_soon_as_it_is_known() -> None:
    scorer = Scorer()
    told: list[tuple[int, Any, int]] = []
    out = score_isolated(scorer.score_batch, ["ab", "bad", "c", "hang", "d"],
                         stop_on=(TimeoutError,), skip=lambda s: s == "c",
                         on_answer=lambda i, a: told.append((i, a, len(scorer.calls))))
    assert [i for i, _, _ in told] == [0, 1, 3, 4]  # "c" skipped: never told
    assert told[0][1] == 2 and told[0][2] == 2  # told right after its own call, before "bad"
    assert told[3][1] is told[2][1] is out.results[3]
    one: list[tuple[int, Any]] = []
    score_isolated(scorer.score_batch, ["bad"], on_answer=lambda i, a: one.append((i, a)))
    assert len(one) == 1 and isinstance(one[0][1], ValueError)
    async_told: list[int] = []
    asyncio.run(ascore_isolated(scorer.ascore_batch, ["ab", "bad"],
                                on_answer=lambda i, a: async_told.append(i)))
    assert async_told == [0, 1]
    ok: list[int] = []
    score_isolated(scorer.score_batch, ["ab"], on_answer=lambda i, a: ok.append(i))
    assert ok == []  # the batch returned: nothing to hand on item by item
