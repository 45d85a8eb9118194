"""The text of a grading conversation: the prompts, and the strict reader of the verdicts.

The grader (:class:`~prm_plugins.labeling.grader.LLMStepGrader`) asks for exactly one line
per step, in order and nothing else::

    Step 1: correct
    Step 2: incorrect

:func:`parse_step_verdicts` refuses anything else with a :class:`GraderAnswerError` that says
exactly what was wrong, and :func:`build_regrade_prompt` turns that error into the next
request. Framework-free: plain strings in, plain strings out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from prm_plugins.errors import GraderAnswerError

__all__ = [
    "GRADER_SYSTEM_PROMPT",
    "build_grading_prompt",
    "build_regrade_prompt",
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


def _render_step(k: int, step: str) -> str:
    lines = step.strip().splitlines() or [""]
    return "\n".join([f"Step {k}: {lines[0]}", *(f"    {line}" for line in lines[1:])])


def _format_instruction(n_steps: int) -> str:
    last = "Step 1" if n_steps == 1 else f"Step 1 to Step {n_steps}"
    return (
        f"Answer with exactly {n_steps} line{'s' if n_steps != 1 else ''} ({last}, in order), "
        f"each of the form {_FORMAT}, and nothing else."
    )


def build_grading_prompt(question: str, steps: Sequence[str]) -> str:
    """The user message that asks the grader model for one verdict per step.

    Args:
        question: the problem.
        steps: the chain's steps (a step's extra lines are indented under it).

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
        f"\n\nGrade each step. {_format_instruction(n)}"
    )


def build_regrade_prompt(error: str, n_steps: int) -> str:
    """The follow-up message sent after an answer that could not be read.

    Args:
        error: why the previous answer was refused (:class:`GraderAnswerError`'s message).
        n_steps: the number of steps.

    Returns:
        The follow-up text.

    Examples:
        >>> print(build_regrade_prompt("step 2 has no verdict", 2))
        Your answer could not be read: step 2 has no verdict. Answer with exactly 2 lines \
(Step 1 to Step 2, in order), each of the form 'Step k: correct' or 'Step k: incorrect', and \
nothing else.
    """
    return f"Your answer could not be read: {error.rstrip('.')}. {_format_instruction(n_steps)}"


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

    def fail(message: str) -> GraderAnswerError:
        return GraderAnswerError(message, answer=answer, n_steps=n_steps)

    if not isinstance(answer, str) or not answer.strip():
        raise fail(f"the answer is empty; expected {n_steps} lines of the form {_FORMAT}")
    seen: dict[int, int] = {}
    verdicts: list[bool] = []
    order: list[int] = []
    lineno = 0
    for raw in answer.splitlines():
        line = raw.strip()
        if not line:
            continue
        lineno += 1
        m = _LINE_RE.match(line)
        if m is None:
            raise fail(f"line {lineno} is not a verdict line: {line[:120]!r}; every line must "
                       f"be {_FORMAT} and there must be no other text")
        k = int(m.group("k"))
        word = m.group("verdict").rstrip(".").strip().lower()
        if word not in _VERDICTS:
            raise fail(f"line {lineno}: unknown verdict {m.group('verdict')[:60]!r} for step "
                       f"{k}; the verdict must be 'correct' or 'incorrect'")
        if k in seen:
            raise fail(f"step {k} is graded twice (lines {seen[k]} and {lineno}); give exactly "
                       "one verdict per step")
        if not 1 <= k <= n_steps:
            raise fail(f"line {lineno} grades step {k}, which does not exist: the solution has "
                       f"{n_steps} step{'s' if n_steps != 1 else ''} (1 to {n_steps})")
        seen[k] = lineno
        order.append(k)
        verdicts.append(_VERDICTS[word])
    missing = [k for k in range(1, n_steps + 1) if k not in seen]
    if missing:
        names = ", ".join(str(k) for k in missing)
        raise fail(f"step{'s' if len(missing) > 1 else ''} {names} "
                   f"{'have' if len(missing) > 1 else 'has'} no verdict: expected {n_steps} "
                   f"lines (Step 1 to Step {n_steps}), got {len(order)}")
    for position, k in enumerate(order, start=1):
        if k != position:
            raise fail(f"steps are out of order: line {position} grades step {k} where step "
                       f"{position} was expected; list the steps as 1, 2, ..., {n_steps}")
    return verdicts


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
