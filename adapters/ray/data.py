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
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from prm_plugins.errors import InvalidInputError, require

require("ray", "ray")

import pyarrow as pa  # noqa: E402
import ray  # noqa: E402
import ray.data  # noqa: E402

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


def score_pairs(prm: Any, pairs: Sequence[Any]) -> list[list[float] | str]:
    """Score ``(question, steps)`` pairs; each entry is its scores or its error message.

    The pairs are scored as one ``score_batch`` call; when that fails, pair by pair, so that
    only the bad rows carry an error, exactly as ``prm score`` does: a chain that cannot be
    scored (for any reason: an exception escaping from the scorer fails an actor's whole
    batch, and with it the job) and a non-finite score cost only their own row.
    """
    from prm_plugins.cli import _score_pairs

    return _score_pairs(prm, pairs)


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
    ) -> None:
        from prm_plugins.runtime import load_prm

        self.prm = load_prm(model_dir, **dict(load_kwargs or {}))
        self.question_column = question_column
        self.steps_column = steps_column
        self.output_column = output_column
        self.error_column = error_column
        self.pair_column = pair_column

    def pairs(self, batch: pa.Table) -> list[Any]:
        """The ``(question, steps)`` pairs of a batch."""
        if self.pair_column is not None:
            return [tuple(json.loads(p)) for p in batch.column(self.pair_column).to_pylist()]
        return list(zip(batch.column(self.question_column).to_pylist(),
                        batch.column(self.steps_column).to_pylist(), strict=True))

    def __call__(self, batch: pa.Table) -> pa.Table:
        """The batch with the score and error columns appended."""
        results = score_pairs(self.prm, self.pairs(batch))
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
    _pair_column: str | None = None,
) -> ray.data.Dataset:
    """Score every row of a Ray Dataset on a pool of PRM actors (lazy, like any Ray Data op).

    Args:
        ds: rows with ``question_column`` (str) and ``steps_column`` (list of str).
        model_dir: model directory (``None``: the shipped default PRM), readable on every
            node.
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
        max_restarts: how often a dead actor is restarted; ``None`` keeps Ray Data's
            default (always restart).
        max_task_retries: how often a batch whose actor died is retried; ``None`` keeps
            Ray Data's default (retry until it succeeds).
        actor_cls: :class:`PRMScoreActor` or a subclass of it.

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
        **_retry_args(max_restarts, max_task_retries),
        fn_constructor_kwargs={
            "model_dir": path, "load_kwargs": kwargs, "question_column": question_column,
            "steps_column": steps_column, "output_column": output_column,
            "error_column": error_column, "pair_column": _pair_column,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )


def _retry_args(max_restarts: int | None, max_task_retries: int | None) -> dict[str, Any]:
    """Actor fault-tolerance overrides; none by default (Ray Data restarts dead actors and
    retries their batches on its own)."""
    args: dict[str, Any] = {}
    if max_restarts is not None:
        args["max_restarts"] = int(max_restarts)
    if max_task_retries is not None:
        args["max_task_retries"] = int(max_task_retries)
    return args


# -- prm score --ray ---------------------------------------------------------------------------
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


def _is_parquet(path: str | None) -> bool:
    return bool(path) and str(path).lower().endswith((".parquet", ".pq"))


def _json_safe(value: Any) -> Any:
    """``value`` with NaN/infinite floats (legal in a Parquet column, not in JSON) as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class _Sink:
    """Writes result rows as JSONL (file or stdout) or Parquet, in order.

    A file is written through :func:`prm_plugins.jsonl.atomic_output`: rows go to
    ``OUT.partial``, renamed to ``OUT`` by :meth:`close` (:meth:`abort` keeps the partial
    file). ``rows`` counts the rows written so far.
    """

    def __init__(self, output: str | None) -> None:
        from prm_plugins.jsonl import atomic_output

        self.parquet = _is_parquet(output)
        self.output = output
        self.rows = 0
        self._writer: Any = None
        self._pending: list[dict[str, Any]] = []
        self.schema: pa.Schema | None = None
        self._atomic = None if output is None else atomic_output(
            output, mode="wb" if self.parquet else "w")
        self._fh: IO[Any] = sys.stdout if self._atomic is None else self._atomic.__enter__()

    @property
    def partial_path(self) -> Path | None:
        """The partial file the rows are being written to (``None`` for stdout)."""
        return None if self._atomic is None else self._atomic.partial_path

    def write(self, row: dict[str, Any], schema: pa.Schema | None = None) -> None:
        if not self.parquet:
            from prm_plugins.cli import _SIGNALS
            from prm_plugins.jsonl import dumps_line

            try:
                line = dumps_line(row, default=str)
            except ValueError:  # a NaN in a Parquet column: null in JSON
                line = dumps_line(_json_safe(row), default=str)
            with _SIGNALS.deferred():  # under prm score --ray: the count stays exact
                self._fh.write(line)
                self.rows += 1
            return
        self._pending.append(row)
        self.schema = schema
        if len(self._pending) >= 1024:
            self._flush()

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        if not self._pending:
            return
        table = pa.Table.from_pylist(self._pending, schema=self.schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._fh, table.schema)
        self._writer.write_table(table)
        self.rows += len(self._pending)
        self._pending = []

    def _finish(self) -> None:
        if self.parquet:
            self._flush()
            if self._writer is not None:
                self._writer.close()
            elif self.schema is not None:  # no rows: still write a file with the schema
                import pyarrow.parquet as pq

                pq.write_table(self.schema.empty_table(), self._fh)
        self._fh.flush()

    def close(self) -> None:
        """Finish the file and rename it into place."""
        self._finish()
        if self._atomic is not None:
            self._atomic.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        """Keep what was written (a readable Parquet file) under the partial name."""
        with contextlib.suppress(Exception):
            self._finish()
        if self._atomic is not None:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)


