"""Reading step-labelled data for :mod:`prm_plugins.evaluation.steps`: ProcessBench,
PRMBench and TRL stepwise JSONL rows, turned into :class:`StepItem` s.

Bad lines are reported with their line number (:class:`RowIssue`) and skipped; the other rows
are still used. The data kinds and what each row looks like are described in
:mod:`prm_plugins.evaluation.steps`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError
from prm_plugins.evaluation.metrics import gold_first_error
from prm_plugins.jsonl import JSONLineError, loads_line

__all__ = [
    "KINDS",
    "PRMBENCH_CORRECT_CLASS",
    "PRMBENCH_CORRECT_SOURCE",
    "ROW_EXAMPLES",
    "RowIssue",
    "StepItem",
    "iter_jsonl",
    "jsonl_files",
    "load_step_items",
]

#: Data kinds accepted by :func:`load_step_items`.
KINDS: tuple[str, ...] = ("processbench", "prmbench", "stepwise")

#: PRMBench's class whose ``original_process`` is also a fully correct sample.
PRMBENCH_CORRECT_SOURCE = "redundency"
PRMBENCH_CORRECT_CLASS = "correct"

#: What one row of each data kind looks like (quoted in error messages).
ROW_EXAMPLES = {
    "processbench": '{"problem": "...", "steps": ["step 1", "step 2"], "label": 1}',
    "prmbench": ('{"modified_question": "...", "modified_process": ["step 1", "step 2"], '
                 '"error_steps": [2], "classification": "circular", ...}'),
    "stepwise": '{"prompt": "...", "completions": ["step 1", "step 2"], "labels": [true, false]}',
}
#: "Step 3." or "3. " at the start of a step (the PRMBench harness removes it before scoring).
_STEP_PREFIX = re.compile(r"^(?:step\s*\d+\s*[.:]\s*|\d+\.\s+)", re.IGNORECASE)


@dataclass(frozen=True)
class RowIssue:
    """A row that was not used: where it is and why.

    Attributes:
        where: ``"path:line"`` (or ``"path:line (class)"`` for a PRMBench sample).
        error: what was wrong, and what would fix it.
    """

    where: str
    error: str

    def __str__(self) -> str:
        return f"{self.where}: {self.error}"


@dataclass
class StepItem:
    """One chain to score, with its gold step labels.

    Attributes:
        question: the problem.
        steps: the chain's steps.
        labels: per step, ``True`` correct, ``False`` erroneous, ``None`` unknown (steps after
            a ProcessBench first error).
        group: the class, perturbation kind or subset the chain is reported under.
        where: ``"path:line"`` of the row.
        first_error: gold index of the first erroneous step, -1 for none.
        extra: kind-specific details (e.g. PRMBench error steps out of range).
    """

    question: str
    steps: list[str]
    labels: list[bool | None]
    group: str
    where: str
    first_error: int
    extra: dict[str, Any] = field(default_factory=dict)


# -- reading ---------------------------------------------------------------------------------
def jsonl_files(path: str | Path) -> list[Path]:
    """The JSONL files at ``path``: the file itself, or the ``*.jsonl`` files of a folder.

    Raises:
        InvalidInputError: if ``path`` does not exist or the folder has no ``.jsonl`` file.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.glob("*.jsonl") if f.is_file())
        if not files:
            raise InvalidInputError(
                f"data folder {str(p)!r} holds no .jsonl file; pass a JSONL file or a folder "
                "of them"
            )
        return files
    raise InvalidInputError(
        f"data path {str(p)!r} does not exist; pass a JSONL file or a folder of JSONL files"
    )


