"""Step-level evaluation of a PRM on ProcessBench, PRMBench and TRL stepwise data.

Three data kinds, one pipeline: rows are read from JSONL (bad lines are reported with their
line number and skipped, the other rows are still used), turned into :class:`StepItem` s,
scored with the PRM in batches, and summarised.

- ``processbench``: rows ``{"problem", "steps", "label"}`` where ``label`` is the index of the
  first erroneous step, -1 when the solution is correct. The predicted first error is the
  first step scored under the threshold (-1 if none). Reported: accuracy on the erroneous
  samples, accuracy on the correct samples, and F1 = their harmonic mean (ProcessBench's
  convention), per file (subset) and overall.
- ``prmbench``: PRMBench rows. Following the official harness (``mr_eval``, task
  ``prmtest_classified``), each row's ``modified_process`` is scored against its
  ``modified_question``, the 1-based ``error_steps`` are the erroneous steps (out-of-range
  indices are ignored, as there), and the ``original_process`` of each ``redundency`` row is
  added once as a fully correct sample of class ``correct``. A step is predicted correct when
  its score is at least the threshold. Reported per class: step AUROC, positive F1 (correct
  steps), negative F1 (erroneous steps) and PRMScore = their mean; overall figures pool every
  class but ``correct`` (as the harness's totals do). A leading "Step 3." / "3. " prefix is
  removed from each step before scoring, as the harness does.
- ``stepwise``: TRL stepwise rows ``{"prompt", "completions", "labels"}`` with an optional
  ``perturbation`` kind. Reported: step AUROC overall and per kind, and first-error accuracy.

Empty (whitespace-only) steps cannot be scored; they are left out of every figure and counted.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, PRMError
from prm_plugins.evaluation.metrics import (
    BinaryCounts,
    auroc_or_none,
    gold_first_error,
    mean_or_none,
    predicted_first_error,
    processbench_scores,
    step_auroc_report,
)
from prm_plugins.jsonl import JSONLineError, loads_line
from prm_plugins.types import StepScorer

__all__ = [
    "KINDS",
    "RowIssue",
    "StepItem",
    "evaluate_loaded",
    "evaluate_prmbench",
    "evaluate_processbench",
    "evaluate_stepwise",
    "evaluate_steps",
    "format_steps_report",
    "iter_jsonl",
    "jsonl_files",
    "load_step_items",
    "score_step_items",
]

logger = logging.getLogger(__name__)

#: Data kinds accepted by :func:`load_step_items`.
KINDS: tuple[str, ...] = ("processbench", "prmbench", "stepwise")

#: PRMBench's class whose ``original_process`` is also a fully correct sample.
PRMBENCH_CORRECT_SOURCE = "redundency"
PRMBENCH_CORRECT_CLASS = "correct"

_EXAMPLES = {
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
                         f"look like {_EXAMPLES[kind]}")
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
        + f"; rows look like {_EXAMPLES[kind]}"
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
                         f"look like {_EXAMPLES['prmbench']}")
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


# -- scoring ---------------------------------------------------------------------------------
def score_step_items(
    scorer: StepScorer,
    items: Sequence[StepItem],
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[list[list[float | None] | None], list[RowIssue]]:
    """Score every item's non-empty steps in batched calls.

    Args:
        scorer: the PRM (anything with ``score_batch``).
        items: the chains.
        batch_size: chains per ``score_batch`` call.
        progress: show a tqdm progress bar on stderr.

    Returns:
        ``(scores, issues)``: per item one score per step (``None`` for an empty step), or
        ``None`` when the item could not be scored; and why those items failed.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size!r}")
    out: list[list[float | None] | None] = [None] * len(items)
    issues: list[RowIssue] = []
    todo: list[tuple[int, list[int]]] = []
    for i, item in enumerate(items):
        keep = [j for j, s in enumerate(item.steps) if s.strip()]
        if keep:
            todo.append((i, keep))
        else:
            issues.append(RowIssue(_where(item), "every step is empty; nothing to score"))
    bar = _progress(len(todo), "scoring chains", progress)
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            requests = [(items[i].question, [items[i].steps[j] for j in keep])
                        for i, keep in chunk]
            results: list[list[float] | None]
            try:
                results = [r.scores for r in scorer.score_batch(requests)]
            except PRMError:  # isolate the failing chain; the others are still scored
                results = []
                for (i, _), req in zip(chunk, requests, strict=True):
                    try:
                        results.append(scorer.score(*req).scores)
                    except PRMError as exc:
                        issues.append(RowIssue(_where(items[i]), f"could not be scored: {exc}"))
                        results.append(None)
            for (i, keep), scores in zip(chunk, results, strict=True):
                if scores is None:
                    continue
                full: list[float | None] = [None] * len(items[i].steps)
                for j, s in zip(keep, scores, strict=True):
                    full[j] = float(s)
                out[i] = full
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return out, issues


