"""Tests for :mod:`prm_plugins.steps`: splitting answers into steps, joining, validating."""

from __future__ import annotations

import doctest
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prm_plugins.steps as steps_module
from prm_plugins.errors import InvalidInputError
from prm_plugins.steps import JOIN_MODES, SPLIT_MODES, join_steps, split_steps, validate_steps

GSM8K_ANSWER = (
    "Natalia sold 48 / 2 = 24 clips in May.\n"
    "Natalia sold 48 + 24 = 72 clips altogether in April and May.\n"
    "The answer is 72."
)

MARKDOWN_ANSWER = """Let's work through this carefully.

**Step 1:** Find how many clips were sold in May.
She sold half as many: 48 / 2 = 24.

## Step 2
Add April and May: 48 + 24 = 72.

Step 3. State the answer.
The answer is **72**."""

PARAGRAPH_ANSWER = (
    "First, find the May sales: 48 / 2 = 24.\n"
    "That is half of April.\n"
    "\n"
    "   \n"
    "Next, add both months: 48 + 24 = 72.\n"
    "\n"
    "So the answer is 72."
)

NON_SPLIT_MODES = ("auto", "blank_lines", "newlines", "step_markers")

# Hypothesis settings: small and deadline-free so the file stays fast on a shared CPU.
FAST = settings(max_examples=80, deadline=None)


def test_all_is_pinned() -> None:
    assert steps_module.__all__ == [
        "JOIN_MODES",
        "SPLIT_MODES",
        "check_unicode",
        "join_steps",
        "split_step_spans",
        "split_steps",
        "split_verbatim",
        "validate_chain",
        "validate_steps",
    ]
    assert SPLIT_MODES == ("auto", "blank_lines", "newlines", "step_markers", "regex")
    assert JOIN_MODES == {"newlines": "\n", "blank_lines": "\n\n"}


