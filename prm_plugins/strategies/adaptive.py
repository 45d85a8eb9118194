"""Adaptive best-of-N: sample in rounds, stop as soon as more samples cannot change the answer.

Candidates are drawn ``round_size`` at a time (each is one ``generator.sample(question,
1)`` call, scored by the PRM, exactly as in :class:`~prm_plugins.strategies.BestOfN`), and
after every round the PRM-weighted vote is tallied: each candidate's final answer
(:func:`prm_plugins.answers.extract_answer`, grouped by
:func:`~prm_plugins.answers.normalize_answer`) gets its chain score as weight, as in
:func:`~prm_plugins.strategies.weighted_best_of_n`.

**The exact stopping rule.** Let ``W1`` be the largest answer weight, ``W2`` the second
largest (0 if there is no other answer) and ``R`` the samples that may still be drawn:
``max_n`` minus those drawn, or fewer where the budget's ``generator_calls`` or
``prm_calls`` leave fewer. A chain score lies in [0, 1], so each remaining sample adds at
most 1 to one answer; even if all ``R`` went to the runner-up (or to a new answer) with
weight 1, it would reach at most ``W2 + R``. Sampling stops when ``W1 - W2 > R``: the
leader can then not be overtaken, not even tied (ties are broken by the best chain score,
which more samples could change, so a tie is not safe). Under this rule the answer is the
one sampling all ``max_n`` candidates would give with those first candidates, whatever the
rest would have been; only the representative text may differ. To keep the bound exact a
candidate whose chain score falls outside [0, 1] (a custom ``aggregate`` callable) fails
with a clear error instead of voting.

**The optional confidence rule** (``confidence=c``, off by default): also stop once at least
``min_votes`` candidates have stated an answer and the leader holds at least ``c`` of the
total vote weight (``W1 / sum(W) >= c``). It is a heuristic, not a guarantee: it stops
earlier, and the leader could still have been overtaken. ``result.stopped_by`` says which
rule (if either) stopped sampling.

With a :class:`~prm_plugins.budget.Budget`, each round draws only what fits; when it runs
out the vote over what was drawn decides (``stopped_by="budget"``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from prm_plugins.answers import extract_answer, normalize_answer
from prm_plugins.budget import Budget, BudgetMeter, BudgetSpent
from prm_plugins.errors import PRMError
from prm_plugins.generators import SamplingGenerator
from prm_plugins.plans import AsyncRunner, Plan, RetryPolicy, SyncRunner, describe_error
from prm_plugins.strategies.best_of_n import BestOfN, all_failed_error, budget_exhausted
from prm_plugins.strategies.candidates import BestOfNResult, Candidate, tally_votes
from prm_plugins.strategies.options import AdaptiveBestOfNOptions
from prm_plugins.types import Aggregation, Splitter, StepScorer
from prm_plugins.validation import check_generator, check_question, check_scorer

__all__ = [
    "AdaptiveBestOfN",
    "AdaptiveBestOfNResult",
    "AdaptiveRound",
    "StoppedBy",
    "aadaptive_best_of_n",
    "adaptive_best_of_n",
]

logger = logging.getLogger(__name__)

#: Why sampling stopped: the exact rule, the confidence rule, ``max_n`` reached, the budget.
StoppedBy = Literal["decided", "confidence", "max_n", "budget"]


@dataclass(frozen=True)
class AdaptiveRound:
    """The vote after one round of :class:`AdaptiveBestOfN`.

    Attributes:
        index: 0-based round number.
        drawn: candidates drawn in this round.
        total: candidates drawn so far.
        weights: summed chain score per normalised answer, so far.
        leader: the answer with the largest weight (``None`` when nobody answered).
        margin: the leader's weight minus the runner-up's (0 for a tie or no answer).
        remaining: samples that could still be drawn (``R`` of the stopping rule).
        decided: whether ``margin > remaining`` (the leader cannot be overtaken).
    """

    index: int
    drawn: int
    total: int
    weights: dict[str, float]
    leader: str | None
    margin: float
    remaining: int
    decided: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"index": self.index, "drawn": self.drawn, "total": self.total,
                "weights": dict(self.weights), "leader": self.leader, "margin": self.margin,
                "remaining": self.remaining, "decided": self.decided}


@dataclass
class AdaptiveBestOfNResult:
    """What :class:`AdaptiveBestOfN` chose, and how many samples it saved.

    Attributes:
        answer: the winning final answer as its representative candidate wrote it
            (``None`` when no candidate stated one).
        answer_key: its normalised form.
        best: the representative candidate (the highest-scored one with that answer; when
            nobody answered, the highest-scored candidate).
        weights: summed chain score per answer key.
        counts: candidates per answer key.
        candidates: every candidate drawn, failed ones included, with ``answer`` set.
        rounds: the vote after each round.
        samples_used: candidates drawn (one generator call each; retries not counted).
        max_n: the most that could have been drawn.
        stopped_by: ``"decided"`` (the exact rule), ``"confidence"``, ``"max_n"`` (all
            drawn) or ``"budget"``.
        attempts: generator attempts, retries included.
        budget: what the run spent and the limit that stopped it, if any (``None`` when
            run without a budget).
    """

    answer: str | None
    answer_key: str | None
    best: Candidate
    weights: dict[str, float]
    counts: dict[str, int]
    candidates: list[Candidate]
    rounds: list[AdaptiveRound]
    samples_used: int
    max_n: int
    stopped_by: StoppedBy
    attempts: int
    budget: BudgetSpent | None = field(default=None)

    @property
    def samples_saved(self) -> int:
        """``max_n - samples_used``: the samples stopping early did not draw."""
        return self.max_n - self.samples_used

    @property
    def text(self) -> str:
        """The representative candidate's text."""
        return self.best.text or ""

    @property
    def score(self) -> float:
        """The representative candidate's chain score."""
        return float("nan") if self.best.score is None else self.best.score

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "answer": self.answer,
            "answer_key": self.answer_key,
            "best": self.best.index,
            "text": self.text,
            "score": self.score,
            "weights": dict(self.weights),
            "counts": dict(self.counts),
            "candidates": [c.to_dict() for c in self.candidates],
            "rounds": [r.to_dict() for r in self.rounds],
            "samples_used": self.samples_used,
            "samples_saved": self.samples_saved,
            "max_n": self.max_n,
            "stopped_by": self.stopped_by,
            "attempts": self.attempts,
            "budget": None if self.budget is None else self.budget.to_dict(),
        }


