"""The one final-answer extractor, for strategies, evaluation and rewards.

:func:`extract_answer` finds the final answer a solution states, in the conventions LLMs and
datasets use, tried in this order: LaTeX ``\\boxed{...}`` (nested braces allowed), GSM8K's
``#### 42`` line, prose such as "The answer is 42." / "Final answer: 42", a few-shot
``A: 42`` line, and (unless turned off) the last number written. Best-of-N voting
(:mod:`prm_plugins.strategies`), ``prm eval bon``, the outcome reward
(:mod:`prm_plugins.rewards`) and rollout labelling all use it, so a solution has one answer
everywhere. :func:`normalize_answer` turns an answer into a comparison key, so that
``"1,000"``, ``"1000.00"`` and ``"$1000"`` compare equal, and ``"0.75"`` equals
``"\\frac{3}{4}"``.

An ``A:`` line counts only when it holds a bare answer: a number, optionally followed by
words without a computation (``"A: 18 apples."`` gives ``"18"``), or a phrase without digits
(``"A: Paris."``). An ``A:`` line that opens a worked solution (``"A: She sold 48/2 = 24
clips..."``) is reasoning, not the answer: the later conventions (the last number) decide.

Stdlib only.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "answer_is_correct",
    "answers_match",
    "extract_a_colon",
    "extract_answer",
    "extract_answer_is",
    "extract_boxed",
    "extract_gsm8k",
    "extract_last_number",
    "normalize_answer",
]

#: A number as written in solutions: sign, digit groups with commas, decimals, fractions.
_NUMBER = r"[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|[-+\u2212]?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_GSM8K_RE = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is|:|=)\s*(?::\s*)?(?P<rest>[^\n]*)", re.IGNORECASE
)
_A_COLON_RE = re.compile(r"^[^\S\n]*A[^\S\n]*:[^\S\n]*(?P<rest>\S[^\n]*)$", re.MULTILINE)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*")
#: A number at the start of a phrase, ended by a space, punctuation or the end (not "12\\sqrt").
_LEADING_NUMBER_RE = re.compile(
    r"^(?:\\?\$\s*)?(?P<num>" + _NUMBER + r")(?=$|[\s.,;:!?)$%]|\\[$%])"
)
#: Plain-number form after stripping currency and thousands separators.
_PLAIN_NUMBER_RE = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?$")
_FRAC_RE = re.compile(r"^\\[dt]?frac\s*\{\s*([-+]?\d+)\s*\}\s*\{\s*(\d+)\s*\}$")
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``.

    Nested braces are matched, so ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``. The brace-less
    form ``\\boxed 5`` gives ``5``.

    Args:
        text: a solution.

    Returns:
        The boxed content, stripped, or ``None`` when there is no complete box.

    Examples:
        >>> extract_boxed(r"So $x = \\boxed{\\frac{3}{4}}$.")
        '\\\\frac{3}{4}'
        >>> extract_boxed("no box") is None
        True
    """
    found: str | None = None
    for m in _BOXED_RE.finditer(text):
        pos = m.end()
        if pos < len(text) and text[pos] == "{":
            depth, i = 0, pos
            while i < len(text):
                ch = text[i]
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                    if depth == 0:
                        found = text[pos + 1 : i].strip()
                        break
                i += 1
        else:
            bare = re.match(r"[^\s$]+", text[pos:])
            if bare:
                found = bare.group(0)
    return found


def extract_gsm8k(text: str) -> str | None:
    """The answer on GSM8K's last ``#### N`` line.

    Examples:
        >>> extract_gsm8k("Natalia sold 48/2 = <<48/2=24>>24 clips.\\n#### 72")
        '72'
    """
    matches = _GSM8K_RE.findall(text)
    return matches[-1].strip() if matches else None


