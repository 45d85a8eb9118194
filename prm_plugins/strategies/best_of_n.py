"""Best-of-N with a PRM, PRM-weighted voting, and the majority-vote baseline.

Each candidate is one ``generator.sample(question, 1)`` call. Calls run concurrently (at
most ``max_concurrency`` at once: threads for the sync form, asyncio tasks for the async
form), transient failures are retried (:class:`~prm_plugins.strategies.RetryPolicy`, with a
deadline per attempt), and a candidate whose call fails or hangs, whose text has no steps, or
that cannot be scored (the scorer raises on it, or answers NaN or a value outside [0, 1]) is
reported as failed (``failed_at``, ``error``), not fatal.
All candidates of a run are scored in one ``prm.score_batch`` call; with a ``threshold``,
candidates are drawn in rounds of ``max_concurrency`` and sampling stops after the first
round in which one reaches it (one ``score_batch`` call per round).

**Default selection** (``selection="auto"``): the PRM-weighted vote over final answers when
most candidates state one, else the single highest chain score. Measured with the shipped
PRM on the project's candidate sets (``benchmarks/results/bon_curve.md``: 379 GSM8K-test
questions x 16 restyled candidates), the weighted vote beats majority voting at every N >= 2
(0.594 against 0.549 at N = 16; paired difference +0.044 [+0.025, +0.066]) while single
highest-score picks fall below random from N = 8 (0.295 against 0.322 at N = 16). The other
methods stay one argument away: ``selection="top_score"`` or ``"weighted_vote"``.

**Budget** (``budget=``, a :class:`~prm_plugins.budget.Budget`): each round asks only for
the calls (and scorings) that still fit; with a token or time limit candidates are drawn in
rounds of ``max_concurrency`` (checked before each round, see :mod:`prm_plugins.budget`).
When the budget runs out, the candidates drawn so far are chosen from; with none usable,
:class:`~prm_plugins.errors.BudgetExhaustedError`. ``result.budget`` reports the spend.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from prm_plugins.answers import (
    extract_a_colon,
    extract_answer_is,
    extract_boxed,
    extract_gsm8k,
)
from prm_plugins.answers import extract_answer as extract_final_answer
from prm_plugins.budget import Budget, BudgetMeter, BudgetSpent
from prm_plugins.errors import (
    AllCandidatesFailedError,
    BudgetExhaustedError,
    EmptyGenerationsError,
    InvalidInputError,
    PRMError,
)
from prm_plugins.generators import SamplingGenerator
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
from prm_plugins.strategies.candidates import (
    BestOfNResult,
    Candidate,
    Extractor,
    VoteResult,
    apply_selection,
    tally_votes,
)
from prm_plugins.strategies.options import (  # noqa: F401 (SELECTIONS: re-exported)
    SELECTIONS,
    BestOfNOptions,
    Selection,
)
from prm_plugins.strategies.verify import chain_score, to_steps
from prm_plugins.types import Aggregation, Splitter, StepScorer, StepScores
from prm_plugins.validation import check_generator, check_question, check_scorer

__all__ = [
    "BestOfN",
    "BestOfNResult",
    "Candidate",
    "VoteResult",
    "abest_of_n",
    "amajority_vote",
    "aweighted_best_of_n",
    "best_of_n",
    "extract_a_colon",
    "extract_answer_is",
    "extract_boxed",
    "extract_final_answer",
    "extract_gsm8k",
    "majority_vote",
    "weighted_best_of_n",
]

logger = logging.getLogger(__name__)

class BestOfN:
    """Sample ``n`` solutions and keep the one the PRM scores highest.

    State lives in each call, so one instance can serve many questions concurrently.

    Args:
        generator: has ``sample(prompt, n)`` (sync form) or ``asample`` (async form);
            see :mod:`prm_plugins.generators`.
        prm: a :class:`~prm_plugins.StepScorer`; ``None`` samples without scoring (what
            :func:`majority_vote` does; the first usable candidate is then ``best``).
        n: candidates to sample (>= 1).
        aggregate: chain score: ``"min"``, ``"prod"``, ``"mean"``, ``"last"``,
            ``"geomean"`` or a callable over the step scores.
        threshold: stop sampling once a candidate's chain score reaches it (in [0, 1]);
            candidates are then drawn in rounds of ``max_concurrency``.
        max_concurrency: most generator calls in flight at once.
        split: how candidate text is cut into steps: a
            :func:`~prm_plugins.split_steps` mode or a callable.
        retry: retry policy for generator calls (default :class:`RetryPolicy()`).
        selection: ``"auto"`` (default): the PRM-weighted vote (:func:`weighted_best_of_n`)
            when most usable candidates state a final answer (``\\boxed{}``, ``####``,
            "The answer is", ``A:``), else the top chain score; ``"weighted_vote"`` always
            votes (answers found by :func:`extract_final_answer`, last number included);
            ``"top_score"`` keeps the single highest chain score. With the shipped PRM the
            vote measures best (module docs, ``benchmarks/results/bon_curve.md``).
        budget: a :class:`~prm_plugins.budget.Budget` capping generated tokens, generator
            calls, PRM calls and wall time (module docs); ``None`` for no limit (and
            ``result.budget`` is then ``None``; ``Budget()`` measures without limiting).

    Raises:
        InvalidInputError: for a bad option (the message shows the value received).

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> bon = BestOfN(my_generator, load_prm(), n=8, threshold=0.9)  # doctest: +SKIP
        >>> result = bon.run("Tom has 3 apples and buys 2 more. How many?")  # doctest: +SKIP
        >>> result.text, round(result.score, 2), result.generator_calls  # doctest: +SKIP
        ('3 + 2 = 5\\nThe answer is 5.', 0.93, 4)
    """

    def __init__(
        self,
        generator: SamplingGenerator,
        prm: StepScorer | None,
        n: int = 4,
        *,
        aggregate: Aggregation = "min",
        threshold: float | None = None,
        max_concurrency: int = 4,
        split: Splitter = "auto",
        retry: RetryPolicy | None = None,
        selection: Selection = "auto",
        budget: Budget | None = None,
    ) -> None:
        self._use(BestOfNOptions(n=n, aggregate=aggregate, threshold=threshold,
                                 max_concurrency=max_concurrency, split=split, retry=retry,
                                 selection=selection, budget=budget))
        if prm is not None:
            check_scorer(prm)
        elif threshold is not None:
            raise InvalidInputError("threshold needs a prm to score candidates; got prm=None")
        self.generator = generator
        self.prm = prm

    def _use(self, options: BestOfNOptions) -> None:
        self.options = options
        self.n = options.n
        self.aggregate = options.aggregate
        self.threshold = options.threshold
        self.max_concurrency = options.max_concurrency
        self.split = options.split
        self.retry = options.retry_policy
        self.selection: Selection = options.selection
        self.budget = options.budget

    @classmethod
    def from_options(
        cls, generator: SamplingGenerator, prm: StepScorer | None, options: BestOfNOptions
    ) -> BestOfN:
        """A :class:`BestOfN` with already validated options (what adapters hold).

        Examples:
            >>> opts = BestOfNOptions(n=8)
            >>> BestOfN.from_options(my_generator, prm, opts).n  # doctest: +SKIP
            8
        """
        return cls(generator, prm, options.n, aggregate=options.aggregate,
                   threshold=options.threshold, max_concurrency=options.max_concurrency,
                   split=options.split, retry=options.retry, selection=options.selection,
                   budget=options.budget)

    def run(self, question: str) -> BestOfNResult:
        """Sample, score and choose, blocking; see the class docs."""
        check_question(question)
        check_generator(self.generator, ["sample"], use_async=False)
        meter = BudgetMeter(self.budget)
        runner = SyncRunner(self.generator, self.prm, retry=self.retry,
                            max_concurrency=self.max_concurrency, meter=meter)
        return runner.run(self._plan(question, meter))

    __call__ = run

    async def arun(self, question: str) -> BestOfNResult:
        """Async :meth:`run`: ``asample`` tasks, or ``sample`` in worker threads."""
        check_question(question)
        check_generator(self.generator, ["sample"], use_async=True)
        meter = BudgetMeter(self.budget)
        runner = AsyncRunner(self.generator, self.prm, retry=self.retry,
                             max_concurrency=self.max_concurrency, meter=meter)
        return await runner.run(self._plan(question, meter))

    # -- the plan (shared by run and arun) ------------------------------------------------
    def _plan(self, question: str, meter: BudgetMeter) -> Plan[BestOfNResult]:
        candidates: list[Candidate] = []
        by_round = self.threshold is not None or (self.budget is not None and (
            self.budget.generated_tokens is not None or self.budget.seconds is not None))
        round_size = self.max_concurrency if by_round else self.n
        stopped_early = False
        start = 0
        while start < self.n:
            size = self.fitting(meter, min(round_size, self.n - start))
            if not size:
                logger.info("best_of_n: the budget's %s limit stopped sampling after %d of %d",
                            meter.exhausted(), start, self.n)
                break
            new = yield from self.sample_round(question, start, size)
            candidates.extend(new)
            start += size
            if self.threshold is not None and any(
                c.ok and c.score is not None and c.score >= self.threshold for c in new
            ):
                stopped_early = start < self.n
                if stopped_early:
                    logger.info("best_of_n: a candidate reached threshold %.3f after %d of %d; "
                                "sampling stopped", self.threshold, start, self.n)
                break
        ok = [c for c in candidates if c.ok]
        if not ok:
            spent = meter.spent()
            if spent.exhausted is not None:
                raise budget_exhausted("best_of_n", spent, candidates)
            raise all_failed_error(candidates)
        if len(ok) < len(candidates):
            logger.warning("best_of_n: %d of %d candidates failed: %s",
                           len(candidates) - len(ok), len(candidates),
                           summarize_failures([c.error or "" for c in candidates if not c.ok]))
        if self.prm is None:
            best = ok[0]
        else:
            best = max(ok, key=lambda c: (c.score, -c.index))
        logger.info("best_of_n: chose candidate %d of %d (score %s)", best.index,
                    len(candidates), "n/a" if best.score is None else f"{best.score:.3f}")
        result = BestOfNResult(
            best=best,
            score=float("nan") if best.score is None else best.score,
            candidates=candidates,
            generator_calls=len(candidates),
            attempts=sum(c.attempts for c in candidates),
            stopped_early=stopped_early,
        )
        result = result if self.prm is None else apply_selection(result, self.selection)
        return replace(result, budget=meter.report())

    def fitting(self, meter: BudgetMeter, size: int) -> int:
        """How many of ``size`` candidates the budget lets a round draw (and score)."""
        size = meter.can_generate(size)
        return size if self.prm is None else meter.can_score(size)

    def sample_round(self, question: str, start: int, size: int) -> Plan[list[Candidate]]:
        """A plan step: draw ``size`` candidates (indices from ``start``) and score them.

        For strategies built on best-of-N rounds (adaptive best-of-N); failed candidates
        are returned with their error, never raised.
        """
        outcomes = yield GenerateCalls("sample", [(question, 1)] * size)
        new = [self._candidate(start + i, o) for i, o in enumerate(outcomes)]
        if self.prm is not None:
            yield from self._score(question, new)
        return new

    def _candidate(self, index: int, outcome: CallOutcome) -> Candidate:
        if outcome.error is not None:
            return Candidate(index, None, error=describe_error(outcome.error),
                             failed_at="generation", attempts=outcome.attempts,
                             exception=outcome.error)
        value = outcome.value
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            exc: Exception = InvalidInputError(
                f"generator.sample() must return a list of str; received "
                f"{type(value).__name__} {str(value)[:80]!r}"
            )
            return Candidate(index, None, error=describe_error(exc), failed_at="generation",
                             attempts=outcome.attempts, exception=exc)
        if len(value) > 1:
            logger.debug("generator.sample(prompt, 1) returned %d texts; keeping the first",
                         len(value))
        text = value[0] if value else ""
        try:
            steps = to_steps(text, self.split)
        except Exception as split_exc:  # a user-supplied split callable failed
            return Candidate(index, text, error=f"split failed: {describe_error(split_exc)}",
                             failed_at="empty", attempts=outcome.attempts, exception=split_exc)
        if not steps:
            return Candidate(index, text, error="empty generation (no steps)", failed_at="empty",
                             attempts=outcome.attempts)
        return Candidate(index, text, steps=steps, attempts=outcome.attempts)

    def _score(self, question: str, candidates: list[Candidate]) -> Plan[None]:
        scorable = [c for c in candidates if c.ok]
        if not scorable:
            return
        results = yield ScoreChains([(question, c.steps) for c in scorable])
        for c, r in zip(scorable, results, strict=True):
            if isinstance(r, StepScores):
                try:
                    score = chain_score(r, self.aggregate)
                except PRMError as exc:
                    r = exc
                else:
                    c.step_scores, c.score = r, score
                    continue
            c.error, c.failed_at, c.exception = f"scoring: {describe_error(r)}", "scoring", r


def _failure_note(candidates: list[Candidate]) -> str:
    """What happened to the failed candidates, said as it was (never "retried" for scoring)."""
    where = {c.failed_at for c in candidates}
    notes = []
    if "generation" in where:
        notes.append("Generator calls that failed with a transient error were retried per the "
                     "RetryPolicy; other generator errors are not retried.")
    if "scoring" in where:
        notes.append("Scoring failures (a chain the PRM refuses, e.g. over its max_length, or "
                     "an invalid score) are not retried: they fail their candidate alone.")
    return " ".join(notes)


def budget_exhausted(
    who: str, spent: BudgetSpent, candidates: list[Candidate]
) -> BudgetExhaustedError:
    """The error for a run whose budget ran out before any candidate was usable."""
    causes = [c.exception for c in candidates if c.exception is not None]
    failed = (f"; the {len(candidates)} candidates drawn failed: "
              f"{summarize_failures([c.error or '' for c in candidates])}" if candidates else "")
    err = BudgetExhaustedError(
        f"{who}: the budget's {spent.exhausted} limit ({spent.limits.get(spent.exhausted or '')}"
        f") ran out before any usable candidate{failed}. Spent: {spent.generator_calls} "
        f"generator calls, {spent.generated_tokens} tokens, {spent.prm_calls} PRM calls, "
        f"{spent.seconds:.2f} s. Raise the budget.",
        limit=spent.exhausted, spent=spent, causes=causes, candidates=candidates,
    )
    if causes:
        err.__cause__ = causes[-1]
    return err


def all_failed_error(candidates: list[Candidate]) -> AllCandidatesFailedError:
    """The error for a run whose every candidate failed (empty text, or any failure)."""
    errors = [c.error or "" for c in candidates]
    causes = [c.exception for c in candidates if c.exception is not None]
    if all(c.failed_at == "empty" for c in candidates):
        err: AllCandidatesFailedError = EmptyGenerationsError(
            f"all {len(candidates)} generator calls returned empty text (no steps to score): "
            f"{summarize_failures(errors)}. Check the generator's prompt, stop sequences and "
            "max tokens.",
            causes=causes, candidates=candidates,
        )
    else:
        err = AllCandidatesFailedError(
            f"all {len(candidates)} candidates failed: {summarize_failures(errors)}. "
            f"{_failure_note(candidates)} See .causes and .candidates.",
            causes=causes, candidates=candidates,
        )
    if causes:
        err.__cause__ = causes[-1]
    return err


def best_of_n(
    question: str,
    generator: SamplingGenerator,
    prm: StepScorer,
    n: int = 4,
    *,
    aggregate: Aggregation = "min",
    threshold: float | None = None,
    max_concurrency: int = 4,
    split: Splitter = "auto",
    retry: RetryPolicy | None = None,
    selection: Selection = "auto",
    budget: Budget | None = None,
) -> BestOfNResult:
    """Sample ``n`` solutions and return the one the PRM prefers.

    By default (``selection="auto"``) that is the PRM-weighted vote when most candidates
    state a final answer, else the highest chain score; see :class:`BestOfN` for the
    options and the module docs for the measurement behind the default.

    Returns:
        A :class:`BestOfNResult`.

    Raises:
        InvalidInputError: for a bad option.
        EmptyGenerationsError: when every call returned empty text.
        AllCandidatesFailedError: when every candidate failed (after retries).
        BudgetExhaustedError: when the budget ran out before any usable candidate.

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> r = best_of_n("What is 17 * 3?", my_generator, load_prm(), n=8)  # doctest: +SKIP
        >>> r.text, [c.score for c in r.candidates]  # doctest: +SKIP
    """
    return BestOfN(generator, prm, n, aggregate=aggregate, threshold=threshold,
                   max_concurrency=max_concurrency, split=split, retry=retry,
                   selection=selection, budget=budget).run(question)


async def abest_of_n(
    question: str,
    generator: SamplingGenerator,
    prm: StepScorer,
    n: int = 4,
    *,
    aggregate: Aggregation = "min",
    threshold: float | None = None,
    max_concurrency: int = 4,
    split: Splitter = "auto",
    retry: RetryPolicy | None = None,
    selection: Selection = "auto",
    budget: Budget | None = None,
) -> BestOfNResult:
    """Async :func:`best_of_n`.

    Examples:
        >>> r = await abest_of_n(question, my_async_generator, prm, n=8)  # doctest: +SKIP
    """
    return await BestOfN(generator, prm, n, aggregate=aggregate, threshold=threshold,
                         max_concurrency=max_concurrency, split=split,
                         retry=retry, selection=selection, budget=budget).arun(question)


# -- votes ---------------------------------------------------------------------------------

def weighted_best_of_n(
    question: str,
    generator: SamplingGenerator,
    prm: StepScorer,
    n: int = 4,
    *,
    aggregate: Aggregation = "min",
    extractor: Extractor = extract_final_answer,
    max_concurrency: int = 4,
    split: Splitter = "auto",
    retry: RetryPolicy | None = None,
    budget: Budget | None = None,
) -> VoteResult:
    """PRM-weighted voting: the final answer with the largest sum of chain scores wins.

    Candidates are grouped by their normalised extracted answer; ties go to the answer whose
    best candidate scores higher, then to the one seen first.

    Args:
        question: the problem.
        generator: see :class:`BestOfN`.
        prm: a :class:`~prm_plugins.StepScorer`.
        n: candidates to sample.
        aggregate: chain score used as each candidate's vote weight.
        extractor: ``text -> answer | None``; default :func:`extract_final_answer`
            (``\\boxed{}``, ``####``, "The answer is", ``A:``, last number).
        max_concurrency: most generator calls in flight at once.
        split: how candidate text is cut into steps.
        retry: retry policy for generator calls.
        budget: a :class:`~prm_plugins.budget.Budget` for the run (``None``: no limit).

    Returns:
        A :class:`VoteResult` with ``method="weighted"``.

    Examples:
        >>> r = weighted_best_of_n("What is 6 * 7?", my_generator, prm, n=16)  # doctest: +SKIP
        >>> r.answer, r.weights  # doctest: +SKIP
        ('42', {'42': 11.2, '36': 1.9})
    """
    result = BestOfN(generator, prm, n, aggregate=aggregate, max_concurrency=max_concurrency,
                     split=split, retry=retry, selection="top_score",
                     budget=budget).run(question)
    return tally_votes(result, extractor, "weighted")


async def aweighted_best_of_n(
    question: str,
    generator: SamplingGenerator,
    prm: StepScorer,
    n: int = 4,
    *,
    aggregate: Aggregation = "min",
    extractor: Extractor = extract_final_answer,
    max_concurrency: int = 4,
    split: Splitter = "auto",
    retry: RetryPolicy | None = None,
    budget: Budget | None = None,
) -> VoteResult:
    """Async :func:`weighted_best_of_n`.

    Examples:
        >>> r = await aweighted_best_of_n(question, my_generator, prm, n=16)  # doctest: +SKIP
    """
    result = await BestOfN(generator, prm, n, aggregate=aggregate,
                           max_concurrency=max_concurrency, split=split,
                           retry=retry, selection="top_score",
                           budget=budget).arun(question)
    return tally_votes(result, extractor, "weighted")


def majority_vote(
    question: str,
    generator: SamplingGenerator,
    n: int = 4,
    *,
    extractor: Extractor = extract_final_answer,
    max_concurrency: int = 4,
    split: Splitter = "auto",
    retry: RetryPolicy | None = None,
    budget: Budget | None = None,
) -> VoteResult:
    """Baseline without a PRM (self-consistency): the most frequent final answer wins.

    Ties go to the answer seen first. Candidates are not scored.

    Examples:
        >>> r = majority_vote("What is 6 * 7?", my_generator, n=16)  # doctest: +SKIP
        >>> r.answer, r.counts  # doctest: +SKIP
        ('42', {'42': 11, '36': 5})
    """
    result = BestOfN(generator, None, n, max_concurrency=max_concurrency, split=split,
                     retry=retry, budget=budget).run(question)
    return tally_votes(result, extractor, "majority")


async def amajority_vote(
    question: str,
    generator: SamplingGenerator,
    n: int = 4,
    *,
    extractor: Extractor = extract_final_answer,
    max_concurrency: int = 4,
    split: Splitter = "auto",
    retry: RetryPolicy | None = None,
    budget: Budget | None = None,
) -> VoteResult:
    """Async :func:`majority_vote`.

    Examples:
        >>> r = await amajority_vote(question, my_generator, n=16)  # doctest: +SKIP
    """
    result = await BestOfN(generator, None, n, max_concurrency=max_concurrency, split=split,
                           retry=retry, budget=budget).arun(question)
    return tally_votes(result, extractor, "majority")