class AdaptiveBestOfN:
    """PRM-weighted best-of-N that stops sampling once the answer is decided.

    See the module docs for the exact stopping rule and the optional confidence rule.
    State lives in each call, so one instance can serve many questions concurrently.

    Args:
        generator: has ``sample(prompt, n)`` (sync form) or ``asample`` (async form).
        prm: a :class:`~prm_plugins.StepScorer`.
        max_n: most candidates to draw (>= 1).
        round_size: candidates per round (1 .. ``max_n``); smaller rounds can stop sooner,
            larger ones run more calls at once.
        confidence: optional share of the vote weight in (0.5, 1] at which the leader
            wins early (a heuristic; module docs). ``None`` (default): the exact rule only.
        min_votes: answered candidates needed before the confidence rule may stop.
        aggregate: chain score used as each vote's weight (default ``"min"``); must give
            scores in [0, 1] (every built-in one does).
        extractor: ``text -> answer | None``; default
            :func:`prm_plugins.answers.extract_answer`.
        max_concurrency: most generator calls in flight at once.
        split: how candidate text is cut into steps.
        retry: retry policy for generator calls.
        budget: a :class:`~prm_plugins.budget.Budget` for the run; ``None`` for no limit.

    Raises:
        InvalidInputError: for a bad option (the message shows the value received).

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> ada = AdaptiveBestOfN(my_generator, load_prm(), max_n=16)  # doctest: +SKIP
        >>> r = ada.run("What is 6 * 7?")  # doctest: +SKIP
        >>> r.answer, r.samples_used, r.samples_saved, r.stopped_by  # doctest: +SKIP
        ('42', 8, 8, 'decided')
    """

    def __init__(
        self,
        generator: SamplingGenerator,
        prm: StepScorer,
        *,
        max_n: int = 16,
        round_size: int = 4,
        confidence: float | None = None,
        min_votes: int = 4,
        aggregate: Aggregation = "min",
        extractor: Callable[[str], str | None] | None = None,
        max_concurrency: int = 4,
        split: Splitter = "auto",
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
    ) -> None:
        options = AdaptiveBestOfNOptions(
            max_n=max_n, round_size=round_size, confidence=confidence, min_votes=min_votes,
            aggregate=aggregate, extractor=extractor, max_concurrency=max_concurrency,
            split=split, retry=retry, budget=budget)
        check_scorer(prm)
        self.generator = generator
        self.prm = prm
        self.options = options
        self.max_n = options.max_n
        self.round_size = options.round_size
        self.confidence = options.confidence
        self.min_votes = options.min_votes
        self.extractor: Callable[[str], str | None] = options.extractor or extract_answer
        self.retry = options.retry_policy
        self.budget = options.budget
        self._sampler = BestOfN(generator, prm, options.max_n, aggregate=options.aggregate,
                                max_concurrency=options.max_concurrency, split=options.split,
                                retry=options.retry, selection="top_score")

    @classmethod
    def from_options(
        cls, generator: SamplingGenerator, prm: StepScorer, options: AdaptiveBestOfNOptions
    ) -> AdaptiveBestOfN:
        """An :class:`AdaptiveBestOfN` with already validated options (what adapters hold)."""
        o = options
        return cls(generator, prm, max_n=o.max_n, round_size=o.round_size,
                   confidence=o.confidence, min_votes=o.min_votes, aggregate=o.aggregate,
                   extractor=o.extractor, max_concurrency=o.max_concurrency, split=o.split,
                   retry=o.retry, budget=o.budget)

    def run(self, question: str) -> AdaptiveBestOfNResult:
        """Sample in rounds until decided, blocking; see the class docs."""
        check_question(question)
        check_generator(self.generator, ["sample"], use_async=False)
        meter = BudgetMeter(self.budget)
        runner = SyncRunner(self.generator, self.prm, retry=self.retry,
                            max_concurrency=self._sampler.max_concurrency, meter=meter)
        return runner.run(self._plan(question, meter))

    __call__ = run

    async def arun(self, question: str) -> AdaptiveBestOfNResult:
        """Async :meth:`run`: ``asample`` tasks, or ``sample`` in worker threads."""
        check_question(question)
        check_generator(self.generator, ["sample"], use_async=True)
        meter = BudgetMeter(self.budget)
        runner = AsyncRunner(self.generator, self.prm, retry=self.retry,
                             max_concurrency=self._sampler.max_concurrency, meter=meter)
        return await runner.run(self._plan(question, meter))

    # -- the plan (shared by run and arun) ------------------------------------------------
    def _plan(self, question: str, meter: BudgetMeter) -> Plan[AdaptiveBestOfNResult]:
        candidates: list[Candidate] = []
        rounds: list[AdaptiveRound] = []
        weights: dict[str, float] = {}
        votes = 0
        stopped_by: StoppedBy = "max_n"
        while len(candidates) < self.max_n:
            size = self._sampler.fitting(
                meter, min(self.round_size, self.max_n - len(candidates)))
            if not size:
                stopped_by = "budget"
                break
            new = yield from self._sampler.sample_round(question, len(candidates), size)
            votes += self._vote(new, weights)
            candidates.extend(new)
            rounds.append(self._round(len(rounds), size, len(candidates), weights, meter))
            stop = self._stop(rounds[-1], weights, votes, meter)
            if stop is not None:
                stopped_by = stop
                break
        logger.info("adaptive_best_of_n: stopped (%s) after %d of %d samples", stopped_by,
                    len(candidates), self.max_n)
        return self._result(candidates, rounds, stopped_by, meter)

    def _vote(self, new: list[Candidate], weights: dict[str, float]) -> int:
        """Add the new candidates' votes; how many voted (a score outside [0, 1] fails)."""
        votes = 0
        for c in new:
            if not c.ok or c.text is None or c.score is None:
                continue
            if not 0.0 <= c.score <= 1.0:
                exc = PRMError(
                    f"aggregate gave the chain score {c.score!r}, outside [0, 1]; adaptive "
                    "best-of-N needs chain scores in [0, 1] (its stopping rule bounds each "
                    "vote by 1): use a built-in aggregate or one that maps into [0, 1]")
                c.error, c.failed_at = f"scoring: {describe_error(exc)}", "scoring"
                c.exception = exc
                continue
            try:
                key = normalize_answer(self.extractor(c.text))
            except Exception as exc:  # noqa: BLE001 - a user extractor failing on one text
                logger.warning("adaptive_best_of_n: the extractor failed on candidate %d (%s); "
                               "it does not vote", c.index, describe_error(exc))
                continue
            if key is not None:
                weights[key] = weights.get(key, 0.0) + c.score
                votes += 1
        return votes

    def _round(self, index: int, drawn: int, total: int, weights: dict[str, float],
               meter: BudgetMeter) -> AdaptiveRound:
        ranked = sorted(weights.items(), key=lambda kv: -kv[1])
        top = ranked[0][1] if ranked else 0.0
        second = ranked[1][1] if len(ranked) > 1 else 0.0
        remaining = self.max_n - total
        for left in (meter.remaining_generator_calls(), meter.remaining_prm_calls()):
            if left is not None:
                remaining = min(remaining, left)
        margin = top - second
        leader = ranked[0][0] if ranked and margin > 0 else None
        return AdaptiveRound(index=index, drawn=drawn, total=total, weights=dict(weights),
                             leader=leader, margin=margin, remaining=remaining,
                             decided=bool(ranked) and margin > remaining)

    def _stop(self, last: AdaptiveRound, weights: dict[str, float], votes: int,
              meter: BudgetMeter) -> StoppedBy | None:
        """Why to stop after ``last`` (``None``: draw another round)."""
        if last.remaining <= 0:
            if last.total >= self.max_n:
                return "max_n"
            meter.exhausted()  # records the limit that left no sample
            return "budget"
        if last.decided:
            return "decided"
        if self.confidence is None or last.leader is None or votes < self.min_votes:
            return None
        total = sum(weights.values())
        if total > 0 and weights[last.leader] / total >= self.confidence:
            return "confidence"
        return None

    def _result(self, candidates: list[Candidate], rounds: list[AdaptiveRound],
                stopped_by: StoppedBy, meter: BudgetMeter) -> AdaptiveBestOfNResult:
        ok = [c for c in candidates if c.ok]
        if not ok:
            spent = meter.spent()
            if spent.exhausted is not None:
                raise budget_exhausted("adaptive_best_of_n", spent, candidates)
            raise all_failed_error(candidates)
        best = max(ok, key=lambda c: (c.score or 0.0, -c.index))
        scored = BestOfNResult(best=best, score=best.score or 0.0, candidates=candidates,
                               generator_calls=len(candidates),
                               attempts=sum(c.attempts for c in candidates))
        vote = tally_votes(scored, lambda text: _safe(self.extractor, text), "weighted")
        return AdaptiveBestOfNResult(
            answer=vote.answer, answer_key=vote.answer_key, best=vote.best,
            weights=vote.weights, counts=vote.counts, candidates=vote.candidates,
            rounds=rounds, samples_used=len(candidates), max_n=self.max_n,
            stopped_by=stopped_by, attempts=scored.attempts, budget=meter.report(),
        )