def test_docstring_examples_run() -> None:
    result = doctest.testmod(steps_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6
    assert result.failed == 0


# --------------------------------------------------------------------------- newlines


def test_newlines_gsm8k_answer() -> None:
    assert split_steps(GSM8K_ANSWER, "newlines") == [
        "Natalia sold 48 / 2 = 24 clips in May.",
        "Natalia sold 48 + 24 = 72 clips altogether in April and May.",
        "The answer is 72.",
    ]


def test_newlines_drops_blank_lines_strips_and_handles_crlf() -> None:
    text = "  Add 2 and 3 = 5.  \r\n\r\n\t\r\nMultiply by 4: 5 * 4 = 20.\r\n"
    assert split_steps(text, "newlines") == ["Add 2 and 3 = 5.", "Multiply by 4: 5 * 4 = 20."]


def test_newlines_keep_empty_keeps_interior_blank_lines_only() -> None:
    text = "\n\na\n\n  \nb\n\n"
    assert split_steps(text, "newlines", keep_empty=True) == ["a", "", "", "b"]
    assert split_steps(text, "newlines") == ["a", "b"]


# --------------------------------------------------------------------------- blank_lines


def test_blank_lines_paragraphs_keep_their_inner_newlines() -> None:
    assert split_steps(PARAGRAPH_ANSWER, "blank_lines") == [
        "First, find the May sales: 48 / 2 = 24.\nThat is half of April.",
        "Next, add both months: 48 + 24 = 72.",
        "So the answer is 72.",
    ]


def test_blank_lines_crlf_and_whitespace_only_lines() -> None:
    text = "Para one\r\nline two\r\n \t \r\n\r\nPara two"
    assert split_steps(text, "blank_lines") == ["Para one\r\nline two", "Para two"]


def test_blank_lines_keep_empty_has_nothing_to_keep() -> None:
    # Runs of blank lines form one separator, so no empty paragraph exists.
    assert split_steps("\n\na\n\n\n\nb\n\n", "blank_lines", keep_empty=True) == ["a", "b"]


def test_internal_content_is_preserved_exactly() -> None:
    text = "x = 1   \n\ty = 2\u00a0 \n\nz = 3"
    assert split_steps(text, "blank_lines") == ["x = 1   \n\ty = 2", "z = 3"]


# --------------------------------------------------------------------------- step_markers


def test_step_markers_markdown_answer() -> None:
    assert split_steps(MARKDOWN_ANSWER, "step_markers") == [
        "Let's work through this carefully.",
        "**Step 1:** Find how many clips were sold in May.\nShe sold half as many: 48 / 2 = 24.",
        "## Step 2\nAdd April and May: 48 + 24 = 72.",
        "Step 3. State the answer.\nThe answer is **72**.",
    ]


@pytest.mark.parametrize(
    "marker",
    [
        "Step 1:",
        "step 1:",
        "STEP 1 -",
        "Step 1.",
        "Step 1)",
        "**Step 1:**",
        "**Step 1**:",
        "__Step 1__",
        "*Step 1:*",
        "## Step 1",
        "### Step 1: Setup",
        "#### **Step 1**",
        "  Step 1:",
        "Step 1",
    ],
)
def test_step_markers_recognised_forms(marker: str) -> None:
    text = f"Intro.\n{marker} do a.\nStep 2: do b."
    if marker.endswith(("1", "Setup", "**")):
        text = f"Intro.\n{marker}\ndo a.\nStep 2: do b."
    got = split_steps(text, "step_markers")
    assert len(got) == 3
    assert got[0] == "Intro."
    assert got[1].startswith(marker.strip())
    assert got[2] == "Step 2: do b."


@pytest.mark.parametrize(
    "line",
    [
        "Step by step: add the numbers.",
        "Steps 1: are not markers.",
        "Stepping 1: is not a marker.",
        "Step 10 minutes later we stop.",
        "As shown in Step 1: the sum is 5.",
    ],
)
def test_step_markers_ignores_non_markers(line: str) -> None:
    text = f"Step 1: begin.\n{line}\nStep 2: end."
    assert split_steps(text, "step_markers") == [f"Step 1: begin.\n{line}", "Step 2: end."]


def test_step_markers_blank_preamble_dropped_and_no_markers_gives_one_step() -> None:
    assert split_steps("\n  \nStep 1: a\nStep 2: b", "step_markers", keep_empty=True) == [
        "Step 1: a",
        "Step 2: b",
    ]
    assert split_steps("just one\n\nblock", "step_markers") == ["just one\n\nblock"]


# --------------------------------------------------------------------------- auto


def test_auto_prefers_markers() -> None:
    assert split_steps(MARKDOWN_ANSWER) == split_steps(MARKDOWN_ANSWER, "step_markers")


def test_auto_one_marker_falls_back_to_blank_lines() -> None:
    text = "Step 1: add.\nStill step one.\n\nThen the answer is 5."
    assert split_steps(text) == ["Step 1: add.\nStill step one.", "Then the answer is 5."]


def test_auto_blank_lines_then_newlines() -> None:
    assert split_steps(PARAGRAPH_ANSWER) == split_steps(PARAGRAPH_ANSWER, "blank_lines")
    assert split_steps(GSM8K_ANSWER) == split_steps(GSM8K_ANSWER, "newlines")
    # Blank lines only at the edges are not paragraph breaks.
    assert split_steps("\n\na\nb\n\n\n") == ["a", "b"]


def test_auto_ignores_markers_and_blank_lines_inside_fences() -> None:
    text = "Compute:\n```\nStep 1: x\n\nStep 2: y\n```\nDone."
    assert split_steps(text) == ["Compute:", "```\nStep 1: x\n\nStep 2: y\n```", "Done."]


@pytest.mark.parametrize("mode", [*NON_SPLIT_MODES, "regex"])
@pytest.mark.parametrize("text", ["", "   ", "\n\n\t\r\n"])
def test_blank_text_gives_no_steps(mode: str, text: str) -> None:
    pattern = r"\|" if mode == "regex" else None
    assert split_steps(text, mode, pattern=pattern, keep_empty=True) == []


@pytest.mark.parametrize(
    "text",
    [
        "a\n" + " " * 20_000 + "x\nStep 1: a\nStep 2: b",
        "## " + " " * 20_000 + "x",
        "**Step 1" + " " * 20_000 + "x",
        "```" + " " * 20_000 + "x\n" + " " * 20_000 + "```" + " " * 20_000 + "x",
    ],
)
def test_long_whitespace_runs_split_in_linear_time(text: str) -> None:
    # A quadratic backtracking regex takes tens of seconds here; a linear one, milliseconds.
    start = time.perf_counter()
    for mode in NON_SPLIT_MODES:
        split_steps(text, mode)
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------- code fences

FENCE_BODY = "def f(x):\n\n    # Step 1: not a marker\n    return x\n\nStep 2: still code"


@pytest.mark.parametrize("mode", [*NON_SPLIT_MODES, "regex"])
@pytest.mark.parametrize("fence", ["```", "~~~", "````"])
@pytest.mark.parametrize("closed", [True, False])
def test_fences_are_never_split(mode: str, fence: str, closed: bool) -> None:
    block = f"{fence}python\n{FENCE_BODY}"
    if closed:
        block += f"\n{fence}"
    after = "\n\nStep 3: after the code.\nThe answer is 3." if closed else ""
    text = f"Step 1: write code.\n\nStep 2: run it.\n{block}{after}"
    pattern = r"\n" if mode == "regex" else None
    got = split_steps(text, mode, pattern=pattern)
    holders = [s for s in got if block in s]
    assert len(holders) == 1
    assert all(s == s.strip() and s for s in got)
    if mode in ("newlines", "regex"):
        assert block in got  # a fence is a step of its own between lines
    if mode in ("auto", "step_markers", "blank_lines"):
        assert holders[0].startswith("Step 2: run it.\n")  # stays with its step


def test_unclosed_fence_runs_to_end() -> None:
    text = "Step 1: a\n```\nStep 2: b\n\nStep 3: c"
    assert split_steps(text, "step_markers") == [text]
    assert split_steps(text) == ["Step 1: a", "```\nStep 2: b\n\nStep 3: c"]


def test_fence_closes_only_with_same_char_and_enough_length() -> None:
    text = "````md\n```\n~~~\n\ninner\n````\n\nafter"
    assert split_steps(text, "blank_lines") == ["````md\n```\n~~~\n\ninner\n````", "after"]


def test_indented_fence_in_list_item() -> None:
    text = "1. Run this:\n\n    ```bash\n    echo a\n\n    echo b\n    ```\n\n2. Done."
    assert split_steps(text, "blank_lines") == [
        "1. Run this:",
        "```bash\n    echo a\n\n    echo b\n    ```",
        "2. Done.",
    ]


def test_inline_triple_backticks_are_not_a_fence() -> None:
    text = "```x``` is inline\n\nnext paragraph"
    assert split_steps(text, "blank_lines") == ["```x``` is inline", "next paragraph"]


# --------------------------------------------------------------------------- regex


def test_regex_drops_separator() -> None:
    text = "Add 2 and 3.\n---\nMultiply by 4.\n-----\nThe answer is 20."
    assert split_steps(text, "regex", pattern=r"\n-{3,}\n") == [
        "Add 2 and 3.",
        "Multiply by 4.",
        "The answer is 20.",
    ]


def test_regex_accepts_compiled_and_zero_width_patterns() -> None:
    text = "Intro\nAnswer: 1\nAnswer: 2"
    pattern = re.compile(r"(?=^Answer:)", re.MULTILINE)
    assert split_steps(text, "regex", pattern=pattern) == ["Intro", "Answer: 1", "Answer: 2"]


def test_regex_does_not_match_inside_or_into_fences() -> None:
    text = "a ;; b\n```\nx ;; y\n```\n;; c"
    assert split_steps(text, "regex", pattern=r";;") == ["a", "b\n```\nx ;; y\n```", "c"]


def test_regex_keep_empty() -> None:
    assert split_steps("|a||b|", "regex", pattern=r"\|", keep_empty=True) == ["a", "", "b"]
    assert split_steps("|a||b|", "regex", pattern=r"\|") == ["a", "b"]


# --------------------------------------------------------------------------- split errors


@pytest.mark.parametrize(
    ("value", "fix"),
    [(b"Step 1: a", "decode"), (None, "as a string"), (["a", "b"], "as a string")],
)
def test_split_rejects_non_str_text(value: object, fix: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        split_steps(value)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "`text` to be a str" in msg
    assert type(value).__name__ in msg and repr(value) in msg
    assert fix in msg


def test_split_error_truncates_long_values() -> None:
    with pytest.raises(InvalidInputError) as info:
        split_steps(b"x" * 500)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "bytes b'xxx" in msg and "..." in msg
    assert len(msg) < 250


@pytest.mark.parametrize("mode", ["paragraphs", "", None, 3])
def test_split_rejects_unknown_mode(mode: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        split_steps("a", mode)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "unknown split mode" in msg
    assert f"mode={mode!r}" in msg
    for valid in SPLIT_MODES:
        assert repr(valid) in msg


def test_regex_mode_needs_pattern() -> None:
    with pytest.raises(InvalidInputError, match=r"needs a separator `pattern`") as info:
        split_steps("a", "regex")
    assert "pattern=None" in str(info.value)
    assert "pattern=r'" in str(info.value)


def test_pattern_without_regex_mode_is_rejected() -> None:
    with pytest.raises(InvalidInputError) as info:
        split_steps("a", "newlines", pattern=";")
    msg = str(info.value)
    assert "only used with mode='regex'" in msg
    assert "mode='newlines'" in msg and "pattern=';'" in msg


@pytest.mark.parametrize("pattern", ["", "x*", r"\s*", "(?m)^", "$", "a|", "(?=)"])
def test_pattern_matching_empty_string_is_rejected(pattern: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        split_steps("a b", "regex", pattern=pattern)
    msg = str(info.value)
    assert "matches the empty string" in msg
    assert f"pattern={pattern!r}" in msg
    assert "'+' instead of '*'" in msg


def test_invalid_regex_is_rejected_with_cause() -> None:
    with pytest.raises(InvalidInputError) as info:
        split_steps("a", "regex", pattern="(unclosed")
    msg = str(info.value)
    assert "not a valid regular expression" in msg
    assert "missing )" in msg
    assert "pattern='(unclosed'" in msg
    assert "re.escape()" in msg
    assert isinstance(info.value.__cause__, re.error)


@pytest.mark.parametrize("pattern", [42, re.compile(b";")])
def test_non_text_pattern_is_rejected(pattern: object) -> None:
    with pytest.raises(InvalidInputError, match="pattern") as info:
        split_steps("a", "regex", pattern=pattern)  # type: ignore[arg-type]
    assert ("int 42" in str(info.value)) or ("bytes pattern b';'" in str(info.value))


# --------------------------------------------------------------------------- join_steps


def test_join_steps_modes() -> None:
    steps = ["Add 2 and 3.", "The answer is 5."]
    assert join_steps(steps) == "Add 2 and 3.\nThe answer is 5."
    assert join_steps(tuple(steps), "blank_lines") == "Add 2 and 3.\n\nThe answer is 5."
    assert join_steps([]) == ""


def test_join_steps_errors() -> None:
    with pytest.raises(InvalidInputError, match="unknown join mode") as info:
        join_steps(["a"], "step_markers")
    assert "'newlines', 'blank_lines'" in str(info.value)
    with pytest.raises(InvalidInputError, match="bare str") as info:
        join_steps("abc")
    assert "split_steps(text)" in str(info.value)
    with pytest.raises(InvalidInputError, match=r"steps\[1\] must be a str; received int 7"):
        join_steps(["a", 7])  # type: ignore[list-item]


# --------------------------------------------------------------------------- validate_steps


def test_validate_steps_returns_a_new_list() -> None:
    original = ["Add 2 and 3.", "  The answer is 5. "]
    got = validate_steps(original)
    assert got == original and got is not original
    assert validate_steps(("a", "b")) == ["a", "b"]


def test_validate_steps_rejects_bare_str() -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_steps("Step 1: a\nStep 2: b")
    msg = str(info.value)
    assert "bare str" in msg and "'Step 1: a\\nStep 2: b'" in msg
    assert "split_steps(text)" in msg


@pytest.mark.parametrize("value", [None, 3, {"a"}, (s for s in ["a"]), b"ab", {"a": 1}])
def test_validate_steps_rejects_non_sequences(value: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_steps(value)
    msg = str(info.value)
    assert "must be a list or tuple of str" in msg
    assert f"received {type(value).__name__}" in msg
    assert "list(steps)" in msg


@pytest.mark.parametrize("value", [[], ()])
def test_validate_steps_rejects_empty(value: object) -> None:
    with pytest.raises(InvalidInputError, match="at least one step") as info:
        validate_steps(value)
    assert f"empty {type(value).__name__}" in str(info.value)


def test_validate_steps_names_non_str_index_and_type() -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_steps(["ok", "fine", 3.5])
    msg = str(info.value)
    assert msg.startswith("steps[2] must be a str; received float 3.5")
    assert "str(s)" in msg


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_validate_steps_names_blank_index(bad: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_steps(["ok", bad, "fine"])
    msg = str(info.value)
    assert msg.startswith("steps[1] is empty or whitespace-only")
    assert repr(bad) in msg
    assert "split_steps()" in msg


# --------------------------------------------------------------------------- properties

# Steps that survive a round trip: stripped, non-empty, one line, no fence characters.
single_line_step = (
    st.text(min_size=1, max_size=30)
    .map(str.strip)
    .filter(lambda s: s and "\n" not in s and "```" not in s and "~~~" not in s)
)

# Text built from fragments that exercise markers, fences, CRLF and blank lines.
FRAGMENTS = [
    "Step 1:", "**Step 2:**", "## Step 3", "step 4.", "```", "~~~", "````", "```py",
    "\n", "\n\n", "\r\n", " ", "\t", "x", "72 = 48 + 24", "#", "*", "-", ";;",
]
answer_text = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join),
)


def _no_ws(text: str) -> str:
    return "".join(text.split())


@FAST
@given(st.lists(single_line_step, min_size=1, max_size=8))
def test_roundtrip_newlines(steps: list[str]) -> None:
    assert split_steps(join_steps(steps, "newlines"), "newlines") == steps


@FAST
@given(st.lists(single_line_step, min_size=1, max_size=8))
def test_roundtrip_blank_lines(steps: list[str]) -> None:
    assert split_steps(join_steps(steps, "blank_lines"), "blank_lines") == steps


@FAST
@given(answer_text, st.sampled_from([*NON_SPLIT_MODES, "regex"]))
def test_split_returns_stripped_non_empty_steps(text: str, mode: str) -> None:
    pattern = r";;|-+" if mode == "regex" else None
    got = split_steps(text, mode, pattern=pattern)
    assert all(isinstance(s, str) and s and s == s.strip() for s in got)
    if got:
        assert validate_steps(got) == got
    if mode != "regex":  # a regex may consume all the text; other modes only whitespace
        assert bool(got) == bool(text.strip())


@FAST
@given(answer_text, st.sampled_from(NON_SPLIT_MODES))
def test_split_loses_only_whitespace(text: str, mode: str) -> None:
    assert _no_ws("".join(split_steps(text, mode))) == _no_ws(text)


@FAST
@given(answer_text, st.booleans())
def test_keep_empty_only_adds_empty_steps(text: str, keep_empty: bool) -> None:
    got = split_steps(text, "newlines", keep_empty=keep_empty)
    assert [s for s in got if s] == split_steps(text, "newlines")


inner_line = st.lists(
    st.sampled_from(["Step 1:", "## Step 2", "x = 1", "", "   ", "\t", "**Step 3:**", ";;"]),
    max_size=4,
).map("".join)


@FAST
@given(
    prefix=st.lists(st.sampled_from(["Step 1: a", "b", "", "  ", "Step 2."]), max_size=4),
    inner=st.lists(inner_line, max_size=6),
    fence=st.sampled_from(["```", "~~~", "````"]),
    closed=st.booleans(),
    suffix=answer_text,
    mode=st.sampled_from([*NON_SPLIT_MODES, "regex"]),
)
def test_fenced_block_always_lands_whole_in_one_step(
    prefix: list[str], inner: list[str], fence: str, closed: bool, suffix: str, mode: str
) -> None:
    block = "\n".join([f"{fence}python", *inner] + ([fence] if closed else []))
    text = "\n".join([*prefix, block]) + (("\n" + suffix) if closed else "")
    pattern = r"\n|;;" if mode == "regex" else None
    got = split_steps(text, mode, pattern=pattern)
    # Steps are stripped, so an unclosed block loses only its trailing whitespace.
    assert any(block.rstrip() in s for s in got)
