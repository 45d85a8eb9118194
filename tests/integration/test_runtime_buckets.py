"""Length buckets, token budgets and the IO-binding run path of :class:`OnnxPRM` (CPU).

Bucketing changes how chains are grouped and padded, never their scores: checked on a real
(tiny, fp32) transformer export whose attention mixes tokens, so a padding or position bug
would move the probabilities.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from prm_plugins.errors import InvalidInputError
from prm_plugins.runtime import OnnxPRM
from prm_plugins.runtime.buckets import plan_bucketed_batches, resolve_length_buckets, row_bucket

WORDS = ["tom", "has", "apples", "buys", "more", "so", "the", "total", "is", "3", "+", "2",
         "=", "5", "each", "half", "of", "12", "per", "day"]


def make_chains(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """Chains of 1-7 steps of 1-12 words: lengths spread over several buckets."""
    rng = random.Random(seed)
    return [(" ".join(rng.choices(WORDS, k=rng.randint(3, 10))) + "?",
             [" ".join(rng.choices(WORDS, k=rng.randint(1, 12)))
              for _ in range(rng.randint(1, 7))]) for _ in range(n)]


@pytest.fixture(scope="module")
def fp32_dir(tiny_token_classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory,
             export_small: Callable[..., Path]) -> Path:
    pytest.importorskip("torch")
    return export_small(tiny_token_classifier_dir, tmp_path_factory.mktemp("bk") / "m",
                        "token-classification", parity_chains=2, parity_batch_sizes=(2,))


def test_resolve_length_buckets() -> None:
    assert resolve_length_buckets("auto", 512) == (64, 128, 256, 512)
    assert resolve_length_buckets("auto", 300) == (64, 128, 256, 300)
    assert resolve_length_buckets("auto", 40) == (40,)
    assert resolve_length_buckets([512, 128, 2000, 128], 1024) == (128, 512, 1024)
    for bad in ("pow2", [0], [], [1.5], [True]):
        with pytest.raises(InvalidInputError, match="buckets must"):
            resolve_length_buckets(bad, 512)  # type: ignore[arg-type]


def test_row_bucket() -> None:
    assert [row_bucket(n, 64) for n in (1, 2, 3, 5, 9, 33, 64)] == [1, 2, 4, 8, 16, 64, 64]
    assert row_bucket(5, 6) == 6
    with pytest.raises(InvalidInputError):
        row_bucket(7, 6)


def test_plan_bucketed_batches_respects_buckets_and_budget() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(1, 300) for _ in range(200)]
    buckets = (64, 128, 256, 300)
    batches = plan_bucketed_batches(lengths, buckets, token_budget=1024, max_batch_size=12)
    seen = sorted(i for b in batches for i in b.indices)
    assert seen == list(range(len(lengths)))
    for b in batches:
        assert b.length in buckets
        # every row belongs to this bucket: longer than the bucket below, not past this one
        below = max([x for x in buckets if x < b.length], default=0)
        assert all(below < lengths[i] <= b.length for i in b.indices)
        assert len(b.indices) <= 12
        assert len(b.indices) == 1 or len(b.indices) * b.length <= 1024
    with pytest.raises(InvalidInputError, match="longer than the longest bucket"):
        plan_bucketed_batches([301], buckets, token_budget=1024, max_batch_size=4)


def test_buckets_give_identical_scores(fp32_dir: Path) -> None:
    chains = make_chains(24)
    plain = OnnxPRM(fp32_dir, device="cpu", checks=())
    lengths = [len(plain.format.render(q, s)) for q, s in chains]
    assert max(lengths) > 48 and min(lengths) < 24  # chains span the buckets below
    ref = plain.score_batch(chains)
    for kwargs in ({"buckets": [24, 48, 96]}, {"buckets": "auto"},
                   {"buckets": [24, 48, 96], "io_binding": True},
                   {"buckets": "auto", "token_budget": 200, "max_batch_size": 3}):
        got = OnnxPRM(fp32_dir, device="cpu", checks=(), **kwargs).score_batch(chains)
        for a, b in zip(ref, got, strict=True):
            assert b.scores == a.scores, kwargs  # identical, not merely close


def test_io_binding_keeps_one_buffer_set_per_bucket(fp32_dir: Path) -> None:
    prm = OnnxPRM(fp32_dir, device="cpu", checks=(), buckets=[24, 48, 96], io_binding=True,
                  token_budget=96)
    runner = prm._runner
    assert runner is not None and runner.device == "cpu" and not runner.cuda_graph
    chains = make_chains(16, seed=3)
    first = prm.score_batch(chains)
    shapes = set(runner.shapes)
    assert shapes and all(length in (24, 48, 96) and rows * length <= 96
                          or rows == 1 for rows, length in shapes)
    again = prm.score_batch(list(reversed(chains)))
    assert set(runner.shapes) == shapes  # warm: no new buffers for the same shapes
    for a, b in zip(first, reversed(again), strict=True):
        assert a.scores == b.scores
    # the raw graph path binds fresh buffers and keeps none
    ids = np.array([[2, 5, 6, 3, 0]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1, 0]], dtype=np.int64)
    np.testing.assert_allclose(prm.run_graph(ids, mask),
                               OnnxPRM(fp32_dir, device="cpu").run_graph(ids, mask), atol=1e-7)
    assert set(runner.shapes) == shapes


def test_cuda_graph_options_are_checked(fp32_dir: Path) -> None:
    from prm_plugins.runtime.iobinding import BoundRunner

    with pytest.raises(InvalidInputError, match="cuda_graph=True needs device='cuda'"):
        OnnxPRM(fp32_dir, device="cpu", cuda_graph=True)
    with pytest.raises(InvalidInputError, match="buckets must"):
        OnnxPRM(fp32_dir, device="cpu", buckets="pow2")
    prm = OnnxPRM(fp32_dir, device="cpu")
    with pytest.raises(InvalidInputError, match="CUDA graphs need device='cuda'"):
        BoundRunner(prm._session, device="cpu", cuda_graph=True)
    assert prm._runner is None  # plain session.run on CPU unless io_binding=True


def test_cuda_graph_ids_per_shape(fp32_dir: Path) -> None:
    """The bookkeeping of CUDA-graph runs: one ``gpu_graph_id`` per kept shape up to the token
    cap, -1 above it, the same id and buffers on later runs. The CPU provider ignores the ids,
    so this checks the ids and results, not the capture itself (that needs a GPU)."""
    from prm_plugins.runtime.iobinding import BoundRunner

    prm = OnnxPRM(fp32_dir, device="cpu")
    runner = BoundRunner(prm._session, device="cuda", cuda_graph=True, graph_max_tokens=64)
    runner.device = "cpu"  # buffers on the host: no GPU here
    rng = np.random.default_rng(0)
    for shape in [(2, 16), (8, 16), (1, 16), (2, 16), (4, 16)]:
        ids = rng.integers(5, 100, size=shape, dtype=np.int64)
        mask = np.ones(shape, dtype=np.int64)
        mask[0, shape[1] // 2:] = 0
        got = runner.run(ids, mask, keep=True)
        np.testing.assert_array_equal(got, prm.run_graph(ids, mask).astype(np.float32))
    ids_by_shape = {s: runner.graph_id(s) for s in runner.shapes}
    assert ids_by_shape == {(2, 16): 1, (8, 16): -1, (1, 16): 2, (4, 16): 3}
    options = {g: o.get_run_config_entry("gpu_graph_id") for g, o in runner._run_options.items()}
    assert options == {1: "1", -1: "-1", 2: "2", 3: "3"}
