"""PRMVerifiedAgentRunner: run a LlamaIndex agent, check its answer with the PRM, feed back.

Works with ``FunctionAgent``, ``ReActAgent``, ``CodeActAgent`` and ``AgentWorkflow`` (any
workflow whose ``run(user_msg=..., ctx=...)`` returns an ``AgentOutput``). The agent's
answer is verified with :func:`prm_plugins.strategies.averify`; when it fails, the core's
feedback (the step to fix, quoted, with its score) is sent back as the next user message in
the **same** ``Context``, so the agent sees its own answer, its tool calls and the feedback
in memory, up to ``max_feedback_rounds`` times.

Note: when a finished ``Context`` runs again, LlamaIndex serialises it and skips the
agent's chat memory as unserialisable (``UnserializableKeyWarning``), so a plain second
``agent.run(..., ctx=ctx)`` would start from an empty memory. Before each round the runner
reads the memory from the ``Context`` and passes it back in (``memory=``).
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.agent.workflow import AgentOutput
from llama_index.core.workflow import Context, Workflow

from prm_plugins.adapters.llamaindex.events import (
    PRMVerificationFailedEvent,
    dispatcher,
    emit_verdict,
)
from prm_plugins.errors import InvalidInputError
from prm_plugins.strategies import Verdict, averify
from prm_plugins.strategies.verify import to_steps
from prm_plugins.types import Aggregation, Splitter, StepScorer
from prm_plugins.validation import (
    check_aggregate,
    check_count,
    check_question,
    check_split,
    check_threshold,
)

__all__ = ["DEFAULT_FEEDBACK_TEMPLATE", "AgentRound", "PRMVerifiedAgentRunner",
           "VerifiedAgentResult"]

logger = logging.getLogger(__name__)

#: The message sent back to the agent after a failed check. Placeholders: ``{feedback}``
#: (the core's feedback sentence), ``{score}``, ``{threshold}``, ``{round}`` (1-based
#: number of the revision asked for), ``{question}``.
DEFAULT_FEEDBACK_TEMPLATE = (
    "A step-by-step checker reviewed your answer. {feedback} "
    "Revise your answer: keep the steps that were right, fix the flagged step and the ones "
    "after it, use your tools if they help, and end with the final answer."
)

#: The feedback sentence for an answer without any step to score.
NO_STEPS_FEEDBACK = ("Your answer has no steps to check. Write the solution step by step, one "
                     "step per line.")

_PLACEHOLDERS = {"feedback", "score", "threshold", "round", "question"}


@dataclass
class AgentRound:
    """One agent run inside :meth:`PRMVerifiedAgentRunner.run`.

    Attributes:
        round: 0 for the first answer, then 1, 2, ... after feedback.
        user_msg: the message the agent got (the question, then the feedback messages).
        output: the agent's ``AgentOutput``.
        response: the answer text that was verified.
        verdict: the PRM's verdict (``None`` when the answer had no steps).
        feedback: the message sent back after this round (``None`` when none was).
    """

    round: int
    user_msg: str
    output: Any
    response: str
    verdict: Verdict | None
    feedback: str | None = None

    @property
    def score(self) -> float:
        """The chain score (0.0 for an answer without steps)."""
        return 0.0 if self.verdict is None else self.verdict.score

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``AgentOutput`` left out)."""
        return {
            "round": self.round,
            "user_msg": self.user_msg,
            "response": self.response,
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
            "feedback": self.feedback,
        }


@dataclass
class VerifiedAgentResult:
    """What :meth:`PRMVerifiedAgentRunner.run` ended with.

    Attributes:
        output: the chosen round's ``AgentOutput`` (the best-scored round by default).
        response: its answer text.
        verdict: its verdict (``None`` only when no round had any step).
        rounds: every round, in order.
        ctx: the ``Context`` the agent ran in (its memory holds the whole exchange); pass
            it to the next ``run`` to continue the conversation.
    """

    output: Any
    response: str
    verdict: Verdict | None
    rounds: list[AgentRound] = field(default_factory=list)
    ctx: Any = None

    @property
    def passed(self) -> bool:
        """Whether the chosen answer passed the check."""
        return self.verdict is not None and self.verdict.passed

    @property
    def score(self) -> float:
        """The chosen answer's chain score (0.0 when it had no steps)."""
        return 0.0 if self.verdict is None else self.verdict.score

    @property
    def feedback_rounds(self) -> int:
        """How many times feedback was sent back to the agent."""
        return sum(1 for r in self.rounds if r.feedback is not None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "response": self.response,
            "passed": self.passed,
            "score": self.score,
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
            "rounds": [r.to_dict() for r in self.rounds],
        }


