"""Step-level evaluation of a PRM on ProcessBench, PRMBench and TRL stepwise data.

Three data kinds, one pipeline: rows are read from JSONL by
:mod:`prm_plugins.evaluation.step_data` (bad lines are reported with their line number and
skipped, the other rows are still used), turned into :class:`StepItem` s, scored with the PRM
in batches, and summarised. The reading names (:func:`load_step_items`, :class:`StepItem`,
:class:`RowIssue`, ...) are importable from here too.

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
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, PRMError
from prm_plugins.evaluation.metrics import (
    BinaryCounts,
    auroc_or_none,
    mean_or_none,
    predicted_first_error,
    processbench_scores,
    step_auroc_report,
)
from prm_plugins.evaluation.step_data import (
    KINDS,
    PRMBENCH_CORRECT_CLASS,
    ROW_EXAMPLES,
    RowIssue,
    StepItem,
    iter_jsonl,
    jsonl_files,
    load_step_items,
)
from prm_plugins.scoring import score_isolated
from prm_plugins.types import StepScorer
from prm_plugins.validation import check_threshold

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
    "score_chains",
    "score_step_items",
]

logger = logging.getLogger(__name__)

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
            for (i, keep), scores in zip(chunk, score_chains(scorer, requests), strict=True):
                if isinstance(scores, PRMError):
                    issues.append(RowIssue(_where(items[i]), f"could not be scored: {scores}"))
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


def score_chains(
    scorer: StepScorer, requests: Sequence[tuple[str, Sequence[str]]]
) -> list[list[float] | PRMError]:
    """Step scores of each chain, from one ``score_batch`` call; when that call raises a
    :class:`~prm_plugins.errors.PRMError`, each chain is scored alone
    (:func:`prm_plugins.scoring.score_isolated`), so a chain the scorer refuses gets its
    error and the others still get their scores. Any other exception is a bug, not a bad
    chain, and is raised.

    Examples:
        >>> score_chains(prm, [("q", ["2 + 2 = 4"]), ("q", ["x" * 10**6])])  # doctest: +SKIP
        [[0.97], ChainTooLongError('...')]
    """
    def refusals_only(exc: BaseException, n: int) -> None:
        if not isinstance(exc, PRMError):
            raise exc

    out = score_isolated(lambda reqs: [r.scores for r in scorer.score_batch(reqs)],
                         list(requests), score_one=lambda req: scorer.score(*req).scores,
                         on_batch_error=refusals_only)
    for result in out.results:
        if isinstance(result, BaseException) and not isinstance(result, PRMError):
            raise result
    return out.results


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
    check_threshold(threshold)
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
            f"bad); rows look like {ROW_EXAMPLES[kind]}"
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
