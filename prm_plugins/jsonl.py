"""JSON Lines in and out, safe against hostile lines, and outputs that never eat inputs.

Every reader and writer of JSONL in prm-plugins (``prm score``, ``prm train``,
``prm calibrate``, ``prm eval``, the HTTP server, Ray) goes through this module, so one bad
line costs only itself, and one rule decides what a line may hold:

- a UTF-8 byte-order mark at the start of a line is dropped (editors on Windows write one);
- a line that is not UTF-8, not JSON, nested deeper than :data:`MAX_DEPTH`, or holding an
  integer longer than Python's digit limit is reported as *that line's* error
  (:class:`JSONLineError`), never as a traceback;
- output lines are strict JSON (``NaN``/``Infinity`` are refused: they are not JSON), with
  U+2028/U+2029 escaped (common JSONL readers split lines on them) and lone surrogates
  escaped (UTF-8 cannot hold them);
- an output file is written through a temporary sibling renamed into place at the end
  (:func:`atomic_output`), and never onto its own input (:func:`refuse_same_file`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from prm_plugins.errors import InvalidInputError

__all__ = [
    "MAX_DEPTH",
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


class JSONLineError(InvalidInputError):
    """One input line cannot be read as a JSON value; the message says why."""


def _depth_exceeds(text: str, limit: int) -> bool:
    """True when brackets outside strings nest deeper than ``limit`` (a linear scan)."""
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


def loads_line(line: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSONL line.

    Args:
        line: the line, as text or UTF-8 bytes (a leading byte-order mark is dropped).
        max_depth: deepest nesting accepted.

    Returns:
        The JSON value.

    Raises:
        JSONLineError: the line is not UTF-8, not JSON, too deeply nested, or holds an
            integer with more digits than Python converts.
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
        raise JSONLineError(
            f"nested deeper than {max_depth} levels; a row is a flat object like "
            '{"question": "...", "steps": ["...", "..."]}'
        )
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise JSONLineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # int digit limit; recursion as a backstop
        raise JSONLineError(f"cannot be read as JSON: {exc}") from None


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


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, mode: str = "w",
                  encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success.

    On an exception (including ``KeyboardInterrupt``) the temporary file is kept under a
    ``.partial`` name next to ``path`` when it holds anything, so rows written before the
    interruption are not lost, and ``path`` itself is left as it was.

    Raises:
        InvalidInputError: the parent folder does not exist, or ``path`` is a folder.
    """
    target = Path(path)
    if target.is_dir():
        raise InvalidInputError(f"{str(target)!r} is a folder; give a file path to write")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InvalidInputError(
            f"cannot write {str(target)!r}: folder {str(parent)!r} does not exist; create it first"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    if "b" in mode:
        encoding = None
    fh = os.fdopen(fd, mode, encoding=encoding)
    try:
        yield fh
    except BaseException:
        fh.close()
        partial = target.with_name(target.name + ".partial")
        if os.path.getsize(tmp) > 0:
            os.replace(tmp, partial)
        else:
            os.unlink(tmp)
        raise
    else:
        fh.close()
        if target.exists():  # keep the old file's permissions
            with contextlib.suppress(OSError):
                os.chmod(tmp, target.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