def _safe(extractor: Callable[[str], str | None], text: str) -> str | None:
    """``extractor(text)``, or ``None`` when it raises (a failing extractor: no vote)."""
    try:
        return extractor(text)
    except Exception:  # noqa: BLE001 - logged where the vote is counted
        return None


def adaptive_best_of_n(
    question: str,
    generator: SamplingGenerator,
    prm: StepScorer,
    *,
    max_n: int = 16,
    round_size: int = 4,
    confidence: float | None = None,
    min_votes: int = 4,
    aggregate: Aggregation = "min",
    extractor: Callable[[str], str | None] | None = None,
    max_concurrency: int = 4,
    split: Splitter = "auto",
    retry: RetryPolicy | None = None,
    budget: Budget | None = None,
) -> AdaptiveBestOfNResult:
    """Sample in rounds and stop once the PRM-weighted vote's leader cannot be overtaken.

    See :class:`AdaptiveBestOfN` for the options and the module docs for the rules.

    Returns:
        An :class:`AdaptiveBestOfNResult` (``answer``, ``samples_used``,
        ``samples_saved``, ``rounds``, ``stopped_by``, ``budget``).

    Raises:
        InvalidInputError: for a bad option.
        AllCandidatesFailedError: every candidate failed (``EmptyGenerationsError`` when
            every text was empty).
        BudgetExhaustedError: the budget ran out before any usable candidate.

    Examples:
        >>> r = adaptive_best_of_n("What is 6 * 7?", my_generator, prm, max_n=16)  # doctest: +SKIP
        >>> r.answer, r.samples_saved  # doctest: +SKIP
        ('42', 8)
    """
    return AdaptiveBestOfN(generator, prm, max_n=max_n, round_size=round_size,
                           confidence=confidence, min_votes=min_votes, aggregate=aggregate,
                           extractor=extractor, max_concurrency=max_concurrency, split=split,
                           retry=retry, budget=budget).run(question)


async def aadaptive_best_of_n(
    question: str,
    generator: SamplingGenerator,
    prm: StepScorer,
    *,
    max_n: int = 16,
    round_size: int = 4,
    confidence: float | None = None,
    min_votes: int = 4,
    aggregate: Aggregation = "min",
    extractor: Callable[[str], str | None] | None = None,
    max_concurrency: int = 4,
    split: Splitter = "auto",
    retry: RetryPolicy | None = None,
    budget: Budget | None = None,
) -> AdaptiveBestOfNResult:
    """Async :func:`adaptive_best_of_n`.

    Examples:
        >>> r = await aadaptive_best_of_n(question, my_generator, prm)  # doctest: +SKIP
    """
    return await AdaptiveBestOfN(
        generator, prm, max_n=max_n, round_size=round_size, confidence=confidence,
        min_votes=min_votes, aggregate=aggregate, extractor=extractor,
        max_concurrency=max_concurrency, split=split, retry=retry, budget=budget,
    ).arun(question)