def iter_jsonl(path: Path, issues: list[RowIssue]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` for each JSON object line of ``path``.

    Blank lines are skipped. A line that is not UTF-8, not JSON or not an object is added to
    ``issues`` with its line number and skipped; the other lines are still read.
    """
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:  # one rule for every JSONL reader: BOM, depth and number limits
                row = loads_line(raw)
            except JSONLineError as exc:
                issues.append(RowIssue(where, f"{exc}; each line must be one JSON object"))
                continue
            if not isinstance(row, dict):
                issues.append(RowIssue(where, f"expected a JSON object, got "
                                              f"{_type(row)}"))
                continue
            yield lineno, row


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _str_list(row: dict[str, Any], key: str, kind: str) -> list[str]:
    value = row.get(key)
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else (
            "no such key" if key not in row else _type(value))
        raise ValueError(f"{key!r} must be a non-empty list of step strings, got {got}; rows "
                         f"look like {ROW_EXAMPLES[kind]}")
    for i, step in enumerate(value):
        if not isinstance(step, str):
            raise ValueError(f"{key}[{i}] must be a string, got {_type(step)} {step!r}")
    return list(value)


def _str_field(row: dict[str, Any], keys: Sequence[str], kind: str) -> str:
    for key in keys:
        if isinstance(row.get(key), str):
            return str(row[key])
    raise ValueError(
        f"no question: expected a string under {' or '.join(repr(k) for k in keys)}, got "
        + ", ".join(f"{k}={_type(row.get(k))}" for k in keys)
        + f"; rows look like {ROW_EXAMPLES[kind]}"
    )


def _parse_processbench(row: dict[str, Any], where: str, group: str) -> list[StepItem]:
    question = _str_field(row, ("problem", "question"), "processbench")
    steps = _str_list(row, "steps", "processbench")
    label = row.get("label")
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise ValueError(f"'label' must be -1 (no error) or a step index 0..{len(steps) - 1}, "
                         f"got {_type(label)} {label!r}")
    labels: list[bool | None] = (
        [True] * len(steps) if label < 0
        else [True] * label + [False] + [None] * (len(steps) - label - 1)
    )
    return [StepItem(question, steps, labels, group, where, label)]


def _parse_stepwise(row: dict[str, Any], where: str, group: str) -> list[StepItem]:
    question = _str_field(row, ("prompt",), "stepwise")
    steps = _str_list(row, "completions", "stepwise")
    raw = row.get("labels")
    if not isinstance(raw, list) or len(raw) != len(steps):
        got = f"{len(raw)} labels" if isinstance(raw, list) else _type(raw)
        raise ValueError(f"'labels' must be a list of true/false, one per completion "
                         f"({len(steps)}), got {got}")
    labels: list[bool | None] = []
    for i, v in enumerate(raw):
        if isinstance(v, bool) or v in (0, 1):
            labels.append(bool(v))
        else:
            raise ValueError(f"labels[{i}] must be true or false, got {_type(v)} {v!r}")
    kind = row.get("perturbation")
    if kind is not None and not isinstance(kind, str):
        raise ValueError(f"'perturbation' must be a string or null, got {_type(kind)}")
    return [StepItem(question, steps, labels, kind or "none", where, gold_first_error(labels))]


def _parse_prmbench(row: dict[str, Any], where: str, group: str) -> list[StepItem]:
    cls = row.get("classification")
    if not isinstance(cls, str) or not cls:
        raise ValueError(f"'classification' must be a non-empty string, got {_type(cls)}; rows "
                         f"look like {ROW_EXAMPLES['prmbench']}")
    question = _str_field(row, ("modified_question", "question"), "prmbench")
    steps = [_STEP_PREFIX.sub("", s.strip()) for s in _str_list(row, "modified_process",
                                                                 "prmbench")]
    errors = row.get("error_steps")
    if not isinstance(errors, list) or any(
        isinstance(e, bool) or not isinstance(e, int) for e in errors
    ):
        raise ValueError(f"'error_steps' must be a list of 1-based step numbers, got "
                         f"{_type(errors)} {errors!r}")
    bad = set(errors)
    labels: list[bool | None] = [(i + 1) not in bad for i in range(len(steps))]
    out_of_range = sum(1 for e in bad if not 1 <= e <= len(steps))
    items = [StepItem(question, steps, labels, cls, where, gold_first_error(labels),
                      extra={"idx": row.get("idx"), "error_steps_out_of_range": out_of_range})]
    if cls == PRMBENCH_CORRECT_SOURCE and isinstance(row.get("original_process"), list):
        orig_q = _str_field(row, ("original_question", "question"), "prmbench")
        orig = [_STEP_PREFIX.sub("", s.strip()) for s in _str_list(row, "original_process",
                                                                   "prmbench")]
        items.append(StepItem(orig_q, orig, [True] * len(orig), PRMBENCH_CORRECT_CLASS, where,
                              -1, extra={"idx": row.get("idx")}))
    return items


_PARSERS: dict[str, Callable[[dict[str, Any], str, str], list[StepItem]]] = {
    "processbench": _parse_processbench,
    "prmbench": _parse_prmbench,
    "stepwise": _parse_stepwise,
}


def load_step_items(
    path: str | Path, kind: str, *, limit: int | None = None
) -> tuple[list[StepItem], list[RowIssue], int]:
    """Read step-labelled chains of one data kind.

    Args:
        path: a JSONL file, or a folder whose ``*.jsonl`` files are all read (sorted).
        kind: ``"processbench"``, ``"prmbench"`` or ``"stepwise"``.
        limit: most rows to use; for ``prmbench``, most samples per class (the ``correct``
            samples follow the ``redundency`` rows they come from).

    Returns:
        ``(items, issues, n_rows)``: the chains, the rows skipped with the reason, and the
        number of rows read.

    Raises:
        InvalidInputError: for an unknown kind, a bad limit, or a missing path.
    """
    if kind not in _PARSERS:
        raise InvalidInputError(f"unknown data kind {kind!r}; use one of {', '.join(KINDS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise InvalidInputError(f"limit must be a positive int or None, got {limit!r}")
    parse = _PARSERS[kind]
    items: list[StepItem] = []
    issues: list[RowIssue] = []
    n_rows = 0
    per_group: dict[str, int] = defaultdict(int)
    seen: set[tuple[str, object]] = set()
    for file in jsonl_files(path):
        for lineno, row in iter_jsonl(file, issues):
            where = f"{file}:{lineno}"
            if kind != "prmbench" and limit is not None and n_rows >= limit:
                break
            n_rows += 1
            try:
                parsed = parse(row, where, file.stem)
            except ValueError as exc:
                issues.append(RowIssue(where, str(exc)))
                continue
            if kind == "prmbench":
                cls = parsed[0].group
                if limit is not None and per_group[cls] >= limit:
                    continue
                kept = []
                for item in parsed:  # the harness keeps one sample per (class, idx)
                    key = (item.group, item.extra.get("idx"))
                    if item.extra.get("idx") is not None and key in seen:
                        continue
                    seen.add(key)
                    kept.append(item)
                parsed = kept
            for item in parsed:
                per_group[item.group] += 1
            items.extend(parsed)
    return items, issues, n_rows