def _jsonl_parquet_schema() -> pa.Schema:
    return pa.schema([("line", pa.int64()), ("question", pa.string()),
                      ("steps", pa.list_(pa.string())), ("step_scores", pa.list_(pa.float64())),
                      ("error", pa.string()), ("extra", pa.string())])


def _jsonl_row_for_parquet(lineno: int, row: dict[str, Any] | None, raw: str,
                           scores: list[float] | None, error: str | None) -> dict[str, Any]:
    row = row or {}
    q, steps = row.get("question"), row.get("steps")
    ok_steps = isinstance(steps, list) and all(isinstance(s, str) for s in steps)
    stale = ("step_scores", "error", "line") if "error" in row else ("step_scores",)
    extra = {k: v for k, v in row.items() if k not in ("question", "steps", *stale)}
    if not row:
        extra = {"raw": raw.rstrip("\n")}
    return {"line": lineno, "question": q if isinstance(q, str) else None,
            "steps": steps if ok_steps else None, "step_scores": scores, "error": error,
            "extra": json.dumps(extra, default=str) if extra else None}


def score_file(
    input_path: str,
    output_path: str | None,
    model_dir: str | os.PathLike[str] | None = None,
    *,
    num_actors: int = 2,
    batch_size: int = 64,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    load_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    skip: int = 0,
    status: dict[str, Any] | None = None,
) -> tuple[int, int]:
    """Score a JSONL or Parquet file on the connected Ray cluster (``prm score --ray``).

    JSONL rows are read as ``prm score`` reads them (bad lines are reported, not fatal) and
    written in the same shape (``step_scores`` rounded to 6 decimals, or ``line`` and
    ``error``); Parquet input keeps its columns and gains ``step_scores`` (float64, unrounded)
    and ``error``. The output format follows the output path's suffix (``.parquet``/``.pq``:
    Parquet; anything else or stdout: JSONL). The driver reads the input and writes the
    output; only scoring is spread over the actors. For datasets larger than the driver's
    memory, use :func:`score_dataset` on ``ray.data.read_parquet`` and ``write_parquet``.

    Args:
        input_path: JSONL (``-`` for stdin) or Parquet file.
        output_path: output file, or ``None`` for JSONL on stdout.
        model_dir: model directory (``None``: the shipped default PRM).
        num_actors: actors in the pool.
        batch_size: rows per ``score_batch`` call.
        num_cpus: CPUs per actor.
        num_gpus: GPUs per actor.
        load_kwargs: :func:`prm_plugins.load_prm` arguments (``device``, ``long_chains``...).
        progress: show Ray Data's progress bars.
        report: called with one message per bad row (default: logged as warnings).
        skip: rows to skip first (JSONL: non-blank lines), to continue an interrupted run.
        status: filled as the output is written: ``"written"`` (rows so far) and
            ``"partial"`` (the file they are in until the run completes; after an
            interruption or a failure the rows stay there).

    Returns:
        ``(rows scored, bad rows)``.

    Raises:
        InvalidInputError: missing input, an output that is the input (or a link to it), an
            output folder that does not exist, an unknown Parquet schema.
        RuntimeError: Ray lost or repeated a row (never expected; nothing is written past it).
    """
    from prm_plugins.cli import _iter_rows
    from prm_plugins.jsonl import refuse_same_file

    say = report or (lambda msg: logger.warning("%s", msg))
    _check_positive("num_actors", num_actors)
    _check_positive("batch_size", batch_size)
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise InvalidInputError(f"skip must be an int >= 0, got {skip!r}")
    if input_path != "-" and Path(input_path).is_dir():
        raise InvalidInputError(f"input {input_path!r} is a folder; give a JSONL or Parquet "
                                "file")
    if input_path != "-" and not Path(input_path).is_file():
        raise InvalidInputError(f"input file {input_path} not found")
    if output_path is not None and input_path != "-":
        refuse_same_file(input_path, output_path)
    pool = {"num_actors": num_actors, "batch_size": batch_size, "num_cpus": num_cpus,
            "num_gpus": num_gpus, "load_kwargs": load_kwargs}
    sink = _Sink(output_path)
    state = status if status is not None else {}
    state.update(written=0, partial=sink.partial_path)
    n_ok = n_bad = 0
    try:
        with _ordered_execution(progress):
            if _is_parquet(input_path):
                n_ok, n_bad = _score_parquet(input_path, model_dir, sink, pool, say, skip)
            else:
                n_ok, n_bad = _score_jsonl(input_path, model_dir, sink, pool, say,
                                           lambda fh: _iter_rows(fh, skip))
        sink.close()
    except BaseException as exc:
        sink.abort(exc)
        state.update(written=sink.rows, partial=sink.partial_path)
        raise
    state.update(written=sink.rows, partial=None)
    return n_ok, n_bad