def _where(item: StepItem) -> str:
    if item.group == PRMBENCH_CORRECT_CLASS:
        return f"{item.where} (its original_process, class {PRMBENCH_CORRECT_CLASS!r})"
    return item.where


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="chain", file=sys.stderr)


# -- summaries -------------------------------------------------------------------------------
def _scored_steps(
    items: Sequence[StepItem], scores: Sequence[list[float | None] | None]
) -> Iterator[tuple[StepItem, list[float | None]]]:
    for item, s in zip(items, scores, strict=True):
        if s is not None:
            yield item, s


def _pairs(item: StepItem, scores: list[float | None]) -> list[tuple[float, bool]]:
    """(score, gold) for the steps that are both labelled and scored."""
    return [(s, bool(y)) for s, y in zip(scores, item.labels, strict=True)
            if s is not None and y is not None]


def _auroc_of(pairs: Sequence[tuple[float, bool]]) -> float | None:
    return auroc_or_none([p[0] for p in pairs], [p[1] for p in pairs])


def evaluate_processbench(
    items: Sequence[StepItem], scores: Sequence[list[float | None] | None], threshold: float
) -> dict[str, Any]:
    """ProcessBench figures per subset (file) and overall.

    Returns:
        ``{"overall": {...}, "groups": {subset: {...}}}``; each with ``error_acc``,
        ``correct_acc``, ``f1``, ``n_error``, ``n_correct`` and ``step_auroc`` over the steps
        with a known label (those up to and including the first error).
    """
    def summary(rows: list[tuple[StepItem, list[float | None]]]) -> dict[str, Any]:
        pred = [predicted_first_error(s, threshold) for _, s in rows]
        gold = [it.first_error for it, _ in rows]
        pairs = [p for it, s in rows for p in _pairs(it, s)]
        return {**processbench_scores(pred, gold), "n_samples": len(rows),
                "step_auroc": _auroc_of(pairs)}

    rows = list(_scored_steps(items, scores))
    groups: dict[str, list[tuple[StepItem, list[float | None]]]] = defaultdict(list)
    for it, s in rows:
        groups[it.group].append((it, s))
    return {"overall": summary(rows), "groups": {g: summary(r) for g, r in sorted(groups.items())}}


def evaluate_prmbench(
    items: Sequence[StepItem], scores: Sequence[list[float | None] | None], threshold: float
) -> dict[str, Any]:
    """PRMBench figures per class and overall (every class but ``correct``).

    Per class: ``step_auroc``; the step confusion counts with correct steps as positives
    (``tp``, ``fp``, ``tn``, ``fn``); ``positive_f1``, ``negative_f1`` and ``prm_score`` (their
    mean; the defined one alone where the class has a single kind of step, as ``correct`` and
    ``multi_solutions`` do); the harness's ``correct_step_acc``, ``wrong_step_acc`` and
    ``first_error_acc`` (the first erroneous step is flagged). ``overall`` pools the steps of
    every class but ``correct``; ``mean_class_prm_score`` averages PRMScore over those classes.
    """
    groups: dict[str, list[tuple[StepItem, list[float | None]]]] = defaultdict(list)
    for it, s in _scored_steps(items, scores):
        groups[it.group].append((it, s))

    def summary(rows: list[tuple[StepItem, list[float | None]]]) -> dict[str, Any]:
        counts = BinaryCounts()
        pairs: list[tuple[float, bool]] = []
        first_hits: list[float] = []
        for it, s in rows:
            p = _pairs(it, s)
            pairs.extend(p)
            for score, gold in p:
                counts.add(score >= threshold, gold)
            fe = it.first_error
            first_score = s[fe] if fe >= 0 else None
            if first_score is not None:
                first_hits.append(float(first_score < threshold))
        n_pos = counts.tp + counts.fn
        n_neg = counts.tn + counts.fp
        return {
            "n_samples": len(rows), "n_steps": len(pairs), "n_error_steps": n_neg,
            "step_auroc": _auroc_of(pairs), **counts.as_dict(),
            "correct_step_acc": counts.tp / n_pos if n_pos else None,
            "wrong_step_acc": counts.tn / n_neg if n_neg else None,
            "first_error_acc": mean_or_none(first_hits),
        }

    per_class = {g: summary(r) for g, r in sorted(groups.items())}
    pooled = [row for g, r in groups.items() if g != PRMBENCH_CORRECT_CLASS for row in r]
    overall = summary(pooled)
    overall["mean_class_prm_score"] = mean_or_none(
        v["prm_score"] for g, v in per_class.items()
        if g != PRMBENCH_CORRECT_CLASS and v["prm_score"] is not None
    )
    overall["error_steps_out_of_range"] = sum(
        int(it.extra.get("error_steps_out_of_range", 0)) for it in items
    )
    return {"overall": overall, "groups": per_class}


