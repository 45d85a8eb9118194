"""How an LLM judge's answer becomes step probabilities: token log-probabilities or verdicts.

Two sources, tried in this order by :class:`~prm_plugins.backends.judge.JudgePRM`:

1. **Token log-probabilities** (``score_source = "logprobs"``). When the model returns the
   log-probabilities of the tokens it wrote, with the most likely alternatives at each
   position, a step's score is the probability of the verdict "correct" at the token where
   that step's verdict word starts, normalised over the two verdicts::

       P(correct) = sum(p(t) for t in alternatives that begin "correct")
                    / sum(p(t) for t in alternatives that begin "correct" or "incorrect")

   An alternative "begins" a verdict when its text (after whatever the chosen token held
   before the verdict word, e.g. a space) is a non-empty prefix of ``correct`` or of
   ``incorrect`` ("c", "correct", " Correct", "in", "inc"); the two words share no first
   letter, so no token counts for both. When the position lists no alternative (a model
   asked for log-probabilities without ``top_logprobs``), the chosen token alone decides:
   ``P(correct) = exp(logprob)`` if it begins "correct", ``1 - exp(logprob)`` if it begins
   "incorrect".

   The OpenAI chat-completions shape is read: ``{"content": [{"token", "logprob",
   "top_logprobs": [{"token", "logprob"}, ...]}, ...]}``. langchain-openai puts exactly that
   object into ``AIMessage.response_metadata["logprobs"]`` (``BaseChatOpenAI.
   _create_chat_result`` copies each choice's ``logprobs`` into ``generation_info``, which
   langchain-core merges into ``response_metadata``) when the model is built with
   ``ChatOpenAI(..., logprobs=True, top_logprobs=5)``. LlamaIndex gives, per position, only
   the alternatives (``ChatResponse.logprobs: list[list[LogProb]]``);
   :func:`aligned_logprobs` finds the chosen token by matching the answer text.

2. **The verdict and its stated confidence** (``score_source = "verdict"``), mapped through
   :data:`VERDICT_SCORES` or a calibration of your own (a mapping with the same keys, or a
   callable ``(correct, confidence) -> probability``)::

       verdict     confidence   score
       correct     high         0.95
       correct     medium       0.80
       correct     low          0.60
       incorrect   low          0.40
       incorrect   medium       0.20
       incorrect   high         0.05
       correct     (not asked)  0.90
       incorrect   (not asked)  0.10

   These defaults are symmetric and uncalibrated: they order the steps and put the
   threshold 0.5 between the two verdicts. Fit your own on labelled steps (the share of
   steps judged ``(verdict, confidence)`` that are truly correct) and pass it as
   ``calibration=``.

Everything here is framework-free and treats the model's output as untrusted: a malformed
log-probability object is "no log-probabilities" (the verdicts are used), never an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prm_plugins.errors import InvalidInputError
from prm_plugins.labeling.verdicts import CONFIDENCE_LEVELS, StepJudgement

__all__ = [
    "VERDICT_SCORES",
    "Calibration",
    "JudgeReply",
    "TokenLogprob",
    "aligned_logprobs",
    "check_calibration",
    "logprob_scores",
    "openai_logprobs",
    "verdict_scores",
]

#: A calibration of the verdicts: ``{(correct, confidence): probability}`` or a callable.
Calibration = Mapping[tuple[bool, str | None], float] | Callable[[bool, str | None], float]

#: The default verdict-to-probability table (see the module docs).
VERDICT_SCORES: dict[tuple[bool, str | None], float] = {
    (True, "high"): 0.95, (True, "medium"): 0.80, (True, "low"): 0.60,
    (False, "low"): 0.40, (False, "medium"): 0.20, (False, "high"): 0.05,
    (True, None): 0.90, (False, None): 0.10,
}

_WORDS = ("correct", "incorrect")


@dataclass(frozen=True)
class TokenLogprob:
    """One written token, its log-probability, and the alternatives at its position.

    Attributes:
        token: the token's text.
        logprob: its natural-log probability.
        top: ``(token, logprob)`` of the most likely tokens at that position (it may or may
            not include the chosen one).
    """

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class JudgeReply:
    """What a judge client hands back for one model call.

    Attributes:
        text: the answer's text.
        logprobs: the written tokens with their log-probabilities, or ``None``.
        input_tokens: prompt tokens, when the model reported them.
        output_tokens: answer tokens, when the model reported them.
    """

    text: str
    logprobs: list[TokenLogprob] | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value <= 0.0 else None


def _pair(entry: Any) -> tuple[str, float] | None:
    if not isinstance(entry, Mapping):
        token, logprob = getattr(entry, "token", None), getattr(entry, "logprob", None)
    else:
        token, logprob = entry.get("token"), entry.get("logprob")
    lp = _finite(logprob)
    return (token, lp) if isinstance(token, str) and lp is not None else None


def openai_logprobs(payload: Any) -> list[TokenLogprob] | None:
    """Read an OpenAI-style ``{"content": [{"token", "logprob", "top_logprobs"}...]}``.

    Returns:
        The tokens, or ``None`` when ``payload`` is absent or not of that shape.

    Examples:
        >>> toks = openai_logprobs({"content": [{"token": "Hi", "logprob": -0.1,
        ...     "top_logprobs": [{"token": "Hi", "logprob": -0.1}]}]})
        >>> toks[0].token, toks[0].top
        ('Hi', (('Hi', -0.1),))
        >>> openai_logprobs({"content": "garbage"}) is None
        True
    """
    content = payload.get("content") if isinstance(payload, Mapping) else None
    if not isinstance(content, list) or not content:
        return None
    out: list[TokenLogprob] = []
    for entry in content:
        chosen = _pair(entry)
        if chosen is None:
            return None
        raw_top = entry.get("top_logprobs") if isinstance(entry, Mapping) else None
        top = [_pair(t) for t in raw_top] if isinstance(raw_top, list) else []
        out.append(TokenLogprob(chosen[0], chosen[1], tuple(t for t in top if t is not None)))
    return out


def aligned_logprobs(text: str, positions: Any) -> list[TokenLogprob] | None:
    """Tokens from per-position alternatives only (LlamaIndex's ``ChatResponse.logprobs``).

    At each position the chosen token is the longest alternative that continues ``text``
    where the previous token ended.

    Returns:
        The tokens, or ``None`` when ``positions`` is not a list of lists of
        ``(token, logprob)`` objects or the alternatives do not spell ``text``.

    Examples:
        >>> toks = aligned_logprobs("ab", [[("a", -0.1), ("b", -3.0)], [("b", -0.2)]])
        >>> [t.token for t in toks]
        ['a', 'b']
    """
    if not isinstance(positions, list) or not positions:
        return None
    out: list[TokenLogprob] = []
    at = 0
    for alternatives in positions:
        if not isinstance(alternatives, (list, tuple)):
            return None
        pairs = [p for p in (_pair(a) if not isinstance(a, tuple) else _tuple_pair(a)
                             for a in alternatives) if p is not None]
        fits = [p for p in pairs if p[0] and text.startswith(p[0], at)]
        if not fits:
            return None
        token, logprob = max(fits, key=lambda p: len(p[0]))
        out.append(TokenLogprob(token, logprob, tuple(pairs)))
        at += len(token)
    return out


def _tuple_pair(entry: tuple[Any, ...]) -> tuple[str, float] | None:
    if len(entry) != 2 or not isinstance(entry[0], str):
        return None
    lp = _finite(entry[1])
    return None if lp is None else (entry[0], lp)


def _verdict_of(fragment: str) -> str | None:
    """``"correct"``/``"incorrect"`` when ``fragment`` is a non-empty prefix of one of them."""
    word = fragment.lstrip().lower()
    if not word:
        return None
    return next((w for w in _WORDS if w.startswith(word)), None)


def _probability_at(token: TokenLogprob, lead: str) -> float | None:
    """P(correct) at a token whose text is ``lead`` followed by the verdict word's start."""
    mass = {"correct": 0.0, "incorrect": 0.0}
    alternatives = list(token.top)
    if not any(t == token.token for t, _ in alternatives):
        alternatives.append((token.token, token.logprob))
    if len(alternatives) == 1:
        chosen = _verdict_of(token.token[len(lead):])
        if chosen is None:
            return None
        p = math.exp(token.logprob)
        return p if chosen == "correct" else 1.0 - p
    for text, logprob in alternatives:
        if not text.startswith(lead):
            continue
        word = _verdict_of(text[len(lead):])
        if word is not None:
            mass[word] += math.exp(logprob)
    total = mass["correct"] + mass["incorrect"]
    return mass["correct"] / total if total > 0 else None


def logprob_scores(
    text: str, tokens: Sequence[TokenLogprob], judgements: Sequence[StepJudgement]
) -> tuple[list[float] | None, str | None]:
    """P(correct) of each step from the tokens of the answer ``text``.

    Returns:
        ``(scores, None)``, or ``(None, why)`` when the tokens do not spell ``text`` or a
        verdict's token (or its alternatives) cannot be found.

    Examples:
        >>> from prm_plugins.labeling.verdicts import parse_step_judgements
        >>> text = "Step 1: correct"
        >>> toks = [TokenLogprob("Step 1:", 0.0), TokenLogprob(" correct", math.log(0.8),
        ...         ((" correct", math.log(0.8)), (" incorrect", math.log(0.2))))]
        >>> scores, why = logprob_scores(text, toks, parse_step_judgements(text, 1))
        >>> round(scores[0], 3), why
        (0.8, None)
    """
    starts: list[int] = []
    at = 0
    for t in tokens:
        starts.append(at)
        at += len(t.token)
    if "".join(t.token for t in tokens) != text:
        return None, "the log-probability tokens do not spell the answer"
    scores: list[float] = []
    for k, j in enumerate(judgements, start=1):
        i = next(i for i, (s, t) in enumerate(zip(starts, tokens, strict=True))
                 if s <= j.offset < s + len(t.token))
        lead = text[starts[i]:j.offset]
        p = _probability_at(tokens[i], lead)
        if p is None:
            return None, (f"step {k}'s verdict token {tokens[i].token!r} has no 'correct' or "
                          "'incorrect' alternative")
        scores.append(min(1.0, max(0.0, p)))
    return scores, None


def check_calibration(calibration: object) -> Calibration | None:
    """Return ``calibration`` if it is ``None``, a callable or a complete table.

    Raises:
        InvalidInputError: for a table without an entry for some ``(verdict, confidence)``
            or with a value that is not a probability.
    """
    if calibration is None or callable(calibration):
        return calibration
    if not isinstance(calibration, Mapping):
        raise InvalidInputError(
            f"calibration must be a mapping {{(correct, confidence): probability}} or a "
            f"callable (correct, confidence) -> probability; got {type(calibration).__name__}")
    need = [(c, level) for c in (True, False) for level in (*CONFIDENCE_LEVELS, None)]
    missing = [k for k in need if k not in calibration]
    if missing:
        raise InvalidInputError(f"the calibration table has no entry for {missing}; give one "
                                f"per key of VERDICT_SCORES: {list(VERDICT_SCORES)}")
    for key in need:
        _probability(calibration[key], key)
    return calibration


def _probability(value: object, key: tuple[bool, str | None]) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not 0.0 <= value <= 1.0):
        raise InvalidInputError(f"the calibration gave {value!r} for {key}; it must give a "
                                "probability in [0, 1]")
    return float(value)


def verdict_scores(
    judgements: Sequence[StepJudgement], calibration: Calibration | None = None
) -> list[float]:
    """Each step's probability from its verdict and confidence (see :data:`VERDICT_SCORES`).

    Raises:
        InvalidInputError: when a calibration callable gives something that is not a
            probability.

    Examples:
        >>> verdict_scores([StepJudgement(True, "high", 0), StepJudgement(False, None, 20)])
        [0.95, 0.1]
    """
    out: list[float] = []
    for j in judgements:
        key = (j.correct, j.confidence)
        if calibration is None:
            out.append(VERDICT_SCORES[key])
        elif callable(calibration):
            out.append(_probability(calibration(*key), key))
        else:
            out.append(_probability(calibration[key], key))
    return out