def _rows_per_block(n: int, pool: Mapping[str, Any]) -> int:
    """Rows per input block: enough blocks to keep every actor busy, none over-large."""
    return max(1, min(math.ceil(n / (2 * int(pool["num_actors"]))),
                      4 * int(pool["batch_size"])))


def _score_jsonl(input_path: str, model_dir: Any, sink: _Sink, pool: Mapping[str, Any],
                 say: Callable[[str], None], iter_rows: Callable[..., Any]) -> tuple[int, int]:
    from prm_plugins.cli import _result_row

    src: IO[bytes] = sys.stdin.buffer if input_path == "-" else open(input_path, "rb")  # noqa: SIM115
    try:
        entries = list(iter_rows(src))
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    good = [k for k, (_, row, error, _) in enumerate(entries) if error is None and row]
    # ASCII-escaped: a lone surrogate (refused later by the scorer) must survive transport
    pairs = [json.dumps([entries[k][1]["question"], entries[k][1]["steps"]])
             for k in good]
    table = pa.table({ROW_COLUMN: pa.array(range(len(good)), type=pa.int64()),
                      PAIR_COLUMN: pa.array(pairs, type=pa.string())})
    results: Iterator[dict[str, Any]] = iter(())
    if good:
        ds = ray.data.from_arrow(_blocks(table, _rows_per_block(len(good), pool)))
        scored = score_dataset(ds, model_dir, _pair_column=PAIR_COLUMN, **pool)
        results = _ordered_results(scored, len(good))
    n_ok = n_bad = 0
    schema = _jsonl_parquet_schema() if sink.parquet else None
    sink.schema = schema
    for entry in entries:
        lineno, row, error, raw = entry
        scores: list[float] | None = None
        if error is None and row:
            res = next(results)
            scores, error = res["step_scores"], res["error"]
        if scores is not None:
            n_ok += 1
            if sink.parquet:
                sink.write(_jsonl_row_for_parquet(lineno, row, raw, scores, None), schema)
            else:
                sink.write(_result_row(entry, [float(x) for x in scores])[0])
        else:
            n_bad += 1
            say(f"line {lineno}: {error}")
            if sink.parquet:
                sink.write(_jsonl_row_for_parquet(lineno, row, raw, None, error), schema)
            else:
                sink.write(_result_row(entry, error)[0])
    for _ in results:  # pragma: no cover - would mean more results than rows
        raise RuntimeError("Ray Data returned more rows than were sent")
    return n_ok, n_bad