def evaluate_stepwise(
    items: Sequence[StepItem], scores: Sequence[list[float | None] | None], threshold: float
) -> dict[str, Any]:
    """Stepwise figures overall and per perturbation kind.

    Per kind: ``step_auroc`` ranks that kind's erroneous steps against every correct step of
    the set (so kinds compare on the same positives); ``first_error_auroc`` ranks only each
    row's first erroneous step the same way (error detection itself: the steps after a
    first error are labelled bad too, and a model can score those low from their position
    or the error before them without seeing any error where it happens);
    ``within_rows_auroc`` uses the rows of that kind only; ``first_error_acc`` is the share
    of rows whose predicted first error (-1 for none) equals the gold one. Overall also
    gives ProcessBench's ``error_acc``, ``correct_acc`` and ``f1``.
    """
    rows = list(_scored_steps(items, scores))
    aurocs = step_auroc_report([s for _, s in rows], [it.labels for it, _ in rows],
                               [it.group for it, _ in rows])

    def first_error_acc(rs: list[tuple[StepItem, list[float | None]]]) -> float | None:
        return mean_or_none(float(predicted_first_error(s, threshold) == it.first_error)
                            for it, s in rs)

    pb = processbench_scores([predicted_first_error(s, threshold) for _, s in rows],
                             [it.first_error for it, _ in rows])
    overall = {
        "n_samples": len(rows), "n_steps": aurocs["n_steps"], "n_error_steps": aurocs["n_neg"],
        "step_auroc": aurocs["auroc"], "first_error_auroc": aurocs["first_error_auroc"],
        "first_error_acc": first_error_acc(rows),
        "error_acc": pb["error_acc"], "correct_acc": pb["correct_acc"], "f1": pb["f1"],
    }
    groups: dict[str, list[tuple[StepItem, list[float | None]]]] = defaultdict(list)
    for it, s in rows:
        groups[it.group].append((it, s))
    per_kind: dict[str, Any] = {}
    for kind, rs in sorted(groups.items()):
        k = aurocs["per_kind"][kind]
        per_kind[kind] = {
            "n_samples": len(rs), "n_steps": sum(len(_pairs(it, s)) for it, s in rs),
            "n_error_steps": k["neg_steps"], "step_auroc": k["auroc"],
            "first_error_auroc": k["first_error_auroc"], "within_rows_auroc": k["within_rows"],
            "first_error_acc": first_error_acc(rs),
        }
    return {"overall": overall, "groups": per_kind}


_EVALUATORS = {
    "processbench": evaluate_processbench,
    "prmbench": evaluate_prmbench,
    "stepwise": evaluate_stepwise,
}


