"""Token-budget batching: sort by length, pad to a few bucket lengths, cap tokens per batch.

Two caps bound a batch: ``token_budget`` (padded tokens, ``rows x length``) and, optionally,
``attention_budget`` (attention cells, ``rows x length^2``). The second is what keeps memory
flat on the CPU: a transformer's attention activations grow with the square of the length, so
a budget of 8192 tokens is 64 rows of 128 tokens (cheap) but also 16 rows of 512 tokens, whose
attention scores alone took over 1 GB in ONNX Runtime (``benchmarks/results/
memory_prm_score.md``). Capping ``rows x length^2`` shrinks only the long batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Batch", "bucket_length", "plan_batches", "pad_batch"]


def bucket_length(n: int, *, granularity: int = 16, max_length: int | None = None) -> int:
    """Padded length for a sequence of ``n`` tokens.

    Up to 128 tokens, round up to a multiple of ``granularity``; past that, to the next of
    a geometric ladder (x1.25) rounded to ``granularity``, so few distinct shapes run.
    Never exceeds ``max_length`` when given.
    """
    if n <= 0:
        raise ValueError(f"sequence length must be positive, got {n}")
    size = -(-n // granularity) * granularity
    if size > 128:
        b = 128
        while b < n:
            b = -(-int(b * 1.25) // granularity) * granularity
        size = b
    return min(size, max_length) if max_length is not None and max_length >= n else size


@dataclass(frozen=True)
class Batch:
    """Indices of the sequences in one batch and their common padded length."""

    indices: list[int]
    length: int


def plan_batches(
    lengths: Sequence[int], *, token_budget: int = 8192, max_batch_size: int = 64,
    granularity: int = 16, max_length: int | None = None, attention_budget: int | None = None,
) -> list[Batch]:
    """Group sequences into batches of at most ``token_budget`` padded tokens.

    Sequences are sorted by length (longest first) so padding stays small. A sequence
    longer than the budget still gets a batch of its own.

    Args:
        lengths: token count of each sequence.
        token_budget: most padded tokens (``rows x length``) per batch.
        max_batch_size: most rows per batch.
        granularity: padding step (see :func:`bucket_length`).
        max_length: the model's longest input; padded lengths never exceed it.
        attention_budget: most attention cells (``rows x length^2``) per batch; ``None``
            for no such cap.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[Batch] = []
    cur: list[int] = []
    cur_len = 0
    for i in order:
        padded = bucket_length(lengths[i], granularity=granularity, max_length=max_length)
        new_len = max(cur_len, padded)
        rows = len(cur) + 1
        if cur and (new_len * rows > token_budget or len(cur) >= max_batch_size or (
                attention_budget is not None and rows * new_len * new_len > attention_budget)):
            batches.append(Batch(cur, cur_len))
            cur, new_len = [], padded
        cur.append(i)
        cur_len = new_len
    if cur:
        batches.append(Batch(cur, cur_len))
    return batches


def pad_batch(
    seqs: Sequence[Sequence[int]], length: int, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad ``seqs`` to ``length``: ``input_ids`` and ``attention_mask`` as int64."""
    ids = np.full((len(seqs), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), length), dtype=np.int64)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
