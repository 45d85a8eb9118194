"""Step labelling pipelines that write TRL stepwise-supervision JSONL.

The GSM8K automatic-verifier pipeline: parse reference solutions and check every calculator
annotation exactly (:mod:`~prm_plugins.labeling.gsm8k`), perturb them with errors that imitate
real model reasoning errors (:mod:`~prm_plugins.labeling.perturb`), and write stepwise rows
(:mod:`~prm_plugins.labeling.stepwise`, :mod:`~prm_plugins.labeling.verifier`). The label
convention and the perturbations are described in ``LABELS.md`` next to this file.

Three more pipelines write the same rows: an LLM grader that labels each step with any
LangChain chat model (:mod:`~prm_plugins.labeling.grader`), Monte Carlo rollouts in the style
of Math-Shepherd (:mod:`~prm_plugins.labeling.rollouts`), and a hybrid of human labels and the
grader with their agreement reported (:mod:`~prm_plugins.labeling.hybrid`). Their names are
imported on first use, so ``import prm_plugins.labeling`` stays light (no LangChain, no
tenacity).

Examples:
    >>> from prm_plugins.labeling import build_verifier_dataset
    >>> rows = [{"question": "Tom has 3 bags of 4 apples and eats 2. How many are left?",
    ...          "answer": "3 * 4 = <<3*4=12>>12 apples\\n12 - 2 = <<12-2=10>>10 left\\n#### 10"}]
    >>> data = build_verifier_dataset(rows, seed=0)
    >>> data[0]["completions"]
    ['3 * 4 = 12 apples', '12 - 2 = 10 left', 'The answer is 10.']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prm_plugins.arithmetic import evaluate_expression, format_number, parse_expression
from prm_plugins.errors import GraderAnswerError
from prm_plugins.labeling.gsm8k import (
    Calculation,
    GSM8KSolution,
    NumberSpan,
    Step,
    parse_gsm8k_answer,
    parse_gsm8k_row,
    read_gsm8k_jsonl,
)
from prm_plugins.labeling.perturb import (
    PERTURBATION_KINDS,
    PERTURBATIONS,
    Perturbation,
    arithmetic_slip,
    dropped_step,
    duplicated_step,
    perturb,
    unit_slip,
    wrong_operation,
    wrong_quantity,
)
from prm_plugins.labeling.stepwise import (
    StepwiseFormatError,
    iter_stepwise_jsonl,
    read_stepwise_jsonl,
    validate_stepwise_row,
    write_stepwise_jsonl,
)
from prm_plugins.labeling.verifier import LabelingStats, build_verifier_dataset, dataset_stats
from prm_plugins.lazy import lazy_exports

if TYPE_CHECKING:
    from prm_plugins.labeling.grader import (
        GRADER_SYSTEM_PROMPT,
        GradedChain,
        LLMStepGrader,
        build_grading_prompt,
        build_regrade_prompt,
        graded_rows,
        parse_step_verdicts,
        propagate_first_error,
    )
    from prm_plugins.labeling.hybrid import (
        AgreementReport,
        HybridResult,
        abuild_hybrid_dataset,
        build_hybrid_dataset,
        cohen_kappa,
        label_agreement,
        merge_labels,
    )
    from prm_plugins.labeling.rollouts import (
        MonteCarloLabeler,
        RolloutLabels,
        build_rollout_prompt,
        default_answer_checker,
        rollout_rows,
    )

#: Public names of the grader, rollout and hybrid pipelines, imported on first use.
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(
        ["GRADER_SYSTEM_PROMPT", "GradedChain", "LLMStepGrader", "build_grading_prompt",
         "build_regrade_prompt", "graded_rows", "parse_step_verdicts", "propagate_first_error"],
        "prm_plugins.labeling.grader",
    ),
    **dict.fromkeys(
        ["MonteCarloLabeler", "RolloutLabels", "build_rollout_prompt", "default_answer_checker",
         "rollout_rows"],
        "prm_plugins.labeling.rollouts",
    ),
    **dict.fromkeys(
        ["AgreementReport", "HybridResult", "abuild_hybrid_dataset", "build_hybrid_dataset",
         "cohen_kappa", "label_agreement", "merge_labels"],
        "prm_plugins.labeling.hybrid",
    ),
})

__all__ = [
    "GRADER_SYSTEM_PROMPT",
    "AgreementReport",
    "GradedChain",
    "GraderAnswerError",
    "HybridResult",
    "LLMStepGrader",
    "MonteCarloLabeler",
    "RolloutLabels",
    "abuild_hybrid_dataset",
    "build_grading_prompt",
    "build_hybrid_dataset",
    "build_regrade_prompt",
    "build_rollout_prompt",
    "cohen_kappa",
    "default_answer_checker",
    "graded_rows",
    "label_agreement",
    "merge_labels",
    "parse_step_verdicts",
    "propagate_first_error",
    "rollout_rows",
    "PERTURBATIONS",
    "PERTURBATION_KINDS",
    "Calculation",
    "GSM8KSolution",
    "LabelingStats",
    "NumberSpan",
    "Perturbation",
    "Step",
    "StepwiseFormatError",
    "arithmetic_slip",
    "build_verifier_dataset",
    "dataset_stats",
    "dropped_step",
    "duplicated_step",
    "evaluate_expression",
    "format_number",
    "iter_stepwise_jsonl",
    "parse_expression",
    "parse_gsm8k_answer",
    "parse_gsm8k_row",
    "perturb",
    "read_gsm8k_jsonl",
    "read_stepwise_jsonl",
    "unit_slip",
    "validate_stepwise_row",
    "write_stepwise_jsonl",
    "wrong_operation",
    "wrong_quantity",
]