def evaluate_loaded(
    scorer: StepScorer,
    items: Sequence[StepItem],
    kind: str,
    *,
    threshold: float = 0.5,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[dict[str, Any], list[RowIssue]]:
    """Score already-loaded items and summarise them; see :func:`evaluate_steps`.

    Returns:
        ``(summary, scoring_issues)`` with ``summary = {"overall", "groups", "n_scored",
        "empty_steps"}``.
    """
    if kind not in _EVALUATORS:
        raise InvalidInputError(f"unknown data kind {kind!r}; use one of {', '.join(KINDS)}")
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise InvalidInputError(f"threshold must be a number in [0, 1], got {threshold!r}")
    scores, issues = score_step_items(scorer, items, batch_size=batch_size, progress=progress)
    summary = _EVALUATORS[kind](items, scores, float(threshold))
    summary["n_scored"] = sum(1 for s in scores if s is not None)
    summary["empty_steps"] = sum(
        sum(1 for v in s if v is None) for s in scores if s is not None
    )
    return summary, issues


def evaluate_steps(
    scorer: StepScorer,
    data: str | Path,
    kind: str,
    *,
    threshold: float = 0.5,
    limit: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a PRM's step scores on labelled data.

    Args:
        scorer: the PRM, e.g. ``load_prm(path)``.
        data: a JSONL file or a folder of JSONL files.
        kind: ``"processbench"``, ``"prmbench"`` or ``"stepwise"`` (see the module docstring).
        threshold: a step scored below it is predicted erroneous.
        limit: most rows (``prmbench``: most samples per class).
        batch_size: chains per ``score_batch`` call.
        progress: show a progress bar.

    Returns:
        A JSON-ready report: ``kind``, ``data``, ``threshold``, ``limit``, ``n_rows``,
        ``n_samples``, ``n_scored``, ``skipped`` (one ``"path:line: why"`` per unused row or
        sample), ``overall``, ``groups`` and ``seconds``.

    Raises:
        InvalidInputError: for a bad argument, a missing path, or no usable row at all.

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> r = evaluate_steps(load_prm(), "gsm8k_stepwise.jsonl", "stepwise")  # doctest: +SKIP
        >>> r["overall"]["step_auroc"]  # doctest: +SKIP
        0.87
    """
    t0 = time.perf_counter()
    items, issues, n_rows = load_step_items(data, kind, limit=limit)
    for issue in issues:
        logger.warning("skipped %s", issue)
    if not items:
        raise InvalidInputError(
            f"no usable {kind} row in {str(data)!r} ({n_rows} row(s) read, {len(issues)} "
            f"bad); rows look like {_EXAMPLES[kind]}"
        )
    summary, score_issues = evaluate_loaded(scorer, items, kind, threshold=threshold,
                                            batch_size=batch_size, progress=progress)
    for issue in score_issues:
        logger.warning("skipped %s", issue)
    return {
        "kind": kind, "data": str(data), "threshold": float(threshold), "limit": limit,
        "n_rows": n_rows, "n_samples": len(items), "n_scored": summary.pop("n_scored"),
        "empty_steps": summary.pop("empty_steps"),
        "skipped": [str(i) for i in [*issues, *score_issues]],
        **summary, "seconds": round(time.perf_counter() - t0, 3),
    }


# -- text table ------------------------------------------------------------------------------
_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "processbench": [("n_samples", "n"), ("error_acc", "err_acc"), ("correct_acc", "cor_acc"),
                     ("f1", "F1"), ("step_auroc", "AUROC")],
    "prmbench": [("n_samples", "n"), ("n_steps", "steps"), ("step_auroc", "AUROC"),
                 ("negative_f1", "F1_neg"), ("positive_f1", "F1_pos"),
                 ("prm_score", "PRMScore"), ("first_error_acc", "1st_err")],
    "stepwise": [("n_samples", "n"), ("n_error_steps", "neg"), ("step_auroc", "AUROC"),
                 ("first_error_auroc", "AUROC_1st"), ("within_rows_auroc", "AUROC_in"),
                 ("first_error_acc", "1st_err")],
}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_steps_report(report: dict[str, Any]) -> str:
    """A plain-text table of a report made by :func:`evaluate_steps`."""
    kind = report["kind"]
    cols = _COLUMNS[kind]
    head = "group" if kind != "prmbench" else "class"
    if kind == "stepwise":
        head = "perturbation"
    rows = [(g, v) for g, v in report["groups"].items()] + [("overall", report["overall"])]
    width = max(len(head), *(len(g) for g, _ in rows))
    lines = [
        f"{kind} on {report['data']}: {report['n_scored']}/{report['n_samples']} samples scored, "
        f"threshold {report['threshold']}",
        f"{head:<{width}}  " + "  ".join(f"{label:>8}" for _, label in cols),
    ]
    for name, values in rows:
        lines.append(f"{name:<{width}}  "
                     + "  ".join(f"{_cell(values.get(key)):>8}" for key, _ in cols))
    extra = report["overall"]
    if kind == "prmbench":
        lines.append(f"mean PRMScore over classes (without 'correct'): "
                     f"{_cell(extra.get('mean_class_prm_score'))}")
    if kind == "stepwise":
        lines.append(f"ProcessBench-style: error_acc {_cell(extra.get('error_acc'))}  "
                     f"correct_acc {_cell(extra.get('correct_acc'))}  F1 {_cell(extra.get('f1'))}")
    if report.get("skipped"):
        lines.append(f"skipped: {len(report['skipped'])} row(s)/sample(s) (see stderr)")
    return "\n".join(lines)
