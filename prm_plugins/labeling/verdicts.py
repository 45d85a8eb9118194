"""The text of a grading conversation: the prompts, and the strict reader of the verdicts.

The grader (:class:`~prm_plugins.labeling.grader.LLMStepGrader`) asks for exactly one line
per step, in order and nothing else::

    Step 1: correct
    Step 2: incorrect

:func:`parse_step_verdicts` refuses anything else with a :class:`GraderAnswerError` that says
exactly what was wrong, and :func:`build_regrade_prompt` turns that error into the next
request. Framework-free: plain strings in, plain strings out.

The LLM judge (:class:`prm_plugins.backends.judge.JudgePRM`) asks for the same lines, each
with a stated confidence when it scores from the verdicts (``confidence=True``)::

    Step 1: correct (confidence: high)
    Step 2: incorrect (confidence: medium)

:func:`parse_step_judgements` reads both forms and also gives where each verdict word stands
in the answer (the judge reads the verdict token's log-probability there).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from prm_plugins.errors import GraderAnswerError

__all__ = [
    "CONFIDENCE_LEVELS",
    "GRADER_SYSTEM_PROMPT",
    "StepJudgement",
    "build_grading_prompt",
    "build_regrade_prompt",
    "parse_step_judgements",
    "parse_step_verdicts",
    "propagate_first_error",
]

#: The system message of every grading conversation.
GRADER_SYSTEM_PROMPT = (
    "You are a meticulous grader of step-by-step solutions to math word problems. "
    "For each step, decide whether it is correct given the question and the steps before it. "
    "A step is correct when every quantity it uses is the right one (read correctly from the "
    "question or taken from the right earlier step), the operation fits what the question "
    "asks, its arithmetic is exact, and its claim is justified. A step is incorrect when any "
    "of these fails. Grade every step, including the steps after a wrong one. "
    "Answer only with the verdict lines you are asked for, with no other text."
)

_LINE_RE = re.compile(r"^step\s+(?P<k>\d+)\s*:\s*(?P<verdict>\S.*?)\s*$", re.IGNORECASE)
_VERDICTS = {"correct": True, "incorrect": False}
_FORMAT = "'Step k: correct' or 'Step k: incorrect'"

#: The confidence words a judge may state, most confident first.
CONFIDENCE_LEVELS: tuple[str, ...] = ("high", "medium", "low")
#: "correct (confidence: high)" or "correct, confidence: high" (case and a final period free).
_JUDGED_RE = re.compile(
    r"^(?P<word>[a-z]+)\s*(?:\(\s*confidence\s*:\s*(?P<c1>[a-z]+)\s*\)"
    r"|,\s*confidence\s*:\s*(?P<c2>[a-z]+))\s*\.?$",
    re.IGNORECASE,
)
_FORMAT_CONFIDENCE = ("'Step k: correct (confidence: C)' or 'Step k: incorrect (confidence: C)', "
                      "where C is high, medium or low")


@dataclass(frozen=True)
class StepJudgement:
    """One step's verdict as read from an answer.

    Attributes:
        correct: the verdict.
        confidence: the stated confidence (one of :data:`CONFIDENCE_LEVELS`), or ``None``
            when none was asked for.
        offset: where the verdict word starts in the answer (a character index).
    """

    correct: bool
    confidence: str | None
    offset: int


def _render_step(k: int, step: str) -> str:
    lines = step.strip().splitlines() or [""]
    return "\n".join([f"Step {k}: {lines[0]}", *(f"    {line}" for line in lines[1:])])


def _format_instruction(n_steps: int, confidence: bool = False) -> str:
    last = "Step 1" if n_steps == 1 else f"Step 1 to Step {n_steps}"
    return (
        f"Answer with exactly {n_steps} line{'s' if n_steps != 1 else ''} ({last}, in order), "
        f"each of the form {_FORMAT_CONFIDENCE if confidence else _FORMAT}, and nothing else."
    )


def build_grading_prompt(question: str, steps: Sequence[str], *, confidence: bool = False) -> str:
    """The user message that asks the grader model for one verdict per step.

    Args:
        question: the problem.
        steps: the chain's steps (a step's extra lines are indented under it).
        confidence: also ask for a confidence (high, medium or low) on each line, as
            :func:`parse_step_judgements` reads with ``confidence=True``.

    Returns:
        The prompt text.

    Examples:
        >>> print(build_grading_prompt("What is 2 + 3 * 4?", ["3 * 4 = 12", "2 + 12 = 15"]))
        Question:
        What is 2 + 3 * 4?
        <BLANKLINE>
        Solution (2 steps):
        Step 1: 3 * 4 = 12
        Step 2: 2 + 12 = 15
        <BLANKLINE>
        Grade each step. Answer with exactly 2 lines (Step 1 to Step 2, in order), each of \
