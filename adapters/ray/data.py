"""Batch scoring and Monte Carlo labelling over Ray Data actor pools.

* :func:`score_dataset` adds ``step_scores`` (and ``error``) columns to a Ray
  :class:`~ray.data.Dataset` of ``question``/``steps`` rows with ``map_batches`` over a pool
  of :class:`PRMScoreActor` (each loads the model once, then scores batch after batch).
* :func:`score_file` is ``prm score --ray``: JSONL or Parquet in, JSONL or Parquet out, every
  input row out exactly once and in input order (checked: a missing, repeated or reordered
  row is an error, never a silently short file).
* :func:`label_chains` spreads :class:`~prm_plugins.labeling.rollouts.MonteCarloLabeler` over
  a pool of :class:`MonteCarloActor` (each builds its generator once).

Fault tolerance is Ray's: Ray Data restarts an actor that dies and retries the batches it
held (its defaults: ``max_restarts=-1``, ``max_task_retries=-1``; both can be overridden), so
a lost worker costs time, not rows. A row the scorer rejects (``InvalidInputError``,
``ChainTooLongError``) is kept with its ``error`` message; it does not fail its batch.

Examples:
    >>> import ray
    >>> from prm_plugins.adapters.ray import score_dataset
    >>> ds = ray.data.read_parquet("s3://bucket/chains/")  # doctest: +SKIP
    >>> scored = score_dataset(ds, num_actors=8, num_gpus=0.25, batch_size=64)  # doctest: +SKIP
    >>> scored.write_parquet("s3://bucket/scored/")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, missing_extra
from prm_plugins.jsonl import score_pairs  # a row's scores or its error, as prm score

try:
    import pyarrow as pa
    import ray
    import ray.data
except ImportError as exc:
    raise missing_extra(exc.name or "ray", "ray") from exc

from prm_plugins.adapters.ray.files import score_file

__all__ = [
    "MonteCarloActor",
    "PRMScoreActor",
    "label_chains",
    "score_dataset",
    "score_file",
]

logger = logging.getLogger(__name__)

#: internal columns of :func:`score_file`'s datasets.
ROW_COLUMN = "_row"
PAIR_COLUMN = "_pair"


class PRMScoreActor:
    """A Ray Data callable class: loads the PRM once, then scores Arrow batches.

    Args:
        model_dir: model directory (``None``: the shipped default PRM); it must be readable
            at the same path on every node.
        load_kwargs: keyword arguments for :func:`prm_plugins.load_prm`.
        question_column: column holding the question.
        steps_column: column holding the steps (a list of strings).
        output_column: column written with the step scores (null for a rejected row).
        error_column: column written with the scorer's error message (null when scored).
        pair_column: instead of ``question_column``/``steps_column``, read each row's
            ``[question, steps]`` as a JSON string from this column (and drop it).
        describe_error: turns a scoring error into the error column's message (default
            ``str``).
    """

    def __init__(
        self,
        model_dir: str | None = None,
        load_kwargs: Mapping[str, Any] | None = None,
        question_column: str = "question",
        steps_column: str = "steps",
        output_column: str = "step_scores",
        error_column: str = "error",
        pair_column: str | None = None,
        describe_error: Callable[[BaseException], str] | None = None,
    ) -> None:
        from prm_plugins.runtime import load_prm

        self.prm = load_prm(model_dir, **dict(load_kwargs or {}))
        self.question_column = question_column
        self.steps_column = steps_column
        self.output_column = output_column
        self.error_column = error_column
        self.pair_column = pair_column
        self.describe_error = describe_error or str

    def pairs(self, batch: pa.Table) -> list[Any]:
        """The ``(question, steps)`` pairs of a batch."""
        if self.pair_column is not None:
            return [tuple(json.loads(p)) for p in batch.column(self.pair_column).to_pylist()]
        return list(zip(batch.column(self.question_column).to_pylist(),
                        batch.column(self.steps_column).to_pylist(), strict=True))

    def __call__(self, batch: pa.Table) -> pa.Table:
        """The batch with the score and error columns appended."""
        results = score_pairs(self.prm, self.pairs(batch), describe=self.describe_error)
        scores = [r if isinstance(r, list) else None for r in results]
        errors = [r if isinstance(r, str) else None for r in results]
        if self.pair_column is not None:
            batch = batch.drop_columns([self.pair_column])
        batch = batch.append_column(self.output_column,
                                    pa.array(scores, type=pa.list_(pa.float64())))
        return batch.append_column(self.error_column, pa.array(errors, type=pa.string()))


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be an int >= 1, got {value!r}")


def score_dataset(
    ds: ray.data.Dataset,
    model_dir: str | os.PathLike[str] | None = None,
    *,
    num_actors: int = 2,
    batch_size: int = 64,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    device: str = "auto",
    load_kwargs: Mapping[str, Any] | None = None,
    question_column: str = "question",
    steps_column: str = "steps",
    output_column: str = "step_scores",
    error_column: str = "error",
    max_restarts: int | None = None,
    max_task_retries: int | None = None,
    actor_cls: type[PRMScoreActor] = PRMScoreActor,
    describe_error: Callable[[BaseException], str] | None = None,
    _pair_column: str | None = None,
) -> ray.data.Dataset:
    """Score every row of a Ray Dataset on a pool of PRM actors (lazy, like any Ray Data op).

    Args:
        ds: rows with ``question_column`` (str) and ``steps_column`` (list of str).
        model_dir: model directory (``None``: the shipped PRM), readable on every node.
        num_actors: actors in the pool (each loads the model once).
        batch_size: rows per ``score_batch`` call.
        num_cpus: CPUs reserved per actor (also its ONNX Runtime thread count unless
            ``load_kwargs`` sets ``intra_op_num_threads``).
        num_gpus: GPUs per actor (fractions share a GPU); ``device="auto"`` then runs on it.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        load_kwargs: more :func:`prm_plugins.load_prm` arguments (``long_chains``, ...).
        question_column: input column with the question.
        steps_column: input column with the steps.
        output_column: output column with the step scores (float64 list; null when rejected).
        error_column: output column with the error message (null when scored).
        max_restarts: how often a dead actor is restarted (``None``: always, Ray's default).
        max_task_retries: retries of a batch whose actor died (``None``: Ray's, unbounded).
        actor_cls: :class:`PRMScoreActor` or a subclass of it.
        describe_error: a module-level function: scoring error -> message (``str``).

    Returns:
        The dataset with the two columns added; rows keep their other columns. Row order
        follows Ray Data's ``execution_options.preserve_order`` (:func:`score_file` sets it).

    Raises:
        InvalidInputError: a missing column or a bad pool setting.
    """
    _check_positive("num_actors", num_actors)
    _check_positive("batch_size", batch_size)
    if not (isinstance(actor_cls, type) and issubclass(actor_cls, PRMScoreActor)):
        raise InvalidInputError(f"actor_cls must be PRMScoreActor or a subclass, got "
                                f"{actor_cls!r}")
    needed = [_pair_column] if _pair_column else [question_column, steps_column]
    schema = ds.schema()
    names = list(schema.names) if schema is not None else []
    missing = [c for c in needed if c not in names]
    if schema is not None and missing:
        raise InvalidInputError(
            f"the dataset has no column(s) {missing} (columns: {names}); pass "
            "question_column= and steps_column= to name the columns that hold them")
    kwargs: dict[str, Any] = {"device": device, **dict(load_kwargs or {})}
    kwargs.setdefault("intra_op_num_threads", max(1, round(num_cpus)))
    path = None if model_dir is None else str(Path(model_dir).resolve())
    return ds.map_batches(
        actor_cls,
        **_fault_tolerance_args(max_restarts, max_task_retries),
        fn_constructor_kwargs={
            "model_dir": path, "load_kwargs": kwargs, "question_column": question_column,
            "steps_column": steps_column, "output_column": output_column,
            "error_column": error_column, "pair_column": _pair_column,
            "describe_error": describe_error,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )


def _fault_tolerance_args(max_restarts: int | None,
                          max_task_retries: int | None) -> dict[str, Any]:
    """Actor fault-tolerance overrides; none by default (Ray Data restarts dead actors and
    retries their batches on its own)."""
    args: dict[str, Any] = {}
    if max_restarts is not None:
        args["max_restarts"] = int(max_restarts)
    if max_task_retries is not None:
        args["max_task_retries"] = int(max_task_retries)
    return args


# -- ordered execution (score_file and label_chains) ------------------------------------------
@contextlib.contextmanager
def _ordered_execution(progress: bool) -> Iterator[None]:
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = progress
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved


def _blocks(table: pa.Table, rows_per_block: int) -> list[pa.Table]:
    if table.num_rows == 0:
        return [table]
    return [table.slice(i, rows_per_block) for i in range(0, table.num_rows, rows_per_block)]


def _ordered_results(scored: ray.data.Dataset, n_rows: int) -> Iterator[dict[str, Any]]:
    """Output rows in input order; raises if a row is missing, repeated or out of order."""
    expected = 0
    for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
        table: pa.Table = batch  # pyarrow batch format
        for row in table.to_pylist():
            if row[ROW_COLUMN] != expected:
                raise RuntimeError(
                    f"Ray Data returned row {row[ROW_COLUMN]} where row {expected} was due; "
                    "rows must come out once each, in order")
            expected += 1
            yield row
    if expected != n_rows:
        raise RuntimeError(f"Ray Data returned {expected} of {n_rows} rows")


def _rows_per_block(n: int, pool: Mapping[str, Any]) -> int:
    """Rows per input block: enough blocks to keep every actor busy, none over-large."""
    return max(1, min(math.ceil(n / (2 * int(pool["num_actors"]))),
                      4 * int(pool["batch_size"])))


# -- Monte Carlo labelling ---------------------------------------------------------------------
class MonteCarloActor:
    """A Ray Data callable class: builds a generator once, then labels chains by rollouts.

    Args:
        generator_factory: a picklable zero-argument callable returning the generator
            (e.g. a function that loads a local LLM); called once per actor.
        labeler_kwargs: keyword arguments for
            :class:`~prm_plugins.labeling.rollouts.MonteCarloLabeler` (``n_rollouts``, ...).
    """

    def __init__(self, generator_factory: Callable[[], Any],
                 labeler_kwargs: Mapping[str, Any] | None = None) -> None:
        from prm_plugins.labeling.rollouts import MonteCarloLabeler

        self.labeler = MonteCarloLabeler(generator_factory(), **dict(labeler_kwargs or {}))

    def __call__(self, batch: pa.Table) -> pa.Table:
        """``_row`` and the chain's labels (as JSON) for each chain of the batch."""
        chains = [json.loads(c) for c in batch.column("_chain").to_pylist()]
        results = self.labeler.label_batch(chains)
        labels = [json.dumps(dataclasses.asdict(r), ensure_ascii=False) for r in results]
        return pa.table({ROW_COLUMN: batch.column(ROW_COLUMN),
                         "_labels": pa.array(labels, type=pa.string())})


def label_chains(
    chains: Iterable[Any],
    generator_factory: Callable[[], Any],
    *,
    num_actors: int = 2,
    batch_size: int = 8,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    labeler_kwargs: Mapping[str, Any] | None = None,
    max_restarts: int | None = None,
    max_task_retries: int | None = None,
    progress: bool = True,
) -> list[Any]:
    """Monte Carlo (Math-Shepherd) labels of many chains, spread over Ray actors.

    Each actor builds its generator once with ``generator_factory`` and runs
    :meth:`MonteCarloLabeler.label_batch` on ``batch_size`` chains at a time, so the labels
    are those the labeller gives on one machine (for a deterministic generator, identical).

    Args:
        chains: ``(question, steps, gold_answer)`` triples or rows with ``prompt``/``question``,
            ``completions``/``steps`` and ``gold_answer`` (an ``"id"`` is kept).
        generator_factory: picklable zero-argument callable that returns the generator.
        num_actors: actors in the pool.
        batch_size: chains per ``label_batch`` call.
        num_cpus: CPUs per actor.
        num_gpus: GPUs per actor (for a local LLM generator).
        labeler_kwargs: :class:`MonteCarloLabeler` arguments (``n_rollouts``, ``threshold``,
            ``max_concurrency``, ...).
        max_restarts: how often a dead actor is restarted (``None``: Ray Data's default,
            always).
        max_task_retries: how often a batch whose actor died is retried (``None``: Ray
            Data's default, until it succeeds).
        progress: show Ray Data's progress bars.

    Returns:
        One :class:`~prm_plugins.labeling.rollouts.RolloutLabels` per chain, in input order
        (failed chains included, with ``error`` set).

    Raises:
        InvalidInputError: before any work, for a chain without steps or gold answer.

    Examples:
        >>> from prm_plugins.adapters.ray import label_chains
        >>> results = label_chains(rows, make_smollm_generator, num_actors=4,
        ...                        labeler_kwargs={"n_rollouts": 8})  # doctest: +SKIP
    """
    from prm_plugins.labeling.rollouts import RolloutLabels, as_rollout_item

    _check_positive("num_actors", num_actors)
    _check_positive("batch_size", batch_size)
    if not callable(generator_factory):
        raise InvalidInputError(
            f"generator_factory must be a zero-argument callable returning a generator, got "
            f"{generator_factory!r}")
    items = [as_rollout_item(c, k) for k, c in enumerate(chains)]
    if not items:
        return []
    rows = [json.dumps({"question": q, "steps": s, "gold_answer": g, "id": i},
                       ensure_ascii=False) for q, s, g, i in items]
    table = pa.table({ROW_COLUMN: pa.array(range(len(rows)), type=pa.int64()),
                      "_chain": pa.array(rows, type=pa.string())})
    per_block = _rows_per_block(len(rows), {"num_actors": num_actors, "batch_size": batch_size})
    with _ordered_execution(progress):
        ds = ray.data.from_arrow(_blocks(table, per_block)).map_batches(
            MonteCarloActor,
            fn_constructor_kwargs={"generator_factory": generator_factory,
                                   "labeler_kwargs": dict(labeler_kwargs or {})},
            batch_size=batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=num_actors),
            num_cpus=num_cpus, num_gpus=num_gpus,
            **_fault_tolerance_args(max_restarts, max_task_retries))
        out = [RolloutLabels(**json.loads(r["_labels"]))
               for r in _ordered_results(ds, len(rows))]
    return out
