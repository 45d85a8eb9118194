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
import math
import os
import sys
from pathlib import Path
from typing import IO, Any

from prm_plugins.errors import InvalidInputError, JSONLineError

__all__ = [
    "MAX_DEPTH",
    "AtomicOutput",
    "JSONLineError",
    "atomic_output",
    "dumps_line",
    "loads_line",
    "refuse_same_file",
    "same_file",
]

#: Deepest nesting of arrays/objects a line may hold. Rows of prm-plugins are at most a few
#: levels deep; the limit keeps ``json.loads`` far from Python's recursion limit.
MAX_DEPTH = 64
_BOM = "\ufeff"
_EXAMPLE = '{"question": "...", "steps": ["...", "..."]}'


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
