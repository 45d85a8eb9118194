"""GSM8K answers, rows and JSONL files, parsed into :class:`GSM8KSolution` objects."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from prm_plugins.arithmetic import find_numbers, parse_number
from prm_plugins.errors import InvalidInputError
from prm_plugins.jsonl import JSONLineError, loads_line
from prm_plugins.labeling.gsm8k.build import SolutionBuilder
from prm_plugins.labeling.gsm8k.solution import GSM8KSolution, NumberSpan, Step, final_step_text

__all__ = ["MAX_LINE_CHARS", "parse_gsm8k_answer", "parse_gsm8k_row", "read_gsm8k_jsonl"]

#: Longest solution line :func:`parse_gsm8k_answer` parses (GSM8K's longest has 350
#: characters); a longer line makes the row an :class:`InvalidInputError`, which labelling
#: reports as a malformed row, so no line's cost grows without bound.
MAX_LINE_CHARS = 2000


def parse_gsm8k_answer(answer: str, question: str = "") -> GSM8KSolution:
    """Parse a GSM8K ``answer`` field into checked, structured steps.

    Args:
        answer: the reference solution: one step per line, ``<<expr=value>>`` annotations,
            last line ``#### N``.
        question: the problem text (its numbers tell literals from restated results).

    Returns:
        The parsed solution. Annotations that do not check are kept and listed by
        :attr:`GSM8KSolution.failed_annotations`; unparseable ones in
        :attr:`GSM8KSolution.problems`.

    Raises:
        InvalidInputError: if there is no ``#### N`` line, its answer is not a number, or
            there are no steps before it.

    Examples:
        >>> sol = parse_gsm8k_answer("Half: 48/2 = <<48/2=24>>24 clips.\\n#### 24")
        >>> sol.completions
        ['Half: 48/2 = 24 clips.', 'The answer is 24.']
        >>> sol.is_checked
        True
    """
    if not isinstance(answer, str):
        raise InvalidInputError(
            f"a GSM8K answer must be a string, got {type(answer).__name__}"
        )
    lines = [line for line in answer.split("\n") if line.strip()]
    final_index = next((k for k, line in enumerate(lines) if line.lstrip().startswith("####")),
                       None)
    if final_index is None:
        raise InvalidInputError(
            "GSM8K answer has no final '#### N' line; got "
            f"{answer[-80:]!r}. Each answer must end with a line like '#### 72'."
        )
    answer_text = lines[final_index].strip()[4:].strip()
    try:
        value = parse_number(answer_text)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"GSM8K final answer must be a number, got {answer_text!r} in the '####' line"
        ) from exc
    body = lines[:final_index]
    for k, line in enumerate(body):
        if len(line) > MAX_LINE_CHARS:
            raise InvalidInputError(
                f"GSM8K answer line {k + 1} has {len(line)} characters, more than the "
                f"{MAX_LINE_CHARS} a solution step may have; got {line[:60]!r}..."
            )
    if not body:
        raise InvalidInputError(
            f"GSM8K answer has no reasoning steps before '#### {answer_text}'"
        )
    question_numbers = tuple(v for _, _, v in find_numbers(question))
    builder = SolutionBuilder(question_numbers)
    steps = [builder.build_step(k, line) for k, line in enumerate(body)]
    answer_qid = builder.nearest(value)
    final_text = final_step_text(answer_text)
    start = final_text.index(answer_text)
    span = NumberSpan(
        start=start, end=start + len(answer_text), text=answer_text, value=value, money=False,
        role="restated" if answer_qid is not None else "literal", qid=answer_qid,
    )
    steps.append(
        Step(index=len(steps), raw=lines[final_index], text=final_text, spans=(span,),
             is_final=True)
    )
    return GSM8KSolution(
        question=question,
        steps=tuple(steps),
        answer=value,
        answer_text=answer_text,
        answer_qid=answer_qid,
        question_numbers=question_numbers,
        problems=tuple(builder.problems),
    )


def parse_gsm8k_row(row: Mapping[str, Any]) -> GSM8KSolution:
    """Parse a GSM8K row ``{"question": str, "answer": str}``.

    Raises:
        InvalidInputError: if a field is missing or not a string, or the answer is malformed
            (see :func:`parse_gsm8k_answer`).

    Examples:
        >>> row = {"question": "Tom has 3 bags of 4 apples. How many?",
        ...        "answer": "3 * 4 = <<3*4=12>>12\\n#### 12"}
        >>> parse_gsm8k_row(row).answer
        Fraction(12, 1)
    """
    if not isinstance(row, Mapping):
        raise InvalidInputError(
            f"a GSM8K row must be a mapping with 'question' and 'answer', got "
            f"{type(row).__name__}"
        )
    for key in ("question", "answer"):
        if not isinstance(row.get(key), str):
            raise InvalidInputError(
                f"GSM8K row field {key!r} must be a string, got "
                f"{type(row.get(key)).__name__}; rows look like "
                "{'question': '...', 'answer': '...\\n#### 72'}"
            )
    return parse_gsm8k_answer(row["answer"], row["question"])


def read_gsm8k_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the rows of a GSM8K JSONL file (``question``/``answer`` per line).

    Blank lines are skipped.

    Raises:
        InvalidInputError: naming the file and line, for a line that is not UTF-8, or not a
            JSON object with string ``question`` and ``answer`` fields.
        FileNotFoundError: if the file does not exist.
    """
    path = Path(path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:  # one rule for every JSONL reader: BOM, depth and number limits
                row = loads_line(raw)
            except JSONLineError as exc:
                raise InvalidInputError(
                    f"{path}:{lineno}: {exc}; each line must be one object "
                    "{\"question\": ..., \"answer\": ...}"
                ) from None
            if not isinstance(row, dict) or not all(
                isinstance(row.get(k), str) for k in ("question", "answer")
            ):
                got = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise InvalidInputError(
                    f"{path}:{lineno}: expected an object with string 'question' and 'answer', "
                    f"got {got}"
                )
            yield row
