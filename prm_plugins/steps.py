"""Split an LLM answer into reasoning steps, join steps back, and validate step lists.

A process reward model scores each step of a chain, so raw answer text must first be cut
into steps. :func:`split_steps` does that in one of several modes and never cuts inside a
Markdown code fence; :func:`split_step_spans` gives each of those steps' character span in
the text (for mapping step scores back onto tokens); :func:`join_steps` is its inverse for
the simple modes; and :func:`validate_steps` is the check every scorer runs on a step list.

Stdlib only: importing this module loads nothing heavy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from prm_plugins.errors import InvalidInputError

__all__ = ["JOIN_MODES", "SPLIT_MODES", "check_unicode", "join_steps", "split_step_spans",
           "split_steps", "split_verbatim", "validate_chain", "validate_steps"]

#: Modes accepted by :func:`split_steps`.
SPLIT_MODES: tuple[str, ...] = ("auto", "blank_lines", "newlines", "step_markers", "regex")

#: Modes accepted by :func:`join_steps`, with the separator each one writes.
JOIN_MODES: dict[str, str] = {"newlines": "\n", "blank_lines": "\n\n"}

#: Longest ``repr`` of a received value quoted in an error message.
_PREVIEW_CHARS = 80

# Horizontal whitespace is ``[^\S\n]``: any whitespace but "\n" (so "\r" of CRLF counts).

#: A fence opener line: 3+ backticks or tildes, then an info string. Any indentation is
#: accepted, because LLMs often indent fences inside list items.
_FENCE_OPEN = re.compile(r"[^\S\n]*(?P<fence>`{3,}|~{3,})(?P<info>.*)")

#: A fence closer line: only the fence characters, optionally surrounded by whitespace.
_FENCE_CLOSE = re.compile(r"[^\S\n]*(?P<fence>`{3,}|~{3,})[^\S\n]*")

#: One line break.
_NEWLINE = re.compile(r"\n")

#: A line break followed by one or more blank (whitespace-only) lines.
_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*\n)+")

#: A step marker at the start of a line: ``Step 1:``, ``Step 2.``, ``**Step 3:**``,
#: ``*Step 3*``, ``## Step 4`` (a heading needs no punctuation after the number).
#: No two whitespace runs are adjacent, so a long run of spaces cannot make it backtrack
#: quadratically.
_STEP_MARKER = re.compile(
    r"""
    ^[^\S\n]*
    (?:
        \#{1,6}[^\S\n]+(?:(?:\*{1,2}|_{1,2})[^\S\n]*)?step[^\S\n]*\d+\b
      |
        (?:(?:\*{1,2}|_{1,2})[^\S\n]*)?step[^\S\n]*\d+
        [^\S\n]*(?:[:.)\-\u2013\u2014\uff1a]|\*{1,2}|_{1,2}|$)
    )
    """,
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)


def _check_split_args(text: object, mode: object,
                      pattern: str | re.Pattern[str] | None) -> re.Pattern[str] | None:
    """Refuse bad :func:`split_steps` arguments; the compiled pattern for ``mode="regex"``."""
    if not isinstance(text, str):
        if isinstance(text, (bytes, bytearray)):
            hint = "Decode it first, e.g. text.decode('utf-8')."
        else:
            hint = "Pass the answer text as a string, e.g. the message's content."
        raise InvalidInputError(
            f"split_steps() needs `text` to be a str; received {_describe(text)}. {hint}"
        )
    if not isinstance(mode, str) or mode not in SPLIT_MODES:
        raise InvalidInputError(
            f"unknown split mode; received mode={_preview(mode)}. "
            f"Use one of: {', '.join(repr(m) for m in SPLIT_MODES)}."
        )
    regex = _compile_pattern(pattern) if mode == "regex" else None
    if pattern is not None and mode != "regex":
        raise InvalidInputError(
            f"`pattern` is only used with mode='regex'; received mode={mode!r} with "
            f"pattern={_preview(pattern)}. Pass mode='regex', or drop `pattern`."
        )
    return regex


def split_steps(
    text: str,
    mode: str = "auto",
    *,
    pattern: str | re.Pattern[str] | None = None,
    keep_empty: bool = False,
) -> list[str]:
    """Split an LLM answer into reasoning steps.

    Markdown code fences (```` ``` ```` or ``~~~``, closed or running unclosed to the end of
    the text) are never split: a fenced block stays whole inside the step it belongs to, in
    every mode (a fence may be indented, as inside list items; a line such as
    ```` ```x``` ```` is inline code, not a fence). Each step is stripped of surrounding
    whitespace; nothing else is changed.

    This is the generic splitter for free text. To score a solution with a published PRM,
    split it the way that model's own code does: ``prm.format.split_solution(text)``
    (``prm score --solution`` does), since whitespace a PRM was trained on changes its scores.

    Args:
        text: the answer to split.
        mode: how to find step boundaries.

            * ``"newlines"``: every line is a step.
            * ``"blank_lines"``: paragraphs separated by one or more blank lines.
            * ``"step_markers"``: a step starts at each line-start marker such as
              ``Step 1:``, ``Step 2.``, ``**Step 3:**`` or ``## Step 4`` (case-insensitive);
              the marker stays in its step, and non-blank text before the first marker is
              a step of its own.
            * ``"regex"``: split at each match of ``pattern``; the match is dropped.
            * ``"auto"``: ``"step_markers"`` if the text has at least two markers, else
              ``"blank_lines"`` if it has a blank-line break between paragraphs, else
              ``"newlines"``.
        pattern: the separator regex for ``mode="regex"`` (a string or compiled pattern).
            It must not match the empty string. Zero-width patterns that only match at
            some positions (e.g. ``r"(?=^Answer:)"`` with ``re.M``) are accepted.
        keep_empty: keep empty steps between two separators (the blank line in
            ``"a\\n\\nb"`` with ``mode="newlines"``) as ``""``; blank text at either end is
            never a step.

    Returns:
        The steps, in order.

    Raises:
        InvalidInputError: if ``text`` is not a str, ``mode`` is unknown, ``pattern`` is
            missing for ``mode="regex"`` or given for another mode, or ``pattern`` is not
            a valid regex or matches the empty string.

    Examples:
        >>> split_steps("Step 1: 2 + 2 = 4.\\nStep 2: 4 * 3 = 12.\\nThe answer is 12.")
        ['Step 1: 2 + 2 = 4.', 'Step 2: 4 * 3 = 12.\\nThe answer is 12.']
        >>> split_steps("First, add.\\n\\nThen, multiply.")
        ['First, add.', 'Then, multiply.']
        >>> split_steps("a = 1\\n```\\nb = 2\\n\\nc = 3\\n```", "blank_lines")
        ['a = 1\\n```\\nb = 2\\n\\nc = 3\\n```']
        >>> split_steps("one ;; two ;; three", "regex", pattern=r"\\s*;;\\s*")
        ['one', 'two', 'three']
    """
    regex = _check_split_args(text, mode, pattern)
    if not text.strip():
        return []
    fences = _fence_spans(text)
    if mode == "auto":
        if len(_find(text, _STEP_MARKER, fences)) >= 2:
            mode = "step_markers"
        else:
            paragraphs = _split(text, _BLANK_LINES, fences, keep_empty)
            if sum(1 for p in paragraphs if p) >= 2:
                return paragraphs
            mode = "newlines"

    if mode == "step_markers":
        starts = [s for s, _ in _find(text, _STEP_MARKER, fences) if s > 0]
        pieces = _cut(text, [(s, s) for s in starts])
        return [p for p in (piece.strip() for piece in pieces) if p]
    if mode == "regex":
        assert regex is not None  # checked above
        return _split(text, regex, fences, keep_empty)
    separator = _NEWLINE if mode == "newlines" else _BLANK_LINES
    return _split(text, separator, fences, keep_empty)


def split_verbatim(text: str, separator: str) -> list[str]:
    """Split ``text`` at every ``separator`` and keep each piece exactly as written.

    This is ``text.split(separator)``, the way published PRM code cuts a solution into
    steps (Skywork's ``response.split("\\n")``, RLHFlow's ``ans.split("\\n\\n")``), minus the
    pieces no scorer accepts: empty and whitespace-only pieces are dropped. Nothing is
    stripped, so a step keeps its indentation and spaces; use :func:`split_steps` for free
    text, or ``PRMFormat.split_solution`` for a model's own convention.

    Args:
        text: the solution text.
        separator: the literal separator (not a regex); must not be empty.

    Returns:
        The non-blank pieces, in order, verbatim.

    Raises:
        InvalidInputError: ``text`` or ``separator`` is not a str, or ``separator`` is empty.

    Examples:
        >>> split_verbatim("  x = 1\\n\\n  y = 2 \\n", "\\n")
        ['  x = 1', '  y = 2 ']
    """
    if not isinstance(text, str):
        raise InvalidInputError(
            f"split_verbatim() needs `text` to be a str; received {_describe(text)}. "
            "Pass the solution text as a string."
        )
    if not isinstance(separator, str) or not separator:
        raise InvalidInputError(
            f"split_verbatim() needs a non-empty str separator; received "
            f"{_describe(separator)}. Pass the literal text between steps, e.g. '\\n'."
        )
    return [piece for piece in text.split(separator) if piece.strip()]


def split_step_spans(
    text: str,
    mode: str = "auto",
    *,
    pattern: str | re.Pattern[str] | None = None,
) -> list[tuple[int, int]]:
    """Split like :func:`split_steps` and return each step's ``(start, end)`` span in ``text``.

    The spans are the steps of ``split_steps(text, mode, pattern=pattern)``, in order:
    ``[text[s:e] for s, e in split_step_spans(text, mode)] == split_steps(text, mode)`` for
    every text and mode (each span is the stripped step, so it starts and ends on a
    non-whitespace character). Offsets are Python ``str`` indices (code points), so they
    hold for any unicode text. Empty steps have no span, so there is no ``keep_empty``.

    Args:
        text: the answer to split.
        mode: a mode of :func:`split_steps` (``"auto"``, ``"blank_lines"``, ``"newlines"``,
            ``"step_markers"``, ``"regex"``).
        pattern: the separator regex for ``mode="regex"``.

    Returns:
        One ``(start, end)`` pair per step, ``start < end``, ordered and non-overlapping.

    Raises:
        InvalidInputError: for the same bad arguments as :func:`split_steps`.

    Examples:
        >>> text = "Add 2 and 3.\\n\\n  So 5 in all. "
        >>> split_step_spans(text)
        [(0, 12), (16, 28)]
        >>> [text[s:e] for s, e in split_step_spans(text)]
        ['Add 2 and 3.', 'So 5 in all.']
    """
    expected = split_steps(text, mode, pattern=pattern)  # validates the arguments
    if not expected:
        return []
    fences = _fence_spans(text)
    if mode == "auto":
        if len(_find(text, _STEP_MARKER, fences)) >= 2:
            mode = "step_markers"
        else:
            paragraphs = _strip_spans(text, _cut_spans(text, _find(text, _BLANK_LINES, fences)))
            mode = "blank_lines" if len(paragraphs) >= 2 else "newlines"
    if mode == "step_markers":
        starts = [s for s, _ in _find(text, _STEP_MARKER, fences) if s > 0]
        spans = _strip_spans(text, _cut_spans(text, [(s, s) for s in starts]))
    else:
        if mode == "regex":
            regex = _compile_pattern(pattern)
        else:
            regex = _NEWLINE if mode == "newlines" else _BLANK_LINES
        spans = _strip_spans(text, _cut_spans(text, _find(text, regex, fences)))
    if [text[s:e] for s, e in spans] != expected:  # pragma: no cover - would be a bug
        raise AssertionError("split_step_spans() disagrees with split_steps()")
    return spans


def join_steps(steps: Sequence[str], mode: str = "newlines") -> str:
    """Join steps into one text; the inverse of :func:`split_steps` for simple steps.

    For steps that are stripped, non-empty and free of line breaks (and of code fences),
    ``split_steps(join_steps(steps, mode), mode) == list(steps)``.

    Args:
        steps: the steps to join.
        mode: ``"newlines"`` joins with ``"\\n"``; ``"blank_lines"`` with ``"\\n\\n"``.

    Returns:
        The joined text (``""`` for no steps).

    Raises:
        InvalidInputError: if ``steps`` is a bare str or not a sequence, an item is not a
            str, or ``mode`` is unknown.

    Examples:
        >>> join_steps(["Add 2 and 3.", "The answer is 5."])
        'Add 2 and 3.\\nThe answer is 5.'
        >>> join_steps(["Add 2 and 3.", "The answer is 5."], "blank_lines")
        'Add 2 and 3.\\n\\nThe answer is 5.'
    """
    if not isinstance(mode, str) or mode not in JOIN_MODES:
        raise InvalidInputError(
            f"unknown join mode; received mode={_preview(mode)}. "
            f"Use one of: {', '.join(repr(m) for m in JOIN_MODES)}."
        )
    items = _as_str_list(steps, "join_steps()")
    return JOIN_MODES[mode].join(items)


def validate_steps(steps: object) -> list[str]:
    """Check a step list before scoring and return it as a new list.

    Args:
        steps: a list or tuple (any non-string sequence) of non-blank strings.

    Returns:
        The steps as a list, unchanged.

    Raises:
        InvalidInputError: if ``steps`` is a bare str (use :func:`split_steps`), is not a
            sequence, is empty, holds a non-str item, or holds an empty or whitespace-only
            step. The message names the offending index.

    Examples:
        >>> validate_steps(("Add 2 and 3.", "The answer is 5."))
        ['Add 2 and 3.', 'The answer is 5.']
        >>> validate_steps(["Add 2 and 3.", "  "])
        Traceback (most recent call last):
        ...
        prm_plugins.errors.InvalidInputError: steps[1] is empty or whitespace-only \
(received '  '); drop it, or build the list with split_steps(), which drops empty steps.
    """
    items = _as_str_list(steps, "steps")
    if not items:
        raise InvalidInputError(
            f"steps must hold at least one step; received an empty {type(steps).__name__}. "
            "Pass one string per reasoning step, e.g. split_steps(answer)."
        )
    for index, item in enumerate(items):
        if not item.strip():
            raise InvalidInputError(
                f"steps[{index}] is empty or whitespace-only (received {_preview(item)}); "
                "drop it, or build the list with split_steps(), which drops empty steps."
            )
        check_unicode(item, f"steps[{index}]")
    return items


def validate_chain(question: object, steps: object) -> tuple[str, list[str]]:
    """Check one ``(question, steps)`` chain before scoring; return it with steps as a list.

    What any scorer refuses, checked without a model: the question must be text that UTF-8
    can hold, and the steps pass :func:`validate_steps`.

    Raises:
        InvalidInputError: naming what is wrong.

    Examples:
        >>> validate_chain("2 + 3?", ("2 + 3 = 5",))
        ('2 + 3?', ['2 + 3 = 5'])
    """
    if not isinstance(question, str):
        raise InvalidInputError(f"question must be a str, got {type(question).__name__}")
    return check_unicode(question, "question"), validate_steps(steps)


def check_unicode(text: str, what: str) -> str:
    """Return ``text`` if it can be encoded as UTF-8, else raise a clear error.

    A Python ``str`` can hold lone surrogates (``"\\ud800"``), typically from decoding
    bytes with ``errors="surrogateescape"``; no tokenizer can encode them.

    Raises:
        InvalidInputError: naming ``what`` and the position of the first bad character.

    Examples:
        >>> check_unicode("3 + 4 = 7", "steps[0]")
        '3 + 4 = 7'
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{what} is not valid Unicode: it holds the lone surrogate "
            f"U+{ord(text[exc.start]):04X} at position {exc.start}, which cannot be encoded. "
            "Decode your input with errors='replace' (or fix its source) before scoring."
        ) from None
    return text


def _as_str_list(steps: object, what: str) -> list[str]:
    """Return ``steps`` as a list after checking it is a non-str sequence of str."""
    if isinstance(steps, str):
        raise InvalidInputError(
            f"{what} must be a list of step strings; received a bare str "
            f"{_preview(steps)}. Split the text first: split_steps(text)."
        )
    if isinstance(steps, (bytes, bytearray, memoryview)) or not isinstance(steps, Sequence):
        raise InvalidInputError(
            f"{what} must be a list or tuple of str; received {_describe(steps)}. "
            "Pass a list, e.g. list(steps)."
        )
    items = list(steps)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidInputError(
                f"steps[{index}] must be a str; received {_describe(item)}. "
                "Convert each step to text, e.g. [str(s) for s in steps]."
            )
    return items


def _compile_pattern(pattern: str | re.Pattern[str] | None) -> re.Pattern[str]:
    """Compile and check the separator regex of ``mode="regex"``."""
    if pattern is None:
        raise InvalidInputError(
            "mode='regex' needs a separator `pattern`; received pattern=None. "
            "Pass one, e.g. split_steps(text, 'regex', pattern=r'\\n-{3,}\\n')."
        )
    if isinstance(pattern, re.Pattern):
        compiled = pattern
    elif isinstance(pattern, str):
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise InvalidInputError(
                f"`pattern` is not a valid regular expression ({exc}); received "
                f"pattern={_preview(pattern)}. Fix the regex, or re.escape() a literal "
                "separator."
            ) from exc
    else:
        raise InvalidInputError(
            f"`pattern` must be a str or re.Pattern; received {_describe(pattern)}. "
            "Pass a regex string, e.g. pattern=r'\\n-{3,}\\n'."
        )
    if not isinstance(compiled.pattern, str):
        raise InvalidInputError(
            f"`pattern` must be a text (str) regex; received a bytes pattern "
            f"{_preview(compiled.pattern)}. Compile it from a str instead."
        )
    if compiled.search("") is not None:
        raise InvalidInputError(
            f"`pattern` matches the empty string, so it would split everywhere; received "
            f"pattern={_preview(compiled.pattern)}. Make it match at least one character, "
            "e.g. use '+' instead of '*'."
        )
    return compiled


def _fence_spans(text: str) -> list[tuple[int, int]]:
    """Return ``(start, end)`` offsets of each fenced code block, from the start of the
    opener line to the end of the closer line (or the end of the text if unclosed)."""
    spans: list[tuple[int, int]] = []
    fence_char = ""
    fence_len = 0
    fence_start = 0
    start = 0
    n = len(text)
    while True:
        end = text.find("\n", start)
        if end == -1:
            end = n
        line = text[start:end]
        if not fence_char:
            m = _FENCE_OPEN.fullmatch(line)
            # A backtick fence's info string may not contain a backtick (CommonMark), so
            # an inline ```code``` line is not a fence opener.
            if m and not (m["fence"][0] == "`" and "`" in m["info"]):
                fence_char, fence_len, fence_start = m["fence"][0], len(m["fence"]), start
        else:
            m = _FENCE_CLOSE.fullmatch(line)
            if m and m["fence"][0] == fence_char and len(m["fence"]) >= fence_len:
                spans.append((fence_start, end))
                fence_char = ""
        if end == n:
            break
        start = end + 1
    if fence_char:
        spans.append((fence_start, n))
    return spans


def _find(
    text: str, regex: re.Pattern[str], fences: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Return the spans of ``regex`` matches in ``text`` outside the fenced blocks.

    Each stretch between fences is searched on its own, so a match can never reach into a
    fence.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    for fence_start, fence_end in [*fences, (len(text), len(text))]:
        if pos <= fence_start:
            spans.extend(m.span() for m in regex.finditer(text, pos, fence_start))
        pos = fence_end
    return spans


def _cut(text: str, separators: list[tuple[int, int]]) -> list[str]:
    """Return the pieces of ``text`` between ordered, non-overlapping separator spans."""
    pieces: list[str] = []
    prev = 0
    for start, end in separators:
        pieces.append(text[prev:start])
        prev = end
    pieces.append(text[prev:])
    return pieces


def _cut_spans(text: str, separators: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ``(start, end)`` spans of the pieces :func:`_cut` returns."""
    spans: list[tuple[int, int]] = []
    prev = 0
    for start, end in separators:
        spans.append((prev, start))
        prev = end
    spans.append((prev, len(text)))
    return spans


def _strip_spans(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Shrink each span as ``str.strip`` shrinks its piece; drop spans that become empty."""
    out: list[tuple[int, int]] = []
    for start, end in spans:
        piece = text[start:end]
        stripped = piece.strip()
        if not stripped:
            continue
        lead = len(piece) - len(piece.lstrip())
        out.append((start + lead, start + lead + len(stripped)))
    return out


def _split(
    text: str, regex: re.Pattern[str], fences: list[tuple[int, int]], keep_empty: bool
) -> list[str]:
    """Cut ``text`` at ``regex`` matches outside fences; strip and drop empty pieces.

    With ``keep_empty``, empty pieces between two separators are kept as ``""``; blank
    pieces before the first or after the last non-blank piece are always dropped.
    """
    steps = [piece.strip() for piece in _cut(text, _find(text, regex, fences))]
    if not keep_empty:
        return [s for s in steps if s]
    first = next((i for i, s in enumerate(steps) if s), len(steps))
    last = max((i for i, s in enumerate(steps) if s), default=-1)
    return steps[first : last + 1]


def _preview(value: object) -> str:
    """``repr(value)`` cut to a readable length for error messages."""
    text = repr(value)
    if len(text) > _PREVIEW_CHARS:
        text = text[: _PREVIEW_CHARS - 3] + "..."
    return text


def _describe(value: object) -> str:
    """The type and a short ``repr`` of ``value``, for error messages."""
    return f"{type(value).__name__} {_preview(value)}"
