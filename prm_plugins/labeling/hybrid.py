"""Hybrid labels: a small human-labelled set plus the LLM grader, with their agreement.

The grader (:class:`~prm_plugins.labeling.grader.LLMStepGrader`) grades the human-labelled
chains too, so its labels can be compared with the human ones on that overlap
(:func:`label_agreement`: step-level accuracy, Cohen's kappa, first-error agreement and the
confusion counts). The merged data set keeps the human labels wherever a chain has them and
takes the grader's labels for the other chains (:func:`merge_labels`,
:func:`build_hybrid_dataset`).

Chains are matched by content: the same ``prompt`` and the same ``completions`` (step texts
compared exactly, after stripping surrounding whitespace). Ids are not used to match, so two
files written by different tools still line up.

Both sides should follow the same label convention (bad from the first error on, as the
grader writes by default); :func:`label_agreement` compares the labels as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prm_plugins.errors import InvalidInputError
from prm_plugins.labeling.grader import ChainInput, GradedChain, LLMStepGrader, as_chain
from prm_plugins.labeling.stepwise import validate_stepwise_row

__all__ = [
    "AgreementReport",
    "HybridResult",
    "abuild_hybrid_dataset",
    "build_hybrid_dataset",
    "chain_key",
    "cohen_kappa",
    "label_agreement",
    "merge_labels",
]

logger = logging.getLogger(__name__)

ChainKey = tuple[str, tuple[str, ...]]


def chain_key(row: Mapping[str, Any]) -> ChainKey:
    """The key chains are matched by: ``(prompt, completions)``, each stripped.

    Examples:
        >>> chain_key({"prompt": " q ", "completions": ["a ", "b"], "labels": [True, True]})
        ('q', ('a', 'b'))
    """
    return (str(row["prompt"]).strip(), tuple(str(s).strip() for s in row["completions"]))


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Cohen's kappa of two raters' binary labels.

    ``kappa = (p_o - p_e) / (1 - p_e)`` where ``p_o`` is the observed agreement and ``p_e``
    the agreement expected by chance from each rater's label frequencies.

    Args:
        a: one rater's labels.
        b: the other rater's labels, same length.

    Returns:
        Kappa in [-1, 1], or ``None`` when it is undefined (no labels, or both raters gave
        one and the same label to everything, so ``p_e == 1``).

    Examples:
        >>> cohen_kappa([True, True, False, False], [True, False, False, False])
        0.5
    """
    if len(a) != len(b):
        raise InvalidInputError(f"cohen_kappa needs two label lists of one length; got "
                                f"{len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    p_e = pa * pb + (1 - pa) * (1 - pb)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1 - p_e)


def _first_error(labels: Sequence[bool]) -> int | None:
    return next((k for k, v in enumerate(labels) if not v), None)


@dataclass
class AgreementReport:
    """How the grader's labels agree with the human labels on the chains both labelled.

    "Positive" here means a bad step (the class a PRM must catch); the human labels are the
    reference.

    Attributes:
        chains: chains in the overlap (labelled by both).
        steps: steps in the overlap.
        step_accuracy: fraction of overlap steps with the same label (``None`` if no steps).
        cohen_kappa: Cohen's kappa of the step labels (``None`` when undefined).
        first_error_agreement: fraction of overlap chains whose first bad step (or "none")
            is the same (``None`` if no chains).
        both_good: steps both label good.
        both_bad: steps both label bad.
        human_good_grader_bad: steps the grader flags that the human passed.
        human_bad_grader_good: steps the human flags that the grader passed.
        human_only: human-labelled chains with no grader label (not graded, or grading failed).
        grader_only: grader-labelled chains with no human label.
    """

    chains: int = 0
    steps: int = 0
    step_accuracy: float | None = None
    cohen_kappa: float | None = None
    first_error_agreement: float | None = None
    both_good: int = 0
    both_bad: int = 0
    human_good_grader_bad: int = 0
    human_bad_grader_good: int = 0
    human_only: int = 0
    grader_only: int = 0

    @property
    def bad_step_precision(self) -> float | None:
        """Of the steps the grader flags, the fraction the human flags too."""
        flagged = self.both_bad + self.human_good_grader_bad
        return self.both_bad / flagged if flagged else None

    @property
    def bad_step_recall(self) -> float | None:
        """Of the steps the human flags, the fraction the grader flags too."""
        flagged = self.both_bad + self.human_bad_grader_good
        return self.both_bad / flagged if flagged else None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "chains": self.chains,
            "steps": self.steps,
            "step_accuracy": self.step_accuracy,
            "cohen_kappa": self.cohen_kappa,
            "first_error_agreement": self.first_error_agreement,
            "bad_step_precision": self.bad_step_precision,
            "bad_step_recall": self.bad_step_recall,
            "confusion": {
                "both_good": self.both_good,
                "both_bad": self.both_bad,
                "human_good_grader_bad": self.human_good_grader_bad,
                "human_bad_grader_good": self.human_bad_grader_good,
            },
            "human_only": self.human_only,
            "grader_only": self.grader_only,
        }

    def summary(self) -> str:
        """One human-readable paragraph."""

        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{100 * x:.1f}%"

        kappa = "n/a" if self.cohen_kappa is None else f"{self.cohen_kappa:.3f}"
        return (
            f"{self.chains} chains ({self.steps} steps) labelled by both: step accuracy "
            f"{pct(self.step_accuracy)}, Cohen's kappa {kappa}, first-error agreement "
            f"{pct(self.first_error_agreement)}; confusion (human/grader): good/good "
            f"{self.both_good}, bad/bad {self.both_bad}, good/bad {self.human_good_grader_bad}, "
            f"bad/good {self.human_bad_grader_good}; {self.human_only} human-only and "
            f"{self.grader_only} grader-only chains"
        )