the form 'Step k: correct' or 'Step k: incorrect', and nothing else.
    """
    n = len(steps)
    body = "\n".join(_render_step(k, s) for k, s in enumerate(steps, start=1))
    return (
        f"Question:\n{question.strip()}\n\nSolution ({n} step{'s' if n != 1 else ''}):\n{body}"
        f"\n\nGrade each step. {_format_instruction(n, confidence)}"
    )


def build_regrade_prompt(error: str, n_steps: int, *, confidence: bool = False) -> str:
    """The follow-up message sent after an answer that could not be read.

    Args:
        error: why the previous answer was refused (:class:`GraderAnswerError`'s message).
        n_steps: the number of steps.
        confidence: the lines must carry a confidence (as the first request asked).

    Returns:
        The follow-up text.

    Examples:
        >>> print(build_regrade_prompt("step 2 has no verdict", 2))
        Your answer could not be read: step 2 has no verdict. Answer with exactly 2 lines \
(Step 1 to Step 2, in order), each of the form 'Step k: correct' or 'Step k: incorrect', and \
nothing else.
    """
    return (f"Your answer could not be read: {error.rstrip('.')}. "
            f"{_format_instruction(n_steps, confidence)}")


def parse_step_verdicts(answer: str, n_steps: int) -> list[bool]:
    """Read a grader's answer: exactly one ``Step k: correct|incorrect`` line per step.

    Blank lines and the spacing around a line are ignored; ``Step``, the verdict word and a
    trailing period are read case-insensitively. Everything else is refused.

    Args:
        answer: the model's text.
        n_steps: the number of steps in the chain (>= 1).

    Returns:
        One verdict per step, in order: ``True`` for correct, ``False`` for incorrect.

    Raises:
        GraderAnswerError: for an empty answer, a line that is not a verdict line, an unknown
            verdict word, a step graded twice, a step number outside ``1..n_steps``, steps out
            of order, or missing steps; the message quotes the offending line.

    Examples:
        >>> parse_step_verdicts("Step 1: correct\\nStep 2: Incorrect.", 2)
        [True, False]
        >>> parse_step_verdicts("Step 1: correct", 2)
        Traceback (most recent call last):
        ...
        prm_plugins.errors.GraderAnswerError: step 2 has no verdict: expected 2 lines \
(Step 1 to Step 2), got 1
    """
    return [j.correct for j in parse_step_judgements(answer, n_steps)]


def _read_verdict(text: str, confidence: bool) -> tuple[str, str | None, str] | None:
    """``(verdict word, confidence word, what to quote)`` of a line's verdict part."""
    if not confidence:
        return text.rstrip(".").strip().lower(), None, text
    m = _JUDGED_RE.match(text)
    if m is None:
        return None
    return m.group("word").lower(), (m.group("c1") or m.group("c2")).lower(), m.group("word")


def parse_step_judgements(
    answer: str, n_steps: int, *, confidence: bool = False
) -> list[StepJudgement]:
    """Read a grader's or judge's answer: one verdict line per step, in order.

    With ``confidence=False`` the lines are those of :func:`parse_step_verdicts` (which calls
    this); with ``confidence=True`` each line must be ``Step k: correct (confidence: C)``
    (or ``Step k: correct, confidence: C``) with ``C`` one of :data:`CONFIDENCE_LEVELS`.

    Args:
        answer: the model's text.
        n_steps: the number of steps in the chain (>= 1).
        confidence: each line must state a confidence.

    Returns:
        One :class:`StepJudgement` per step, in order.

    Raises:
        GraderAnswerError: as :func:`parse_step_verdicts`, and for a line without a
            confidence or with an unknown one when ``confidence=True``.

    Examples:
        >>> js = parse_step_judgements(
        ...     "Step 1: correct (confidence: high)\\nStep 2: incorrect (confidence: low)", 2,
        ...     confidence=True)
        >>> [(j.correct, j.confidence, j.offset) for j in js]
        [(True, 'high', 8), (False, 'low', 43)]
    """

    def fail(message: str) -> GraderAnswerError:
        return GraderAnswerError(message, answer=answer, n_steps=n_steps)

    form = _FORMAT_CONFIDENCE if confidence else _FORMAT
    if not isinstance(answer, str) or not answer.strip():
        raise fail(f"the answer is empty; expected {n_steps} lines of the form {form}")
    seen: dict[int, int] = {}
    judged: list[StepJudgement] = []
    order: list[int] = []
    lineno = 0
    start = 0
    for raw in answer.splitlines(keepends=True):
        line_start, start = start, start + len(raw)
        line = raw.strip()
        if not line:
            continue
        lineno += 1
        m = _LINE_RE.match(line)
        if m is None:
            raise fail(f"line {lineno} is not a verdict line: {line[:120]!r}; every line must "
                       f"be {form} and there must be no other text")
        k = int(m.group("k"))
        read = _read_verdict(m.group("verdict"), confidence)
        if read is None:
            raise fail(f"line {lineno}: {m.group('verdict')[:60]!r} for step {k} is not a "
                       f"verdict with a confidence; the line must be {form}")
        word, level, quoted = read
        if word not in _VERDICTS:
            raise fail(f"line {lineno}: unknown verdict {quoted[:60]!r} for step "
                       f"{k}; the verdict must be 'correct' or 'incorrect'")
        if level is not None and level not in CONFIDENCE_LEVELS:
            raise fail(f"line {lineno}: unknown confidence {level[:30]!r} for step {k}; the "
                       f"confidence must be {', '.join(CONFIDENCE_LEVELS)}")
        if k in seen:
            raise fail(f"step {k} is graded twice (lines {seen[k]} and {lineno}); give exactly "
                       "one verdict per step")
        if not 1 <= k <= n_steps:
            raise fail(f"line {lineno} grades step {k}, which does not exist: the solution has "
                       f"{n_steps} step{'s' if n_steps != 1 else ''} (1 to {n_steps})")
        seen[k] = lineno
        order.append(k)
        offset = line_start + (len(raw) - len(raw.lstrip())) + m.start("verdict")
        judged.append(StepJudgement(_VERDICTS[word], level, offset))
    problem = _incomplete(order, n_steps)
    if problem:
        raise fail(problem)
    return judged


def _incomplete(order: list[int], n_steps: int) -> str | None:
    """Why the steps graded, in ``order``, are not exactly 1 to ``n_steps`` in order."""
    graded = set(order)
    missing = [k for k in range(1, n_steps + 1) if k not in graded]
    if missing:
        names = ", ".join(str(k) for k in missing)
        return (f"step{'s' if len(missing) > 1 else ''} {names} "
                f"{'have' if len(missing) > 1 else 'has'} no verdict: expected {n_steps} "
                f"lines (Step 1 to Step {n_steps}), got {len(order)}")
    for position, k in enumerate(order, start=1):
        if k != position:
            return (f"steps are out of order: line {position} grades step {k} where step "
                    f"{position} was expected; list the steps as 1, 2, ..., {n_steps}")
    return None


def propagate_first_error(verdicts: Sequence[bool]) -> list[bool]:
    """Labels under the first-error convention: bad from the first bad verdict on.

    Examples:
        >>> propagate_first_error([True, False, True, True])
        [True, False, False, False]
    """
    labels: list[bool] = []
    ok = True
    for v in verdicts:
        ok = ok and bool(v)
        labels.append(ok)
    return labels
