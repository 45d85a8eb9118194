"""A PRM reward function with TRL's calling convention, and per-token reward tensors.

TRL's ``GRPOTrainer`` calls every custom reward function as
``func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)``
where ``kwargs`` holds the dataset's other columns (one list entry per completion) plus
``trainer_state``, ``log_extra`` and ``log_metric``, and expects one float (or ``None``) per
completion back; it names the reward in its logs by the function's ``__name__``. Prompts
and completions are strings (standard format) or lists of ``{"role", "content"}`` messages
(conversational format). This was read from TRL 1.16's ``GRPOTrainer._calculate_rewards``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from prm_plugins.errors import InvalidInputError, require
from prm_plugins.rewards import (
    AnswerChecker,
    Shaping,
    StepRewards,
    decode_with_offsets,
    outcome_reward,
    step_rewards_batch,
    token_rewards,
)
from prm_plugins.types import Aggregation, Splitter, StepScorer, aggregate_scores
from prm_plugins.validation import check_aggregate

__all__ = ["PRMRewardFunction", "completion_text", "prompt_question"]

logger = logging.getLogger(__name__)


def _content_text(content: Any) -> str:
    """Text of a message's ``content``: a str, ``None``, or a list of typed parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(part.get("text", "") for part in content
                       if isinstance(part, dict) and part.get("type", "text") == "text")
    raise InvalidInputError(
        f"message content must be a str or a list of parts; received {type(content).__name__}"
    )


