from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from prm_plugins.runtime.batching import bucket_length, pad_batch, plan_batches


def test_bucket_lengths_are_few_and_cover() -> None:
    assert bucket_length(1) == 16
    assert bucket_length(16) == 16
    assert bucket_length(17) == 32
    assert bucket_length(129) >= 129
    # few distinct shapes between 1 and 2048
    assert len({bucket_length(n) for n in range(1, 2049)}) < 30
    assert bucket_length(100, max_length=110) == 110
    assert bucket_length(100, max_length=100) == 100


@given(st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=60),
       st.integers(min_value=64, max_value=4096))
def test_plan_covers_every_sequence_once_within_budget(lengths: list[int], budget: int) -> None:
    batches = plan_batches(lengths, token_budget=budget, max_batch_size=16)
    seen = sorted(i for b in batches for i in b.indices)
    assert seen == list(range(len(lengths)))
    for b in batches:
        assert all(lengths[i] <= b.length for i in b.indices)
        assert len(b.indices) <= 16
        # over budget only when one sequence alone is larger than the budget
        assert b.length * len(b.indices) <= budget or len(b.indices) == 1


def test_pad_batch_right_pads_with_mask() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8]], 4, pad_id=0)
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
