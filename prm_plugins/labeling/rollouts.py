"""Monte Carlo rollout labels (Math-Shepherd): how often a step prefix still reaches the answer.

For a chain ``s_1 .. s_n`` with a known gold answer, each prefix ``s_1 .. s_k`` (k < n) is
continued ``n_rollouts`` times by a generator (one ``generator.sample(prompt, n_rollouts)``
call per prefix, with the prompt of :func:`build_rollout_prompt`), and each completion's final
answer is checked against the gold answer by an answer checker (default:
:func:`prm_plugins.answers.extract_answer` + :func:`~prm_plugins.answers.
answers_match`). Then, for step ``k``:

* the **soft label** is the fraction of its rollouts that reach the gold answer (Math-Shepherd's
  soft estimate, SE);
* the **hard label** is ``soft > threshold``; with the default ``threshold=0`` that is
  Math-Shepherd's hard estimate (HE): a step is good when at least one rollout from it reaches
  the gold answer.

The last step is not rolled out (there is nothing left to write): its soft label is 1.0 when
the chain's own final answer matches the gold answer and 0.0 otherwise (``rollout_last_step=True``
rolls it out like the others). Labels are estimates per prefix and are **not** propagated:
a good step may follow a bad one. Generator calls run concurrently (``max_concurrency``) and are
retried on transient errors (:class:`~prm_plugins.strategies.RetryPolicy`); a chain whose call
fails after the retries is reported as failed, not fatal to the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prm_plugins.answers import answer_is_correct
from prm_plugins.errors import InvalidInputError
from prm_plugins.labeling.grader import as_chain
from prm_plugins.plans import (
    AsyncRunner,
    CallOutcome,
    GenerateCalls,
    RetryPolicy,
    SyncRunner,
    describe_error,
)
from prm_plugins.validation import check_count, check_generator, check_max_concurrency

__all__ = [
    "AnswerChecker",
    "MonteCarloLabeler",
    "RolloutLabels",
    "as_rollout_item",
    "build_rollout_prompt",
    "default_answer_checker",
    "rollout_rows",
]

logger = logging.getLogger(__name__)

#: ``checker(solution_text, gold_answer) -> bool``: does this text reach the gold answer?
AnswerChecker = Callable[[str, str], bool]
#: ``builder(question, prefix) -> prompt`` for the generator's ``sample``.
PromptBuilder = Callable[[str, Sequence[str]], str]


def default_answer_checker(text: str, gold_answer: str) -> bool:
    """Whether the final answer stated in ``text`` matches ``gold_answer``.

    The answer is found with :func:`~prm_plugins.answers.extract_answer`
    (``\\boxed{}``, ``#### N``, "The answer is ...", else the last number) and compared with
    :func:`~prm_plugins.answers.answers_match` (``"1,000"`` equals ``"1000.00"``).

    Examples:
        >>> default_answer_checker("12 - 2 = 10\\nThe answer is 10.", "10")
        True
        >>> default_answer_checker("12 + 2 = 14\\nThe answer is 14.", "10")
        False
    """
    return answer_is_correct(text, gold_answer)


def build_rollout_prompt(question: str, prefix: Sequence[str]) -> str:
    """The prompt that asks the generator to finish a solution from a step prefix.

    Args:
        question: the problem.
        prefix: the steps written so far (kept as they are).

    Returns:
        The prompt text.

    Examples:
        >>> print(build_rollout_prompt("Tom has 3 bags of 4 apples. How many?", ["3 * 4 = 12"]))
        Tom has 3 bags of 4 apples. How many?
        <BLANKLINE>
        Steps so far (keep them as they are):
        Step 1: 3 * 4 = 12
        <BLANKLINE>
        Continue the solution from step 2: one step per line, without repeating the steps \
above, and end with "The answer is <answer>."
    """
    parts = [question.strip(), ""]
    if prefix:
        parts.append("Steps so far (keep them as they are):")
        parts.extend(f"Step {i}: {s}" for i, s in enumerate(prefix, start=1))
        parts.append("")
    parts.append(
        f"Continue the solution from step {len(prefix) + 1}: one step per line, without "
        'repeating the steps above, and end with "The answer is <answer>."'
    )
    return "\n".join(parts)


@dataclass
class RolloutLabels:
    """Monte Carlo labels of one chain.

    Attributes:
        question: the problem.
        steps: the chain's steps.
        gold_answer: the answer rollouts are checked against.
        soft_labels: per step, the fraction of its rollouts that reach the gold answer
            (the last step: 1.0/0.0 from the chain's own answer unless rolled out).
        labels: per step, ``soft_label > threshold``.
        rollouts: per step, completions checked (0 for a last step checked directly).
        correct: per step, completions that reached the gold answer.
        threshold: the hard-label threshold used.
        completions: per rolled-out step, the completions (only with ``keep_completions``).
        error: why the chain failed (``None`` when it did not); a failed chain has empty
            label lists.
        generator_calls: ``sample`` calls made for this chain (retries not counted).
        attempts: generator attempts, retries included.
        id: the input row's ``"id"``, when it had one.
    """

    question: str
    steps: list[str]
    gold_answer: str
    soft_labels: list[float] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    rollouts: list[int] = field(default_factory=list)
    correct: list[int] = field(default_factory=list)
    threshold: float = 0.0
    completions: list[list[str]] | None = None
    error: str | None = None
    generator_calls: int = 0
    attempts: int = 0
    id: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every step got a label."""
        return self.error is None and len(self.labels) == len(self.steps)

    def to_row(self, *, source: str = "mc-rollouts") -> dict[str, Any]:
        """The TRL stepwise row: hard ``labels`` plus ``soft_labels`` and rollout counts.

        Returns:
            ``{"prompt", "completions", "labels", "soft_labels", "rollouts",
            "correct_rollouts", "source", "gold_answer", "threshold"}`` and ``"id"`` when
            known.

        Raises:
            InvalidInputError: for a failed chain.
        """
        if not self.ok:
            raise InvalidInputError(
                f"chain {self.id or self.question[:60]!r} has no labels ({self.error}); "
                "filter with RolloutLabels.ok"
            )
        row: dict[str, Any] = {}
        if self.id is not None:
            row["id"] = self.id
        row.update({
            "prompt": self.question, "completions": list(self.steps),
            "labels": list(self.labels), "soft_labels": list(self.soft_labels),
            "rollouts": list(self.rollouts), "correct_rollouts": list(self.correct),
            "source": source, "gold_answer": self.gold_answer, "threshold": self.threshold,
        })
        return row


def rollout_rows(
    results: Iterable[RolloutLabels], *, source: str = "mc-rollouts"
) -> list[dict[str, Any]]:
    """Stepwise rows of the chains that were labelled (failed ones are skipped)."""
    return [r.to_row(source=source) for r in results if r.ok]


RolloutInput = Mapping[str, Any] | Sequence[Any]


def as_rollout_item(
    item: RolloutInput, position: int
) -> tuple[str, list[str], str, str | None]:
    """``(question, steps, gold_answer, id)`` of one rollout input, checked.

    Args:
        item: a ``(question, steps, gold_answer)`` triple, or a row with ``prompt``,
            ``completions`` and ``gold_answer`` (its ``"id"`` is kept).
        position: its position in the batch (named in errors).

    Raises:
        InvalidInputError: naming the position, for anything else or an empty gold answer.
    """
    where = f"chain {position}: "
    if isinstance(item, Mapping):
        gold = item.get("gold_answer")
        question, steps, ident = as_chain(item, position)
    elif isinstance(item, (tuple, list)) and len(item) == 3:
        question, steps, ident = as_chain((item[0], item[1]), position)
        gold = item[2]
    else:
        raise InvalidInputError(
            f"{where}expected a (question, steps, gold_answer) triple or a row with 'prompt', "
            f"'completions' and 'gold_answer'; received {type(item).__name__}"
        )
    if isinstance(gold, (int, float)) and not isinstance(gold, bool):
        gold = str(gold)
    if not isinstance(gold, str) or not gold.strip():
        raise InvalidInputError(
            f"{where}a gold answer is needed to check rollouts (key 'gold_answer'); received "
            f"{type(gold).__name__} {gold!r}"
        )
    return question, steps, gold.strip(), ident


class MonteCarloLabeler:
    """Math-Shepherd labels: roll out every step prefix and count the rollouts that succeed.

    Args:
        generator: has ``sample(prompt, n)`` (or ``asample`` for the async forms); see
            :class:`prm_plugins.generators.Generator`.
        n_rollouts: completions per prefix (N in Math-Shepherd; >= 1).
        threshold: a step's hard label is ``soft_label > threshold`` (in [0, 1); 0 is
            Math-Shepherd's hard estimate).
        answer_checker: ``checker(completion_text, gold_answer) -> bool``
            (default :func:`default_answer_checker`).
        prompt_builder: ``builder(question, prefix) -> prompt``
            (default :func:`build_rollout_prompt`).
        rollout_last_step: roll out the full chain too, instead of checking its own answer.
        keep_completions: keep every completion on the result (for inspection).
        max_concurrency: most generator calls in flight at once.
        retry: retry policy for transient generator errors.
        source: value of the ``"source"`` key of the rows.

    Examples:
        >>> class Gen:  # a scripted generator: one good and one bad rollout per prefix
        ...     def sample(self, prompt, n):
        ...         return ["The answer is 10.", "The answer is 7."][:n]
        >>> labeler = MonteCarloLabeler(Gen(), n_rollouts=2)
        >>> r = labeler.label("Tom has 3 bags of 4 apples and eats 2. How many are left?",
        ...                   ["3 * 4 = 12", "12 - 2 = 10", "The answer is 10."], "10")
        >>> r.soft_labels, r.labels, r.generator_calls
        ([0.5, 0.5, 1.0], [True, True, True], 2)
    """

    def __init__(
        self,
        generator: Any,
        *,
        n_rollouts: int = 8,
        threshold: float = 0.0,
        answer_checker: AnswerChecker | None = None,
        prompt_builder: PromptBuilder | None = None,
        rollout_last_step: bool = False,
        keep_completions: bool = False,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        source: str = "mc-rollouts",
    ) -> None:
        check_count(n_rollouts, "n_rollouts")
        if (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                or not 0.0 <= threshold < 1.0):
            raise InvalidInputError(
                f"threshold must be a number in [0, 1) (a step is good when its soft label is "
                f"above it), got {threshold!r}"
            )
        if answer_checker is not None and not callable(answer_checker):
            raise InvalidInputError(
                f"answer_checker must be callable(text, gold) -> bool, got {answer_checker!r}")
        if prompt_builder is not None and not callable(prompt_builder):
            raise InvalidInputError(
                f"prompt_builder must be callable(question, prefix) -> str, got "
                f"{prompt_builder!r}")
        RetryPolicy.check(retry)
        self.generator = generator
        self.n_rollouts = n_rollouts
        self.threshold = float(threshold)
        self.answer_checker: AnswerChecker = answer_checker or default_answer_checker
        self.prompt_builder: PromptBuilder = prompt_builder or build_rollout_prompt
        self.rollout_last_step = bool(rollout_last_step)
        self.keep_completions = bool(keep_completions)
        self.max_concurrency = check_max_concurrency(max_concurrency)
        self.retry = retry or RetryPolicy()
        self.source = source

    # -- the plan (shared by the sync and async forms) -----------------------------------
    def _plan(
        self, items: list[tuple[str, list[str], str, str | None]]
    ) -> Generator[GenerateCalls, list[CallOutcome], list[RolloutLabels]]:
        calls: list[tuple[Any, ...]] = []
        where: list[tuple[int, int]] = []  # (chain, step) of each call
        for c, (question, steps, _gold, _id) in enumerate(items):
            last = len(steps) if self.rollout_last_step else len(steps) - 1
            for k in range(last):
                calls.append((self.prompt_builder(question, steps[: k + 1]), self.n_rollouts))
                where.append((c, k))
        outcomes: list[CallOutcome] = (yield GenerateCalls("sample", calls)) if calls else []
        per_chain: list[dict[int, CallOutcome]] = [{} for _ in items]
        for (c, k), outcome in zip(where, outcomes, strict=True):
            per_chain[c][k] = outcome
        return [self._labels(item, per_chain[c]) for c, item in enumerate(items)]

    def _labels(
        self, item: tuple[str, list[str], str, str | None], outcomes: dict[int, CallOutcome]
    ) -> RolloutLabels:
        question, steps, gold, ident = item
        result = RolloutLabels(question, steps, gold, threshold=self.threshold, id=ident,
                               generator_calls=len(outcomes),
                               attempts=sum(o.attempts for o in outcomes.values()))
        kept: list[list[str]] = []
        soft: list[float] = []
        counts: list[int] = []
        correct: list[int] = []
        for k in range(len(steps)):
            outcome = outcomes.get(k)
            if outcome is None:  # the last step, checked directly
                hit = bool(self.answer_checker("\n".join(steps), gold))
                soft.append(1.0 if hit else 0.0)
                counts.append(0)
                correct.append(int(hit))
                continue
            completions, error = self._read(outcome)
            if error is not None:
                result.error = f"step {k + 1}: {error}"
                logger.warning("rollouts of %r failed: %s", ident or question[:60], result.error)
                return result
            hits = sum(bool(self.answer_checker(text, gold)) for text in completions)
            soft.append(hits / len(completions))
            counts.append(len(completions))
            correct.append(hits)
            kept.append(completions)
        result.soft_labels = soft
        result.labels = [s > self.threshold for s in soft]
        result.rollouts = counts
        result.correct = correct
        if self.keep_completions:
            result.completions = kept
        return result

    def _read(self, outcome: CallOutcome) -> tuple[list[str], str | None]:
        if outcome.error is not None:
            return [], f"generator call failed: {describe_error(outcome.error)}"
        value = outcome.value
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return [], (f"generator.sample() must return a list of str; received "
                        f"{type(value).__name__}")
        if not value:
            return [], "generator.sample() returned no completions"
        if len(value) > self.n_rollouts:
            return [], (f"generator.sample() returned {len(value)} completions for "
                        f"n={self.n_rollouts}")
        if len(value) < self.n_rollouts:
            logger.warning("generator.sample() returned %d of %d completions; the soft label "
                           "uses the %d it returned", len(value), self.n_rollouts, len(value))
        return list(value), None

    # -- public forms --------------------------------------------------------------------
    def label(
        self, question: str, steps: Sequence[str], gold_answer: str, *, id: str | None = None
    ) -> RolloutLabels:
        """Label one chain, blocking.

        Args:
            question: the problem.
            steps: the chain's steps.
            gold_answer: the correct final answer.
            id: an identifier kept on the result and its row.

        Returns:
            The :class:`RolloutLabels` (``ok`` is ``False`` when a generator call failed).
        """
        row = {"prompt": question, "completions": steps, "gold_answer": gold_answer, "id": id}
        return self.label_batch([row])[0]

    async def alabel(
        self, question: str, steps: Sequence[str], gold_answer: str, *, id: str | None = None
    ) -> RolloutLabels:
        """Async :meth:`label`."""
        row = {"prompt": question, "completions": steps, "gold_answer": gold_answer, "id": id}
        return (await self.alabel_batch([row]))[0]

    def label_batch(self, chains: Iterable[RolloutInput]) -> list[RolloutLabels]:
        """Label many chains; all their prefixes' calls share the concurrency limit.

        Args:
            chains: ``(question, steps, gold_answer)`` triples or rows with ``prompt`` (or
                ``question``), ``completions`` (or ``steps``) and ``gold_answer`` (e.g. the
                rows of ``prm label gsm8k``); an ``"id"`` is kept.

        Returns:
            One :class:`RolloutLabels` per input, in order; failed chains included.

        Raises:
            InvalidInputError: before any generator call, for an input that is not a chain
                with a gold answer, or a generator without ``sample``.

        Examples:
            >>> results = labeler.label_batch(read_stepwise_jsonl("gsm8k.jsonl"))  # doctest: +SKIP
            >>> write_stepwise_jsonl(rollout_rows(results), "mc.jsonl")  # doctest: +SKIP
        """
        items = [as_rollout_item(c, k) for k, c in enumerate(chains)]
        check_generator(self.generator, ["sample"], use_async=False)
        runner = SyncRunner(self.generator, None, retry=self.retry,
                            max_concurrency=self.max_concurrency)
        return runner.run(self._plan(items))

    async def alabel_batch(self, chains: Iterable[RolloutInput]) -> list[RolloutLabels]:
        """Async :meth:`label_batch` (``asample`` when the generator has it)."""
        items = [as_rollout_item(c, k) for k, c in enumerate(chains)]
        check_generator(self.generator, ["sample"], use_async=True)
        runner = AsyncRunner(self.generator, None, retry=self.retry,
                             max_concurrency=self.max_concurrency)
        return await runner.run(self._plan(items))

    def rows(self, results: Iterable[RolloutLabels]) -> list[dict[str, Any]]:
        """Stepwise rows of the labelled chains, with this labeler's source."""
        return rollout_rows(results, source=self.source)
