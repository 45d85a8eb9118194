"""Shape buckets: every forward batch padded to one of a few ``(rows, length)`` shapes.

With :func:`prm_plugins.runtime.batching.plan_batches` (the default) a batch's length follows a fine
ladder, so a long-running scorer meets many shapes. Bucketing pads each batch's length up to
one of a few lengths (``"auto"``: powers of two from 64, capped at ``max_length``) and, for
CUDA graphs, its row count up to a power of two, so the set of shapes is small and fixed:
ONNX Runtime's memory arena stops growing after warm-up and one CUDA graph per shape can be
captured and replayed. Scores do not change: padding is masked and position ids come from the
mask inside the graph.

Examples:
    >>> resolve_length_buckets("auto", 512)
    (64, 128, 256, 512)
    >>> [b.length for b in plan_bucketed_batches([70, 30, 500], (64, 128, 512),
    ...                                          token_budget=1024, max_batch_size=8)]
    [512, 128, 64]
"""

from __future__ import annotations

from collections.abc import Sequence

from prm_plugins.errors import InvalidInputError
from prm_plugins.runtime.batching import Batch

__all__ = [
    "AUTO_MIN_LENGTH",
    "plan_bucketed_batches",
    "resolve_length_buckets",
    "row_bucket",
    "rows_cap",
]

#: Smallest length of the ``"auto"`` ladder (shorter chains pad to it).
AUTO_MIN_LENGTH = 64


def resolve_length_buckets(spec: str | Sequence[int], max_length: int) -> tuple[int, ...]:
    """The sorted bucket lengths for ``spec``, the longest always ``max_length``.

    Args:
        spec: ``"auto"`` (powers of two from :data:`AUTO_MIN_LENGTH`) or bucket lengths.
        max_length: the model's longest chain; lengths past it are dropped and it is added,
            so every chain the model takes has a bucket.

    Raises:
        InvalidInputError: an unknown string or a length that is not a positive int.
    """
    if isinstance(spec, str):
        if spec != "auto":
            raise InvalidInputError(
                f"buckets must be 'auto', a list of lengths, or None; got {spec!r}"
            )
        lengths, size = [], AUTO_MIN_LENGTH
        while size < max_length:
            lengths.append(size)
            size *= 2
    else:
        lengths = list(spec)
        bad = [v for v in lengths if not isinstance(v, int) or isinstance(v, bool) or v < 1]
        if bad or not lengths:
            raise InvalidInputError(
                f"buckets must be positive int lengths, got {list(spec)!r}; e.g. [128, 256, 512]"
            )
    return tuple(sorted({v for v in lengths if v < max_length} | {max_length}))


def row_bucket(rows: int, cap: int) -> int:
    """Rows a batch of ``rows`` is padded to for CUDA graphs: the next power of two, at most
    ``cap`` (and ``cap`` itself when it is not a power of two)."""
    if rows < 1 or cap < rows:
        raise InvalidInputError(f"rows must be in 1..{cap}, got {rows}")
    size = 1
    while size < rows:
        size *= 2
    return min(size, cap)


def rows_cap(length: int, *, token_budget: int, max_batch_size: int,
             attention_budget: int | None = None) -> int:
    """Most rows a batch of bucket ``length`` may hold (at least one): at most
    ``token_budget`` tokens and, when given, ``attention_budget`` cells (``rows x length^2``)."""
    cap = min(max_batch_size, token_budget // length)
    if attention_budget is not None:
        cap = min(cap, attention_budget // (length * length))
    return max(1, cap)


def plan_bucketed_batches(
    lengths: Sequence[int],
    buckets: Sequence[int],
    *,
    token_budget: int,
    max_batch_size: int,
    attention_budget: int | None = None,
) -> list[Batch]:
    """Group sequences by bucket, longest first, at most ``token_budget`` padded tokens each.

    Every batch holds sequences of one bucket and has that bucket's length; a bucket longer
    than the budget still runs, one sequence per batch.

    Args:
        lengths: token count of each sequence.
        buckets: sorted bucket lengths (:func:`resolve_length_buckets`).
        token_budget: most padded tokens per batch.
        max_batch_size: most sequences per batch.
        attention_budget: most attention cells (``rows x length^2``) per batch, or ``None``.

    Raises:
        InvalidInputError: a sequence longer than the longest bucket.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[Batch] = []
    cur: list[int] = []
    cur_len = 0
    for i in order:
        n = lengths[i]
        length = next((b for b in buckets if b >= n), None)
        if length is None:
            raise InvalidInputError(
                f"a sequence of {n} tokens is longer than the longest bucket {buckets[-1]}"
            )
        cap = rows_cap(length, token_budget=token_budget, max_batch_size=max_batch_size,
                       attention_budget=attention_budget)
        if cur and (length != cur_len or len(cur) >= cap):
            batches.append(Batch(cur, cur_len))
            cur = []
        cur.append(i)
        cur_len = length
    if cur:
        batches.append(Batch(cur, cur_len))
    return batches
