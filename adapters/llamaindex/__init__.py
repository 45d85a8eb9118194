"""LlamaIndex adapters: PRM strategies as drop-in LlamaIndex components (thin over core).

Needs the ``llamaindex`` extra (``pip install "prm-plugins[llamaindex]"``); importing this
package without ``llama-index-core`` raises :class:`~prm_plugins.errors.MissingExtraError`.

===============================  ==================================================================
component                        what it is
===============================  ==================================================================
:class:`PRMBestOfNLLM`           an ``LLM``: every call samples N answers from another LLM and
                                 returns the best (scores in ``additional_kwargs["prm"]``)
:class:`PRMAdaptiveBestOfNLLM`   the same, sampling in rounds until the weighted vote is decided
:class:`PRMStepEvaluator`        a ``BaseEvaluator`` (``RetryQueryEngine``, ``BatchEvalRunner``):
                                 passing, score, feedback naming the step to fix
:class:`PRMSelfCritiqueWorkflow` a ``Workflow``: generate, verify, revise from the flagged step
:class:`PRMVerifiedAgentRunner`  runs a ``FunctionAgent``/``ReActAgent``/``AgentWorkflow``,
                                 verifies its answer and feeds back in the same ``Context``
:class:`LlamaIndexGenerator`     any LlamaIndex ``LLM`` as a core generator, for every strategy
                                 in :mod:`prm_plugins.strategies`
:class:`LLMJudgePRM`             any LlamaIndex ``LLM`` as a PRM (an LLM judge of every step)
events                           :class:`PRMStepsScoredEvent`, :class:`PRMCandidateSelectedEvent`,
                                 :class:`PRMVerificationFailedEvent` (instrumentation dispatcher)
===============================  ==================================================================

Examples:
    >>> from prm_plugins import load_prm  # doctest: +SKIP
    >>> from prm_plugins.adapters.llamaindex import PRMBestOfNLLM, PRMStepEvaluator
    >>> prm = load_prm()  # doctest: +SKIP
    >>> llm = PRMBestOfNLLM(my_llm, prm, n=4)  # doctest: +SKIP
    >>> llm.complete("What is 17 * 3?").additional_kwargs["prm"]["score"]  # doctest: +SKIP
    0.93
"""

from __future__ import annotations

from prm_plugins.errors import missing_extra

try:
    import llama_index.core  # noqa: F401  (every module of this package needs it)
except ImportError as exc:
    raise missing_extra("llama_index.core", "llamaindex") from exc

from prm_plugins.adapters.llamaindex.adaptive import PRMAdaptiveBestOfNLLM
from prm_plugins.adapters.llamaindex.agent import (
    DEFAULT_FEEDBACK_TEMPLATE,
    AgentRound,
    PRMVerifiedAgentRunner,
    VerifiedAgentResult,
)
from prm_plugins.adapters.llamaindex.evaluator import (
    PRMEvaluationResult,
    PRMStepEvaluator,
    original_question,
)
from prm_plugins.adapters.llamaindex.events import (
    PRMCandidateSelectedEvent,
    PRMStepsScoredEvent,
    PRMVerificationFailedEvent,
)
from prm_plugins.adapters.llamaindex.generator import LlamaIndexGenerator
from prm_plugins.adapters.llamaindex.judge import LLMJudgePRM
from prm_plugins.adapters.llamaindex.llm import (
    PRM_KWARGS_KEY,
    AnswersTooLongError,
    PRMBestOfNLLM,
)
from prm_plugins.adapters.llamaindex.workflow import (
    CritiqueRoundEvent,
    PRMSelfCritiqueWorkflow,
    ReviseEvent,
    SelfCritiqueStartEvent,
    VerifyEvent,
)

__all__ = [
    "DEFAULT_FEEDBACK_TEMPLATE",
    "PRM_KWARGS_KEY",
    "AnswersTooLongError",
    "AgentRound",
    "CritiqueRoundEvent",
    "LLMJudgePRM",
    "LlamaIndexGenerator",
    "PRMAdaptiveBestOfNLLM",
    "PRMBestOfNLLM",
    "PRMCandidateSelectedEvent",
    "PRMEvaluationResult",
    "PRMSelfCritiqueWorkflow",
    "PRMStepEvaluator",
    "PRMStepsScoredEvent",
    "PRMVerificationFailedEvent",
    "PRMVerifiedAgentRunner",
    "ReviseEvent",
    "SelfCritiqueStartEvent",
    "VerifiedAgentResult",
    "VerifyEvent",
    "original_question",
]
