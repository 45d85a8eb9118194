"""Particle filtering over steps with a PRM as the likelihood: :class:`ParticleFilter`.

The method of Puri et al., "A Probabilistic Inference Approach to Inference-Time Scaling of
LLMs using Particle-Based Monte Carlo Methods" (2025, arXiv:2502.01618; "Rollout Roulette"
at NeurIPS 2025), whose reference implementation is its_hub's ``ParticleFiltering``
(Red-Hat-AI-Innovation-Team/its_hub, ``its_hub/algorithms/particle_gibbs.py``). A solution is
the hidden state of a state-space model: the generator is the transition (it proposes the
next step), the PRM the emission (the probability that the partial chain is "accepted").
Instead of keeping the top chains as beam search does, it keeps ``n`` *particles* and
**resamples** them in proportion to their PRM weight, so a chain the PRM under-rates early is
not pruned for good: it survives with a probability that matches its weight.

One iteration:

1. every live particle proposes one next step
   (``generator.propose_next_steps(question, prefix, 1)``; the calls of an iteration run
   concurrently);
2. every extended partial chain is scored in one ``score_batch`` call (identical chains
   once); its **likelihood** is the PRM's score of its newest step (``likelihood="last"``,
   the default: the paper takes the PRM's reward of the partial answer as the emission
   likelihood, and a PRM scores a step in the context of all the steps before it), the
   product of its step scores (``"product"``), or the PRM's score of the whole partial
   chain sent as one step (``"model"``, what reward_hub calls model aggregation and its_hub
   users pair with particle filtering);
3. likelihoods become log-weights (``weighting``: ``"logit"``, its_hub's ``log(p/(1-p))``,
   the default; ``"log"``, the likelihood itself as the weight; ``"score"``, the raw score
   as Algorithm 1 of the paper writes ``softmax(w)``) and then probabilities by a softmax
   with ``temperature`` (lower: greedier; higher: more exploration);
4. ``n`` particles are drawn from them (``resampling="multinomial"`` as in its_hub, or
   ``"systematic"``, which has lower variance), from a ``random.Random(seed)``.

**Finished particles** are handled as in its_hub: a particle whose newest step passes
``is_complete`` (default :func:`~prm_plugins.strategies.has_final_answer`) stops growing but
stays in the population with its last weight, so it competes in every later resampling (it
can be copied, or lose its place to live particles); a copy of a finished particle is
finished too. A particle whose generator proposes an empty step (nothing left to add) is
finished the same way, without a final answer. The filter stops when every particle has
finished, after ``max_steps`` iterations, or when the :class:`~prm_plugins.budget.Budget`
is spent (see below); the last population is not resampled (that would only add noise), and its
softmax weights choose the answer: the highest weight (``select="best"``) or the final
answer with the largest summed weight (``select="vote"``), among the finished particles
that state an answer when there are any.

**Failures.** A particle whose generator call fails after the retries, returns something
that is not a list of str, or whose chain the scorer cannot score (it raises, or answers
NaN or a value outside [0, 1]) is dropped and listed in :attr:`ParticleFilterResult.errors`;
resampling refills the population from the others. Only when every particle of the first
iteration fails does the filter raise (:class:`~prm_plugins.errors.AllCandidatesFailedError`);
when every live particle of a later iteration fails, it returns the population it had.

**Budget.** With ``budget=`` (:class:`~prm_plugins.budget.Budget`), each iteration extends
only the live particles whose calls fit (the others keep their state) and scores only the
chains that fit (a particle whose new step cannot be scored keeps its old state); once a
limit is reached the filter stops after scoring that iteration, without resampling, and
returns its choice from that population. The token limit is checked before each iteration,
so it can be overshot by one iteration's steps (:attr:`BudgetSpent.token_overshoot`).
``result.budget`` reports what was spent; when not even a first step could be scored it
raises :class:`~prm_plugins.errors.BudgetExhaustedError`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from prm_plugins.answers import extract_answer
from prm_plugins.budget import Budget, BudgetMeter
from prm_plugins.errors import AllCandidatesFailedError, EmptyGenerationsError, InvalidInputError
from prm_plugins.generators import StepGenerator
from prm_plugins.plans import (
    AsyncRunner,
    CallOutcome,
    GenerateCalls,
    Plan,
    RetryPolicy,
    ScoreChains,
    SyncRunner,
    describe_error,
    summarize_failures,
)
from prm_plugins.strategies.particle_results import (
    Particle,
    ParticleFilterResult,
    ParticleSelect,
    choose_particle,
)
from prm_plugins.strategies.resampling import (
    RESAMPLERS,
    WEIGHTINGS,
    Resampler,
    Weighting,
    effective_sample_size,
    log_weights,
    normalize,
    resample,
)
from prm_plugins.strategies.search import has_final_answer, scored_tokens
from prm_plugins.strategies.verify import chain_score
from prm_plugins.types import StepScorer, StepScores
from prm_plugins.validation import (
    check_count,
    check_generator,
    check_max_concurrency,
    check_question,
    check_scorer,
)

__all__ = [
    "LIKELIHOODS",
    "Likelihood",
    "Particle",
    "ParticleFilter",
    "ParticleFilterOptions",
    "ParticleFilterResult",
    "ParticleSelect",
    "aparticle_filter",
    "particle_filter",
]

logger = logging.getLogger(__name__)

#: How a particle's likelihood comes from the PRM's scores of its partial chain.
Likelihood = Literal["last", "product", "model"]
LIKELIHOODS: tuple[str, ...] = ("last", "product", "model")
_AGGREGATE = {"last": "last", "product": "prod", "model": "last"}


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # normalise a field of a frozen dataclass


def _one_of(value: object, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInputError(
            f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}"
        )


@dataclass(frozen=True)
class ParticleFilterOptions:
    """Options of :class:`ParticleFilter` (see there for each one), validated once.

    ``temperature`` becomes a float, ``retry=None`` the default :class:`RetryPolicy`;
    ``is_complete=None`` stays ``None`` (the filter then uses ``has_final_answer``).

    Examples:
        >>> ParticleFilterOptions(n=8, resampling="systematic", seed=3).temperature
        1.0
        >>> try:
        ...     ParticleFilterOptions(temperature=0)
        ... except InvalidInputError as exc:
        ...     print(exc)
        temperature must be a finite number > 0, got 0
    """

    n: int = 8
    max_steps: int = 10
    temperature: float = 1.0
    likelihood: Likelihood = "last"
    weighting: Weighting = "logit"
    resampling: Resampler = "multinomial"
    select: ParticleSelect = "best"
    seed: int | None = None
    is_complete: Callable[[str], bool] | None = None
    max_concurrency: int = 4
    retry: RetryPolicy | None = None
    budget: Budget | None = None

    @property
    def retry_policy(self) -> RetryPolicy:
        """:attr:`retry`, never ``None`` (it is set to ``RetryPolicy()`` when not given)."""
        return self.retry or RetryPolicy()

    def __post_init__(self) -> None:
        check_count(self.n, "n", hint=" (particles)")
        check_count(self.max_steps, "max_steps")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            raise InvalidInputError(f"temperature must be a finite number > 0, got {t!r}")
        _set(self, "temperature", float(t))
        _one_of(self.likelihood, "likelihood", LIKELIHOODS)
        _one_of(self.weighting, "weighting", WEIGHTINGS)
        _one_of(self.resampling, "resampling", RESAMPLERS)
        _one_of(self.select, "select", ("best", "vote"))
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, int)):
            raise InvalidInputError(f"seed must be an int or None, got {self.seed!r}")
        if self.is_complete is not None and not callable(self.is_complete):
            raise InvalidInputError(
                f"is_complete must be a callable step -> bool, got {self.is_complete!r}"
            )
        check_max_concurrency(self.max_concurrency)
        _set(self, "retry", RetryPolicy.check(self.retry) or RetryPolicy())
        Budget.check(self.budget)


@dataclass(frozen=True)
class _State:
    """One particle during the run (immutable: resampled copies share nothing mutable)."""

    steps: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    likelihood: float = 0.0
    complete: bool = False
    finished: bool = False
    ancestry: tuple[int, ...] = ()


@dataclass
class _Run:
    """Per-call counters of one run."""

    question: str
    errors: list[str] = field(default_factory=list)
    causes: list[Exception] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # the errors without their position
    history: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    attempts: int = 0
    chains: int = 0
    tokens: int = 0
    failed: int = 0
    unscored: int = 0
    iterations: int = 0

    def fail(self, iteration: int, slot: int, what: str, exc: Exception) -> None:
        self.failed += 1
        self.causes.append(exc)
        self.kinds.append(f"{what}{describe_error(exc)}")
        self.errors.append(f"iteration {iteration}, particle {slot}: {self.kinds[-1]}")


class ParticleFilter:
    """Particle filtering over steps, with the PRM's score as the likelihood.

    See the module docs for the algorithm and the choices made (from the paper and its_hub).
    The generator should *sample* (a temperature above 0): the filter's exploration comes
    from the different steps that copies of one particle propose.

    Args:
        generator: has ``propose_next_steps(question, prefix, n)`` (or the async
            ``apropose_next_steps``); see :mod:`prm_plugins.generators`. The filter asks
            for one step per live particle per iteration.
        prm: a :class:`~prm_plugins.StepScorer`.
        n: particles.
        max_steps: most iterations (steps in a chain).
        temperature: softmax temperature over the log-weights; ``> 0``.
        likelihood: ``"last"`` (default: the PRM's score of the newest step of the partial
            chain), ``"product"`` (the product of its step scores) or ``"model"`` (the
            chain's steps joined by newlines and scored as one step; ``step_scores`` then
            holds that one score).
        weighting: ``"logit"`` (default, as its_hub: log-weight ``log(p / (1 - p))``),
            ``"log"`` (``log p``: weight proportional to the likelihood) or ``"score"``
            (``p`` itself: a gentle softmax, as the paper's Algorithm 1 writes it).
        resampling: ``"multinomial"`` (as its_hub) or ``"systematic"``.
        select: ``"best"`` (the highest weight) or ``"vote"`` (the final answer with the
            largest summed weight); among finished particles with a final answer when
            there are any.
        seed: seeds the ``random.Random`` that draws ancestors; the same seed (with a
            deterministic generator and scorer) gives the same result. ``None``: fresh
            entropy on every run.
        is_complete: ``step -> bool``: whether a step ends the solution; default
            :func:`~prm_plugins.strategies.has_final_answer`.
        max_concurrency: most generator calls in flight at once.
        retry: retry policy for generator calls.
        budget: a :class:`~prm_plugins.budget.Budget` for each run (module docs); ``None``
            for no limit (``result.budget`` is then ``None``).

    Raises:
        InvalidInputError: for a bad option (the message names it).

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> pf = ParticleFilter(my_generator, load_prm(), n=8, seed=0)  # doctest: +SKIP
        >>> r = pf.run("A pen costs $3. How much do 4 pens cost?")  # doctest: +SKIP
        >>> r.answer, r.best.weight, r.iterations  # doctest: +SKIP
        ('12', 0.31, 3)
    """

    def __init__(
        self,
        generator: StepGenerator,
        prm: StepScorer,
        *,
        n: int = 8,
        max_steps: int = 10,
        temperature: float = 1.0,
        likelihood: Likelihood = "last",
        weighting: Weighting = "logit",
        resampling: Resampler = "multinomial",
        select: ParticleSelect = "best",
        seed: int | None = None,
        is_complete: Callable[[str], bool] | None = None,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
    ) -> None:
        options = ParticleFilterOptions(
            n=n, max_steps=max_steps, temperature=temperature, likelihood=likelihood,
            weighting=weighting, resampling=resampling, select=select, seed=seed,
            is_complete=is_complete, max_concurrency=max_concurrency, retry=retry,
            budget=budget)
        check_scorer(prm)
        self.generator = generator
        self.prm = prm
        self.options = options
        self.is_complete: Callable[[str], bool] = options.is_complete or has_final_answer

    @classmethod
    def from_options(
        cls, generator: StepGenerator, prm: StepScorer, options: ParticleFilterOptions
    ) -> ParticleFilter:
        """A filter with already validated options (what adapters hold)."""
        o = options
        return cls(generator, prm, n=o.n, max_steps=o.max_steps, temperature=o.temperature,
                   likelihood=o.likelihood, weighting=o.weighting, resampling=o.resampling,
                   select=o.select, seed=o.seed, is_complete=o.is_complete,
                   max_concurrency=o.max_concurrency, retry=o.retry, budget=o.budget)

    def run(self, question: str) -> ParticleFilterResult:
        """Filter, blocking (the generator calls of one iteration run in threads)."""
        check_question(question)
        check_generator(self.generator, ["propose_next_steps"], use_async=False)
        meter = BudgetMeter(self.options.budget)
        runner = SyncRunner(self.generator, self.prm, retry=self.options.retry_policy,
                            max_concurrency=self.options.max_concurrency, meter=meter)
        return runner.run(self._plan(question, meter))

    __call__ = run

    async def arun(self, question: str) -> ParticleFilterResult:
        """Async :meth:`run`; the same seed gives the same result as :meth:`run`."""
        check_question(question)
        check_generator(self.generator, ["propose_next_steps"], use_async=True)
        meter = BudgetMeter(self.options.budget)
        runner = AsyncRunner(self.generator, self.prm, retry=self.options.retry_policy,
                             max_concurrency=self.options.max_concurrency, meter=meter)
        return await runner.run(self._plan(question, meter))

    # -- the plan (shared by run and arun) ------------------------------------------------
    def _plan(self, question: str, meter: BudgetMeter) -> Plan[ParticleFilterResult]:
        o = self.options
        run = _Run(question)
        rng = random.Random(o.seed)
        population = [_State() for _ in range(o.n)]
        final: list[_State] | None = None
        while run.iterations < o.max_steps:
            live = [i for i, p in enumerate(population) if not p.finished]
            if not live:
                break
            fit = meter.can_generate(len(live))  # the particles beyond it keep their state
            if not fit:
                if run.iterations == 0:
                    raise meter.refusal("particle filter: the first step was not proposed")
                break
            live = live[:fit]
            run.iterations += 1
            t = run.iterations
            outcomes = yield GenerateCalls(
                "propose_next_steps", [(question, list(population[i].steps), 1) for i in live])
            run.calls += len(live)
            run.attempts += sum(c.attempts for c in outcomes)
            dropped: set[int] = set()
            grown = self._grow(t, population, live, outcomes, run, dropped)
            scored = yield from self._score(t, grown, run, dropped, meter)
            survivors = [scored.get(i, p) for i, p in enumerate(population)
                         if i not in dropped and (i in scored or p.steps)]
            if not survivors:
                if t == 1:
                    raise self._nothing_scored(run, meter)
                logger.warning("particle filter: every live particle failed at iteration %d; "
                               "returning the population of iteration %d", t, t - 1)
                final = population
                break
            weights = normalize(log_weights([s.likelihood for s in survivors], o.weighting),
                                o.temperature)
            run.history.append(_record(t, survivors, weights))
            if (all(s.finished for s in survivors) or t == o.max_steps
                    or meter.exhausted() is not None):
                final = survivors
                break
            ancestors = resample(weights, o.n, rng, o.resampling)
            run.history[-1]["ancestors"] = ancestors
            population = [replace(survivors[j], ancestry=(*survivors[j].ancestry, j))
                          for j in ancestors]
        return self._result(final if final is not None else population, run, meter)

    def _grow(
        self, t: int, population: list[_State], live: list[int], outcomes: list[CallOutcome],
        run: _Run, dropped: set[int],
    ) -> dict[int, _State]:
        """Live particles with their new step (or finished when it is empty), by slot."""
        grown: dict[int, _State] = {}
        for slot, outcome in zip(live, outcomes, strict=True):
            value = outcome.value
            if outcome.error is not None:
                exc: Exception = outcome.error
            elif not isinstance(value, (list, tuple)) or not all(isinstance(v, str)
                                                                 for v in value):
                exc = InvalidInputError(
                    f"generator.propose_next_steps() must return a list of str; received "
                    f"{type(value).__name__} {str(value)[:80]!r}")
            else:
                step = value[0].strip() if value else ""
                parent = population[slot]
                if step:
                    grown[slot] = replace(parent, steps=(*parent.steps, step))
                    continue
                if parent.steps:  # nothing to add: the particle is finished as it is
                    grown[slot] = replace(parent, finished=True)
                    continue
                exc = EmptyGenerationsError(
                    "generator.propose_next_steps() proposed an empty first step")
            dropped.add(slot)
            run.fail(t, slot, "", exc)
        return grown

    def _score(
        self, t: int, grown: dict[int, _State], run: _Run, dropped: set[int],
        meter: BudgetMeter,
    ) -> Generator[ScoreChains, Any, dict[int, _State]]:
        """Score the grown chains (each distinct chain once); the scored particles by slot.

        Chains past the budget's PRM calls are not scored: their particles keep their old
        state (they are neither in the answer nor dropped).
        """
        out = {slot: s for slot, s in grown.items() if s.finished}
        chains: dict[tuple[str, ...], list[int]] = {}
        for slot, s in grown.items():
            if not s.finished:
                chains.setdefault(s.steps, []).append(slot)
        fit = meter.can_score(len(chains))
        run.unscored += sum(len(slots) for slots in list(chains.values())[fit:])
        chains = dict(list(chains.items())[:fit])
        if not chains:
            return out
        joined = self.options.likelihood == "model"  # the partial chain as one step
        results = yield ScoreChains([(run.question, ["\n".join(steps)] if joined else list(steps))
                                     for steps in chains])
        run.chains += len(chains)
        aggregate = _AGGREGATE[self.options.likelihood]
        for (steps, slots), r in zip(chains.items(), results, strict=True):
            if isinstance(r, StepScores):
                try:
                    likelihood = chain_score(r, aggregate)
                    complete = bool(self.is_complete(steps[-1]))
                except Exception as exc:  # noqa: BLE001 - fails this chain alone
                    r = exc
            if not isinstance(r, StepScores):
                for slot in slots:
                    dropped.add(slot)
                    run.fail(t, slot, "scoring: ", r)
                continue
            run.tokens += scored_tokens(self.prm, run.question, steps)
            for slot in slots:
                out[slot] = replace(grown[slot], scores=tuple(r.scores), likelihood=likelihood,
                                    complete=complete, finished=complete)
        return out

    def _nothing_scored(self, run: _Run, meter: BudgetMeter) -> AllCandidatesFailedError:
        if run.unscored:
            return meter.refusal(f"particle filter: no first step was scored ({run.unscored} "
                                 f"left unscored, {run.failed} failed)")
        if run.causes and all(isinstance(c, EmptyGenerationsError) for c in run.causes):
            return EmptyGenerationsError(
                "particle filter: generator.propose_next_steps() returned only empty steps "
                "for the first step. Check the generator's prompt, stop sequences and max "
                "tokens.", causes=run.causes)
        err = AllCandidatesFailedError(
            f"particle filter: every particle failed at the first step: "
            f"{summarize_failures(run.kinds)}. Transient generator errors were retried per "
            "the RetryPolicy; scoring failures are not retried. See .causes.",
            causes=run.causes)
        if run.causes:
            err.__cause__ = run.causes[-1]
        return err

    def _result(
        self, final: list[_State], run: _Run, meter: BudgetMeter
    ) -> ParticleFilterResult:
        o = self.options
        weights = normalize(log_weights([s.likelihood for s in final], o.weighting),
                            o.temperature)
        particles = [
            Particle(steps=list(s.steps), step_scores=list(s.scores), likelihood=s.likelihood,
                     weight=w, complete=s.complete, finished=s.finished,
                     answer=extract_answer("\n".join(s.steps)), ancestry=list(s.ancestry))
            for s, w in zip(final, weights, strict=True)
        ]
        best, votes = choose_particle(particles, o.select)
        if not best.complete:
            limit = meter.exhausted()
            logger.warning("particle filter: no particle reached a final answer before %s; "
                           "returning the highest-weight chain",
                           f"the budget's {limit} limit" if limit else f"max_steps={o.max_steps}")
        return ParticleFilterResult(
            best=best, answer=best.answer, particles=particles, history=run.history,
            iterations=run.iterations, generator_calls=run.calls, attempts=run.attempts,
            chains_scored=run.chains, tokens_scored=run.tokens, failed=run.failed,
            errors=run.errors, select=o.select, votes=votes, seed=o.seed,
            budget=meter.report(),
        )


def _record(t: int, population: list[_State], weights: list[float]) -> dict[str, Any]:
    return {"iteration": t, "likelihoods": [s.likelihood for s in population],
            "weights": list(weights), "finished": [s.finished for s in population],
            "ess": effective_sample_size(weights), "ancestors": []}


def particle_filter(
    question: str, generator: StepGenerator, prm: StepScorer, n: int = 8, **options: Any
) -> ParticleFilterResult:
    """Run a :class:`ParticleFilter` once; ``options`` are its keyword arguments.

    Returns:
        A :class:`ParticleFilterResult`.

    Raises:
        InvalidInputError: for a bad option.
        EmptyGenerationsError: every first step proposed was empty.
        AllCandidatesFailedError: every particle failed at the first step (after retries).

    Examples:
        >>> r = particle_filter(question, my_generator, prm, n=16, seed=0)  # doctest: +SKIP
        >>> r.answer, len(r.particles)  # doctest: +SKIP
        ('42', 16)
    """
    return ParticleFilter(generator, prm, n=n, **options).run(question)


async def aparticle_filter(
    question: str, generator: StepGenerator, prm: StepScorer, n: int = 8, **options: Any
) -> ParticleFilterResult:
    """Async :func:`particle_filter`.

    Examples:
        >>> r = await aparticle_filter(question, my_generator, prm, seed=0)  # doctest: +SKIP
    """
    return await ParticleFilter(generator, prm, n=n, **options).arun(question)
