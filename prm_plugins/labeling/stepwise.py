"""Read and write TRL stepwise-supervision JSONL.

One JSON object per line, the format TRL's ``PRMTrainer`` read (TRL 1.13 and earlier; TRL 1.14
removed it) and ``prm train`` reads::

    {"prompt": "question", "completions": ["step 1", "step 2"], "labels": [true, false]}

prm-plugins adds optional keys: ``"id"`` (str), ``"source"`` (str), ``"perturbation"`` (the
perturbation kind, or null for a reference chain) and ``"first_error"`` (index of the first bad
step, or null). Other keys are kept as they are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prm_plugins.errors import StepwiseFormatError
from prm_plugins.jsonl import JSONLineError, loads_line

__all__ = [
    "StepwiseFormatError",
    "iter_stepwise_jsonl",
    "read_stepwise_jsonl",
    "validate_stepwise_row",
    "write_stepwise_jsonl",
]

logger = logging.getLogger(__name__)

_EXAMPLE = '{"prompt": "...", "completions": ["step 1", "step 2"], "labels": [true, false]}'


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def validate_stepwise_row(row: Any, *, line: int | None = None,
                          path: str | Path | None = None) -> dict[str, Any]:
    """Check one stepwise row and return it as a dict.

    Args:
        row: the decoded JSON value.
        line: its line number, for the error message.
        path: its file, for the error message.

    Returns:
        The row (a new dict, keys unchanged).

    Raises:
        StepwiseFormatError: saying which field is wrong, what it holds, and what is expected.

    Examples:
        >>> validate_stepwise_row({"prompt": "q", "completions": ["a"], "labels": [True]})
        {'prompt': 'q', 'completions': ['a'], 'labels': [True]}
    """

    def fail(message: str) -> StepwiseFormatError:
        return StepwiseFormatError(message, line=line, path=path)

    if not isinstance(row, Mapping):
        raise fail(f"expected a JSON object like {_EXAMPLE}, got {_type(row)}")
    missing = [k for k in ("prompt", "completions", "labels") if k not in row]
    if missing:
        raise fail(f"missing key(s) {missing}; got keys {sorted(row)}; rows look like {_EXAMPLE}")
    prompt, completions, labels = row["prompt"], row["completions"], row["labels"]
    if not isinstance(prompt, str):
        raise fail(f"'prompt' must be a string, got {_type(prompt)}")
    if not isinstance(completions, list) or not completions:
        raise fail(
            f"'completions' must be a non-empty list of step strings, got {_type(completions)}"
            + (" (empty)" if completions == [] else "")
        )
    for k, step in enumerate(completions):
        if not isinstance(step, str):
            raise fail(f"completions[{k}] must be a string, got {_type(step)}: {step!r}")
    if not isinstance(labels, list):
        raise fail(f"'labels' must be a list of true/false, got {_type(labels)}")
    for k, label in enumerate(labels):
        if not isinstance(label, bool):
            raise fail(
                f"labels[{k}] must be true or false, got {_type(label)} {label!r}; "
                "write JSON booleans (1/0 are not accepted)"
            )
    if len(labels) != len(completions):
        raise fail(
            f"{len(completions)} completions but {len(labels)} labels; give exactly one label "
            "per step"
        )
    for key in ("id", "source", "perturbation"):
        if key in row and row[key] is not None and not isinstance(row[key], str):
            raise fail(f"{key!r} must be a string or null, got {_type(row[key])}")
    if "first_error" in row and row["first_error"] is not None:
        first = row["first_error"]
        if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first < len(labels):
            raise fail(
                f"'first_error' must be null or a step index 0..{len(labels) - 1}, got "
                f"{_type(first)} {first!r}"
            )
        expected = [k < first for k in range(len(labels))]
        if labels != expected:
            raise fail(
                f"labels {labels} do not match first_error={first}: steps before the first "
                "error are true, the first error and every later step false"
            )
    return dict(row)


def iter_stepwise_jsonl(
    path: str | Path,
    *,
    strict: bool = True,
    errors: list[StepwiseFormatError] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the valid rows of a stepwise JSONL file, one by one.

    Args:
        path: the file.
        strict: raise on the first bad line (default). With ``strict=False`` a bad line is
            logged as a warning, appended to ``errors`` when given, and skipped.
        errors: collects the errors of bad lines when ``strict=False``.

    Yields:
        Each valid row (blank lines are skipped).

    Raises:
        StepwiseFormatError: with the line number, for a bad line when ``strict``.
        FileNotFoundError: if the file does not exist.
    """
    path = Path(path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                try:  # one rule for every JSONL reader: BOM, depth and number limits
                    value = loads_line(raw)
                except JSONLineError as exc:
                    raise StepwiseFormatError(
                        f"{exc}; each line must be one object like {_EXAMPLE}", line=lineno,
                        path=path,
                    ) from None
                row = validate_stepwise_row(value, line=lineno, path=path)
            except StepwiseFormatError as exc:
                if strict:
                    raise
                logger.warning("skipping bad stepwise row: %s", exc)
                if errors is not None:
                    errors.append(exc)
                continue
            yield row


def read_stepwise_jsonl(
    path: str | Path,
    *,
    strict: bool = True,
    errors: list[StepwiseFormatError] | None = None,
) -> list[dict[str, Any]]:
    """Read a TRL stepwise JSONL file, validating every row.

    Args:
        path: the file.
        strict: raise on the first bad line (default); with ``strict=False`` bad lines are
            reported (logged, and appended to ``errors``) and the other rows are still read.
        errors: collects the errors of bad lines when ``strict=False``.

    Returns:
        The valid rows.

    Raises:
        StepwiseFormatError: naming the file and line, for a bad line when ``strict``.

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "d.jsonl")
        >>> _ = write_stepwise_jsonl([{"prompt": "q", "completions": ["a"], "labels": [True]}], p)
        >>> read_stepwise_jsonl(p)[0]["labels"]
        [True]
    """
    return list(iter_stepwise_jsonl(path, strict=strict, errors=errors))


def write_stepwise_jsonl(rows: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    """Validate rows and write them as stepwise JSONL (UTF-8, one object per line).

    The file is written to a temporary name and renamed, so a failed write leaves no partial
    file behind. Parent directories are created.

    Args:
        rows: stepwise rows (see :func:`validate_stepwise_row`).
        path: the output file.

    Returns:
        The number of rows written.

    Raises:
        StepwiseFormatError: for an invalid row (its position is given as the line number).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for count, row in enumerate(rows, start=1):
                checked = validate_stepwise_row(row, line=count)
                fh.write(json.dumps(checked, ensure_ascii=False) + "\n")
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return count
