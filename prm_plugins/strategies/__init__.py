"""Strategies over a PRM: verify, best-of-N, voting, self-critique and step-level search.

Framework-free. Every strategy works over two small protocols: a scorer
(:class:`prm_plugins.StepScorer`) and a generator (:mod:`prm_plugins.generators`). Each has
a sync and an async form, returns a result dataclass with ``to_dict()``, and keeps its
state per call, so one strategy object can serve many questions at once. Generator calls
are retried on transient errors (:class:`RetryPolicy`), each attempt within a deadline
(:data:`DEFAULT_GENERATOR_TIMEOUT`, 120 s, by default), and a failed candidate (its call
failed or hung, or the scorer raised on it or answered NaN or a value outside [0, 1]) is
reported, not fatal, unless every candidate fails (:class:`AllCandidatesFailedError`).

==============================  =============================================================
entry point                     what it does
==============================  =============================================================
:func:`verify`                  score one solution; pass/fail, flagged step, feedback text
:func:`best_of_n`, `BestOfN`    sample N, keep the best chain score (early stop optional)
:func:`weighted_best_of_n`      final answer with the largest summed chain score
:func:`majority_vote`           baseline without a PRM: the most frequent final answer
:func:`adaptive_best_of_n`      weighted vote in rounds; stops once the answer is decided
:class:`SelfCritique`           verify, then redo from the flagged step, for some rounds
:class:`StepBeamSearch`         beam search over steps with the PRM as value function
:class:`DVTS`                   diverse verifier tree search (independent greedy subtrees)
:class:`ParticleFilter`         particle filtering: resample partial chains by PRM weight
==============================  =============================================================

Each strategy's options live in one frozen dataclass (:class:`BestOfNOptions`,
:class:`AdaptiveBestOfNOptions`, :class:`SelfCritiqueOptions`, :class:`SearchOptions`) that
validates them on its own, with no generator and no scorer; adapters hold one and build the
strategy with ``BestOfN.from_options(generator, prm, options)``.

Examples:
    >>> from prm_plugins import load_prm  # doctest: +SKIP
    >>> from prm_plugins.strategies import best_of_n, verify
    >>> prm = load_prm()  # doctest: +SKIP
    >>> verify("2 + 3 * 4 = ?", ["3 * 4 = 12", "2 + 12 = 14"], prm).passed  # doctest: +SKIP
    True
    >>> best_of_n("2 + 3 * 4 = ?", my_generator, prm, n=8).text  # doctest: +SKIP
    '3 * 4 = 12\\n2 + 12 = 14\\nThe answer is 14.'
"""

from __future__ import annotations

from prm_plugins.budget import Budget, BudgetSpent
from prm_plugins.errors import (
    AllCandidatesFailedError,
    BudgetExhaustedError,
    EmptyGenerationsError,
    GeneratorTimeoutError,
    TransientGeneratorError,
)
from prm_plugins.plans import DEFAULT_GENERATOR_TIMEOUT, TRANSIENT_ERRORS, RetryPolicy
from prm_plugins.strategies.adaptive import (
    AdaptiveBestOfN,
    AdaptiveBestOfNResult,
    AdaptiveRound,
    aadaptive_best_of_n,
    adaptive_best_of_n,
)
from prm_plugins.strategies.best_of_n import (
    BestOfN,
    BestOfNResult,
    Candidate,
    VoteResult,
    abest_of_n,
    amajority_vote,
    aweighted_best_of_n,
    best_of_n,
    extract_a_colon,
    extract_answer_is,
    extract_boxed,
    extract_final_answer,
    extract_gsm8k,
    majority_vote,
    weighted_best_of_n,
)
from prm_plugins.strategies.critique import (
    CritiqueResult,
    CritiqueRound,
    SelfCritique,
    aself_critique,
    build_revision_prompt,
    self_critique,
)
from prm_plugins.strategies.options import (
    AdaptiveBestOfNOptions,
    BestOfNOptions,
    SearchOptions,
    SelfCritiqueOptions,
)
from prm_plugins.strategies.particles import (
    ParticleFilter,
    ParticleFilterOptions,
    ParticleFilterResult,
    aparticle_filter,
    particle_filter,
)
from prm_plugins.strategies.search import (
    DVTS,
    SearchChain,
    SearchResult,
    StepBeamSearch,
    build_next_step_prompt,
    has_final_answer,
)
from prm_plugins.strategies.verify import Verdict, averify, verify

__all__ = [
    "DEFAULT_GENERATOR_TIMEOUT",
    "DVTS",
    "TRANSIENT_ERRORS",
    "AdaptiveBestOfN",
    "AdaptiveBestOfNOptions",
    "AdaptiveBestOfNResult",
    "AdaptiveRound",
    "AllCandidatesFailedError",
    "BestOfN",
    "BestOfNOptions",
    "BestOfNResult",
    "Budget",
    "BudgetExhaustedError",
    "BudgetSpent",
    "Candidate",
    "CritiqueResult",
    "CritiqueRound",
    "EmptyGenerationsError",
    "GeneratorTimeoutError",
    "ParticleFilter",
    "ParticleFilterOptions",
    "ParticleFilterResult",
    "RetryPolicy",
    "SearchChain",
    "SearchOptions",
    "SearchResult",
    "SelfCritique",
    "SelfCritiqueOptions",
    "StepBeamSearch",
    "TransientGeneratorError",
    "Verdict",
    "VoteResult",
    "aadaptive_best_of_n",
    "abest_of_n",
    "adaptive_best_of_n",
    "amajority_vote",
    "aparticle_filter",
    "aself_critique",
    "averify",
    "aweighted_best_of_n",
    "best_of_n",
    "build_next_step_prompt",
    "build_revision_prompt",
    "extract_a_colon",
    "extract_answer_is",
    "extract_boxed",
    "extract_final_answer",
    "extract_gsm8k",
    "has_final_answer",
    "majority_vote",
    "particle_filter",
    "self_critique",
    "verify",
    "weighted_best_of_n",
]