def extract_answer_is(text: str) -> str | None:
    """The answer of the last "The answer is ..." / "Final answer: ..." phrase.

    When the phrase is followed by a number, only the number is returned ("The answer is 18
    dollars." gives ``"18"``); otherwise the rest of the sentence.

    Examples:
        >>> extract_answer_is("She has 3 + 2 = 5 apples. The answer is 5 apples.")
        '5'
        >>> extract_answer_is("Final answer: $1,250.")
        '$1,250'
    """
    matches = list(_ANSWER_IS_RE.finditer(text))
    if not matches:
        return None
    rest = matches[-1].group("rest").strip()
    boxed = extract_boxed(rest)
    if boxed is not None:
        return boxed
    rest = rest.strip("*_ ")
    num = _LEADING_NUMBER_RE.match(rest)
    if num:
        return rest[: num.end()].strip()
    sentence = re.split(r"\.(?:\s|$)", rest, maxsplit=1)[0].strip()
    return sentence or None


def extract_last_number(text: str) -> str | None:
    """The last number written in ``text`` (``"1,000"``, ``"-2.5"``, ``"3/4"``).

    Examples:
        >>> extract_last_number("Each costs $2.50, so 4 cost $10.00.")
        '10.00'
    """
    matches = _NUMBER_RE.findall(text)
    return matches[-1] if matches else None


def extract_a_colon(text: str) -> str | None:
    """The bare answer on the last ``A: ...`` line that holds one (few-shot "Q: ... A: ...").

    A leading number followed by words without a computation is returned alone
    (``"A: 18 apples."`` gives ``"18"``); a phrase without digits is returned without a
    trailing period. A line that holds a computation or a numbered sentence (``"A: She sold
    48/2 = 24 clips"``) is reasoning, not an answer, and is skipped.

    Examples:
        >>> extract_a_colon("Q: 2 + 3?\\nA: 5 apples.")
        '5'
        >>> extract_a_colon("A: Paris.")
        'Paris'
        >>> extract_a_colon("A: She sold 48/2 = 24 clips.") is None
        True
    """
    for m in reversed(list(_A_COLON_RE.finditer(text))):
        rest = m.group("rest").strip().strip("*_ ")
        num = _LEADING_NUMBER_RE.match(rest)
        if num:
            tail = rest[num.end():]
            if "=" not in tail and not _NUMBER_RE.search(tail):
                return rest[: num.end()].strip()
        elif "=" not in rest and not re.search(r"\d", rest):
            phrase = rest.rstrip(".").strip()
            if phrase:
                return phrase
    return None


def extract_answer(text: str, *, fallback_last_number: bool = True) -> str | None:
    """The final answer a solution states.

    Tried in order: the last ``\\boxed{...}``, GSM8K's ``#### N``, the last "the answer is
    ..." / "Final answer: ...", the last ``A: ...`` line holding a bare answer
    (:func:`extract_a_colon`), and (when ``fallback_last_number``) the last number in the
    text. Best-of-N voting, ``prm eval`` and the outcome reward all use this function.

    Args:
        text: a solution.
        fallback_last_number: use the last number when no explicit answer is found.

    Returns:
        The answer as written (not normalised), or ``None``.

    Examples:
        >>> extract_answer("3 * 4 = 12\\n12 + 1 = 13\\n#### 13")
        '13'
        >>> extract_answer(r"Thus the area is $\\boxed{12\\sqrt{2}}$.")
        '12\\\\sqrt{2}'
        >>> extract_answer("5 + 5 = 10, then 10 * 2 = 20")
        '20'
        >>> extract_answer("Q: 6 * 7?\\nA: 42\\nQ: 2 + 2?")
        '42'
    """
    if not isinstance(text, str):
        return None
    for extractor in (extract_boxed, extract_gsm8k, extract_answer_is, extract_a_colon):
        found = extractor(text)
        if found:
            return found
    return extract_last_number(text) if fallback_last_number else None


