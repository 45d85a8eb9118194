"""A PRM as a DSPy reward function, for ``dspy.BestOfN`` and ``dspy.Refine``.

DSPy calls a ``reward_fn`` as ``reward_fn(args, pred) -> float``: ``args`` is the dict of
keyword arguments the module was called with, ``pred`` the ``dspy.Prediction`` it returned.
Both modules call it synchronously once per attempt, keep the attempt with the highest
reward and stop at the first one whose reward is ``>= threshold``; an exception raised in
the module *or* in ``reward_fn`` is caught, printed (``"BestOfN: Attempt 1 failed with
rollout id ...: <message>"``) and counted as a failed attempt. ``Refine`` also hands the
reward function's source (for an object: its class's source) to the LM that writes advice
for the next attempt. Neither has an async path (no ``aforward``), so the reward is sync.
This was read from DSPy 3.4.1: ``dspy/predict/best_of_n.py`` (lines 36-83) and
``dspy/predict/refine.py`` (lines 87-96 and 98-177).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prm_plugins import load_prm
from prm_plugins.errors import ChainTooLongError, InvalidInputError, PRMError
from prm_plugins.strategies.verify import to_steps
from prm_plugins.types import Aggregation, Splitter, StepScorer, StepScores, aggregate_scores
from prm_plugins.validation import (
    check_aggregate,
    check_count,
    check_question,
    check_scorer,
    check_split,
    check_step_scores,
    check_threshold,
)

__all__ = ["DEFAULT_MAX_CHARS", "UNSCORABLE_REWARD", "PRMReward", "RewardRecord",
           "prm_reward_fn"]

logger = logging.getLogger(__name__)

#: The reward of a prediction the PRM cannot score (see :class:`PRMReward`).
UNSCORABLE_REWARD = 0.0
#: Longest reasoning text (characters) sent to the PRM; longer text is unscorable.
DEFAULT_MAX_CHARS = 100_000


@dataclass(frozen=True)
class RewardRecord:
    """One call of a :class:`PRMReward`: what was scored and the reward it gave.

    Attributes:
        question: the question, from the module's inputs.
        steps: the steps scored (empty when none could be read).
        step_scores: the PRM's scores, or ``None`` for an unscorable prediction.
        reward: the value returned to DSPy.
        problem: why the prediction was unscorable; ``None`` when it was scored.
    """

    question: str
    steps: tuple[str, ...]
    step_scores: StepScores | None
    reward: float
    problem: str | None = None

    @property
    def scored(self) -> bool:
        """Whether the PRM scored the prediction."""
        return self.step_scores is not None


class PRMReward:
    """A PRM as the ``reward_fn`` of ``dspy.BestOfN`` / ``dspy.Refine``.

    Each call reads the question from ``args[question_field]`` and the reasoning from
    ``pred[steps_field]``: a string is cut into steps by ``split``, a list of strings is
    taken as the steps. With ``answer_field``, that field's text is scored as one more,
    final step. The steps are scored with ``prm`` and reduced to one reward in [0, 1] by
    ``aggregate`` (``"min"``: a chain is as good as its weakest step).

    LLM output is untrusted. A prediction the PRM cannot score gets ``unscorable_reward``
    (:data:`UNSCORABLE_REWARD`, 0.0, by default) and a warning on this module's logger,
    never an exception, so one bad sample cannot sink DSPy's loop: blank reasoning, a
    field holding neither text nor a list of strings, text over ``max_chars``, a chain
    over the PRM's ``max_length`` (:class:`~prm_plugins.errors.ChainTooLongError`), and
    text the PRM refuses (:class:`~prm_plugins.errors.InvalidInputError`, e.g. lone
    surrogates). A wrong configuration does raise: a field that is not there
    (:class:`InvalidInputError` naming the fields that are), a blank question, or a scorer
    that breaks its contract (:class:`~prm_plugins.errors.PRMError`). DSPy catches those
    too and prints them once per attempt; call the reward once on a prediction to see the
    error raised.

    The last ``keep`` calls are kept in :attr:`history` (:class:`RewardRecord`), to show
    why a candidate won.

    Args:
        prm: any :class:`~prm_plugins.StepScorer`; ``None`` loads the shipped default PRM
            (``load_prm()``; it catches written arithmetic slips and little else).
        question_field: the module input holding the question.
        steps_field: the prediction field holding the reasoning (``ChainOfThought``:
            ``"reasoning"``).
        answer_field: a prediction field scored as the last step (e.g. ``"answer"``);
            ``None`` scores the reasoning alone.
        aggregate: ``"min"``, ``"prod"``, ``"mean"``, ``"last"``, ``"geomean"`` or a
            callable on the list of step scores.
        split: how reasoning text is cut into steps: a :func:`prm_plugins.split_steps`
            mode or a callable ``text -> steps``.
        unscorable_reward: the reward of an unscorable prediction, in [0, 1].
        max_chars: longest reasoning text scored; ``None`` for no limit.
        keep: how many :class:`RewardRecord` to keep in :attr:`history` (0 keeps none).

    Raises:
        InvalidInputError: for an option out of range, or a ``prm`` without
            ``score_batch``.

    Examples:
        >>> import dspy  # doctest: +SKIP
        >>> reward = PRMReward(steps_field="reasoning", question_field="question")
        >>> best = dspy.BestOfN(dspy.ChainOfThought("question -> answer"), N=4,
        ...                     reward_fn=reward, threshold=0.5)  # doctest: +SKIP
        >>> pred = best(question="What is 2 + 3 * 4?")  # doctest: +SKIP
        >>> reward.history[-1].reward  # doctest: +SKIP
        0.91
    """

    def __init__(
        self,
        prm: StepScorer | None = None,
        *,
        question_field: str = "question",
        steps_field: str = "reasoning",
        answer_field: str | None = None,
        aggregate: Aggregation = "min",
        split: Splitter = "auto",
        unscorable_reward: float = UNSCORABLE_REWARD,
        max_chars: int | None = DEFAULT_MAX_CHARS,
        keep: int = 100,
    ) -> None:
        for name, value in (("question_field", question_field), ("steps_field", steps_field),
                            ("answer_field", answer_field)):
            if not (isinstance(value, str) and value) and not (
                    name == "answer_field" and value is None):
                raise InvalidInputError(f"{name} must be a non-empty field name (str); "
                                        f"received {value!r}")
        if prm is None:
            prm = load_prm()
        check_scorer(prm)
        self.prm = prm
        self.question_field = question_field
        self.steps_field = steps_field
        self.answer_field = answer_field
        self.aggregate = check_aggregate(aggregate)
        self.split = check_split(split)
        self.unscorable_reward = check_threshold(unscorable_reward, name="unscorable_reward")
        self.max_chars = check_count(max_chars, "max_chars", optional=True)
        keep_n = check_count(keep, "keep", minimum=0)
        self.history: deque[RewardRecord] = deque(maxlen=keep_n)

    def __repr__(self) -> str:
        return (f"PRMReward(prm={type(self.prm).__name__}, question_field="
                f"{self.question_field!r}, steps_field={self.steps_field!r}, "
                f"aggregate={self.aggregate!r})")

    def __call__(self, args: Mapping[str, Any], pred: Any) -> float:
        """The reward of one prediction: DSPy's ``reward_fn(args, pred)``.

        Args:
            args: the keyword arguments the module was called with.
            pred: the ``dspy.Prediction`` (or any mapping of field names to values).

        Returns:
            The aggregated step score in [0, 1], or ``unscorable_reward``.

        Raises:
            InvalidInputError: a configured field is missing, or the question is blank.
            PRMError: the scorer broke its contract (NaN, wrong number of scores).
        """
        question = self._question(args)
        fields = _fields(pred)
        raw = _field(fields, self.steps_field, "prediction")
        answer = _field(fields, self.answer_field, "prediction") if self.answer_field else None
        steps: list[str] = []
        try:
            steps = self._steps(raw, answer)
            scored = check_step_scores(self.prm.score(question, steps), steps, scorer=self.prm)
        except (ChainTooLongError, InvalidInputError) as exc:
            return self._unscorable(question, steps, str(exc))
        reward = _aggregate(scored, self.aggregate)
        self.history.append(RewardRecord(question, tuple(steps), scored, reward))
        return reward

    # -- helpers ----------------------------------------------------------------------------
    def _question(self, args: Mapping[str, Any]) -> str:
        if not isinstance(args, Mapping):
            raise InvalidInputError(f"reward_fn(args, pred) needs args to be the dict of the "
                                    f"module's inputs; received {type(args).__name__}")
        value = _field(dict(args), self.question_field, "module's inputs")
        return check_question(value)

    def _steps(self, raw: Any, answer: Any) -> list[str]:
        """The steps of a prediction; :class:`InvalidInputError` when there are none."""
        if isinstance(raw, str):
            if self.max_chars is not None and len(raw) > self.max_chars:
                raise InvalidInputError(f"the {self.steps_field!r} text is {len(raw)} "
                                        f"characters, over max_chars={self.max_chars}")
            steps = to_steps(raw, self.split)
        elif isinstance(raw, Sequence) and all(isinstance(s, str) for s in raw):
            steps = [s.strip() for s in raw if s.strip()]
        else:
            raise InvalidInputError(f"the {self.steps_field!r} field holds "
                                    f"{type(raw).__name__} {str(raw)[:80]!r}, not text or a "
                                    "list of strings")
        if not steps:
            raise InvalidInputError(f"the {self.steps_field!r} field has no steps to score; "
                                    f"received {str(raw)[:80]!r}")
        if answer is not None and str(answer).strip():
            steps.append(str(answer).strip())
        return steps

    def _unscorable(self, question: str, steps: list[str], problem: str) -> float:
        reward = float(self.unscorable_reward or 0.0)
        logger.warning("PRMReward: prediction not scored, reward %s: %s", reward, problem)
        self.history.append(RewardRecord(question, tuple(steps), None, reward, problem))
        return reward


def prm_reward_fn(
    prm: StepScorer | None = None,
    question_field: str = "question",
    steps_field: str = "reasoning",
    aggregate: Aggregation = "min",
    split: Splitter = "auto",
    **kwargs: Any,
) -> PRMReward:
    """A :class:`PRMReward` for ``dspy.BestOfN(..., reward_fn=...)`` / ``dspy.Refine``.

    Args:
        prm: any :class:`~prm_plugins.StepScorer`; ``None`` loads the shipped default PRM.
        question_field: the module input holding the question.
        steps_field: the prediction field holding the reasoning.
        aggregate: how step scores become the reward (default ``"min"``).
        split: how reasoning text is cut into steps.
        **kwargs: the other :class:`PRMReward` options (``answer_field``,
            ``unscorable_reward``, ``max_chars``, ``keep``).

    Returns:
        The reward function.

    Examples:
        >>> reward_fn = prm_reward_fn(steps_field="rationale")  # doctest: +SKIP
    """
    return PRMReward(prm, question_field=question_field, steps_field=steps_field,
                     aggregate=aggregate, split=split, **kwargs)


def _fields(pred: Any) -> dict[str, Any]:
    """A prediction's fields by name (``dspy.Prediction``/``Example`` or a mapping)."""
    if isinstance(pred, Mapping):
        return dict(pred)
    keys = getattr(pred, "keys", None)
    if callable(keys):
        try:
            return {k: pred[k] for k in keys()}
        except (KeyError, TypeError):
            pass
    raise InvalidInputError(f"reward_fn(args, pred) needs pred to be a dspy.Prediction; "
                            f"received {type(pred).__name__} {str(pred)[:80]!r}")


def _field(fields: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in fields:
        raise InvalidInputError(f"no field {name!r} in the {where}; fields available: "
                                f"{sorted(fields)}. Pass the right name (question_field=, "
                                "steps_field=, answer_field=)")
    return fields[name]


def _aggregate(scored: StepScores, how: Aggregation) -> float:
    """The reward: ``aggregate_scores`` of the step scores, checked to be a finite number."""
    try:
        value = float(aggregate_scores(scored.scores, how))
    except PRMError:
        raise
    except Exception as exc:  # a user-supplied aggregate callable failed
        raise PRMError(f"aggregate {how!r} failed on step scores {list(scored.scores)[:8]}: "
                       f"{type(exc).__name__}: {exc}") from exc
    if not math.isfinite(value):
        raise PRMError(f"aggregate {how!r} gave {value} for step scores "
                       f"{list(scored.scores)[:8]}; a reward must be a finite number")
    return value
