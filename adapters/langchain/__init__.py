"""LangChain adapters: every prm-plugins strategy as a drop-in LangChain component.

Thin by design: scoring, selection, retries and feedback text come from
:mod:`prm_plugins.strategies`; these classes only convert LangChain inputs, outputs,
callbacks and events to and from core calls. Install with ``pip install
"prm-plugins[langchain]"``.

======================================  ========================================================
component                               what it is
======================================  ========================================================
:class:`PRMStepVerifier`                Runnable: (question, answer) -> :class:`Verdict`
:class:`PRMBestOfN`                     drop-in model: sample N from a runnable, keep the best
:class:`PRMSelfCritique`                drop-in model: verify, then redo from the flagged step
:class:`PRMBeamSearch`                  drop-in model: step-level beam search / DVTS
:class:`PRMParticleFilter`              drop-in model: particle filtering over steps
:class:`PRMAdaptiveBestOfN`             drop-in model: best-of-N that stops once the vote is decided
:class:`PRMOutputParser`                output parser; ``raise_on_fail`` for retries/fallbacks
:class:`PRMVerifyStepsTool`             ``BaseTool`` an agent calls to check its own steps
:class:`PRMCallbackHandler`             callback handler that scores finished LLM outputs
:class:`PRMVerificationMiddleware`      ``create_agent`` middleware: verify, feed back, retry
:class:`PRMBestOfNMiddleware`           ``create_agent`` middleware: best-of-N model calls
:class:`RunnableGenerator`              a runnable as a core generator (for core strategies)
:class:`LLMJudgePRM`                    any chat model as a PRM (an LLM judge of every step)
======================================  ========================================================

The "drop-in model" components return what the model they wrap returns (an ``AIMessage``
with the PRM's report in ``response_metadata["prm"]``, or the text for a string
generator), so they replace ``llm`` in ``prompt | llm | StrOutputParser()``;
``return_result=True`` gives the core result object instead. The Runnables dispatch two
custom events, visible in ``astream_events(version="v2")`` and to callback handlers'
``on_custom_event``: ``prm.step_scored`` (every chain the PRM scores) and
``prm.candidate_selected`` (the chain a strategy chose).

Examples:
    >>> from langchain_core.output_parsers import StrOutputParser  # doctest: +SKIP
    >>> from langchain_core.prompts import ChatPromptTemplate  # doctest: +SKIP
    >>> from prm_plugins import load_prm  # doctest: +SKIP
    >>> from prm_plugins.adapters.langchain import PRMBestOfN  # doctest: +SKIP
    >>> prompt = ChatPromptTemplate.from_template("Solve: {question}")  # doctest: +SKIP
    >>> chain = prompt | PRMBestOfN(generator=llm, prm=load_prm(), n=4) | StrOutputParser()
    >>> chain.invoke({"question": "What is 2 + 3 * 4?"})  # doctest: +SKIP
    '3 * 4 = 12\\n2 + 12 = 14\\nThe answer is 14.'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prm_plugins.errors import VerificationFailedError, missing_extra
from prm_plugins.lazy import lazy_exports

try:
    import langchain_core  # noqa: F401  (every module of this package needs it)
except ImportError as exc:
    raise missing_extra("langchain_core", "langchain") from exc

from prm_plugins.adapters.langchain.adaptive import PRMAdaptiveBestOfN
from prm_plugins.adapters.langchain.callbacks import PRMCallbackHandler, ScoredGeneration
from prm_plugins.adapters.langchain.events import (
    CANDIDATE_SELECTED_EVENT,
    STEP_SCORED_EVENT,
)
from prm_plugins.adapters.langchain.generators import (
    GeneratedText,
    RunnableGenerator,
    build_next_step_prompt,
)
from prm_plugins.adapters.langchain.judge import LLMJudgePRM
from prm_plugins.adapters.langchain.parser import PRMOutputParser
from prm_plugins.adapters.langchain.particles import PRMParticleFilter
from prm_plugins.adapters.langchain.runnables import (
    PRMBeamSearch,
    PRMBestOfN,
    PRMSelfCritique,
    PRMStepVerifier,
)
from prm_plugins.adapters.langchain.tool import PRMVerifyStepsTool, VerifyStepsInput

if TYPE_CHECKING:
    from prm_plugins.adapters.langchain.middleware import (
        PRMBestOfNMiddleware,
        PRMVerificationMiddleware,
    )

__all__ = [
    "CANDIDATE_SELECTED_EVENT",
    "STEP_SCORED_EVENT",
    "GeneratedText",
    "LLMJudgePRM",
    "PRMAdaptiveBestOfN",
    "PRMBeamSearch",
    "PRMBestOfN",
    "PRMBestOfNMiddleware",
    "PRMCallbackHandler",
    "PRMOutputParser",
    "PRMParticleFilter",
    "PRMSelfCritique",
    "PRMStepVerifier",
    "PRMVerificationMiddleware",
    "PRMVerifyStepsTool",
    "RunnableGenerator",
    "ScoredGeneration",
    "VerificationFailedError",
    "VerifyStepsInput",
    "build_next_step_prompt",
]

#: The agent middleware needs the ``langchain`` package (not only langchain-core), so it is
#: imported on first use.
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(
    ["PRMBestOfNMiddleware", "PRMVerificationMiddleware"],
    "prm_plugins.adapters.langchain.middleware"))