def _index(rows: Iterable[Mapping[str, Any]], name: str) -> dict[ChainKey, dict[str, Any]]:
    out: dict[ChainKey, dict[str, Any]] = {}
    for position, row in enumerate(rows):
        try:
            checked = validate_stepwise_row(row)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{name} row {position}: {exc}") from exc
        key = chain_key(checked)
        if key in out:
            if out[key]["labels"] != checked["labels"]:
                raise InvalidInputError(
                    f"{name} row {position} repeats an earlier chain with other labels "
                    f"({out[key]['labels']} vs {checked['labels']}); keep one label set per "
                    "chain"
                )
            continue
        out[key] = checked
    return out


def label_agreement(
    human_rows: Iterable[Mapping[str, Any]], grader_rows: Iterable[Mapping[str, Any]]
) -> AgreementReport:
    """Agreement of grader labels with human labels on the chains both labelled.

    Args:
        human_rows: stepwise rows labelled by people (the reference).
        grader_rows: stepwise rows labelled by the grader (or any other labeller).

    Returns:
        The :class:`AgreementReport`.

    Raises:
        InvalidInputError: for a row that is not valid stepwise data, or a chain repeated
            with different labels within one side.

    Examples:
        >>> steps = ["a", "b", "c"]
        >>> human = [{"prompt": "q", "completions": steps, "labels": [True, False, False]}]
        >>> graded = [{"prompt": "q", "completions": steps, "labels": [True, True, False]}]
        >>> r = label_agreement(human, graded)
        >>> round(r.step_accuracy, 3), r.first_error_agreement, r.human_bad_grader_good
        (0.667, 0.0, 1)
    """
    human = _index(human_rows, "human")
    graded = _index(grader_rows, "grader")
    report = AgreementReport()
    h_all: list[bool] = []
    g_all: list[bool] = []
    same_first = 0
    for key, h_row in human.items():
        g_row = graded.get(key)
        if g_row is None:
            report.human_only += 1
            continue
        h, g = h_row["labels"], g_row["labels"]
        report.chains += 1
        h_all.extend(h)
        g_all.extend(g)
        same_first += _first_error(h) == _first_error(g)
        for x, y in zip(h, g, strict=True):
            if x and y:
                report.both_good += 1
            elif not x and not y:
                report.both_bad += 1
            elif x:
                report.human_good_grader_bad += 1
            else:
                report.human_bad_grader_good += 1
    report.grader_only = sum(1 for key in graded if key not in human)
    report.steps = len(h_all)
    if report.steps:
        report.step_accuracy = (report.both_good + report.both_bad) / report.steps
        report.cohen_kappa = cohen_kappa(h_all, g_all)
    if report.chains:
        report.first_error_agreement = same_first / report.chains
    return report


def merge_labels(
    human_rows: Iterable[Mapping[str, Any]],
    grader_rows: Iterable[Mapping[str, Any]],
    *,
    human_source: str = "human",
) -> list[dict[str, Any]]:
    """The merged data set: human labels win on the overlap, the grader labels the rest.

    Args:
        human_rows: stepwise rows labelled by people.
        grader_rows: stepwise rows labelled by the grader.
        human_source: ``"source"`` given to human rows that have none.

    Returns:
        Every human row (in order, ``source`` defaulted to ``human_source``), then every
        grader row whose chain no human labelled (in order). Duplicate chains appear once.

    Raises:
        InvalidInputError: as :func:`label_agreement`.

    Examples:
        >>> human = [{"prompt": "q", "completions": ["a"], "labels": [False]}]
        >>> graded = [{"prompt": "q", "completions": ["a"], "labels": [True]},
        ...           {"prompt": "p", "completions": ["b"], "labels": [True]}]
        >>> [(r["prompt"], r["labels"], r["source"]) for r in merge_labels(human, graded)]
        [('q', [False], 'human'), ('p', [True], 'llm-grader')]
    """
    human = _index(human_rows, "human")
    graded = _index(grader_rows, "grader")
    merged: list[dict[str, Any]] = []
    for row in human.values():
        out = dict(row)
        if out.get("source") is None:
            out["source"] = human_source
        merged.append(out)
    for key, row in graded.items():
        if key not in human:
            out = dict(row)
            if out.get("source") is None:
                out["source"] = "llm-grader"
            merged.append(out)
    return merged


