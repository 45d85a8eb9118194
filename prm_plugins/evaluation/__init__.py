"""Evaluation of PRMs: step-level (ProcessBench, PRMBench, stepwise) and best-of-N.

- :func:`evaluate_steps`: step AUROC, first-error accuracy, ProcessBench F1 and PRMBench's
  PRMScore on labelled chains (``prm eval steps``).
- :func:`evaluate_best_of_n`: accuracy of best-of-N selection against N for the PRM's chain
  aggregations, majority vote, random and oracle picks (``prm eval bon``).
- :mod:`.metrics`: rank AUROC with ties, F1 from counts, ProcessBench F1.
- final-answer extraction and normalisation live in :mod:`prm_plugins.answers` (one
  extractor for strategies, evaluation and rewards); re-exported here.

Examples:
    >>> from prm_plugins import load_prm  # doctest: +SKIP
    >>> from prm_plugins.evaluation import evaluate_steps
    >>> report = evaluate_steps(load_prm(), "data.jsonl", "stepwise")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prm_plugins.lazy import lazy_exports

if TYPE_CHECKING:
    from prm_plugins.answers import answers_match, extract_answer, normalize_answer
    from prm_plugins.evaluation.bon import best_of_n_curves, evaluate_best_of_n
    from prm_plugins.evaluation.metrics import auroc, processbench_scores
    from prm_plugins.evaluation.steps import evaluate_steps, format_steps_report

__all__ = [
    "answers_match",
    "auroc",
    "best_of_n_curves",
    "evaluate_best_of_n",
    "evaluate_steps",
    "extract_answer",
    "format_steps_report",
    "normalize_answer",
    "processbench_scores",
]

#: Loaded on first use, so ``prm --help`` (which imports the ``eval`` CLI) stays instant.
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["answers_match", "extract_answer", "normalize_answer"],
                    "prm_plugins.answers"),
    **dict.fromkeys(["best_of_n_curves", "evaluate_best_of_n"], "prm_plugins.evaluation.bon"),
    **dict.fromkeys(["auroc", "processbench_scores"], "prm_plugins.evaluation.metrics"),
    **dict.fromkeys(["evaluate_steps", "format_steps_report"], "prm_plugins.evaluation.steps"),
})
