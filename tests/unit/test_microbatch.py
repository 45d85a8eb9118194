"""MicroBatcher: many concurrent requests, few batched calls, every answer right, nothing leaked.

The scorer is a real OnnxPRM over the hand-built graph of ``graph_models`` (cheap, and its
scores depend on every token, so a request answered with another's result is caught).
"""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path

import pytest

from prm_plugins import ChainTooLongError, InvalidInputError, PRMError, load_prm
from prm_plugins.microbatch import MicroBatcher

from support.graph_models import make_model_dir


@pytest.fixture(scope="module")
def prm(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_prm(make_model_dir(tmp_path_factory.mktemp("mb") / "m", max_length=64),
                    device="cpu")


def _chains(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    word = lambda: f"w{rng.randrange(40)}"  # noqa: E731
    return [(f"{word()} {word()}", [" ".join(word() for _ in range(rng.randint(1, 4)))
                                    for _ in range(rng.randint(1, 4))]) for _ in range(n)]


def test_a_thousand_concurrent_requests_are_batched_and_each_gets_its_own_answer(prm) -> None:  # type: ignore[no-untyped-def]
    chains = _chains(1000)
    expected = [s.scores for s in prm.score_batch(chains)]
    threads_before = threading.active_count()

    async def main() -> tuple[list[list[float]], MicroBatcher]:
        async with MicroBatcher(prm, max_batch=32, max_wait_ms=20) as batcher:
            async def one(i: int) -> list[float]:
                await asyncio.sleep(random.Random(i).random() / 100)  # arrivals spread out
                return (await batcher.score(*chains[i])).scores
            got = await asyncio.gather(*(one(i) for i in range(len(chains))))
        assert asyncio.all_tasks() == {asyncio.current_task()}  # the batching task is gone
        return got, batcher

    got, batcher = asyncio.run(main())
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, abs=1e-6)
    assert batcher.stats.requests == 1000 and sum(batcher.stats.batch_sizes) == 1000
    assert batcher.stats.largest_batch == 32
    assert batcher.stats.batches < 1000 / 8  # coalesced, not one call per request
    assert threading.active_count() == threads_before  # the worker thread was shut down


def test_a_bad_chain_fails_only_its_caller(prm) -> None:  # type: ignore[no-untyped-def]
    chains = _chains(6, seed=1)

    async def main() -> list[object]:
        async with MicroBatcher(prm, max_batch=8, max_wait_ms=50) as batcher:
            calls = [batcher.score(q, s) for q, s in chains]
            calls.insert(3, batcher.score("w1", []))  # no steps: invalid
            return await asyncio.gather(*calls, return_exceptions=True)

    out = asyncio.run(main())
    assert isinstance(out[3], InvalidInputError)
    good = out[:3] + out[4:]
    for g, e in zip(good, prm.score_batch(chains), strict=True):
        assert g.scores == pytest.approx(e.scores, abs=1e-6)  # type: ignore[union-attr]


def test_invalid_input_is_refused_before_it_can_cost_a_batch(prm) -> None:  # type: ignore[no-untyped-def]
    chains = _chains(6, seed=3)

    async def main() -> tuple[list[object], MicroBatcher]:
        async with MicroBatcher(prm, max_batch=16, max_wait_ms=50) as batcher:
            calls = [batcher.score(q, s) for q, s in chains]
            calls += [batcher.score("q", ["ok", " "]), batcher.score("q", "not a list"),
                      batcher.score(3, ["ok"]), batcher.score("q", ["a\ud800"])]
            return await asyncio.gather(*calls, return_exceptions=True), batcher

    out, batcher = asyncio.run(main())
    assert all(isinstance(o, InvalidInputError) for o in out[6:])
    assert batcher.stats.batches == 1 and batcher.stats.requests == 6  # one clean batch


def test_an_over_long_chain_fails_alone_in_its_batch(prm) -> None:  # type: ignore[no-untyped-def]
    chains = _chains(5, seed=4)
    too_long = ("q", [" ".join(f"w{i % 40}" for i in range(80))])

    async def main() -> list[object]:
        async with MicroBatcher(prm, max_batch=8, max_wait_ms=50) as batcher:
            calls = [batcher.score(q, s) for q, s in chains]
            calls.insert(2, batcher.score(*too_long))
            return await asyncio.gather(*calls, return_exceptions=True)

    out = asyncio.run(main())
    assert isinstance(out[2], ChainTooLongError)
    for g, e in zip(out[:2] + out[3:], prm.score_batch(chains), strict=True):
        assert g.scores == pytest.approx(e.scores, abs=1e-6)  # type: ignore[union-attr]


def test_cancelled_callers_do_not_disturb_the_others(prm) -> None:  # type: ignore[no-untyped-def]
    chains = _chains(40, seed=2)

    async def main() -> tuple[list[object], MicroBatcher]:
        async with MicroBatcher(prm, max_batch=16, max_wait_ms=30) as batcher:
            tasks = [asyncio.create_task(batcher.score(q, s)) for q, s in chains]
            await asyncio.sleep(0)  # all queued
            for t in tasks[::5]:
                t.cancel()
            out = await asyncio.gather(*tasks, return_exceptions=True)
        return out, batcher

    out, batcher = asyncio.run(main())
    expected = [s.scores for s in prm.score_batch(chains)]
    for i, (o, e) in enumerate(zip(out, expected, strict=True)):
        if i % 5 == 0:
            assert isinstance(o, asyncio.CancelledError)
        else:
            assert o.scores == pytest.approx(e, abs=1e-6)  # type: ignore[union-attr]
    assert batcher.stats.cancelled == 8
    assert sum(batcher.stats.batch_sizes) == 32  # cancelled ones were never scored


def test_a_small_queue_applies_back_pressure_and_loses_nothing(prm) -> None:  # type: ignore[no-untyped-def]
    chains = _chains(100, seed=3)

    async def main() -> list[list[float]]:
        async with MicroBatcher(prm, max_batch=4, max_wait_ms=1, max_queue=4) as batcher:
            return [r.scores for r in
                    await asyncio.gather(*(batcher.score(q, s) for q, s in chains))]

    got = asyncio.run(main())
    for g, e in zip(got, prm.score_batch(chains), strict=True):
        assert g == pytest.approx(e.scores, abs=1e-6)


def test_lone_request_is_answered_without_waiting_for_a_full_batch(prm) -> None:  # type: ignore[no-untyped-def]
    async def main() -> list[float]:
        async with MicroBatcher(prm, max_batch=1000, max_wait_ms=1) as batcher:
            return (await batcher.score("w1 w2", ["w3 w4", "w5"])).scores

    assert asyncio.run(main()) == pytest.approx(
        prm.score("w1 w2", ["w3 w4", "w5"]).scores, abs=1e-6)


def test_bad_settings_and_use_after_close(prm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match="max_batch must be an int >= 1"):
        MicroBatcher(prm, max_batch=0)
    with pytest.raises(InvalidInputError, match="max_wait_ms"):
        MicroBatcher(prm, max_wait_ms=-1)
    with pytest.raises(InvalidInputError, match="score_batch"):
        MicroBatcher(object())  # type: ignore[arg-type]

    async def main() -> None:
        batcher = MicroBatcher(prm)
        await batcher.score("w1", ["w2"])
        await batcher.aclose()
        with pytest.raises(PRMError, match="closed"):
            await batcher.score("w1", ["w2"])

    asyncio.run(main())


def test_stats_keep_a_bounded_history_of_batch_sizes() -> None:
    from prm_plugins.microbatch import BATCH_SIZE_HISTORY, MicroBatcherStats

    stats = MicroBatcherStats()
    for k in range(BATCH_SIZE_HISTORY + 5):
        stats.batch_sizes.append(k % 7 + 1)
    assert len(stats.batch_sizes) == BATCH_SIZE_HISTORY  # a long-running server stays bounded
    assert list(stats.batch_sizes)[-1] == (BATCH_SIZE_HISTORY + 4) % 7 + 1
