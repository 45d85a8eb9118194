"""Self-critique: generate, verify with the PRM, and redo from the flagged step.

Each round keeps the verified prefix (the steps before the flagged one) and asks the
generator for a new continuation, passing feedback that names the flagged step (1-based),
quotes it and gives its score. The generator does this with its ``revise(question,
prefix, feedback)`` method when it has one (:class:`prm_plugins.generators.Reviser`);
otherwise the prompt of :func:`build_revision_prompt` goes to ``sample``. Either way the
text returned is read as the steps that follow the prefix.

With a :class:`~prm_plugins.budget.Budget`, a revision round starts only while one more
generator call and one more scoring fit (and the token and time limits are not reached);
when it runs out the best round so far is returned, with ``result.budget.exhausted`` set.
If not even the first solution fits, :class:`~prm_plugins.errors.BudgetExhaustedError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prm_plugins.budget import Budget, BudgetMeter, BudgetSpent
from prm_plugins.errors import (
    AllCandidatesFailedError,
    EmptyGenerationsError,
    InvalidInputError,
    PRMError,
)
from prm_plugins.generators import CritiqueGenerator
from prm_plugins.plans import (
    AsyncRunner,
    CallOutcome,
    GenerateCalls,
    Plan,
    RetryPolicy,
    ScoreChains,
    SyncRunner,
    describe_error,
)
from prm_plugins.strategies.options import RedoFrom, SelfCritiqueOptions
from prm_plugins.strategies.verify import Verdict, as_steps, make_verdict, step_feedback, to_steps
from prm_plugins.types import Aggregation, Splitter, StepScorer, StepScores
from prm_plugins.validation import (
    check_generator,
    check_question,
    check_scorer,
)

__all__ = [
    "CritiqueResult",
    "CritiqueRound",
    "SelfCritique",
    "aself_critique",
    "build_revision_prompt",
    "redo_point",
    "self_critique",
]

logger = logging.getLogger(__name__)

def build_revision_prompt(question: str, prefix: Sequence[str], feedback: str) -> str:
    """The prompt sent to ``generator.sample`` when the generator has no ``revise``.

    Args:
        question: the problem.
        prefix: the steps kept (before the flagged one).
        feedback: the verifier's feedback (:attr:`Verdict.feedback`).

    Returns:
        A prompt asking for the steps that follow ``prefix``, one per line.

    Examples:
        >>> print(build_revision_prompt("What is 2 + 3 * 4?", ["3 * 4 = 12"], "Step 2 ..."))
        What is 2 + 3 * 4?
        <BLANKLINE>
        A reviewer checked a previous attempt step by step. Step 2 ...
        <BLANKLINE>
        Steps so far (keep them as they are):
        Step 1: 3 * 4 = 12
        <BLANKLINE>
        Write the rest of the solution, starting with step 2: one step per line, without \
