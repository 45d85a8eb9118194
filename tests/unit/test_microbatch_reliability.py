"""MicroBatcher under a misbehaving scorer and misuse: every caller is answered, nothing hangs.

Issue 23 (Concurrency): a scorer that returns the wrong number of results, one that hangs,
use from a second event loop, and a batcher that is never closed. Each test bounds its own
run with ``asyncio.wait_for`` (and lets a hung scorer go in ``finally``) so that a regression
fails the test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import gc
import math
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import pytest

from prm_plugins import PRMError, StepScores, load_prm
from prm_plugins.microbatch import (
    MicroBatcher,
    MicroBatcherClosedError,
    MicroBatcherLoopError,
    ScorerOutputError,
    ScorerTimeoutError,
)

from support.graph_models import make_model_dir

BOUND_S = 10.0  # no test here needs more than a fraction of this; hitting it is a hang


@pytest.fixture(scope="module")
def prm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_prm(make_model_dir(tmp_path_factory.mktemp("mbr") / "m", max_length=64),
                    device="cpu")


CHAINS = [("w1 w2", ["w3 w4", "w5"]), ("w6", ["w7"]), ("w8 w9", ["w10", "w11 w12", "w13"])]


class _Abort(BaseException):
    """Not an Exception: what a scorer that calls sys.exit-like code would raise."""


class ScriptedScorer:
    """Scores truly with a real OnnxPRM, except on the calls a test scripts to misbehave.

    A test double is needed because no real scorer returns the wrong number of results,
    NaN, or hangs on demand, and these faults must be hit at an exact call to be tested
    deterministically. ``script`` maps a call number (0-based) to what goes wrong:
    ``"drop"``/``"extra"`` (one result too few/many), ``"none"`` (returns None),
    ``"hang"`` (blocks until ``release`` is set, then scores), ``"abort"`` (raises a
    BaseException), or ``("corrupt", i, value)`` (result ``i`` replaced by ``value``).
    """

    def __init__(self, prm: Any, script: dict[int, Any] | None = None) -> None:
        self.prm = prm
        self.script = dict(script or {})
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.release = threading.Event()
        self.hanging = threading.Event()  # set when a call starts to hang
        self._lock = threading.Lock()

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score_batch([(question, steps)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> Any:
        with self._lock:
            n = self.calls
            self.calls += 1
            self.batch_sizes.append(len(items))
        action = self.script.get(n, "ok")
        if action == "hang":
            self.hanging.set()
            self.release.wait()
        if action == "abort":
            raise _Abort("scorer gave up")
        out: list[Any] = list(self.prm.score_batch(items))
        if action == "drop":
            return out[:-1]
        if action == "extra":
            return out + out[:1]
        if action == "none":
            return None
        if isinstance(action, tuple) and action[0] == "corrupt":
            out[action[1]] = action[2]
        return out

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score(question, steps)


def _run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, BOUND_S)
    return asyncio.run(bounded())


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before]


@pytest.mark.parametrize("fault,got", [("drop", 2), ("extra", 4)])
def test_a_wrong_result_count_fails_that_batch_and_the_batcher_keeps_serving(
        prm: Any, fault: str, got: int) -> None:
    scorer = ScriptedScorer(prm, {0: fault})

    async def main() -> tuple[list[Any], list[StepScores], MicroBatcher]:
        async with MicroBatcher(scorer, max_batch=3, max_wait_ms=1000) as batcher:
            first = await asyncio.gather(*(batcher.score(q, s) for q, s in CHAINS),
                                         return_exceptions=True)
            later = await asyncio.gather(*(batcher.score(q, s) for q, s in CHAINS))
        return first, later, batcher

    t0 = time.monotonic()
    first, later, batcher = _run(main())
    assert time.monotonic() - t0 < 0.9  # no waiting for max_wait_ms: the batches were full
    for err in first:
        assert isinstance(err, ScorerOutputError)
        assert f"ScriptedScorer.score_batch returned {got} results for 3 chains" in str(err)
    assert len({id(e) for e in first}) == 3  # each caller gets its own exception object
    for got_scores, (q, s) in zip(later, CHAINS, strict=True):
        assert got_scores.scores == pytest.approx(prm.score(q, s).scores, abs=1e-6)
    assert scorer.batch_sizes == [3, 3]  # no chain-by-chain retry of a lying scorer
    assert batcher.stats.failed == 3 and batcher.stats.bad_results == 3


def test_a_scorer_returning_something_that_is_not_a_list_fails_that_batch(prm: Any) -> None:
    scorer = ScriptedScorer(prm, {0: "none"})

    async def main() -> tuple[list[Any], StepScores]:
        async with MicroBatcher(scorer, max_batch=3, max_wait_ms=10) as batcher:
            first = await asyncio.gather(*(batcher.score(q, s) for q, s in CHAINS),
                                         return_exceptions=True)
            return first, await batcher.score(*CHAINS[0])

    first, later = _run(main())
    assert all(isinstance(e, ScorerOutputError) and "returned NoneType" in str(e)
               for e in first)
    assert later.scores == pytest.approx(prm.score(*CHAINS[0]).scores, abs=1e-6)


@pytest.mark.parametrize("bad,message", [
    (StepScores(["w10", "w11 w12", "w13"], [0.5, math.nan, 0.5]), "nan at step 1"),
    (StepScores(["w10", "w11 w12", "w13"], [0.5, math.inf, 0.5]), "inf at step 1"),
    (StepScores(["w10", "w11 w12", "w13"], [0.5, 1.5, 0.5]), "1.5 at step 1"),
    (StepScores(["w10", "w11 w12", "w13"], [0.5, "0.5", 0.5]), "'0.5' at step 1"),  # type: ignore[list-item]
    (StepScores(["w10"], [0.5]), "1 scores for 3 steps"),
    ({"scores": [0.1, 0.2, 0.3]}, "a dict, not StepScores"),
])
def test_a_bad_result_fails_only_its_own_caller(prm: Any, bad: Any, message: str) -> None:
    scorer = ScriptedScorer(prm, {0: ("corrupt", 2, bad)})

    async def main() -> list[Any]:
        async with MicroBatcher(scorer, max_batch=3, max_wait_ms=1000) as batcher:
            return await asyncio.gather(*(batcher.score(q, s) for q, s in CHAINS),
                                        return_exceptions=True)

    out = _run(main())
    assert isinstance(out[2], ScorerOutputError)
    assert message in str(out[2]) and "ScriptedScorer" in str(out[2])
    for got, (q, s) in zip(out[:2], CHAINS[:2], strict=True):
        assert got.scores == pytest.approx(prm.score(q, s).scores, abs=1e-6)


def test_a_hanging_scorer_times_out_its_batch_and_a_fresh_worker_serves_later_calls(
        prm: Any) -> None:
    scorer = ScriptedScorer(prm, {0: "hang"})
    before = set(threading.enumerate())

    async def main() -> tuple[list[Any], float, StepScores, MicroBatcher]:
        batcher = MicroBatcher(scorer, max_batch=2, max_wait_ms=1000, batch_timeout_s=0.3)
        t0 = time.monotonic()
        hung = await asyncio.gather(*(batcher.score(q, s) for q, s in CHAINS[:2]),
                                    return_exceptions=True)
        waited = time.monotonic() - t0
        later, _ = await asyncio.gather(*(batcher.score(q, s) for q, s in CHAINS[2:0:-1]))
        await batcher.aclose()
        return hung, waited, later, batcher

    try:
        hung, waited, later, batcher = _run(main())
    finally:
        scorer.release.set()
    assert all(isinstance(e, ScorerTimeoutError) and isinstance(e, TimeoutError) for e in hung)
    assert "did not return within batch_timeout_s=0.3" in str(hung[0])
    assert 0.25 < waited < 3.0
    assert later.scores == pytest.approx(prm.score(*CHAINS[2]).scores, abs=1e-6)
    assert scorer.batch_sizes == [2, 2]  # a timeout is not retried chain by chain
    assert batcher.stats.timed_out == 2
    for t in _new_threads(before):  # the abandoned worker ends once its call returns
        t.join(BOUND_S)
        assert not t.is_alive()


def test_a_scorer_stuck_too_often_breaks_the_batcher_clearly(prm: Any) -> None:
    scorer = ScriptedScorer(prm, {0: "hang"})

    async def main() -> tuple[Any, Any, float]:
        batcher = MicroBatcher(scorer, max_batch=1, max_wait_ms=0, batch_timeout_s=0.2,
                               max_stuck_calls=1)
        first = await asyncio.gather(batcher.score(*CHAINS[0]), return_exceptions=True)
        t0 = time.monotonic()
        second = await asyncio.gather(batcher.score(*CHAINS[1]), return_exceptions=True)
        refused_in = time.monotonic() - t0
        await batcher.aclose()
        return first[0], second[0], refused_in

    try:
        first, second, refused_in = _run(main())
    finally:
        scorer.release.set()
    assert isinstance(first, ScorerTimeoutError)
    assert isinstance(second, MicroBatcherClosedError)
    assert "stuck" in str(second) and "max_stuck_calls=1" in str(second)
    assert refused_in < 0.1  # refused at once, not after another timeout
    assert scorer.calls == 1


def test_aclose_returns_within_its_bound_with_a_hung_scorer_and_answers_everyone(
        prm: Any) -> None:
    scorer = ScriptedScorer(prm, {0: "hang"})
    before = set(threading.enumerate())

    async def main() -> tuple[float, list[Any]]:
        batcher = MicroBatcher(scorer, max_batch=1, max_wait_ms=0, batch_timeout_s=60)
        tasks = [asyncio.create_task(batcher.score(q, s)) for q, s in CHAINS]
        await asyncio.to_thread(scorer.hanging.wait, BOUND_S)
        t0 = time.monotonic()
        await batcher.aclose(timeout=0.2)
        took = time.monotonic() - t0
        return took, await asyncio.gather(*tasks, return_exceptions=True)

    try:
        took, out = _run(main())
    finally:
        scorer.release.set()
    assert took < 1.5  # 0.2 s of draining, then the hung call is left behind
    assert all(isinstance(e, MicroBatcherClosedError) for e in out)
    assert "closed before this request was answered" in str(out[0])
    assert scorer.calls == 1
    for t in _new_threads(before):
        t.join(BOUND_S)
        assert not t.is_alive()


def test_aclose_drains_the_queue_past_a_hung_batch(prm: Any) -> None:
    scorer = ScriptedScorer(prm, {0: "hang"})

    async def main() -> tuple[float, list[Any]]:
        batcher = MicroBatcher(scorer, max_batch=1, max_wait_ms=0, batch_timeout_s=0.3)
        tasks = [asyncio.create_task(batcher.score(q, s)) for q, s in CHAINS]
        await asyncio.to_thread(scorer.hanging.wait, BOUND_S)
        t0 = time.monotonic()
        await batcher.aclose(timeout=3.0)
        return time.monotonic() - t0, await asyncio.gather(*tasks, return_exceptions=True)

    try:
        took, out = _run(main())
    finally:
        scorer.release.set()
    assert took < 2.0  # returns once all are answered, not at the end of its bound
    assert isinstance(out[0], ScorerTimeoutError)  # the hung batch times out while draining
    for got, (q, s) in zip(out[1:], CHAINS[1:], strict=True):  # the rest are drained
        assert got.scores == pytest.approx(prm.score(q, s).scores, abs=1e-6)


def test_aclose_answers_callers_still_waiting_for_room_in_a_full_queue(prm: Any) -> None:
    scorer = ScriptedScorer(prm, {0: "hang"})

    async def main() -> list[Any]:
        batcher = MicroBatcher(scorer, max_batch=1, max_wait_ms=0, max_queue=1,
                               batch_timeout_s=60)
        tasks = [asyncio.create_task(batcher.score("w1", [f"w{i}"])) for i in range(6)]
        await asyncio.to_thread(scorer.hanging.wait, BOUND_S)
        await asyncio.sleep(0.05)  # the others are queued or waiting for room
        await batcher.aclose(timeout=0.1)
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        out = _run(main())
    finally:
        scorer.release.set()
    assert len(out) == 6 and all(isinstance(e, MicroBatcherClosedError) for e in out)


def test_a_scorer_raising_a_base_exception_fails_its_callers_not_the_batcher(prm: Any) -> None:
    scorer = ScriptedScorer(prm, {0: "abort"})

    async def main() -> tuple[Any, StepScores]:
        async with MicroBatcher(scorer, max_batch=1, max_wait_ms=0) as batcher:
            first = await asyncio.gather(batcher.score(*CHAINS[0]), return_exceptions=True)
            return first[0], await batcher.score(*CHAINS[1])

    first, later = _run(main())
    assert isinstance(first, PRMError) and "_Abort" in str(first)
    assert isinstance(first.__cause__, _Abort)
    assert later.scores == pytest.approx(prm.score(*CHAINS[1]).scores, abs=1e-6)


def test_a_killed_batching_task_answers_its_callers_and_restarts(prm: Any) -> None:
    scorer = ScriptedScorer(prm, {0: "hang"})

    async def main() -> tuple[list[Any], StepScores]:
        batcher = MicroBatcher(scorer, max_batch=1, max_wait_ms=0, batch_timeout_s=60)
        tasks = [asyncio.create_task(batcher.score(q, s)) for q, s in CHAINS[:2]]
        await asyncio.to_thread(scorer.hanging.wait, BOUND_S)
        for t in asyncio.all_tasks():  # what a careless shutdown helper does
            if t.get_name() == "prm-microbatcher":
                t.cancel()
        out = await asyncio.gather(*tasks, return_exceptions=True)
        scorer.release.set()
        later = await batcher.score(*CHAINS[2])
        await batcher.aclose()
        return out, later

    try:
        out, later = _run(main())
    finally:
        scorer.release.set()
    assert all(isinstance(e, PRMError) and "batching task was cancelled" in str(e) for e in out)
    assert later.scores == pytest.approx(prm.score(*CHAINS[2]).scores, abs=1e-6)


def test_use_from_a_second_running_event_loop_is_refused_at_once(prm: Any) -> None:
    batcher = MicroBatcher(prm)
    bound = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def other_thread() -> None:
        async def serve() -> None:
            await batcher.score(*CHAINS[0])
            bound.set()
            while not stop.is_set():
                await asyncio.sleep(0.005)
            assert (await batcher.score(*CHAINS[1])).scores  # still serves its own loop
            await batcher.aclose()
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert bound.wait(BOUND_S)
        t0 = time.monotonic()
        with pytest.raises(MicroBatcherLoopError, match="another event loop") as info:
            _run(batcher.score(*CHAINS[2]))
        assert time.monotonic() - t0 < 1.0
        assert "one MicroBatcher per event loop" in str(info.value)
        assert "run_coroutine_threadsafe" in str(info.value)
    finally:
        stop.set()
        thread.join(BOUND_S)
    assert not errors


def test_sequential_event_loops_may_share_one_batcher(prm: Any) -> None:
    """``asyncio.run`` twice (a script, a sync wrapper): the first loop is gone, so no clash."""
    batcher = MicroBatcher(prm, max_wait_ms=1)
    first = _run(batcher.score(*CHAINS[0]))
    second = _run(batcher.score(*CHAINS[1]))
    _run(batcher.aclose())
    assert first.scores == pytest.approx(prm.score(*CHAINS[0]).scores, abs=1e-6)
    assert second.scores == pytest.approx(prm.score(*CHAINS[1]).scores, abs=1e-6)


def test_an_unclosed_batcher_leaves_only_a_daemon_thread_that_stops_when_collected(
        prm: Any) -> None:
    before = set(threading.enumerate())

    async def main() -> tuple[weakref.ref[MicroBatcher], list[threading.Thread]]:
        batcher = MicroBatcher(prm, max_wait_ms=1)
        await batcher.score(*CHAINS[0])
        return weakref.ref(batcher), _new_threads(before)

    ref, threads = _run(main())  # never closed
    assert threads and all(t.daemon for t in threads)  # cannot keep the process alive
    gc.collect()
    assert ref() is None
    for t in threads:
        t.join(BOUND_S)
        assert not t.is_alive()


def test_a_process_with_an_unclosed_batcher_over_a_hung_scorer_still_exits() -> None:
    script = textwrap.dedent("""
        import asyncio, threading
        from prm_plugins.microbatch import MicroBatcher, ScorerTimeoutError

        class Hung:  # never returns
            def score_batch(self, items):
                threading.Event().wait()

        async def main():
            batcher = MicroBatcher(Hung(), max_wait_ms=0, batch_timeout_s=0.1)
            try:
                await batcher.score("q", ["s"])
            except ScorerTimeoutError:
                print("timed out", flush=True)

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "timed out"


def test_new_settings_are_checked(prm: Any) -> None:
    assert MicroBatcher(prm).batch_timeout_s == 60.0  # the documented default
    for bad in (0, -1, math.nan, math.inf, "5", True):
        with pytest.raises(PRMError, match="batch_timeout_s"):
            MicroBatcher(prm, batch_timeout_s=bad)  # type: ignore[arg-type]
    with pytest.raises(PRMError, match="max_stuck_calls"):
        MicroBatcher(prm, max_stuck_calls=0)

    async def main() -> None:
        batcher = MicroBatcher(prm)
        for bad in (-1, math.nan, False, "1"):
            with pytest.raises(PRMError, match="aclose timeout"):
                await batcher.aclose(timeout=bad)  # type: ignore[arg-type]
        await batcher.aclose()
        await batcher.aclose()  # idempotent

    _run(main())