@dataclass
class HybridResult:
    """What :func:`build_hybrid_dataset` produced.

    Attributes:
        rows: the merged stepwise rows (human labels on the overlap, grader labels elsewhere).
        agreement: grader vs human on the human-labelled chains the grader graded.
        graded: every grading result (human-labelled chains first, then the others), failed
            ones included.
        human_rows: rows in ``rows`` that carry human labels (they come first).
        grader_rows: rows in ``rows`` labelled by the grader.

    A chain the grader could not grade (see :attr:`failed`) keeps its human labels when it has
    them and is otherwise left out of ``rows``.
    """

    rows: list[dict[str, Any]]
    agreement: AgreementReport
    graded: list[GradedChain] = field(default_factory=list)
    human_rows: int = 0
    grader_rows: int = 0

    @property
    def failed(self) -> list[GradedChain]:
        """The chains the grader could not grade."""
        return [g for g in self.graded if not g.ok]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no rows)."""
        return {
            "rows": len(self.rows),
            "human_rows": self.human_rows,
            "grader_rows": self.grader_rows,
            "graded": len(self.graded),
            "grading_failed": len(self.failed),
            "agreement": self.agreement.as_dict(),
        }


def _prepare(
    human_rows: Iterable[Mapping[str, Any]], chains: Iterable[ChainInput]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    human = list(_index(human_rows, "human").values())
    seen = {chain_key(r) for r in human}
    todo: list[dict[str, Any]] = []
    for position, item in enumerate(chains):
        question, steps, ident = as_chain(item, position)
        row: dict[str, Any] = {"prompt": question, "completions": steps}
        if ident is not None:
            row["id"] = ident
        key = chain_key(row)
        if key in seen:
            continue
        seen.add(key)
        todo.append(row)
    return human, todo


def _finish(
    grader: LLMStepGrader, human: list[dict[str, Any]], graded: list[GradedChain]
) -> HybridResult:
    grader_rows = grader.rows(graded)
    report = label_agreement(human, grader_rows)
    merged = merge_labels(human, grader_rows)
    logger.info("hybrid labels: %s", report.summary())
    return HybridResult(rows=merged, agreement=report, graded=graded, human_rows=len(human),
                        grader_rows=len(merged) - len(human))


def build_hybrid_dataset(
    human_rows: Iterable[Mapping[str, Any]],
    chains: Iterable[ChainInput],
    grader: LLMStepGrader,
) -> HybridResult:
    """Grade the human-labelled chains and the other chains; report agreement; merge.

    Args:
        human_rows: stepwise rows labelled by people (e.g. ``read_stepwise_jsonl(...)``).
        chains: chains to label with the grader: ``(question, steps)`` pairs or rows
            (``prompt``/``completions``); chains that a human labelled are not graded twice.
        grader: the :class:`~prm_plugins.labeling.grader.LLMStepGrader`.

    Returns:
        The :class:`HybridResult`: ``rows`` to write with
        :func:`~prm_plugins.labeling.stepwise.write_stepwise_jsonl`, the ``agreement`` report.

    Raises:
        InvalidInputError: for an invalid human row or chain (before any model call).

    Examples:
        >>> grader = LLMStepGrader(chat_model)  # doctest: +SKIP
        >>> human = read_stepwise_jsonl("human.jsonl")  # doctest: +SKIP
        >>> result = build_hybrid_dataset(human, chains, grader)  # doctest: +SKIP
        >>> print(result.agreement.summary())  # doctest: +SKIP
        >>> write_stepwise_jsonl(result.rows, "hybrid.jsonl")  # doctest: +SKIP
    """
    human, todo = _prepare(human_rows, chains)
    graded = grader.grade_batch([*human, *todo])
    return _finish(grader, human, graded)


async def abuild_hybrid_dataset(
    human_rows: Iterable[Mapping[str, Any]],
    chains: Iterable[ChainInput],
    grader: LLMStepGrader,
) -> HybridResult:
    """Async :func:`build_hybrid_dataset` (the grader's ``agrade_batch``)."""
    human, todo = _prepare(human_rows, chains)
    graded = await grader.agrade_batch([*human, *todo])
    return _finish(grader, human, graded)
