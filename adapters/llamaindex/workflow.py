"""PRMSelfCritiqueWorkflow: generate, verify with the PRM, revise from the flagged step.

The LlamaIndex ``Workflow`` form of :class:`prm_plugins.strategies.SelfCritique`, with one
step per stage so that each shows up in traces, ``draw_all_possible_flows`` and the event
stream::

    StartEvent --generate--> VerifyEvent --verify--> StopEvent (passed, or no rounds left)
                                  ^                  |
                                  |                  v
                                  +----revise---- ReviseEvent

Verification is :func:`prm_plugins.strategies.averify`, the feedback and the revision
prompt are the core's (:attr:`Verdict.feedback`, :func:`build_revision_prompt`), LLM calls
are retried by :class:`RetryPolicy`, and the result is the core's
:class:`~prm_plugins.strategies.CritiqueResult`.

With a :class:`~prm_plugins.budget.Budget` the run is metered as core
:class:`~prm_plugins.strategies.SelfCritique` is: each LLM call, the text it generated
(``Budget.count_tokens``) and each chain scored are charged; a revision starts only while
one more LLM call and one more scoring fit (and the token and time limits are not reached);
when it runs out the best round so far is the result, with ``result.budget.exhausted``
naming the limit. If not even the first solution fits,
:class:`~prm_plugins.errors.BudgetExhaustedError`.
"""

from __future__ import annotations

import logging
from typing import Any

from llama_index.core.llms import LLM
from llama_index.core.workflow import Context, Event, StartEvent, StopEvent, Workflow, step

from prm_plugins.adapters.llamaindex.events import emit_verdict
from prm_plugins.adapters.llamaindex.generator import LlamaIndexGenerator, check_llm
from prm_plugins.budget import Budget, BudgetMeter
from prm_plugins.errors import InvalidInputError, PRMError
from prm_plugins.plans import CallOutcome, describe_error
from prm_plugins.strategies import (
    AllCandidatesFailedError,
    CritiqueResult,
    CritiqueRound,
    EmptyGenerationsError,
    RetryPolicy,
    build_revision_prompt,
)
from prm_plugins.strategies.critique import redo_point
from prm_plugins.strategies.options import RedoFrom, SelfCritiqueOptions
from prm_plugins.strategies.verify import as_steps, averify, to_steps
from prm_plugins.types import Aggregation, Splitter, StepScorer
from prm_plugins.validation import check_question, check_scorer

__all__ = [
    "CritiqueRoundEvent",
    "PRMSelfCritiqueWorkflow",
    "ReviseEvent",
    "SelfCritiqueStartEvent",
    "VerifyEvent",
]

logger = logging.getLogger(__name__)

_QUESTION = "prm_question"
_HISTORY = "prm_history"
_CURRENT = "prm_current_steps"
_METER = "prm_budget_meter"


class SelfCritiqueStartEvent(StartEvent):
    """Start: the question, and optionally a solution to start from instead of generating.

    ``workflow.run(question=..., solution=...)`` builds it.
    """

    question: str
    solution: str | list[str] | None = None


class VerifyEvent(Event):
    """A chain to verify: round 0 is the first solution, later rounds revisions."""

    round: int
    steps: list[str]
    kept_steps: int = 0
    feedback: str | None = None
    generated: str | None = None
    attempts: int = 0


class ReviseEvent(Event):
    """Ask the LLM to redo the solution after ``prefix`` (the steps kept)."""

    round: int
    prefix: list[str]
    feedback: str


class CritiqueRoundEvent(Event):
    """Written to the event stream after each round (``handler.stream_events()``).

    Attributes:
        round: 0 for the first solution, then 1, 2, ... for revisions.
        steps: the chain after the round.
        score: its chain score (``None`` for a failed round).
        passed: whether it passed.
        feedback: the feedback sent for the next revision (``None`` when none follows).
        error: why the round failed, if it did.
        budget: what the run has spent so far (:meth:`BudgetSpent.to_dict
            <prm_plugins.budget.BudgetSpent.to_dict>`; its ``exhausted`` names the limit
            that stopped the revisions, if one did); ``None`` for a run without a budget.
    """

    round: int
    steps: list[str]
    score: float | None = None
    passed: bool = False
    feedback: str | None = None
    error: str | None = None
    budget: dict[str, Any] | None = None