def _is_messages(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and all(
        isinstance(m, dict) and "content" in m for m in value
    )


def prompt_question(prompt: Any) -> str:
    """The question in a TRL prompt: the text itself, or the last user message's content.

    Args:
        prompt: a str (standard format) or a list of message dicts (conversational).

    Returns:
        The question text for the PRM.

    Raises:
        InvalidInputError: for any other value, or messages without a user message.

    Examples:
        >>> prompt_question([{"role": "system", "content": "Be brief."},
        ...                  {"role": "user", "content": "What is 2 + 3?"}])
        'What is 2 + 3?'
    """
    if isinstance(prompt, str):
        return prompt
    if _is_messages(prompt):
        for message in reversed(list(prompt)):
            if message.get("role") == "user":
                return _content_text(message["content"])
        raise InvalidInputError(
            "the conversational prompt has no user message to take the question from; "
            f"roles received: {[m.get('role') for m in prompt]}. Pass question_column= instead"
        )
    raise InvalidInputError(
        f"a prompt must be a str or a list of {{'role', 'content'}} messages; received "
        f"{type(prompt).__name__} {str(prompt)[:80]!r}"
    )


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: the str itself, or its assistant messages joined by "\\n".

    Examples:
        >>> completion_text([{"role": "assistant", "content": "2 + 3 = 5\\nThe answer is 5."}])
        '2 + 3 = 5\\nThe answer is 5.'
    """
    if isinstance(completion, str):
        return completion
    if _is_messages(completion):
        parts = [_content_text(m["content"]) for m in completion
                 if m.get("role", "assistant") == "assistant"]
        return "\n".join(p for p in parts if p)
    raise InvalidInputError(
        f"a completion must be a str or a list of {{'role', 'content'}} messages; received "
        f"{type(completion).__name__} {str(completion)[:80]!r}"
    )


class PRMRewardFunction:
    """A PRM as a TRL reward function: one aggregated PRM score per completion.

    Each completion is split into steps and scored with the prompt's question; the step
    scores are reduced by ``aggregate``. All completions of a call are scored with one
    ``prm.score_batch`` call (token-budget batches in the ONNX scorer). With
    ``answer_column``, the outcome reward ``outcome_weight * answer_checker(completion,
    gold)`` is added, the gold answer taken from that dataset column.

    Args:
        prm: the scorer, e.g. ``load_prm()`` (load it with ``long_chains="window"`` if
            completions can be longer than the PRM's ``max_length``).
        aggregate: ``"min"`` (default), ``"prod"``, ``"mean"``, ``"last"``, ``"geomean"`` or
            a callable on the list of step scores.
        splitter: how completions are cut into steps; see
            :func:`prm_plugins.rewards.step_spans`.
        question_column: dataset column holding the question for the PRM; default: the
            prompt itself (text) or its last user message (conversational).
        answer_column: dataset column holding the gold answer (e.g. GSM8K's ``"answer"``);
            turns on the outcome reward.
        answer_checker: ``(completion, gold) -> bool or float``; default
            :func:`prm_plugins.rewards.check_answer`.
        outcome_weight: scale of the outcome reward.
        empty_reward: reward of a completion with no steps (blank text); ``None`` makes TRL
            leave it out of this function's reward.
        name: the ``__name__`` TRL logs the reward under (``rewards/<name>/mean``).

    Examples:
        >>> reward = PRMRewardFunction(prm, aggregate="min")  # doctest: +SKIP
        >>> reward(prompts=["What is 2 + 3?"], completions=["2 + 3 = 5"])  # doctest: +SKIP
        [0.93]
    """

    def __init__(
        self,
        prm: StepScorer,
        *,
        aggregate: Aggregation = "min",
        splitter: Splitter = "auto",
        question_column: str | None = None,
        answer_column: str | None = None,
        answer_checker: AnswerChecker | None = None,
        outcome_weight: float = 1.0,
        empty_reward: float | None = 0.0,
        name: str = "prm_reward",
    ) -> None:
        if not callable(getattr(prm, "score_batch", None)):
            raise InvalidInputError(
                f"prm must be a scorer with score_batch (e.g. load_prm()); received "
                f"{type(prm).__name__}"
            )
        if answer_checker is not None and answer_column is None:
            raise InvalidInputError(
                "answer_checker needs answer_column= (the dataset column with the gold answer)"
            )
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidInputError(f"name must be an identifier-like str; received {name!r}")
        self.prm = prm
        self.aggregate = check_aggregate(aggregate)
        self.splitter = splitter
        self.question_column = question_column
        self.answer_column = answer_column
        self.answer_checker = answer_checker
        self.outcome_weight = float(outcome_weight)
        self.empty_reward = empty_reward
        self.__name__ = name

    def __repr__(self) -> str:
        return (f"PRMRewardFunction(name={self.__name__!r}, aggregate={self.aggregate!r}, "
                f"answer_column={self.answer_column!r})")

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        """Score completions as TRL asks: keyword arguments in, one reward per completion out.

        Args:
            prompts: one prompt per completion (str, or list of message dicts).
            completions: the completions (str, or list of message dicts).
            completion_ids: the sampled ids (unused here; TRL passes them).
            **kwargs: dataset columns (lists, one entry per completion) and TRL's extras
                (``trainer_state``, ``log_extra``, ``log_metric``), which are ignored.

        Returns:
            One float per completion (``empty_reward`` for one without steps).
        """
        results = self.step_rewards(prompts, completions, **kwargs)
        golds = self._column(self.answer_column, len(results), kwargs)
        out: list[float | None] = []
        for result, gold in zip(results, golds, strict=True):
            value: float | None
            if len(result):
                value = aggregate_scores(result.scores, self.aggregate)
            else:
                value = self.empty_reward
            if value is not None and gold is not None:
                value += outcome_reward(result.completion, str(gold), self.answer_checker,
                                        weight=self.outcome_weight)
            out.append(value)
        if completion_ids is not None and len(completion_ids) != len(out):
            raise InvalidInputError(
                f"got {len(out)} completions but {len(completion_ids)} completion_ids"
            )
        return out

    def step_rewards(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[StepRewards]:
        """The scored steps of every completion (one ``score_batch`` call).

        Args:
            prompts: one prompt per completion.
            completions: the completions (str or message lists).
            **kwargs: dataset columns, for ``question_column``.

        Returns:
            One :class:`~prm_plugins.rewards.StepRewards` per completion.
        """
        if isinstance(prompts, str) or isinstance(completions, str):
            raise InvalidInputError(
                "prompts and completions must be lists (one entry per completion); received "
                f"{type(prompts).__name__} and {type(completions).__name__}"
            )
        if len(prompts) != len(completions):
            raise InvalidInputError(
                f"got {len(prompts)} prompts but {len(completions)} completions; TRL passes "
                "one prompt per completion"
            )
        texts = [completion_text(c) for c in completions]
        return step_rewards_batch(list(zip(self._questions(prompts, kwargs), texts, strict=True)),
                                  self.prm, self.splitter)

    def token_rewards(
        self,
        prompts: Sequence[Any],
        completion_ids: Sequence[Sequence[int]],
        tokenizer: Any,
        *,
        shaping: Shaping = "raw",
        baseline: float = 0.5,
        skip_special_tokens: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Per-token rewards for the sampled ids, as a right-padded ``torch`` tensor.

        Each completion is decoded from its ids (:func:`~prm_plugins.rewards.decode_with_offsets`,
        so the rewards line up with the sampled tokens), split and scored (one
        ``score_batch`` call for all), shaped, and placed on the last token of each step;
        the outcome reward (``answer_column``) lands on the last token.

        Args:
            prompts: one prompt per completion.
            completion_ids: the sampled completion ids, one list per completion.
            tokenizer: the policy tokenizer (``decode`` is used).
            shaping: ``"raw"``, ``"centered"``, ``"delta"`` or ``"min"``.
            baseline: ``b`` of ``"centered"``/``"delta"``.
            skip_special_tokens: drop special tokens when decoding, as TRL does.
            **kwargs: dataset columns (``question_column``, ``answer_column``).

        Returns:
            ``torch.FloatTensor`` ``[B, max_len]``: row ``i`` holds completion ``i``'s
            rewards in its first ``len(completion_ids[i])`` places, zeros after.
        """
        torch: Any = require("torch", "trl")
        if len(prompts) != len(completion_ids):
            raise InvalidInputError(
                f"got {len(prompts)} prompts but {len(completion_ids)} completion_ids"
            )
        decoded = [decode_with_offsets(tokenizer, ids, skip_special_tokens=skip_special_tokens)
                   for ids in completion_ids]
        results = step_rewards_batch(
            list(zip(self._questions(prompts, kwargs), [t for t, _ in decoded], strict=True)),
            self.prm, self.splitter,
        )
        golds = self._column(self.answer_column, len(results), kwargs)
        width = max((len(ids) for ids in completion_ids), default=0)
        out = torch.zeros((len(results), width), dtype=torch.float32)
        for row, (result, (_, offsets), gold) in enumerate(
            zip(results, decoded, golds, strict=True)
        ):
            values = token_rewards(
                result, offsets=offsets, shaping=shaping, baseline=baseline,
                gold_answer=None if gold is None else str(gold),
                answer_checker=self.answer_checker if gold is not None else None,
                outcome_weight=self.outcome_weight,
            )
            out[row, : len(values)] = torch.from_numpy(values)
        return out

    # -- helpers ----------------------------------------------------------------------------
    def _questions(self, prompts: Sequence[Any], kwargs: dict[str, Any]) -> list[str]:
        if self.question_column is None:
            return [prompt_question(p) for p in prompts]
        return [str(q) for q in self._column(self.question_column, len(prompts), kwargs)]

    @staticmethod
    def _column(name: str | None, n: int, kwargs: dict[str, Any]) -> list[Any]:
        if name is None:
            return [None] * n
        if name not in kwargs:
            columns = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra",
                                                            "log_metric", "environments"))
            raise InvalidInputError(
                f"the dataset column {name!r} was not passed to the reward function; columns "
                f"received: {columns}. Add it to the dataset, or fix the column name"
            )
        values = kwargs[name]
        if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != n:
            raise InvalidInputError(
                f"column {name!r} must be a list with one entry per completion ({n}); received "
                f"{type(values).__name__}"
                f"{f' of length {len(values)}' if isinstance(values, Sequence) else ''}"
            )
        return list(values)