def _score_parquet(input_path: str, model_dir: Any, sink: _Sink, pool: Mapping[str, Any],
                   say: Callable[[str], None], skip: int = 0) -> tuple[int, int]:
    import pyarrow.parquet as pq

    table = pq.read_table(input_path)
    table = table.slice(min(skip, table.num_rows))
    for col in ("question", "steps"):
        if col not in table.column_names:
            raise InvalidInputError(
                f"{input_path} has no {col!r} column (columns: {table.column_names}); a "
                "Parquet input needs 'question' (string) and 'steps' (list of strings)")
    for col in ("step_scores", "error", ROW_COLUMN):
        if col in table.column_names:
            table = table.drop_columns([col])
    n = table.num_rows
    indexed = table.append_column(ROW_COLUMN, pa.array(range(n), type=pa.int64()))
    out_schema = table.schema.append(pa.field("step_scores", pa.list_(pa.float64()))) \
        .append(pa.field("error", pa.string()))
    n_ok = n_bad = 0
    if n:
        ds = ray.data.from_arrow(_blocks(indexed, _rows_per_block(n, pool)))
        for row in _ordered_results(score_dataset(ds, model_dir, **pool), n):
            index = row.pop(ROW_COLUMN) + skip  # the row's place in the input file
            if row["error"] is None:
                n_ok += 1
            else:
                n_bad += 1
                say(f"row {index}: {row['error']}")
            if sink.parquet:
                sink.write(row, out_schema)
            else:
                if row["step_scores"] is not None:
                    row["step_scores"] = [round(float(x), 6) for x in row["step_scores"]]
                    row.pop("error")
                else:
                    row.pop("step_scores")
                    row["row"] = index
                sink.write(row)
    sink.schema = out_schema
    return n_ok, n_bad


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
    from prm_plugins.labeling.rollouts import RolloutLabels, _as_item

    _check_positive("num_actors", num_actors)
    _check_positive("batch_size", batch_size)
    if not callable(generator_factory):
        raise InvalidInputError(
            f"generator_factory must be a zero-argument callable returning a generator, got "
            f"{generator_factory!r}")
    items = [_as_item(c, k) for k, c in enumerate(chains)]
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
            **_retry_args(max_restarts, max_task_retries))
        out = [RolloutLabels(**json.loads(r["_labels"]))
               for r in _ordered_results(ds, len(rows))]
    return out
