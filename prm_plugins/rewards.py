"""Dense rewards for reinforcement learning: PRM step scores as per-step and per-token rewards.

A PRM scores every step of a completion; in RL those scores become rewards for the tokens
that wrote each step, so the policy gets feedback where it went wrong instead of one number
at the end. This module is the framework-free bridge:

* :func:`step_rewards` / :func:`step_rewards_batch`: cut completions into steps, find each
  step's character span in the completion, and score all steps of a whole RL batch with one
  ``prm.score_batch`` call (the ONNX scorer packs it into token-budget batches).
* :func:`shape_rewards`: turn step scores into step rewards (``"raw"``, ``"centered"``,
  ``"delta"``, ``"min"``; formulas below).
* :func:`token_rewards`: place the step rewards on a policy tokenizer's tokens: each step's
  reward on the last token that overlaps the step, zeros elsewhere, and an optional outcome
  reward (answer checked against a gold answer) on the last token.
* :func:`token_offsets` and :func:`decode_with_offsets` (from :mod:`prm_plugins.token_spans`):
  character offsets of tokens, from text (re-tokenising) or from the sampled token ids
  themselves.

numpy and the standard library only at import; ``tokenizers``/``transformers`` objects are
used only when passed in. The TRL reward function is in :mod:`prm_plugins.adapters.trl`.

Shaping formulas, for step scores ``p_1..p_K`` (PRM probabilities) and ``baseline`` ``b``
(default 0.5):

* ``"raw"``: ``r_k = p_k``.
* ``"centered"``: ``r_k = p_k - b``: positive for steps the PRM believes, negative otherwise.
* ``"delta"``: ``r_1 = p_1 - b`` and ``r_k = p_k - p_(k-1)`` for ``k > 1``: a step is
  rewarded by how much it raised (or lowered) the PRM's belief; the rewards sum to
  ``p_K - b``.
* ``"min"``: min-form credit assignment as in PURE (Cheng et al., 2025, "Stop Summation:
  Min-Form Credit Assignment Is All Process Reward Model Needs for Reasoning"), where the
  value of a step is the minimum of the scores from that step on. With the suffix minimum
  ``m_k = min(p_k, ..., p_K)`` and ``m_(K+1) = 0``, ``r_k = m_k - m_(k+1)``, so the
  undiscounted return from step ``k`` (the sum of ``r_k..r_K``) is exactly ``m_k``, and the
  return of the whole completion is ``min(p)``, the usual PRM chain score. This is the exact
  min form written as per-step rewards for any trainer that sums rewards into returns; it
  is not a copy of PURE's code, which may implement the transform differently.

Examples:
    >>> from prm_plugins import load_prm  # doctest: +SKIP
    >>> from prm_plugins.rewards import step_rewards, token_rewards  # doctest: +SKIP
    >>> prm = load_prm()  # doctest: +SKIP
    >>> sr = step_rewards("2 + 3 * 4 = ?", "3 * 4 = 12\\n2 + 12 = 14", prm)  # doctest: +SKIP
    >>> sr.spans, [round(s, 2) for s in sr.scores]  # doctest: +SKIP
    ([(0, 10), (11, 22)], [0.97, 0.95])
    >>> r = token_rewards(sr, policy_tokenizer, shaping="centered")  # doctest: +SKIP
    >>> r[r != 0]  # on the last token of each step; zeros elsewhere  # doctest: +SKIP
    array([0.47, 0.45], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from prm_plugins.answers import answer_is_correct
from prm_plugins.errors import InvalidInputError
from prm_plugins.steps import SPLIT_MODES, split_step_spans
from prm_plugins.token_spans import decode_with_offsets, token_offsets
from prm_plugins.types import Splitter, StepScorer

__all__ = [
    "SHAPINGS",
    "Shaping",
    "StepReward",
    "StepRewards",
    "check_answer",
    "decode_with_offsets",
    "outcome_reward",
    "place_step_rewards",
    "shape_rewards",
    "step_rewards",
    "step_rewards_batch",
    "step_spans",
    "token_offsets",
    "token_rewards",
]

#: How step scores become step rewards; see the module docs for the formulas.
Shaping = Literal["raw", "centered", "delta", "min"]
SHAPINGS: tuple[str, ...] = ("raw", "centered", "delta", "min")

#: How a completion is cut into steps: a :func:`prm_plugins.split_steps` mode (not
#: ``"regex"``; pass ``functools.partial(split_steps, mode="regex", pattern=...)``) or a
#: callable ``text -> list of step strings`` whose steps appear verbatim, in order, in the text.
#: The old name of :data:`prm_plugins.types.Splitter`, kept as an alias.
RewardSplitter = Splitter

#: ``(completion, gold_answer) -> bool or float``: the outcome check.
AnswerChecker = Callable[[str, str], "bool | float"]

_PREVIEW = 80


@dataclass(frozen=True)
class StepReward:
    """One step of a completion, where it is, and its PRM score.

    Attributes:
        text: the step as split (stripped).
        start: index of the step's first character in the completion.
        end: index one past its last character (``completion[start:end] == text``).
        score: the PRM's probability that the step is correct.
    """

    text: str
    start: int
    end: int
    score: float

    @property
    def span(self) -> tuple[int, int]:
        """``(start, end)`` in the completion."""
        return (self.start, self.end)


@dataclass(frozen=True)
class StepRewards:
    """The scored steps of one completion.

    Attributes:
        question: the question the PRM was given.
        completion: the completion text the spans index into.
        steps: one :class:`StepReward` per step, in order (empty for a blank completion).

    Examples:
        >>> sr = StepRewards("q", "a\\nb", (StepReward("a", 0, 1, 0.9), StepReward("b", 2, 3, 0.4)))
        >>> sr.scores, sr.spans, len(sr)
        ([0.9, 0.4], [(0, 1), (2, 3)], 2)
    """

    question: str
    completion: str
    steps: tuple[StepReward, ...]

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def scores(self) -> list[float]:
        """The PRM score of each step."""
        return [s.score for s in self.steps]

    @property
    def spans(self) -> list[tuple[int, int]]:
        """The ``(start, end)`` of each step in :attr:`completion`."""
        return [s.span for s in self.steps]

    @property
    def texts(self) -> list[str]:
        """The text of each step."""
        return [s.text for s in self.steps]


# -- steps and scores -----------------------------------------------------------------------


def step_spans(completion: str, splitter: RewardSplitter = "auto") -> list[tuple[int, int]]:
    """Character spans of a completion's steps.

    Args:
        completion: the generated text.
        splitter: a :func:`prm_plugins.split_steps` mode (``"auto"``, ``"newlines"``,
            ``"blank_lines"``, ``"step_markers"``), or a callable that returns the steps as
            strings; each must occur verbatim in ``completion``, in order (surrounding
            whitespace of a returned step is ignored).

    Returns:
        ``(start, end)`` per step, ordered and non-overlapping; ``[]`` for blank text.

    Raises:
        InvalidInputError: for a non-str completion, an unknown mode, or a callable whose
            steps cannot be found in the completion in order.

    Examples:
        >>> step_spans("Add 2 and 3.\\nSo 5.")
        [(0, 12), (13, 18)]
        >>> step_spans("a ;; b", lambda t: t.split(";;"))
        [(0, 1), (5, 6)]
    """
    if not isinstance(completion, str):
        raise InvalidInputError(
            f"completion must be a str; received {type(completion).__name__} "
            f"{_preview(completion)}. Pass the generated text."
        )
    if isinstance(splitter, str):
        if splitter not in SPLIT_MODES or splitter == "regex":
            raise InvalidInputError(
                f"unknown splitter {splitter!r}; use one of "
                f"{', '.join(repr(m) for m in SPLIT_MODES if m != 'regex')} or a callable "
                "text -> list of steps (e.g. functools.partial(split_steps, mode='regex', "
                "pattern=...))"
            )
        return split_step_spans(completion, splitter)
    if not callable(splitter):
        raise InvalidInputError(
            f"splitter must be a split mode or a callable; received {type(splitter).__name__}"
        )
    spans: list[tuple[int, int]] = []
    pos = 0
    for index, step in enumerate(splitter(completion)):
        if not isinstance(step, str):
            raise InvalidInputError(
                f"the splitter returned a {type(step).__name__} as step {index}; it must "
                "return a list of str"
            )
        text = step.strip()
        if not text:
            continue
        found = completion.find(text, pos)
        if found < 0:
            raise InvalidInputError(
                f"step {index} returned by the splitter, {_preview(text)}, does not occur in "
                f"the completion after character {pos}; a splitter for rewards must return "
                "pieces of the text unchanged and in order, so each step has a span"
            )
        spans.append((found, found + len(text)))
        pos = found + len(text)
    return spans


def step_rewards(
    question: str, completion: str, prm: StepScorer, splitter: RewardSplitter = "auto"
) -> StepRewards:
    """Split one completion into steps and score each with the PRM.

    Args:
        question: the problem (the prompt's question, not the chat template).
        completion: the generated solution.
        prm: a scorer (:class:`~prm_plugins.runtime.OnnxPRM` or any
            :class:`~prm_plugins.types.StepScorer`).
        splitter: how to find steps; see :func:`step_spans`.

    Returns:
        :class:`StepRewards`: text, span and score of every step (no steps, and no PRM call,
        for a blank completion).

    Examples:
        >>> sr = step_rewards("2 + 3 = ?", "2 + 3 = 5\\nThe answer is 5.", prm)  # doctest: +SKIP
        >>> sr.spans  # doctest: +SKIP
        [(0, 9), (10, 26)]
    """
    return step_rewards_batch([(question, completion)], prm, splitter=splitter)[0]


def step_rewards_batch(
    items: Sequence[tuple[str, str]], prm: StepScorer, splitter: RewardSplitter = "auto"
) -> list[StepRewards]:
    """:func:`step_rewards` for a whole RL batch, with one ``prm.score_batch`` call.

    All completions that have steps go to the scorer together, so an
    :class:`~prm_plugins.runtime.OnnxPRM` packs them into token-budget batches (its
    ``token_budget`` and ``max_batch_size``) instead of running one forward pass per
    completion. Blank completions get no steps and are not sent; when no completion has a
    step, the scorer is not called at all.

    Args:
        items: ``(question, completion)`` pairs.
        prm: the scorer.
        splitter: how to find steps; see :func:`step_spans`.

    Returns:
        One :class:`StepRewards` per item, in order.

    Raises:
        InvalidInputError: for a malformed item or splitter, or a scorer that returns the
            wrong number of results or scores.

    Examples:
        >>> batch = [("2 + 3 = ?", "2 + 3 = 5"), ("2 * 3 = ?", "2 * 3 = 5\\nSo 5.")]
        >>> [len(r) for r in step_rewards_batch(batch, prm)]  # doctest: +SKIP
        [1, 2]
    """
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InvalidInputError(
            f"items must be a list of (question, completion) pairs; received "
            f"{type(items).__name__}"
        )
    parsed: list[tuple[str, str, list[tuple[int, int]]]] = []
    for index, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InvalidInputError(
                f"items[{index}] must be a (question, completion) pair; received "
                f"{_preview(item)}"
            )
        question, completion = item
        if not isinstance(question, str):
            raise InvalidInputError(
                f"items[{index}]: question must be a str; received {type(question).__name__}"
            )
        try:
            spans = step_spans(completion, splitter)
        except InvalidInputError as exc:
            raise InvalidInputError(f"items[{index}]: {exc}") from None
        parsed.append((question, completion, spans))
    to_score = [i for i, (_, _, spans) in enumerate(parsed) if spans]
    scored: dict[int, list[float]] = {}
    if to_score:
        requests = [(parsed[i][0], [parsed[i][1][s:e] for s, e in parsed[i][2]])
                    for i in to_score]
        results = prm.score_batch(requests)
        if len(results) != len(requests):
            raise InvalidInputError(
                f"the scorer returned {len(results)} results for {len(requests)} chains"
            )
        for i, (_, steps), result in zip(to_score, requests, results, strict=True):
            scores = [float(s) for s in result.scores]
            if len(scores) != len(steps):
                raise InvalidInputError(
                    f"items[{i}]: the scorer returned {len(scores)} scores for "
                    f"{len(steps)} steps"
                )
            scored[i] = scores
    out = []
    for i, (question, completion, spans) in enumerate(parsed):
        scores = scored.get(i, [])
        out.append(StepRewards(question, completion, tuple(
            StepReward(completion[s:e], s, e, p) for (s, e), p in zip(spans, scores, strict=True)
        )))
    return out


# -- shaping and outcome ----------------------------------------------------------------------


def shape_rewards(
    scores: Sequence[float], shaping: Shaping = "raw", *, baseline: float = 0.5
) -> list[float]:
    """Step rewards from step scores; formulas in the module docs.

    Args:
        scores: per-step PRM probabilities ``p_1..p_K`` (may be empty).
        shaping: ``"raw"``, ``"centered"``, ``"delta"`` or ``"min"``.
        baseline: ``b`` of ``"centered"`` (``p_k - b``) and of ``"delta"``'s first step
            (``p_1 - b``); 0.5 by default, the PRM's undecided point.

    Returns:
        One reward per step.

    Raises:
        InvalidInputError: for an unknown shaping or a non-finite score or baseline.

    Examples:
        >>> shape_rewards([0.9, 0.6, 0.8], "centered")
        [0.4, 0.09999999999999998, 0.30000000000000004]
        >>> [round(r, 2) for r in shape_rewards([0.9, 0.6, 0.8], "delta")]
        [0.4, -0.3, 0.2]
        >>> [round(r, 2) for r in shape_rewards([0.9, 0.6, 0.8], "min")]  # returns 0.6, 0.6, 0.8
        [0.0, -0.2, 0.8]
    """
    if not isinstance(shaping, str) or shaping not in SHAPINGS:
        raise InvalidInputError(
            f"unknown shaping {shaping!r}; use one of {', '.join(repr(s) for s in SHAPINGS)}"
        )
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float)) or not math.isfinite(
        baseline
    ):
        raise InvalidInputError(f"baseline must be a finite number; received {baseline!r}")
    ps: list[float] = []
    for index, p in enumerate(scores):
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not math.isfinite(
            float(p)
        ):
            raise InvalidInputError(f"scores[{index}] must be a finite number; received {p!r}")
        ps.append(float(p))
    b = float(baseline)
    if shaping == "raw":
        return ps
    if shaping == "centered":
        return [p - b for p in ps]
    if shaping == "delta":
        return [p - (ps[k - 1] if k else b) for k, p in enumerate(ps)]
    # "min": r_k = m_k - m_(k+1), with the suffix minimum m_k and m_(K+1) = 0.
    suffix_min = list(ps)
    for k in range(len(ps) - 2, -1, -1):
        suffix_min[k] = min(ps[k], suffix_min[k + 1])
    return [m - (suffix_min[k + 1] if k + 1 < len(ps) else 0.0)
            for k, m in enumerate(suffix_min)]


def check_answer(completion: str, gold_answer: str) -> bool:
    """The default outcome check: the completion's final answer equals the gold answer.

    The completion's answer is found by :func:`prm_plugins.answers.extract_answer`, the
    extractor best-of-N voting and ``prm eval`` use (``\\boxed{}``, ``#### N``, "the answer
    is", an ``A:`` line, else the last number); the gold answer may be a bare answer or a
    full GSM8K solution ending in ``#### N``. Both are compared with
    :func:`~prm_plugins.answers.answers_match` (``"1,000"`` equals ``"1000.00"``).

    Examples:
        >>> check_answer("3 + 4 = 7\\nThe answer is 7.", "7"), check_answer("So 8.", "#### 7")
        (True, False)
    """
    return answer_is_correct(completion, gold_answer)


def outcome_reward(
    completion: str, gold_answer: str, answer_checker: AnswerChecker | None = None,
    *, weight: float = 1.0,
) -> float:
    """``weight * checker(completion, gold_answer)``, with ``True``/``False`` as 1/0.

    Args:
        completion: the generated solution.
        gold_answer: the reference answer.
        answer_checker: ``(completion, gold) -> bool or float``; default :func:`check_answer`.
        weight: scale of the reward.

    Examples:
        >>> outcome_reward("... The answer is 12.", "12", weight=2.0)
        2.0
    """
    checker = answer_checker if answer_checker is not None else check_answer
    value = checker(completion, gold_answer)
    if isinstance(value, (bool, np.bool_)):
        value = 1.0 if value else 0.0
    if not isinstance(value, (int, float, np.floating)) or not math.isfinite(float(value)):
        raise InvalidInputError(
            f"the answer checker must return a bool or a finite number; it returned {value!r}"
        )
    return float(weight) * float(value)


# -- tokens -----------------------------------------------------------------------------------


def place_step_rewards(
    spans: Sequence[tuple[int, int]],
    values: Sequence[float],
    offsets: Sequence[tuple[int, int]],
) -> np.ndarray:
    """Put each step's value on the last token that overlaps the step; zeros elsewhere.

    A token overlaps step ``[start, end)`` when it covers at least one of the step's
    characters (``tok_start < end`` and ``tok_end > start``, non-empty token). So a step
    that ends inside a token (the token runs on into whitespace or the next step) is
    rewarded on that token; tokens of whitespace between steps get zero; empty-span tokens
    (specials, partial bytes) never get a step reward. When two steps end on the same token
    their values add up. A step that no token covers (its characters dropped by the
    tokenizer's normaliser) is rewarded on the last token that starts before the step ends
    (the first token if none does).

    Args:
        spans: ``(start, end)`` of each step.
        values: the reward of each step.
        offsets: ``(start, end)`` of each token, in the same text.

    Returns:
        float32 array with one reward per token.

    Raises:
        InvalidInputError: when ``spans`` and ``values`` differ in length, or there are
            steps but no tokens.

    Examples:
        >>> r = place_step_rewards([(0, 5), (6, 9)], [0.5, 0.25],
        ...                        [(0, 3), (3, 6), (6, 7), (7, 9), (9, 9)])
        >>> r.tolist()
        [0.0, 0.5, 0.0, 0.25, 0.0]
    """
    if len(spans) != len(values):
        raise InvalidInputError(
            f"one value per step is needed: got {len(spans)} spans and {len(values)} values"
        )
    out = np.zeros(len(offsets), dtype=np.float32)
    if not spans:
        return out
    if not len(offsets):
        raise InvalidInputError(
            f"there are {len(spans)} steps but no tokens to put their rewards on"
        )
    tok = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = tok[:, 0], tok[:, 1]
    nonempty = ends > starts
    for (s, e), v in zip(spans, values, strict=True):
        hit = np.flatnonzero(nonempty & (starts < e) & (ends > s))
        if hit.size:
            index = int(hit[-1])
        else:
            before = np.flatnonzero(starts < e)
            index = int(before[-1]) if before.size else 0
        out[index] += np.float32(v)
    return out


def token_rewards(
    rewards: StepRewards,
    tokenizer: Any = None,
    *,
    offsets: Sequence[tuple[int, int]] | None = None,
    shaping: Shaping = "raw",
    baseline: float = 0.5,
    gold_answer: str | None = None,
    answer_checker: AnswerChecker | None = None,
    outcome_weight: float = 1.0,
) -> np.ndarray:
    """Per-token rewards for one completion, for a policy's tokens.

    Each step's shaped reward (:func:`shape_rewards`) lands on the last token that overlaps
    the step (:func:`place_step_rewards`); all other tokens get 0. With ``gold_answer``, the
    outcome reward ``outcome_weight * answer_checker(completion, gold_answer)`` is added on
    the last token.

    Args:
        rewards: the scored steps, from :func:`step_rewards` / :func:`step_rewards_batch`.
        tokenizer: the policy's tokenizer (``tokenizers.Tokenizer`` or transformers fast
            tokenizer); the completion is re-tokenised without special tokens. Not needed
            with ``offsets``.
        offsets: the ``(start, end)`` character span of each policy token in
            ``rewards.completion``, e.g. from :func:`decode_with_offsets` on the sampled
            ids (use that when the sampled ids may differ from a re-tokenisation).
        shaping: ``"raw"``, ``"centered"``, ``"delta"`` or ``"min"``; see the module docs.
        baseline: the ``b`` of ``"centered"`` and ``"delta"``.
        gold_answer: the reference answer; turns on the outcome reward.
        answer_checker: ``(completion, gold) -> bool or float``; default
            :func:`check_answer`. Needs ``gold_answer``.
        outcome_weight: scale of the outcome reward.

    Returns:
        float32 array, one reward per token (empty when there are no tokens).

    Raises:
        InvalidInputError: for an unknown shaping, neither or both of ``tokenizer`` and
            ``offsets``, a slow tokenizer, offsets outside the completion, or an
            ``answer_checker`` without a ``gold_answer``.

    Examples:
        >>> sr = step_rewards("2 + 3 = ?", "2 + 3 = 5\\nThe answer is 5.", prm)  # doctest: +SKIP
        >>> r = token_rewards(sr, tokenizer, shaping="centered", gold_answer="5")  # doctest: +SKIP
    """
    if not isinstance(rewards, StepRewards):
        raise InvalidInputError(
            f"rewards must be a StepRewards (from step_rewards()); received "
            f"{type(rewards).__name__}"
        )
    if answer_checker is not None and gold_answer is None:
        raise InvalidInputError(
            "answer_checker was given without gold_answer; pass the gold answer to add the "
            "outcome reward, or drop answer_checker"
        )
    values = shape_rewards(rewards.scores, shaping, baseline=baseline)
    if (tokenizer is None) == (offsets is None):
        raise InvalidInputError(
            "pass exactly one of tokenizer= (to re-tokenise the completion) and offsets= "
            f"(token spans you have); received tokenizer={type(tokenizer).__name__}, "
            f"offsets={'None' if offsets is None else 'given'}"
        )
    if offsets is None:
        _, offsets = token_offsets(tokenizer, rewards.completion)
    offsets = _check_offsets(offsets, len(rewards.completion))
    out = place_step_rewards(rewards.spans, values, offsets)
    if gold_answer is not None and len(out):
        out[-1] += np.float32(outcome_reward(rewards.completion, gold_answer, answer_checker,
                                             weight=outcome_weight))
    return out


def _check_offsets(offsets: Sequence[tuple[int, int]], n_chars: int) -> list[tuple[int, int]]:
    """Offsets as int pairs inside ``[0, n_chars]``, or a clear error."""
    if isinstance(offsets, (str, bytes)) or not isinstance(offsets, Sequence):
        if not isinstance(offsets, np.ndarray):
            raise InvalidInputError(
                f"offsets must be a list of (start, end) pairs; received {type(offsets).__name__}"
            )
    checked: list[tuple[int, int]] = []
    for index, pair in enumerate(offsets):
        try:
            s, e = (int(x) for x in pair)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"offsets[{index}] must be a (start, end) pair; received {_preview(pair)}"
            ) from None
        if not 0 <= s <= e <= n_chars:
            raise InvalidInputError(
                f"offsets[{index}] = {(s, e)} does not fit the completion of {n_chars} "
                "characters; the offsets must index into the same text the steps were split "
                "from (mismatched lengths?)"
            )
        checked.append((s, e))
    return checked


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."
