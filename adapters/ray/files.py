"""``prm score --ray`` on files: JSONL or Parquet in and out, every row once, in input order.

:func:`score_file` reads the input on the driver, scores it with
:func:`~prm_plugins.adapters.ray.data.score_dataset` on the actor pool and writes the rows in
input order (checked: a missing, repeated or reordered row is an error, never a silently
short file). JSONL rows are read and written by the rules of :mod:`prm_plugins.jsonl`, as
``prm score`` reads and writes them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from prm_plugins.errors import InvalidInputError, missing_extra
from prm_plugins.jsonl import (
    atomic_output,
    dumps_line,
    read_chain_lines,
    refuse_same_file,
    result_row,
)

try:
    import pyarrow as pa
    import ray
    import ray.data
except ImportError as exc:
    raise missing_extra(exc.name or "ray", "ray") from exc

__all__ = ["score_file"]

logger = logging.getLogger(__name__)


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

    def __init__(self, output: str | None,
                 guard: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
                 ) -> None:
        self.guard = guard or contextlib.nullcontext
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
            try:
                line = dumps_line(row, default=str)
            except ValueError:  # a NaN in a Parquet column: null in JSON
                line = dumps_line(_json_safe(row), default=str)
            with self.guard():  # prm score --ray holds signals back: the count stays exact
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


def _check_file_args(input_path: str, output_path: str | None, num_actors: int,
                     batch_size: int, skip: int) -> None:
    """Raise :class:`InvalidInputError` for a bad pool setting, input or output path."""
    from prm_plugins.adapters.ray.data import _check_positive

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
    write_guard: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    describe_error: Callable[[BaseException], str] | None = None,
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
        write_guard: a context manager factory each JSONL row is written inside (``prm
            score --ray`` passes one that holds Ctrl-C back, so the count stays exact).
        describe_error: turns a scoring error into its row's message, in the actors (a
            module-level function, so Ray can send it; ``prm score --ray`` passes the one its
            local path uses, so both write the same rows). Default: ``str``.

    Returns:
        ``(rows scored, bad rows)``.

    Raises:
        InvalidInputError: missing input, an output that is the input (or a link to it), an
            output folder that does not exist, an unknown Parquet schema.
        RuntimeError: Ray lost or repeated a row (never expected; nothing is written past it).
    """
    from prm_plugins.adapters.ray.data import _ordered_execution

    say = report or (lambda msg: logger.warning("%s", msg))
    _check_file_args(input_path, output_path, num_actors, batch_size, skip)
    pool = {"num_actors": num_actors, "batch_size": batch_size, "num_cpus": num_cpus,
            "num_gpus": num_gpus, "load_kwargs": load_kwargs, "describe_error": describe_error}
    sink = _Sink(output_path, write_guard)
    state = status if status is not None else {}
    state.update(written=0, partial=sink.partial_path)
    n_ok = n_bad = 0
    try:
        with _ordered_execution(progress):
            if _is_parquet(input_path):
                n_ok, n_bad = _score_parquet(input_path, model_dir, sink, pool, say, skip)
            else:
                n_ok, n_bad = _score_jsonl(input_path, model_dir, sink, pool, say,
                                           lambda fh: read_chain_lines(fh, skip))
        sink.close()
    except BaseException as exc:
        sink.abort(exc)
        state.update(written=sink.rows, partial=sink.partial_path)
        raise
    state.update(written=sink.rows, partial=None)
    return n_ok, n_bad


def _score_jsonl(input_path: str, model_dir: Any, sink: _Sink, pool: Mapping[str, Any],
                 say: Callable[[str], None], iter_rows: Callable[..., Any]) -> tuple[int, int]:
    from prm_plugins.adapters.ray.data import (
        PAIR_COLUMN,
        ROW_COLUMN,
        _blocks,
        _ordered_results,
        _rows_per_block,
        score_dataset,
    )

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
                sink.write(result_row(entry, [float(x) for x in scores])[0])
        else:
            n_bad += 1
            say(f"line {lineno}: {error}")
            if sink.parquet:
                sink.write(_jsonl_row_for_parquet(lineno, row, raw, None, error), schema)
            else:
                sink.write(result_row(entry, error)[0])
    for _ in results:  # pragma: no cover - would mean more results than rows
        raise RuntimeError("Ray Data returned more rows than were sent")
    return n_ok, n_bad


def _score_parquet(input_path: str, model_dir: Any, sink: _Sink, pool: Mapping[str, Any],
                   say: Callable[[str], None], skip: int = 0) -> tuple[int, int]:
    import pyarrow.parquet as pq

    from prm_plugins.adapters.ray.data import (
        ROW_COLUMN,
        _blocks,
        _ordered_results,
        _rows_per_block,
        score_dataset,
    )

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