def _numeric_key(text: str) -> str | None:
    """Canonical string of a plain number or simple fraction, or ``None``."""
    t = text.replace("\u2212", "-").replace(" ", "")
    m = _FRAC_RE.match(t)
    if m:
        t = f"{m.group(1)}/{m.group(2)}"
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", t):
        t = t.replace(",", "")
    if not _PLAIN_NUMBER_RE.match(t):
        return None
    try:
        if "/" in t:
            num, den = t.split("/")
            if int(den) == 0:
                return None
            value = Fraction(Fraction(num), int(den))
        else:
            value = Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


def normalize_answer(answer: str | None) -> str | None:
    """A comparison key for an answer.

    Numbers become canonical: thousands separators, currency signs, a percent sign, trailing
    zeros and a trailing period are dropped, and decimals and fractions are put in lowest
    terms (``"1,000"`` and ``"1000.00"`` give ``"1000"``, ``"$5.00"`` gives ``"5"``, ``"0.75"``
    and ``"\\frac{3}{4}"`` give ``"3/4"``). Other answers are stripped of math delimiters,
    ``\\text{}``, ``\\left``/``\\right``, spacing commands and whitespace.

    Args:
        answer: an extracted answer.

    Returns:
        The key, or ``None`` for a missing or blank answer.

    Examples:
        >>> normalize_answer("1,000"), normalize_answer("$5.00"), normalize_answer("50%")
        ('1000', '5', '50')
        >>> normalize_answer(r"\\dfrac{6}{8}"), normalize_answer(r"\\text{(B)}")
        ('3/4', '(B)')
    """
    if answer is None:
        return None
    t = str(answer).strip()
    if not t:
        return None
    t = _TEXT_RE.sub(r"\1", t)
    for old, new in (("\\$", "$"), ("\\%", "%"), ("\\!", ""), ("\\,", ""), ("\\;", ""),
                     ("\\ ", ""), ("\\left", ""), ("\\right", ""), ("^\\circ", ""),
                     ("^{\\circ}", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
                     ("\u2212", "-")):
        t = t.replace(old, new)
    t = t.strip().strip("$").strip()
    t = t.rstrip(".").strip()
    if t.endswith("%"):
        t = t[:-1].strip()
    if t.startswith("$"):
        t = t[1:].strip()
    if t.startswith("-$"):
        t = "-" + t[2:].strip()
    key = _numeric_key(t)
    if key is not None:
        return key
    # "18 dollars", "x = 5": a leading number followed by words, or a single assignment.
    assign = re.fullmatch(r"[a-zA-Z]\s*=\s*(.+)", t)
    if assign:
        inner = _numeric_key(assign.group(1).strip())
        if inner is not None:
            return inner
    unit = re.fullmatch(r"(" + _NUMBER + r")\s+[a-zA-Z][a-zA-Z\s.]*", t)
    if unit:
        inner = _numeric_key(unit.group(1))
        if inner is not None:
            return inner
    return re.sub(r"\s+", "", t) or None


def answers_match(predicted: str | None, gold: str | None) -> bool:
    """Whether two answers have the same :func:`normalize_answer` key (``None`` never matches).

    Examples:
        >>> answers_match("$1,000.00", "1000"), answers_match("12", "13")
        (True, False)
    """
    a, b = normalize_answer(predicted), normalize_answer(gold)
    return a is not None and a == b


def answer_is_correct(text: str, gold: str) -> bool:
    """Whether the final answer stated in ``text`` matches ``gold``.

    The answer is found with :func:`extract_answer` (``\\boxed{}``, ``#### N``, "the answer
    is", else the last number); ``gold`` may be a bare answer or a full GSM8K solution ending
    in ``#### N``. Both are compared with :func:`answers_match`.

    Examples:
        >>> answer_is_correct("3 + 4 = 7\\nThe answer is 7.", "7")
        True
        >>> answer_is_correct("So 8.", "#### 7")
        False
    """
    return answers_match(extract_answer(text), extract_answer(gold) or gold)