repeating the steps above, and end with the final answer.
    """
    parts = [question.strip(), "", f"A reviewer checked a previous attempt step by step. "
             f"{feedback.strip()}", ""]
    if prefix:
        parts.append("Steps so far (keep them as they are):")
        parts.extend(f"Step {i + 1}: {s}" for i, s in enumerate(prefix))
        parts.append("")
    parts.append(
        f"Write the rest of the solution, starting with step {len(prefix) + 1}: one step per "
        "line, without repeating the steps above, and end with the final answer."
    )
    return "\n".join(parts)


def redo_point(verdict: Verdict, redo_from: RedoFrom, aggregate: Aggregation) -> tuple[int, str]:
    """The step a failed solution is redone from, and the feedback that names it.

    Args:
        verdict: the failed verdict.
        redo_from: ``"first_failing"`` (the verdict's flagged step, with its own feedback) or
            ``"weakest"`` (the lowest-scored step, with feedback written for that step).
        aggregate: the chain aggregate the verdict used (quoted in the feedback).

    Returns:
        ``(k, feedback)``: steps ``0..k-1`` are kept, step ``k`` onwards is redone.

    Raises:
        InvalidInputError: the verdict passed (there is nothing to redo).
    """
    k = verdict.flagged_step if redo_from == "first_failing" else verdict.weakest_step
    if verdict.passed or k is None:
        raise InvalidInputError("redo_point needs a failed verdict; this one passed")
    if k == verdict.flagged_step:
        return k, verdict.feedback
    return k, step_feedback(verdict.step_scores, k, verdict.threshold, score=verdict.score,
                            aggregate=aggregate)


@dataclass
class CritiqueRound:
    """One round of :class:`SelfCritique`.

    Attributes:
        round: 0 for the first solution, then 1, 2, ... for revisions.
        steps: the whole chain after this round (kept prefix + new steps); for a failed
            round, the chain it tried to revise.
        verdict: the PRM's verdict on ``steps`` (``None`` for a failed round).
        kept_steps: how many steps of the previous chain were kept (0 in round 0).
        feedback: the feedback the generator was given (``None`` in round 0).
        generated: the text the generator returned this round.
        error: why the round failed (generator error, empty text, scoring error).
        attempts: generator attempts this round, retries included.
    """

    round: int
    steps: list[str]
    verdict: Verdict | None
    kept_steps: int = 0
    feedback: str | None = None
    generated: str | None = None
    error: str | None = None
    attempts: int = 0

    @property
    def solution(self) -> str:
        """The chain as text, one step per line."""
        return "\n".join(self.steps)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "round": self.round,
            "steps": list(self.steps),
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
            "kept_steps": self.kept_steps,
            "feedback": self.feedback,
            "generated": self.generated,
            "error": self.error,
            "attempts": self.attempts,
        }


@dataclass
class CritiqueResult:
    """What :class:`SelfCritique` ended with.

    Attributes:
        steps: the chosen chain (the best-scored round by default, see ``return_best``).
        verdict: its verdict.
        history: every round, failed ones included, in order.
        generator_calls: generator calls made (retries not counted).
        attempts: generator attempts, retries included.
        budget: what the run spent and the limit that stopped it, if any (``None``
            when run without a budget).
    """

    steps: list[str]
    verdict: Verdict
    history: list[CritiqueRound] = field(default_factory=list)
    generator_calls: int = 0
    attempts: int = 0
    budget: BudgetSpent | None = None

    @property
    def solution(self) -> str:
        """The chosen chain as text, one step per line."""
        return "\n".join(self.steps)

    @property
    def passed(self) -> bool:
        """Whether the chosen chain passed the verifier."""
        return self.verdict.passed

    @property
    def revisions(self) -> int:
        """Revision rounds attempted (round 0 not counted)."""
        return len(self.history) - 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "solution": self.solution,
            "steps": list(self.steps),
            "passed": self.passed,
            "verdict": self.verdict.to_dict(),
            "history": [r.to_dict() for r in self.history],
            "generator_calls": self.generator_calls,
            "attempts": self.attempts,
            "budget": None if self.budget is None else self.budget.to_dict(),
        }


class SelfCritique:
    """Generate a solution, verify it, and revise it from the flagged step until it passes.

    Rounds continue while the verdict fails (with ``aggregate="min"``: while the weakest
    step is under ``threshold``) and revision rounds remain.

    Args:
        generator: has ``sample`` (or ``asample``) and, optionally, ``revise`` (or
            ``arevise``); see :class:`prm_plugins.generators.Reviser`.
        prm: a :class:`~prm_plugins.StepScorer`.
        threshold: pass mark in [0, 1].
        max_rounds: most revision rounds after the first solution (>= 0).
        aggregate: chain score for the pass/fail decision.
        split: how generated text is cut into steps.
        redo_from: ``"first_failing"`` (default) redoes from the first step under the
            threshold, so every kept step passed; ``"weakest"`` redoes from the
            lowest-scored step, keeping any failing steps before it.
        return_best: return the best-scored round (ties go to the later round);
            ``False`` returns the last successful round.
        retry: retry policy for generator calls.
        budget: a :class:`~prm_plugins.budget.Budget` for the run (module docs); ``None``
            for no limit.

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> critic = SelfCritique(my_generator, load_prm(), max_rounds=2)  # doctest: +SKIP
        >>> r = critic.run("A pen costs $3. How much do 4 pens cost?")  # doctest: +SKIP
        >>> r.passed, r.solution, [h.verdict.score for h in r.history]  # doctest: +SKIP
        (True, '4 * 3 = 12\\nThe answer is 12.', [0.21, 0.88])
    """

    def __init__(
        self,
        generator: CritiqueGenerator,
        prm: StepScorer,
        *,
        threshold: float = 0.5,
        max_rounds: int = 2,
        aggregate: Aggregation = "min",
        split: Splitter = "auto",
        redo_from: RedoFrom = "first_failing",
        return_best: bool = True,
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
    ) -> None:
        check_scorer(prm)
        options = SelfCritiqueOptions(threshold=threshold, max_rounds=max_rounds,
                                      aggregate=aggregate, split=split, redo_from=redo_from,
                                      return_best=return_best, retry=retry, budget=budget)
        self.generator = generator
        self.prm = prm
        self.options = options
        self.threshold = options.threshold
        self.max_rounds = options.max_rounds
        self.aggregate = options.aggregate
        self.split = options.split
        self.redo_from: RedoFrom = options.redo_from
        self.return_best = options.return_best
        self.retry = options.retry_policy
        self.budget = options.budget

    @classmethod
    def from_options(
        cls, generator: CritiqueGenerator, prm: StepScorer, options: SelfCritiqueOptions
    ) -> SelfCritique:
        """A :class:`SelfCritique` with already validated options (what adapters hold)."""
        return cls(generator, prm, threshold=options.threshold, max_rounds=options.max_rounds,
                   aggregate=options.aggregate, split=options.split,
                   redo_from=options.redo_from, return_best=options.return_best,
                   retry=options.retry, budget=options.budget)

    def run(
        self, question: str, solution: str | Sequence[str] | None = None
    ) -> CritiqueResult:
        """Critique and revise, blocking.

        Args:
            question: the problem.
            solution: a solution to start from (text or steps) instead of generating one.
        """
        check_question(question)
        first = None if solution is None else as_steps(solution, self.split)
        use_revise = callable(getattr(self.generator, "revise", None))
        needed = (["sample"] if first is None or not use_revise else []) + (
            ["revise"] if use_revise else [])
        check_generator(self.generator, needed, use_async=False)
        meter = BudgetMeter(self.budget)
        runner = SyncRunner(self.generator, self.prm, retry=self.retry, max_concurrency=1,
                            meter=meter)
        return runner.run(self._plan(question, first, use_revise, meter))

    __call__ = run

    async def arun(
        self, question: str, solution: str | Sequence[str] | None = None
    ) -> CritiqueResult:
        """Async :meth:`run`."""
        check_question(question)
        first = None if solution is None else as_steps(solution, self.split)
        use_revise = callable(getattr(self.generator, "revise", None)) or callable(
            getattr(self.generator, "arevise", None))
        needed = (["sample"] if first is None or not use_revise else []) + (
            ["revise"] if use_revise else [])
        check_generator(self.generator, needed, use_async=True)
        meter = BudgetMeter(self.budget)
        runner = AsyncRunner(self.generator, self.prm, retry=self.retry, max_concurrency=1,
                             meter=meter)
        return await runner.run(self._plan(question, first, use_revise, meter))

    # -- the plan (shared by run and arun) ------------------------------------------------
    def _plan(
        self, question: str, first: list[str] | None, use_revise: bool, meter: BudgetMeter
    ) -> Plan[CritiqueResult]:
        calls = attempts = 0
        generated: str | None = None
        if first is None:
            if not meter.can_score(meter.can_generate(1)):
                raise meter.refusal("self_critique: the first solution was not generated")
            (outcome,) = yield GenerateCalls("sample", [(question, 1)])
            calls, attempts = 1, outcome.attempts
            generated, steps, error, exc = self._read(outcome, "sample")
            if error is not None:
                cls = EmptyGenerationsError if exc is None else AllCandidatesFailedError
                err = cls(f"the first solution could not be generated: {error}",
                          causes=[] if exc is None else [exc])
                raise err from exc
        else:
            steps = first
        (scored,) = yield ScoreChains([(question, steps)])
        if not isinstance(scored, StepScores):
            raise scored
        current = CritiqueRound(0, steps, make_verdict(scored, self.threshold, self.aggregate),
                                generated=generated, attempts=attempts)  # PRMError: no chain
        history = [current]
        chosen = current
        for r in range(1, self.max_rounds + 1):
            verdict = current.verdict
            assert verdict is not None
            if verdict.passed:
                break
            if not meter.can_score(meter.can_generate(1)):
                logger.info("self_critique: the budget's %s limit stopped the revisions before "
                            "round %d", meter.exhausted(), r)
                break
            k, feedback = redo_point(verdict, self.redo_from, self.aggregate)
            prefix = current.steps[:k]
            logger.info("self_critique round %d: redoing from step %d (score %.3f)", r, k + 1,
                        verdict.step_scores.scores[k])
            if use_revise:
                (outcome,) = yield GenerateCalls("revise", [(question, prefix, feedback)])
            else:
                prompt = build_revision_prompt(question, prefix, feedback)
                (outcome,) = yield GenerateCalls("sample", [(prompt, 1)])
            calls += 1
            attempts += outcome.attempts
            text, new_steps, error, _ = self._read(outcome, "revise" if use_revise else "sample")
            round_ = CritiqueRound(r, current.steps, None, kept_steps=k, feedback=feedback,
                                   generated=text, error=error, attempts=outcome.attempts)
            history.append(round_)
            if error is not None:
                logger.warning("self_critique round %d failed: %s", r, error)
                continue
            chain = [*prefix, *new_steps]
            (scored,) = yield ScoreChains([(question, chain)])
            if isinstance(scored, StepScores):
                try:
                    new_verdict = make_verdict(scored, self.threshold, self.aggregate)
                except PRMError as exc:  # a non-finite chain score fails this round alone
                    scored = exc
            if not isinstance(scored, StepScores):
                round_.error = f"scoring: {describe_error(scored)}"
                logger.warning("self_critique round %d failed: %s", r, round_.error)
                continue
            round_.steps = chain
            round_.verdict = new_verdict
            current = round_
            assert chosen.verdict is not None
            if not self.return_best or round_.verdict.score >= chosen.verdict.score:
                chosen = round_
        assert chosen.verdict is not None
        return CritiqueResult(steps=chosen.steps, verdict=chosen.verdict, history=history,
                              generator_calls=calls, attempts=attempts, budget=meter.report())

    def _read(
        self, outcome: CallOutcome, method: str
    ) -> tuple[str | None, list[str], str | None, Exception | None]:
        """(text, steps, error, exception) of a generator call's outcome."""
        if outcome.error is not None:
            return None, [], describe_error(outcome.error), outcome.error
        value = outcome.value
        if method == "sample":
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                exc = InvalidInputError(f"generator.sample() must return a list of str; "
                                        f"received {type(value).__name__}")
                return None, [], describe_error(exc), exc
            value = value[0] if value else ""
        elif not isinstance(value, str):
            exc = InvalidInputError(f"generator.revise() must return a str; received "
                                    f"{type(value).__name__}")
            return None, [], describe_error(exc), exc
        try:
            steps = to_steps(value, self.split)
        except Exception as split_exc:
            return value, [], f"split failed: {describe_error(split_exc)}", split_exc
        if not steps:
            return value, [], "empty generation (no steps)", None
        return value, steps, None, None


def self_critique(
    question: str,
    generator: CritiqueGenerator,
    prm: StepScorer,
    *,
    solution: str | Sequence[str] | None = None,
    threshold: float = 0.5,
    max_rounds: int = 2,
    aggregate: Aggregation = "min",
    split: Splitter = "auto",
    redo_from: RedoFrom = "first_failing",
    return_best: bool = True,
    retry: RetryPolicy | None = None,
    budget: Budget | None = None,
) -> CritiqueResult:
    """Generate (or take ``solution``), verify, and revise from the flagged step.

    See :class:`SelfCritique` for the options.

    Examples:
        >>> r = self_critique("What is 2 + 3 * 4?", my_generator, prm)  # doctest: +SKIP
        >>> r.passed, r.revisions  # doctest: +SKIP
        (True, 1)
    """
    return SelfCritique(generator, prm, threshold=threshold, max_rounds=max_rounds,
                        aggregate=aggregate, split=split, redo_from=redo_from,
                        return_best=return_best, retry=retry,
                        budget=budget).run(question, solution)


async def aself_critique(
    question: str,
    generator: CritiqueGenerator,
    prm: StepScorer,
    *,
    solution: str | Sequence[str] | None = None,
    threshold: float = 0.5,
    max_rounds: int = 2,
    aggregate: Aggregation = "min",
    split: Splitter = "auto",
    redo_from: RedoFrom = "first_failing",
    return_best: bool = True,
    retry: RetryPolicy | None = None,
    budget: Budget | None = None,
) -> CritiqueResult:
    """Async :func:`self_critique`.

    Examples:
        >>> r = await aself_critique(question, my_generator, prm)  # doctest: +SKIP
    """
    return await SelfCritique(generator, prm, threshold=threshold, max_rounds=max_rounds,
                              aggregate=aggregate, split=split, redo_from=redo_from,
                              return_best=return_best, retry=retry,
                              budget=budget).arun(question, solution)