class PRMSelfCritiqueWorkflow(Workflow):
    """Self-critique as a LlamaIndex ``Workflow``: generate, verify, revise until it passes.

    ``await workflow.run(question=...)`` returns a
    :class:`~prm_plugins.strategies.CritiqueResult`: ``.solution`` (the final answer text,
    one step per line), ``.verdict.score`` and ``.passed``, ``.history`` (every round, with
    its verdict and the feedback it was given) and ``.revisions``. Pass ``solution=...`` to
    critique a given answer instead of generating one. A :class:`CritiqueRoundEvent` is
    written to the stream after each round; each verification sends a
    :class:`PRMStepsScoredEvent` and each failed one a :class:`PRMVerificationFailedEvent`.

    With ``budget=``, a revision round starts only while one more LLM call and one more
    scoring fit; when the budget runs out the best round so far is returned, and
    ``result.budget`` (and each :class:`CritiqueRoundEvent`'s ``budget``) reports the
    spend (module docs).

    State lives in the run's ``Context`` (the budget's meter included), so one workflow
    object serves concurrent runs, each with its own budget.

    Args:
        llm: the LlamaIndex LLM that writes and revises solutions.
        prm: a :class:`~prm_plugins.StepScorer`, e.g. ``load_prm()``.
        threshold: pass mark in [0, 1].
        max_rounds: most revision rounds after the first solution (>= 0).
        aggregate: chain score for the pass/fail decision.
        split: how generated text is cut into steps.
        redo_from: ``"first_failing"`` (default) or ``"weakest"``; see
            :class:`~prm_plugins.strategies.SelfCritique`.
        return_best: return the best-scored round (ties go to the later one); ``False``
            returns the last verified round.
        retry: retry policy for LLM calls.
        budget: a :class:`~prm_plugins.budget.Budget` for each run (LLM calls, generated
            tokens, chains scored, wall time); ``None`` for no limit.
        system_prompt: a system message for chat LLMs.
        timeout: workflow timeout in seconds (``None``: no timeout).
        **workflow_kwargs: other ``Workflow`` arguments (``verbose``, ...).

    Raises:
        InvalidInputError: for a bad option (the message shows the value received).

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> wf = PRMSelfCritiqueWorkflow(llm, load_prm(), max_rounds=2)  # doctest: +SKIP
        >>> result = await wf.run(question="A pen costs $3. How much do 4 pens cost?")
        ... # doctest: +SKIP
        >>> result.solution, round(result.verdict.score, 2), result.revisions  # doctest: +SKIP
        ('4 * 3 = 12\\nThe answer is 12.', 0.91, 1)
    """

    def __init__(
        self,
        llm: LLM,
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
        system_prompt: str | None = None,
        timeout: float | None = None,
        **workflow_kwargs: Any,
    ) -> None:
        check_llm(llm)
        # The core validates every option and raises InvalidInputError naming the bad one.
        check_scorer(prm)
        self.options = SelfCritiqueOptions(threshold=threshold, max_rounds=max_rounds,
                                           aggregate=aggregate, split=split,
                                           redo_from=redo_from, return_best=return_best,
                                           retry=retry, budget=budget)
        self.prm = prm
        self.generator = LlamaIndexGenerator(llm, system_prompt=system_prompt)
        super().__init__(timeout=timeout, **workflow_kwargs)

    # -- steps -----------------------------------------------------------------------------
    @step
    async def generate(self, ctx: Context, ev: SelfCritiqueStartEvent) -> VerifyEvent:
        """Write the first solution (or take the one given)."""
        question = check_question(ev.question)
        await ctx.store.set(_QUESTION, question)
        await ctx.store.set(_HISTORY, [])
        meter = BudgetMeter(self.options.budget)  # the run's wall clock starts here
        await ctx.store.set(_METER, meter)
        if ev.solution is not None:
            return VerifyEvent(round=0, steps=as_steps(ev.solution, self.options.split))
        if not meter.can_score(meter.can_generate(1)):
            raise meter.refusal("self_critique: the first solution was not generated")
        outcome = await self._call(meter, question)
        text, steps, error = self._read(outcome)
        if error is not None:
            cls = AllCandidatesFailedError if outcome.error is not None else EmptyGenerationsError
            causes = [] if outcome.error is None else [outcome.error]
            raise cls(f"the first solution could not be generated: {error}",
                      causes=causes) from outcome.error
        return VerifyEvent(round=0, steps=steps, generated=text, attempts=outcome.attempts)

    @step
    async def verify(self, ctx: Context, ev: VerifyEvent) -> ReviseEvent | StopEvent:
        """Score the chain; stop when it passes or no rounds are left, else ask to revise."""
        o = self.options
        question: str = await ctx.store.get(_QUESTION)
        history: list[CritiqueRound] = await ctx.store.get(_HISTORY)
        meter: BudgetMeter = await ctx.store.get(_METER)
        record = CritiqueRound(ev.round, ev.steps, None, kept_steps=ev.kept_steps,
                               feedback=ev.feedback, generated=ev.generated,
                               attempts=ev.attempts)
        try:
            if not meter.take_chains(1):  # a BudgetExhaustedError is a PRMError
                raise meter.refusal("chain scoring not made")
            verdict = await averify(question, ev.steps, self.prm, o.threshold, o.aggregate,
                                    o.split)
        except PRMError as exc:
            if ev.round == 0:
                raise
            record.error = f"scoring: {describe_error(exc)}"
            record.steps = await ctx.store.get(_CURRENT)
            history.append(record)
            await ctx.store.set(_HISTORY, history)
            logger.warning("self-critique round %d failed: %s", ev.round, record.error)
            stop = await self._next_or_stop(ctx, ev.round, history, meter)
            ctx.write_event_to_stream(CritiqueRoundEvent(round=ev.round, steps=record.steps,
                                                         error=record.error,
                                                         budget=_spent(meter)))
            return stop
        record.verdict = verdict
        history.append(record)
        await ctx.store.set(_HISTORY, history)
        await ctx.store.set(_CURRENT, list(ev.steps))
        will_retry = (not verdict.passed and ev.round < o.max_rounds
                      and _fits(meter, ev.round + 1))
        k: int | None = None
        feedback: str | None = None
        if not verdict.passed:
            k, feedback = redo_point(verdict, o.redo_from, o.aggregate)
        emit_verdict("self_critique", question, verdict, o.aggregate, feedback=feedback,
                     flagged_step=k if not verdict.passed else None, round=ev.round,
                     will_retry=will_retry)
        ctx.write_event_to_stream(CritiqueRoundEvent(
            round=ev.round, steps=list(ev.steps), score=verdict.score, passed=verdict.passed,
            feedback=feedback if will_retry else None, budget=_spent(meter)))
        if not will_retry:
            return StopEvent(result=self._result(history, meter))
        assert k is not None and feedback is not None
        logger.info("self-critique round %d: redoing from step %d (score %.3f)", ev.round + 1,
                    k + 1, verdict.step_scores.scores[k])
        return ReviseEvent(round=ev.round + 1, prefix=list(ev.steps[:k]), feedback=feedback)

    @step
    async def revise(self, ctx: Context, ev: ReviseEvent) -> VerifyEvent | ReviseEvent | StopEvent:
        """Ask the LLM for the steps after the kept prefix (core revision prompt)."""
        question: str = await ctx.store.get(_QUESTION)
        meter: BudgetMeter = await ctx.store.get(_METER)
        prompt = build_revision_prompt(question, ev.prefix, ev.feedback)
        outcome = await self._call(meter, prompt)
        text, steps, error = self._read(outcome)
        if error is None:
            return VerifyEvent(round=ev.round, steps=[*ev.prefix, *steps],
                               kept_steps=len(ev.prefix), feedback=ev.feedback, generated=text,
                               attempts=outcome.attempts)
        history: list[CritiqueRound] = await ctx.store.get(_HISTORY)
        current: list[str] = await ctx.store.get(_CURRENT)
        history.append(CritiqueRound(ev.round, current, None, kept_steps=len(ev.prefix),
                                     feedback=ev.feedback, generated=text, error=error,
                                     attempts=outcome.attempts))
        await ctx.store.set(_HISTORY, history)
        logger.warning("self-critique round %d failed: %s", ev.round, error)
        again = ev.round < self.options.max_rounds and _fits(meter, ev.round + 1)
        ctx.write_event_to_stream(CritiqueRoundEvent(round=ev.round, steps=current, error=error,
                                                     budget=_spent(meter)))
        if again:
            return ReviseEvent(round=ev.round + 1, prefix=ev.prefix, feedback=ev.feedback)
        return StopEvent(result=self._result(history, meter))

    # -- helpers ---------------------------------------------------------------------------
    async def _next_or_stop(
        self, ctx: Context, round_: int, history: list[CritiqueRound], meter: BudgetMeter
    ) -> ReviseEvent | StopEvent:
        """After a failed round: retry the last revision request (budget allowing), or stop."""
        last = next(r for r in reversed(history) if r.verdict is not None)
        if (round_ < self.options.max_rounds and last.verdict is not None
                and _fits(meter, round_ + 1)):
            failed = history[-1]
            return ReviseEvent(round=round_ + 1, prefix=list(failed.steps[: failed.kept_steps]),
                               feedback=failed.feedback or last.verdict.feedback)
        return StopEvent(result=self._result(history, meter))

    async def _call(self, meter: BudgetMeter, prompt: str) -> CallOutcome:
        """One LLM call (retried), charged to ``meter``: the call, then the text it returned."""
        meter.charge_calls(1)  # a call counts once however many retries it takes
        outcome = await self.options.retry_policy.acall(self.generator.asample, prompt, 1,
                                                        what="LlamaIndex LLM call")
        if outcome.error is None:
            meter.charge_outputs([outcome.value])
        return outcome

    def _read(self, outcome: CallOutcome) -> tuple[str | None, list[str], str | None]:
        """(text, steps, error) of an LLM call's outcome."""
        if outcome.error is not None:
            return None, [], describe_error(outcome.error)
        text = outcome.value[0] if outcome.value else ""
        try:
            steps = to_steps(text, self.options.split)
        except Exception as exc:  # a user-supplied split callable failed
            return text, [], f"split failed: {describe_error(exc)}"
        if not steps:
            return text, [], "empty generation (no steps)"
        return text, steps, None

    def _result(self, history: list[CritiqueRound], meter: BudgetMeter) -> CritiqueResult:
        verified = [r for r in history if r.verdict is not None]
        if not verified:  # pragma: no cover - round 0 is always verified or raises
            raise InvalidInputError("no round was verified")
        if self.options.return_best:
            chosen = verified[0]
            for r in verified[1:]:
                assert r.verdict is not None and chosen.verdict is not None
                if r.verdict.score >= chosen.verdict.score:
                    chosen = r
        else:
            chosen = verified[-1]
        assert chosen.verdict is not None
        generated = [r for r in history if r.round > 0 or r.generated is not None]
        return CritiqueResult(steps=chosen.steps, verdict=chosen.verdict, history=history,
                              generator_calls=len(generated),
                              attempts=sum(r.attempts for r in history), budget=meter.report())


def _fits(meter: BudgetMeter, round_: int) -> bool:
    """Whether revision round ``round_`` fits: one more LLM call and one more scoring."""
    if meter.can_score(meter.can_generate(1)):
        return True
    logger.info("self-critique: the budget's %s limit stopped the revisions before round %d",
                meter.exhausted(), round_)
    return False


def _spent(meter: BudgetMeter) -> dict[str, Any] | None:
    """What a run has spent so far, JSON-ready (``None`` for a run without a budget)."""
    spent = meter.report()
    return None if spent is None else spent.to_dict()
