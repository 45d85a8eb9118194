"""JSON Lines in and out, safe against hostile lines, and outputs that never eat inputs.

Every reader and writer of JSONL in prm-plugins (``prm score``, ``prm train``,
``prm calibrate``, ``prm eval``, the HTTP server, Ray) goes through this module, so one bad
line costs only itself, and one rule decides what a line may hold:

- a UTF-8 byte-order mark at the start of a line is dropped (editors on Windows write one);
- a line that is not UTF-8, not strict JSON (``NaN``/``Infinity``, or a number too large
  for a float, would later make an invalid output line), nested deeper than
  :data:`MAX_DEPTH`, or holding an integer longer than Python's digit limit is reported as
  *that line's* error (:class:`JSONLineError`), never as a traceback;
- output lines are strict JSON (``NaN``/``Infinity`` are refused: they are not JSON), with
  U+2028/U+2029 escaped (common JSONL readers split lines on them) and lone surrogates
  escaped (UTF-8 cannot hold them);
- an output file is written under a ``.partial`` name renamed into place at the end
  (:func:`atomic_output`): an interrupted run keeps its rows there, and never onto its own
  input (:func:`refuse_same_file`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

from prm_plugins.errors import InvalidInputError, JSONLineError

__all__ = [
    "MAX_DEPTH",
    "RAW_EXCERPT",
    "AtomicOutput",
    "ChainLine",
    "JSONLineError",
    "atomic_output",
    "count_lines",
    "dumps_line",
    "loads_line",
    "read_chain_lines",
    "refuse_same_file",
    "result_row",
    "same_file",
    "score_pairs",
]

#: Deepest nesting of arrays/objects a line may hold. Rows of prm-plugins are at most a few
#: levels deep; the limit keeps ``json.loads`` far from Python's recursion limit.
MAX_DEPTH = 64
_BOM = "\ufeff"
_EXAMPLE = '{"question": "...", "steps": ["...", "..."]}'
#: characters of a bad line kept in its error row's ``"raw"`` field.
RAW_EXCERPT = 200

logger = logging.getLogger(__name__)


def _depth_exceeds(text: str, limit: int) -> bool:
    """True when brackets outside strings nest deeper than ``limit`` (a linear scan)."""
    if text.count("[") + text.count("{") <= limit:  # the common case, at C speed
        return False
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise JSONLineError(f"holds {name}, which is not JSON; write null or a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONLineError(f"holds the number {text[:40]}, too large for a 64-bit float")
    return value


#: strict JSON: NaN/Infinity and floats that overflow are refused (one decoder, built once).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads_line(line: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSONL line.

    Args:
        line: the line, as text or UTF-8 bytes (a leading byte-order mark is dropped).
        max_depth: deepest nesting accepted.

    Returns:
        The JSON value.

    Raises:
        JSONLineError: the line is not UTF-8, not JSON (``NaN`` and ``Infinity`` are not
            JSON), too deeply nested, or holds an integer with more digits than Python
            converts or a number too large for a float.
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONLineError(
                f"not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save the file as UTF-8"
            ) from None
    if line.startswith(_BOM):
        line = line[len(_BOM):]
    if _depth_exceeds(line, max_depth):
        raise JSONLineError(f"nested deeper than {max_depth} levels; a row is a flat object "
                            f"like {_EXAMPLE}")
    try:
        return _DECODER.decode(line)
    except JSONLineError:
        raise
    except json.JSONDecodeError as exc:
        raise JSONLineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python's int digit limit
            limit = sys.get_int_max_str_digits()
            raise JSONLineError(
                f"holds an integer with more than {limit} digits; write such a number as a "
                "string") from None
        raise JSONLineError(f"cannot be read as JSON: {exc}") from None
    except RecursionError:  # a backstop: the depth check comes first
        raise JSONLineError(f"nested deeper than Python can read; a row is a flat object like "
                            f"{_EXAMPLE}") from None


def dumps_line(row: Any, *, default: Any = None) -> str:
    """One strict JSON line (with the trailing newline).

    Non-finite floats raise :class:`ValueError` (they are not JSON; check scores before
    writing). U+2028/U+2029 are written escaped, and so is text UTF-8 cannot hold.
    """
    text = json.dumps(row, ensure_ascii=False, allow_nan=False, default=default)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: "\ud800" escapes round-trip in JSON
        text = json.dumps(row, ensure_ascii=True, allow_nan=False, default=default)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when ``a`` and ``b`` are the same file (resolved links, same inode)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.resolve() == pb.resolve():
            return True
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:
        return False


def refuse_same_file(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                     *, what: str = "--output") -> None:
    """Raise :class:`InvalidInputError` when writing ``dst`` would overwrite ``src``."""
    if same_file(src, dst):
        raise InvalidInputError(
            f"{what} {str(dst)!r} is the input file {str(src)!r} (or a link to it); writing it "
            "would destroy the input. Write to another file"
        )


class AtomicOutput:
    """A file written under a ``.partial`` name and renamed onto its target at the end.

    Use it through :func:`atomic_output`. The target is never written in place: rows go to
    ``TARGET.partial`` (``TARGET.partial.2``, ... when that name is taken: an earlier
    interrupted run's rows are never overwritten), created exclusively next to the target.
    When the ``with`` block ends normally the partial file is renamed onto the target; when it
    ends with an exception (including ``KeyboardInterrupt``, or the process being killed) the
    partial file stays, holding every row written so far, and the target is left as it was.
    An interrupted write that wrote nothing leaves no file.

    Attributes:
        path: the target.
        partial_path: where the rows are being (or, after an interruption, were) written;
            ``None`` before the block starts, after success, and when nothing was kept.
    """

    def __init__(self, path: str | os.PathLike[str], *, mode: str = "w",
                 encoding: str | None = "utf-8") -> None:
        target = Path(path)
        if target.is_dir():
            raise InvalidInputError(f"{str(target)!r} is a folder; give a file path to write")
        parent = target.parent if str(target.parent) else Path(".")
        if not parent.is_dir():
            raise InvalidInputError(
                f"cannot write {str(target)!r}: folder {str(parent)!r} does not exist; create "
                "it first")
        if mode not in ("w", "wb"):
            raise InvalidInputError(f"atomic_output writes with mode 'w' or 'wb', got {mode!r}")
        self.path = target
        self.partial_path: Path | None = None
        self._mode = mode
        self._encoding = None if "b" in mode else encoding
        self._fh: IO[Any] | None = None

    def _open(self) -> tuple[Path, IO[Any]]:
        base = self.path.with_name(self.path.name + ".partial")
        for k in range(1, 1000):
            candidate = base if k == 1 else base.with_name(f"{base.name}.{k}")
            try:
                # "x": created here, never an existing file; permissions follow the umask
                fh = open(candidate, self._mode.replace("w", "x"),  # noqa: SIM115
                          encoding=self._encoding)
            except FileExistsError:
                continue
            except OSError as exc:
                raise InvalidInputError(
                    f"cannot write {str(self.path)!r}: {exc.strerror or exc}") from None
            return candidate, fh
        raise InvalidInputError(
            f"cannot write {str(self.path)!r}: {str(base)!r} and 998 numbered variants exist "
            "(rows of earlier interrupted runs); move them away")

    def __enter__(self) -> IO[Any]:
        self.partial_path, self._fh = self._open()
        return self._fh

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        fh, partial = self._fh, self.partial_path
        assert fh is not None and partial is not None
        self._fh = None
        if exc_type is None:
            fh.close()  # an error here (disk full) keeps the partial file and propagates
            if self.path.exists():  # keep the old file's permissions
                with contextlib.suppress(OSError):
                    os.chmod(partial, self.path.stat().st_mode & 0o7777)
            os.replace(partial, self.path)
            self.partial_path = None
            return
        with contextlib.suppress(OSError):
            fh.close()
        with contextlib.suppress(OSError):
            if os.path.getsize(partial) == 0:
                os.unlink(partial)
                self.partial_path = None


def atomic_output(path: str | os.PathLike[str], *, mode: str = "w",
                  encoding: str | None = "utf-8") -> AtomicOutput:
    """Write ``path`` through a ``.partial`` sibling renamed onto it on success.

    The folder is checked at once (before any work is done); the file is opened when the
    ``with`` block starts. See :class:`AtomicOutput` for what an interruption leaves.

    Raises:
        InvalidInputError: the parent folder does not exist, ``path`` is a folder, or the
            partial file cannot be created (no permission).

    Examples:
        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "scores.jsonl")
        >>> with atomic_output(out) as fh:
        ...     _ = fh.write(dumps_line({"step_scores": [0.5]}))
        >>> open(out).read()
        '{"step_scores": [0.5]}\\n'
    """
    return AtomicOutput(path, mode=mode, encoding=encoding)


# -- chain rows: {"question", "steps"} in, the same rows plus "step_scores" out ---------------
class ChainLine(NamedTuple):
    """One non-blank line of a chain file, as :func:`read_chain_lines` read it.

    Attributes:
        lineno: the line's number in the file (from 1).
        row: the JSON object (``None`` when the line is not one).
        error: why the line cannot be scored (``None`` when it can).
        raw: the line's text, cut to :data:`RAW_EXCERPT` characters.
    """

    lineno: int
    row: dict[str, Any] | None
    error: str | None
    raw: str


def _excerpt(text: str) -> str:
    text = text.rstrip("\r\n")
    if len(text) <= RAW_EXCERPT:
        return text
    return f"{text[:RAW_EXCERPT]}... ({len(text)} characters)"


def _chain_problem(row: dict[str, Any]) -> str | None:
    """Why a row is not a ``{"question": str, "steps": [str]}`` chain, or ``None``."""
    for key, kind, what in (("question", str, "a string"), ("steps", list, "a list of strings")):
        if key not in row:
            return (f"missing key {key!r}; a row is a JSON object like {_EXAMPLE} (keys "
                    f"found: {', '.join(map(repr, row)) or 'none'})")
        if not isinstance(row[key], kind):
            return f"{key!r} must be {what}, got {type(row[key]).__name__}"
    return None


def read_chain_lines(fh: IO[bytes], skip: int = 0) -> Iterator[ChainLine]:
    """One :class:`ChainLine` for each non-blank line of ``fh``, after the first ``skip``.

    Lines are read one by one through :func:`loads_line`, so a line that is not UTF-8, not
    JSON, nested too deeply, not an object, or without a string ``"question"`` and a list
    ``"steps"`` costs only itself (its :attr:`ChainLine.error` says why).
    """
    seen = 0
    for lineno, raw_bytes in enumerate(fh, start=1):
        try:
            text: str | None = raw_bytes.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and not text.strip():
            continue
        seen += 1
        if seen <= skip:
            continue
        raw = _excerpt(text) if text is not None else repr(raw_bytes[:RAW_EXCERPT])
        try:
            row = loads_line(raw_bytes if text is None else text)
        except JSONLineError as exc:
            yield ChainLine(lineno, None, str(exc), raw)
            continue
        if not isinstance(row, dict):
            yield ChainLine(lineno, None, f"expected a JSON object, got {type(row).__name__}",
                            raw)
            continue
        yield ChainLine(lineno, row, _chain_problem(row), raw)


def count_lines(path: str | os.PathLike[str]) -> int | None:
    """Non-blank lines of a regular file (a progress bar's total); ``None`` when unknown."""
    target = Path(path)
    try:
        if not target.is_file():
            return None
        n = 0
        with open(target, "rb") as fh:
            for line in fh:
                n += bool(line.strip())
        return n
    except OSError:
        return None


def _finite(scores: Sequence[float]) -> list[float] | str:
    """The scores, or an error message when one is NaN or infinite (never written as such)."""
    out = [float(x) for x in scores]
    for i, x in enumerate(out):
        if not math.isfinite(x):
            return (f"the model returned a non-finite score ({x}) for step {i + 1}; the model "
                    "or its export is broken (check it with prm info and its parity figures)")
    return out


def score_pairs(prm: Any, pairs: Sequence[Any],
                describe: Callable[[BaseException], str] = str) -> list[list[float] | str]:
    """Score ``(question, steps)`` pairs; each entry is its scores or its error message.

    The pairs are scored as one ``score_batch`` call; when that fails, pair by pair
    (:func:`prm_plugins.scoring.score_isolated`), so that only the rows that cannot be scored
    carry an error. An unexpected exception (not a :class:`~prm_plugins.errors.PRMError`)
    also costs only its row: one hostile chain never ends a run. Non-finite scores become
    that row's error. Steps are numbered from 1 in the messages.

    Args:
        prm: a scorer with ``score`` and ``score_batch``.
        pairs: the chains.
        describe: turns a :class:`~prm_plugins.errors.PRMError` into the row's message
            (``prm score`` names its flags there).
    """
    from prm_plugins.errors import PRMError
    from prm_plugins.scoring import score_isolated

    def batch(items: list[Any]) -> list[Any]:
        if len(items) == 1:  # one chain: scored alone, as after a failed batch
            return [prm.score(*items[0])]
        got = list(prm.score_batch(items))
        if len(got) != len(items):
            raise RuntimeError(f"score_batch returned {len(got)} results for {len(items)} "
                               "chains")
        return got

    def message(exc: BaseException) -> str:
        if isinstance(exc, PRMError):
            return describe(exc)
        logger.debug("scoring one row failed", exc_info=exc)
        return f"scoring failed: {type(exc).__name__}: {exc}"

    outcome = score_isolated(batch, list(pairs), score_one=lambda pair: prm.score(*pair))
    return [message(r) if isinstance(r, BaseException) else _finite(list(r.scores))
            for r in outcome.results]


def result_row(line: ChainLine | tuple[int, dict[str, Any] | None, str | None, str],
               result: list[float] | str | None) -> tuple[dict[str, Any], str | None]:
    """The output row of one input line, and its error message (``None`` when scored).

    Keys a previous run wrote (``step_scores``; ``error`` with its ``line``) are dropped
    from the input row, so an output row never carries a stale score or error. Scores are
    rounded to 6 decimals.
    """
    lineno, row, error, raw = line
    base = dict(row or {})
    base.pop("step_scores", None)
    if "error" in base:
        base.pop("error")
        base.pop("line", None)
    if isinstance(result, list):
        return {**base, "step_scores": [round(x, 6) for x in result]}, None
    msg = str(result if result is not None else error)
    if row is None:
        base = {"raw": raw}
    return {**base, "line": lineno, "error": msg}, msg
