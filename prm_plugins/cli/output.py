"""What every ``prm`` verb prints: results on stdout, one-line errors on stderr, exit codes.

One style for every verb:

- an error is one line on stderr, ``prm <verb>: error: <message>``, never a traceback;
- exit status :data:`OK` (0) when everything was done, :data:`DATA` (1) when the command ran
  but some of the data failed (bad rows, a parity check that failed), :data:`USAGE` (2) when
  it could not run as asked (bad flags, a path that cannot be read or written, a model that
  cannot be loaded, an input with nothing usable in it);
- numbers in text: steps are numbered from 1 (the Python API counts from 0), counts have
  their plural right (:func:`plural`), and a score is never printed equal to the threshold it
  failed (:func:`score_and_threshold`).
"""

from __future__ import annotations

import contextlib
import sys

from prm_plugins.wording import comparison_digits, plural, score_and_threshold

__all__ = [
    "DATA",
    "OK",
    "USAGE",
    "comparison_digits",
    "error",
    "error_text",
    "out",
    "output_problem",
    "plural",
    "quiet_onnxruntime",
    "say",
    "score_and_threshold",
]

#: Exit status: everything was done.
OK = 0
#: Exit status: the command ran, but some data failed (bad rows, failed parity).
DATA = 1
#: Exit status: the command could not run as asked (flags, paths, model, unusable input).
USAGE = 2


def out(text: str) -> None:
    """Write one line of the command's result to stdout."""
    sys.stdout.write(text + "\n")


def say(verb: str, text: str) -> None:
    """Write one line of progress or a note to stderr, prefixed with ``prm <verb>:``."""
    sys.stderr.write(f"prm {verb}: {text}\n")


def error(verb: str, message: object, code: int = USAGE) -> int:
    """Write ``prm <verb>: error: <message>`` on one line of stderr; return ``code``.

    Args:
        verb: the verb that failed (``"score"``, ``"eval steps"`` ...).
        message: the message (an exception is turned into text by :func:`error_text`).
        code: the exit status to return (:data:`USAGE` or :data:`DATA`).

    Returns:
        ``code``, so that a verb can ``return error(...)``.
    """
    text = error_text(message) if isinstance(message, BaseException) else str(message)
    sys.stderr.write(f"prm {verb}: error: {' '.join(text.split())}\n")
    return code


def error_text(exc: BaseException) -> str:
    """An exception's message for the command line: the fix it names is a flag, not Python.

    A chain over the model's length names ``--long-chains window`` (the Python API's message
    names ``load_prm(..., long_chains='window')``).
    A chain's position in a batch (``item 0:``) is dropped, and a step named by its Python
    index (``steps[1]``) is named by its number (``step 2``), as all of ``prm``'s text counts.

    Examples:
        >>> error_text(ValueError("item 0: steps[1] is empty"))
        'step 2 is empty'
    """
    import re

    from prm_plugins.errors import ChainTooLongError

    if isinstance(exc, ChainTooLongError):
        return (f"the chain renders to {exc.n_tokens} tokens, over the model's max_length of "
                f"{exc.max_length}; shorten it, or score it in windows with "
                "--long-chains window")
    text = re.sub(r"^item \d+: ", "", str(exc))
    return re.sub(r"\bsteps\[(\d+)\]", lambda m: f"step {int(m.group(1)) + 1}", text)


def output_problem(flag: str, path: str | None, *, parents_made: bool = False) -> str | None:
    """Why ``path`` cannot be written as the file of ``flag``, or ``None`` (checked up front,
    so a run never ends in a traceback after its work is done).

    Args:
        flag: the flag that named the path (``"--output"``).
        path: the path given (``None``: nothing to check).
        parents_made: the verb creates missing folders itself.
    """
    if path is None:
        return None
    from pathlib import Path

    target = Path(path)
    if target.is_dir():
        return f"{flag} {str(target)!r} is a folder; give a file path to write"
    parent = target.parent if str(target.parent) else Path(".")
    if not parents_made and not parent.is_dir():
        return (f"cannot write {flag} {str(target)!r}: folder {str(parent)!r} does not exist; "
                "create it first")
    return None


def quiet_onnxruntime(verbose: int) -> None:
    """Keep ONNX Runtime's own log lines (coloured warnings at session creation) off the
    terminal unless ``-vv`` asks for them."""
    if verbose >= 2:
        return
    with contextlib.suppress(ImportError, AttributeError):
        import onnxruntime

        onnxruntime.set_default_logger_severity(4)  # fatal only: prm reports failures itself
