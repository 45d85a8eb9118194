"""Build an automatically verified step-labelled data set from GSM8K.

For each problem the reference solution is parsed and every calculator annotation checked
exactly (:mod:`prm_plugins.labeling.gsm8k`); a reference whose annotation fails is dropped and
counted. The checked reference becomes a chain whose steps are all good, and up to
``n_perturbed_per_problem`` perturbed chains (:mod:`prm_plugins.labeling.perturb`) of different
kinds are added, each with the label convention: good before the first error, bad from it on.

Kinds are balanced over the data set: for each problem the kinds are tried from the least used
so far to the most used (ties broken at random), so kinds that apply to fewer problems
(``unit_slip``) are taken wherever they apply. Everything is deterministic for a given seed and
input order.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prm_plugins.arithmetic import format_number
from prm_plugins.errors import InvalidInputError
from prm_plugins.labeling.gsm8k import GSM8KSolution, parse_gsm8k_row
from prm_plugins.labeling.perturb import PERTURBATION_KINDS, perturb

__all__ = ["LabelingStats", "build_verifier_dataset", "dataset_stats"]

logger = logging.getLogger(__name__)


@dataclass
class LabelingStats:
    """What :func:`build_verifier_dataset` did.

    Attributes:
        problems: rows read.
        malformed_rows: rows that could not be parsed (no ``#### N`` line, ...); dropped.
        references: reference chains kept (every annotation checked exactly).
        references_dropped: references dropped because an annotation failed the exact check
            or could not be parsed.
        failed_annotations: annotations that failed the check or could not be parsed.
        perturbed: perturbed chains written, per kind.
        not_applicable: per kind, how often it was tried on a problem and did not apply.
        skip_reasons: per ``"kind: reason"``, candidate sites rejected (see
            :mod:`prm_plugins.labeling.perturb`).
        short_of_target: problems that got fewer than ``n_perturbed_per_problem`` perturbed
            chains.
    """

    problems: int = 0
    malformed_rows: int = 0
    references: int = 0
    references_dropped: int = 0
    failed_annotations: int = 0
    perturbed: Counter[str] = field(default_factory=Counter)
    not_applicable: Counter[str] = field(default_factory=Counter)
    skip_reasons: Counter[str] = field(default_factory=Counter)
    short_of_target: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "problems": self.problems,
            "malformed_rows": self.malformed_rows,
            "references": self.references,
            "references_dropped": self.references_dropped,
            "failed_annotations": self.failed_annotations,
            "perturbed": dict(sorted(self.perturbed.items())),
            "perturbed_total": sum(self.perturbed.values()),
            "not_applicable": dict(sorted(self.not_applicable.items())),
            "skip_reasons": dict(sorted(self.skip_reasons.items())),
            "short_of_target": self.short_of_target,
        }


def _check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    if kinds is None:
        return PERTURBATION_KINDS
    if isinstance(kinds, str):
        raise InvalidInputError(
            f"kinds must be a list of perturbation names, got the string {kinds!r}; "
            f"pass e.g. [{kinds!r}]"
        )
    chosen = tuple(dict.fromkeys(kinds))
    unknown = [k for k in chosen if k not in PERTURBATION_KINDS]
    if unknown:
        raise InvalidInputError(
            f"unknown perturbation kind(s) {unknown}; choose from {', '.join(PERTURBATION_KINDS)}"
        )
    return chosen


def build_verifier_dataset(
    rows: Iterable[Mapping[str, Any]],
    seed: int,
    n_perturbed_per_problem: int = 1,
    kinds: Sequence[str] | None = None,
    *,
    source: str = "gsm8k",
    stats: LabelingStats | None = None,
) -> list[dict[str, Any]]:
    """Build TRL stepwise rows: checked reference chains plus perturbed chains.

    Args:
        rows: GSM8K rows ``{"question": str, "answer": str}`` (an ``"id"`` key is used when
            present, else ``"<source>-<position>"``).
        seed: random seed; the output is a pure function of ``rows``, ``seed`` and the other
            arguments.
        n_perturbed_per_problem: perturbed chains per problem, each of a different kind
            (default 1: as many perturbed chains as correct ones).
        kinds: perturbation kinds to use (default: all of :data:`PERTURBATION_KINDS`).
        source: value of the ``"source"`` key and prefix of generated ids.
        stats: filled in with counts (see :class:`LabelingStats`) when given.

    Returns:
        Rows ``{"id", "prompt", "completions", "labels", "source", "perturbation",
        "first_error", "answer", "gold_answer", "detail"}``; for each problem its reference
        (``perturbation`` null, all labels true) then its perturbed chains.

    Raises:
        InvalidInputError: for a bad argument (unknown kind, negative count).

    Examples:
        >>> rows = [{"question": "Ann has 48 clips and sells half. Then she buys 10. How many?",
        ...          "answer": "48/2 = <<48/2=24>>24\\n24+10 = <<24+10=34>>34\\n#### 34"}]
        >>> out = build_verifier_dataset(rows, seed=0, kinds=["wrong_operation"])
        >>> [(r["perturbation"], r["labels"]) for r in out]
        [(None, [True, True, True]), ('wrong_operation', [False, False, False])]
        >>> out[1]["completions"]
        ['48*2 = 96', '96+10 = 106', 'The answer is 106.']
    """
    chosen = _check_arguments(seed, n_perturbed_per_problem, kinds)
    stats = stats if stats is not None else LabelingStats()
    out: list[dict[str, Any]] = []
    for position, row in enumerate(rows):
        stats.problems += 1
        row_id = row.get("id") if isinstance(row, Mapping) else None
        rid = str(row_id) if row_id is not None else f"{source}-{position}"
        solution = _checked_reference(row, rid, stats)
        if solution is None:
            continue
        stats.references += 1
        gold = format_number(solution.answer)
        out.append({
            "id": f"{rid}/reference",
            "prompt": solution.question,
            "completions": solution.completions,
            "labels": [True] * len(solution.steps),
            "source": source,
            "perturbation": None,
            "first_error": None,
            "answer": gold,
            "gold_answer": gold,
            "detail": None,
        })
        rng = random.Random(f"{seed}:{rid}")
        made = _add_perturbed(out, solution, rid, rng, chosen, n_perturbed_per_problem,
                              source=source, gold=gold, stats=stats)
        if made < n_perturbed_per_problem:
            stats.short_of_target += 1
    logger.info("labelled %d problems: %s", stats.problems, stats.as_dict())
    return out


def _check_arguments(
    seed: int, n_perturbed: int, kinds: Sequence[str] | None
) -> tuple[str, ...]:
    """Refuse a bad seed or count; return the perturbation kinds to use."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInputError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if isinstance(n_perturbed, bool) or not isinstance(n_perturbed, int) or n_perturbed < 0:
        raise InvalidInputError(
            "n_perturbed_per_problem must be an int >= 0, got "
            f"{n_perturbed!r}"
        )
    chosen = _check_kinds(kinds)
    if n_perturbed > len(chosen):
        logger.warning(
            "n_perturbed_per_problem=%d but only %d kinds: at most %d perturbed chains per "
            "problem", n_perturbed, len(chosen), len(chosen)
        )
    return chosen


def _checked_reference(
    row: Mapping[str, Any], rid: str, stats: LabelingStats
) -> GSM8KSolution | None:
    """The parsed row, or None (counted in ``stats``) when malformed or not checked."""
    try:
        solution = parse_gsm8k_row(row)
    except InvalidInputError as exc:
        stats.malformed_rows += 1
        logger.warning("row %s dropped: %s", rid, exc)
        return None
    if not solution.is_checked:
        stats.references_dropped += 1
        stats.failed_annotations += len(solution.failed_annotations) + len(solution.problems)
        logger.info(
            "reference %s dropped: %s", rid,
            "; ".join(
                list(solution.problems)
                + [f"{c.expr} = {format_number(c.claimed)} does not check"
                   for c in solution.failed_annotations]
            ),
        )
        return None
    return solution


def _add_perturbed(
    out: list[dict[str, Any]], solution: GSM8KSolution, rid: str, rng: random.Random,
    chosen: Sequence[str], n_perturbed: int, *, source: str, gold: str, stats: LabelingStats,
) -> int:
    """Append up to ``n_perturbed`` perturbed chains of distinct kinds; return how many.

    Kinds are tried least-used first (ties broken at random), so kinds stay balanced.
    """
    ties = {kind: rng.random() for kind in chosen}
    order = sorted(chosen, key=lambda kind: (stats.perturbed[kind], ties[kind]))
    made = 0
    seen = {tuple(solution.completions)}
    for kind in order:
        if made >= n_perturbed:
            break
        reasons: Counter[str] = Counter()
        result = perturb(solution, kind, rng, skipped=reasons)
        for reason, count in reasons.items():
            stats.skip_reasons[f"{kind}: {reason}"] += count
        if result is None or tuple(result.completions) in seen:
            stats.not_applicable[kind] += 1
            continue
        seen.add(tuple(result.completions))
        made += 1
        stats.perturbed[kind] += 1
        out.append({
            "id": f"{rid}/{kind}",
            "prompt": solution.question,
            "completions": result.completions,
            "labels": result.labels,
            "source": source,
            "perturbation": kind,
            "first_error": result.first_error,
            "answer": format_number(result.answer),
            "gold_answer": gold,
            "detail": result.detail,
        })
    return made


def dataset_stats(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over stepwise rows: chains per kind, step labels, first-error positions.

    Args:
        records: stepwise rows (as built by :func:`build_verifier_dataset` or read back with
            :func:`~prm_plugins.labeling.stepwise.read_stepwise_jsonl`).

    Returns:
        ``{"chains", "by_kind", "steps", "good_steps", "bad_steps", "first_error_at"}``;
        ``by_kind`` counts reference chains under ``"reference"``; ``first_error_at`` counts
        perturbed chains by the relative position of the first error (``"first_step"``,
        ``"middle"``, ``"last_step"``).

    Examples:
        >>> dataset_stats([{"prompt": "q", "completions": ["a", "b"], "labels": [True, False],
        ...                 "perturbation": "arithmetic_slip", "first_error": 1}])["by_kind"]
        {'arithmetic_slip': 1}
    """
    by_kind: Counter[str] = Counter()
    where: Counter[str] = Counter()
    steps = good = 0
    chains = 0
    for row in records:
        chains += 1
        by_kind[row.get("perturbation") or "reference"] += 1
        labels = list(row["labels"])
        steps += len(labels)
        good += sum(bool(v) for v in labels)
        first = row.get("first_error")
        if first is not None:
            if first == 0:
                where["first_step"] += 1
            elif first == len(labels) - 1:
                where["last_step"] += 1
            else:
                where["middle"] += 1
    return {
        "chains": chains,
        "by_kind": dict(sorted(by_kind.items())),
        "steps": steps,
        "good_steps": good,
        "bad_steps": steps - good,
        "first_error_at": dict(sorted(where.items())),
    }