def default_solution(output: Any) -> str:
    """The text an agent answered: ``str(AgentOutput)`` (its response message's content)."""
    if isinstance(output, AgentOutput):
        return output.response.content or ""
    return "" if output is None else str(output)


class PRMVerifiedAgentRunner:
    """Run an agent, verify its answer with a PRM, and feed back in the same ``Context``.

    Round 0 runs the agent on the question. While the answer's chain score is under
    ``threshold`` and feedback rounds remain, the feedback (``feedback_template`` filled
    with the core's feedback sentence) is sent as the next ``user_msg`` in the same
    ``Context``. The PRM always scores against the original question. Each check sends a
    :class:`PRMStepsScoredEvent`, and each failed one a :class:`PRMVerificationFailedEvent`.

    Args:
        agent: a ``FunctionAgent``, ``ReActAgent``, ``CodeActAgent`` or ``AgentWorkflow``.
        prm: a :class:`~prm_plugins.StepScorer`, e.g. ``load_prm()``.
        threshold: pass mark in [0, 1].
        max_feedback_rounds: most times feedback is sent back (>= 0; 0 only scores).
        aggregate: chain score for the pass/fail decision.
        split: how the answer is cut into steps.
        feedback_template: the feedback message; see :data:`DEFAULT_FEEDBACK_TEMPLATE` for
            its placeholders.
        solution_fn: ``AgentOutput -> text`` to verify (default: the response content).
        return_best: return the best-scored round (ties go to the later one); ``False``
            returns the last round.

    Raises:
        InvalidInputError: for a bad option (the message shows the value received).

    Examples:
        >>> from llama_index.core.agent.workflow import FunctionAgent  # doctest: +SKIP
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> agent = FunctionAgent(tools=[multiply], llm=llm)  # doctest: +SKIP
        >>> runner = PRMVerifiedAgentRunner(agent, load_prm(), max_feedback_rounds=2)
        ... # doctest: +SKIP
        >>> result = await runner.run("A pen costs $3. How much do 4 pens cost?")
        ... # doctest: +SKIP
        >>> result.response, result.passed, result.feedback_rounds  # doctest: +SKIP
        ('4 * 3 = 12\\nThe answer is 12.', True, 1)
    """

    def __init__(
        self,
        agent: Workflow,
        prm: StepScorer,
        *,
        threshold: float = 0.5,
        max_feedback_rounds: int = 2,
        aggregate: Aggregation = "min",
        split: Splitter = "auto",
        feedback_template: str = DEFAULT_FEEDBACK_TEMPLATE,
        solution_fn: Callable[[Any], str] | None = None,
        return_best: bool = True,
    ) -> None:
        if not isinstance(agent, Workflow) or not callable(getattr(agent, "run", None)):
            raise InvalidInputError(
                "agent must be a LlamaIndex agent workflow (FunctionAgent, ReActAgent, "
                f"CodeActAgent or AgentWorkflow); received {type(agent).__name__}"
            )
        if not callable(getattr(prm, "ascore", None)):
            raise InvalidInputError(
                f"prm must be a StepScorer (with ascore(), e.g. load_prm()); received "
                f"{type(prm).__name__}"
            )
        check_count(max_feedback_rounds, "max_feedback_rounds", minimum=0)
        if solution_fn is not None and not callable(solution_fn):
            raise InvalidInputError(
                f"solution_fn must be a callable AgentOutput -> str, or None; got {solution_fn!r}"
            )
        _check_template(feedback_template)
        threshold_f = check_threshold(threshold)
        assert threshold_f is not None
        self.agent = agent
        self.prm = prm
        self.threshold = threshold_f
        self.max_feedback_rounds = max_feedback_rounds
        self.aggregate = check_aggregate(aggregate)
        self.split = check_split(split)
        self.feedback_template = feedback_template
        self.solution_fn = solution_fn or default_solution
        self.return_best = return_best

    async def run(
        self, user_msg: str, *, ctx: Context | None = None, **run_kwargs: Any
    ) -> VerifiedAgentResult:
        """Run the agent on ``user_msg``, verifying and feeding back (awaitable).

        Args:
            user_msg: the question.
            ctx: the ``Context`` to run in (e.g. to continue a conversation); a new one
                when ``None``.
            **run_kwargs: passed to every ``agent.run`` (``max_iterations``, ...).

        Returns:
            A :class:`VerifiedAgentResult`.

        Raises:
            InvalidInputError: for an empty question or a ``solution_fn`` that does not
                return a str.
        """
        question = check_question(user_msg)
        ctx = ctx if ctx is not None else Context(self.agent)
        rounds: list[AgentRound] = []
        message = question
        kwargs = dict(run_kwargs)
        for r in range(self.max_feedback_rounds + 1):
            # A finished Context is serialised when it runs again, and the agent's chat
            # memory is skipped as unserialisable: hand it back in explicitly (this also
            # keeps the memory of a Context the caller ran before).
            memory = await ctx.store.get("memory", default=None)
            if memory is not None and "memory" not in run_kwargs:
                kwargs["memory"] = memory
            output = await self.agent.run(user_msg=message, ctx=ctx, **kwargs)
            response = self.solution_fn(output)
            if not isinstance(response, str):
                raise InvalidInputError(
                    f"solution_fn must return a str; it returned {type(response).__name__}"
                )
            verdict = await self._verify(question, response)
            record = AgentRound(r, message, output, response, verdict)
            rounds.append(record)
            if verdict is not None and verdict.passed:
                emit_verdict("agent", question, verdict, self.aggregate, round=r)
                break
            will_retry = r < self.max_feedback_rounds
            feedback = self._feedback(question, verdict, r + 1)
            if verdict is not None:
                emit_verdict("agent", question, verdict, self.aggregate, round=r,
                             will_retry=will_retry)
            else:
                dispatcher.event(PRMVerificationFailedEvent(
                    source="agent", question=question, score=0.0, threshold=self.threshold,
                    flagged_step=None, feedback=NO_STEPS_FEEDBACK, round=r,
                    will_retry=will_retry))
            if not will_retry:
                break
            record.feedback = message = feedback
            logger.info("verified agent: answer scored %s; sending feedback (round %d of %d)",
                        "n/a" if verdict is None else f"{verdict.score:.3f}", r + 1,
                        self.max_feedback_rounds)
        chosen = self._choose(rounds)
        return VerifiedAgentResult(output=chosen.output, response=chosen.response,
                                   verdict=chosen.verdict, rounds=rounds, ctx=ctx)

    async def _verify(self, question: str, response: str) -> Verdict | None:
        if not to_steps(response, self.split):
            return None
        return await averify(question, response, self.prm, self.threshold, self.aggregate,
                             self.split)

    def _feedback(self, question: str, verdict: Verdict | None, round_: int) -> str:
        if verdict is None:
            sentence, score = NO_STEPS_FEEDBACK, 0.0
        else:
            sentence, score = verdict.feedback, verdict.score
        return self.feedback_template.format(feedback=sentence, score=f"{score:.2f}",
                                             threshold=f"{self.threshold:.2f}",
                                             round=round_, question=question)

    def _choose(self, rounds: list[AgentRound]) -> AgentRound:
        if not self.return_best:
            return rounds[-1]
        chosen = rounds[0]
        for r in rounds[1:]:
            if r.score >= chosen.score:
                chosen = r
        return chosen


def _check_template(template: object) -> None:
    if not isinstance(template, str):
        raise InvalidInputError(f"feedback_template must be a str, got {template!r}")
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise InvalidInputError(
            f"feedback_template is not a valid format string ({exc}); double literal braces "
            f"as {{{{ and }}}}. Received {template[:80]!r}"
        ) from exc
    unknown = names - _PLACEHOLDERS
    if unknown:
        raise InvalidInputError(
            f"feedback_template has unknown placeholders {sorted(unknown)}; use only "
            f"{sorted(_PLACEHOLDERS)}. Received {template[:80]!r}"
        )
