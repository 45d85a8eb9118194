"""Reliability: hostile inputs, generator hangs, a failing CUDA start, damaged model files.

The scorer is a real :class:`OnnxPRM` over the hand-built contract graph of ``graph_models``
(max_length 64, so long-chain paths are reached with little CPU), and, where it says so, the
shipped default PRM. Generators are small in-test classes whose only job is to hang or fail
on cue; hung calls wait on an :class:`threading.Event` that each test releases, so no thread
outlives its test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prm_plugins import ChainTooLongError, InvalidInputError, load_prm
from prm_plugins.errors import ModelIntegrityError, ModelLoadError
from prm_plugins.runtime import OnnxPRM
from prm_plugins.strategies import (
    AllCandidatesFailedError,
    GeneratorTimeoutError,
    RetryPolicy,
    SelfCritique,
    abest_of_n,
    best_of_n,
)

from support.graph_models import make_model_dir, reference_probs


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("reliability") / "m")


@pytest.fixture(scope="module")
def windowed(model_dir: Path) -> OnnxPRM:
    return load_prm(model_dir, device="cpu", long_chains="window")


# -- generator hangs --------------------------------------------------------------------------


class HangingGenerator:
    """``sample`` hangs (until ``release``) on the calls numbered in ``hang_on`` (0-based)."""

    def __init__(self, hang_on: set[int] | None = None, *, hang_always: bool = False,
                 answer: str = "3 + 4 = 7\nThe answer is 7.") -> None:
        self.hang_on = hang_on or set()
        self.hang_always = hang_always
        self.answer = answer
        self.release = threading.Event()
        self.calls = 0
        self.finished = 0
        self._lock = threading.Lock()

    def sample(self, prompt: str, n: int) -> list[str]:
        with self._lock:
            k = self.calls
            self.calls += 1
        try:
            if self.hang_always or k in self.hang_on:
                self.release.wait(timeout=30)
            return [self.answer] * n
        finally:
            with self._lock:
                self.finished += 1


def _wait_for(predicate: Any, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _hung_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "prm-generator-call"]


def test_a_hung_generator_call_times_out_and_is_retried(windowed: OnnxPRM) -> None:
    gen = HangingGenerator(hang_on={0, 1})
    policy = RetryPolicy.no_wait(max_attempts=3, timeout=0.2)
    start = time.perf_counter()
    r = best_of_n("3 + 4?", gen, windowed, n=3, max_concurrency=1, retry=policy)
    elapsed = time.perf_counter() - start
    # Candidate 0: calls 0 and 1 hang and time out, call 2 answers; candidates 1, 2 answer.
    assert [c.ok for c in r.candidates] == [True, True, True]
    assert [c.attempts for c in r.candidates] == [3, 1, 1]
    assert r.attempts == 5 and gen.calls == 5
    assert elapsed >= 0.4  # two full timeouts were waited, not skipped
    gen.release.set()
    assert _wait_for(lambda: gen.finished == 5 and not _hung_threads())


def test_a_generator_that_always_hangs_fails_with_the_timeout_named() -> None:
    gen = HangingGenerator(hang_always=True)
    policy = RetryPolicy.no_wait(max_attempts=2, timeout=0.1)
    try:
        with pytest.raises(AllCandidatesFailedError, match=r"did not answer within 0.1 s") as info:
            best_of_n("q", gen, _NeverScored(), n=2, max_concurrency=2, retry=policy)
        assert gen.calls == 4  # 2 candidates x 2 attempts, no more
        assert all(isinstance(e, GeneratorTimeoutError) for e in info.value.causes)
        assert all(isinstance(e, TimeoutError) for e in info.value.causes)
    finally:
        gen.release.set()
    assert _wait_for(lambda: gen.finished == 4 and not _hung_threads())


def test_self_critique_survives_a_hung_revision(windowed: OnnxPRM) -> None:
    class Reviser(HangingGenerator):
        def revise(self, *args: Any, **kwargs: Any) -> str:
            self.release.wait(timeout=30)
            return "never used"

    gen = Reviser()
    policy = RetryPolicy.no_wait(max_attempts=1, timeout=0.1)
    try:
        r = SelfCritique(gen, windowed, threshold=0.99, max_rounds=1, retry=policy).run("3 + 4?")
    finally:
        gen.release.set()
    # The first solution stands; the hung revision is recorded on its round, not raised.
    assert r.solution == gen.answer
    assert any("did not answer within 0.1 s" in (rnd.error or "") for rnd in r.history)


def test_async_hung_calls_are_cancelled_and_retried(windowed: OnnxPRM) -> None:
    class AsyncHanging:
        def __init__(self) -> None:
            self.calls = 0
            self.cancelled = 0

        async def asample(self, prompt: str, n: int) -> list[str]:
            self.calls += 1
            if self.calls <= 2:
                try:
                    await asyncio.Event().wait()  # never set: only a cancel ends it
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise
            return ["3 + 4 = 7"] * n

    gen = AsyncHanging()

    async def main() -> Any:
        r = await abest_of_n("3 + 4?", gen, windowed, n=2, max_concurrency=2,
                             retry=RetryPolicy.no_wait(max_attempts=2, timeout=0.1))
        return r, len(asyncio.all_tasks())

    r, tasks_left = asyncio.run(main())
    assert [c.attempts for c in r.candidates] == [2, 2] and gen.calls == 4
    assert gen.cancelled == 2  # the hung awaits were cancelled, not left behind
    assert tasks_left == 1  # only main() itself


@pytest.mark.parametrize("bad", [0, -1.0, True, "5"])
def test_timeout_must_be_positive_seconds(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="timeout must be a number of seconds > 0"):
        RetryPolicy(timeout=bad)  # type: ignore[arg-type]


class _NeverScored:
    def score_batch(self, items: Any) -> Any:  # pragma: no cover - must not be reached
        raise AssertionError("nothing should be scored when every candidate failed")


# -- CUDA failing at session start ------------------------------------------------------------


def _cuda_start_is_real_failure() -> bool:
    import onnxruntime as ort

    from prm_plugins.runtime.session import cuda_driver_present

    return "CUDAExecutionProvider" in ort.get_available_providers() and not (
        cuda_driver_present()
    )


@pytest.mark.skipif(not _cuda_start_is_real_failure(),
                    reason="needs an onnxruntime with the CUDA provider and no GPU driver")
def test_a_failing_cuda_start_falls_back_or_raises(model_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine has no GPU, so "auto" would never try CUDA. Pretending a driver is present
    # (the only double here) makes ONNX Runtime really try to load its CUDA provider, which
    # really fails: the CUDA 13 / cuDNN libraries are absent.
    from prm_plugins.runtime import session

    cpu = load_prm(model_dir, device="cpu")
    monkeypatch.setattr(session, "cuda_driver_present", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        auto = load_prm(model_dir, device="auto")
    assert auto.provider == "CPUExecutionProvider"
    assert any("running on CPU" in str(w.message) for w in caught)
    steps = ["3 + 4 = 7", "7 * 2 = 14"]
    assert auto.score("q", steps).scores == cpu.score("q", steps).scores
    with pytest.raises(ModelLoadError, match=r"prm-plugins\[cuda\]"):
        load_prm(model_dir, device="cuda")


# -- damaged model files ----------------------------------------------------------------------


def test_one_flipped_byte_in_the_graph_is_refused(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path / "m")
    data = bytearray((d / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # same length, one bit changed
    (d / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="model.onnx does not match its sha256"):
        load_prm(d, device="cpu")


def test_a_manifest_that_is_not_utf8_is_refused_clearly(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path / "m")
    (d / "prm.json").write_bytes(b"\xff\xfe" + (d / "prm.json").read_bytes())
    with pytest.raises(ModelLoadError, match="prm.json is not valid JSON"):
        load_prm(d, device="cpu")


# -- hostile inputs ---------------------------------------------------------------------------


def test_ten_thousand_steps_get_ten_thousand_scores(model_dir: Path, windowed: OnnxPRM) -> None:
    steps = [f"step {i}: {i} + 1 = {i + 1}" for i in range(10_000)]
    strict = load_prm(model_dir, device="cpu")
    with pytest.raises(ChainTooLongError, match="long_chains='window'"):
        strict.score("count up", steps)
    scores = windowed.score("count up", steps).scores
    assert len(scores) == 10_000
    assert all(0.0 <= s <= 1.0 for s in scores)
    # A step scored inside a window gets the score it has in a chain holding exactly that
    # window's context; check the head of the chain, which the first window scores in full.
    head = strict.score("count up", steps[:3]).scores
    np.testing.assert_allclose(scores[:3], head, atol=1e-6)


def test_a_one_megabyte_step_is_refused_clearly_in_either_mode(model_dir: Path,
                                                              windowed: OnnxPRM) -> None:
    step = ("The farmer sells 12 eggs at $3 each, so he earns 12 * 3 = 36 dollars. " * 15_000)
    assert len(step.encode()) > 1_000_000
    for prm in (load_prm(model_dir, device="cpu"), windowed):
        with pytest.raises(ChainTooLongError, match=r"over (the model.s )?max_length (of )?64"):
            prm.score("q", ["1 + 1 = 2", step])
    # The other chains of a batch are not lost when one of them is refused one by one.
    good = windowed.score("q", ["1 + 1 = 2"])
    assert len(good.scores) == 1


@pytest.mark.parametrize("step", [
    "\x00\x00 nul bytes",
    "zero\u200bwidth\u200djoiners",
    "\u202eright-to-left override \u05e9\u05dc\u05d5\u05dd",
    "emoji \U0001f600\U0001f9ee 3 + 4 = 7",
    "combining e\u0301\u0301\u0301",
    "\ufeffbyte order mark",
    "tab\tand\r\ncarriage returns",
])
def test_odd_but_valid_unicode_gets_exactly_one_score(windowed: OnnxPRM, step: str) -> None:
    s = windowed.score("q", ["1 + 1 = 2", step, "2 + 2 = 4"])
    assert len(s.scores) == 3 and all(np.isfinite(s.scores))


def test_a_lone_surrogate_is_a_clear_input_error(windowed: OnnxPRM) -> None:
    with pytest.raises(InvalidInputError, match=r"steps\[1\].*not valid Unicode.*position 2"):
        windowed.score("q", ["ok", "ab\ud800cd"])
    with pytest.raises(InvalidInputError, match=r"question.*not valid Unicode"):
        windowed.score("q\udfff", ["ok"])


def test_a_thousand_chains_in_one_batch_keep_order(model_dir: Path) -> None:
    prm = load_prm(model_dir, device="cpu")
    items = [(f"q{i}", [f"{i} + {j} = {i + j}" for j in range(1 + i % 4)]) for i in range(1000)]
    got = prm.score_batch(items)
    assert [len(g.scores) for g in got] == [len(steps) for _, steps in items]
    for k in (0, 1, 499, 998, 999):  # spot-check against the graph's numpy reference
        q, steps = items[k]
        r = prm.format.render(q, steps)
        want = reference_probs(list(r.input_ids))[r.step_positions]
        np.testing.assert_allclose(got[k].scores, want, atol=1e-5)


# -- input files ------------------------------------------------------------------------------


def test_training_data_with_a_bad_line_stops_at_that_line(tmp_path: Path) -> None:
    from prm_plugins.training import load_stepwise

    good = json.dumps({"prompt": "q", "completions": ["a"], "labels": [True]})
    cases = {
        b"\xff\xfe not utf-8\n": r"bad.jsonl:2: not valid UTF-8",
        b'{"prompt": "cut off\n': r"bad.jsonl:2: not valid JSON",
        b'{"prompt": "q", "completions": ["a"], "labels": [1]}\n': r"bad.jsonl:2: labels\[0\]",
    }
    for line, message in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_bytes(good.encode() + b"\n" + line + good.encode() + b"\n")
        with pytest.raises(InvalidInputError, match=message):
            load_stepwise(path)
    path.write_bytes((good + "\n\n" + good + "\n").encode())
    assert len(load_stepwise(path)) == 2  # blank lines are not rows, and nothing is dropped


def test_gsm8k_reader_names_the_line_that_is_not_utf8(tmp_path: Path) -> None:
    from prm_plugins.labeling.gsm8k import read_gsm8k_jsonl

    path = tmp_path / "g.jsonl"
    path.write_bytes(b'{"question": "a", "answer": "#### 1"}\n\xff\n')
    rows = read_gsm8k_jsonl(path)
    assert next(rows)["question"] == "a"
    with pytest.raises(InvalidInputError, match=r"g.jsonl:2: not valid UTF-8"):
        next(rows)


def test_prm_score_keeps_every_good_line_around_hostile_ones(model_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            ) -> None:
    from prm_plugins.cli import main

    good = [json.dumps({"question": "q", "steps": ["1 + 1 = 2", f"{k} + 1 = {k + 1}"]})
            for k in range(6)]
    bad = [b'{"question": "q", "steps": ["a\\ud800"]}',  # valid JSON, lone surrogate
           b'{"question": "cut off', b"\xff\xfe\n", b'{"question": "q", "steps": [""]}']
    lines = [good[0].encode(), bad[0], good[1].encode(), bad[1], good[2].encode(), bad[2],
             good[3].encode(), bad[3], good[4].encode(), good[5].encode()]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    rc = main(["score", str(model_dir), "--input", str(src), "--output", str(out),
               "--no-progress", "--device", "cpu"])
    assert rc == 1  # bad rows were reported
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(lines)  # one output row per input row, in order
    scored = [r for r in rows if "step_scores" in r]
    assert [r["steps"][1] for r in scored] == [json.loads(g)["steps"][1] for g in good]
    assert rows[1]["steps"] == ["a\ud800"] and "not valid Unicode" in rows[1]["error"]
    assert "line 2:" in capsys.readouterr().err
