"""Meaning-preserving surface rewrites of a solution's steps.

Real generators never write the same solution twice: they vary spacing, operator symbols,
operand order and connectives. :func:`restyle_steps` imitates that on labelled chains, so that
a candidate set built from one reference (``bon_curve.py`` beside this file) holds distinct texts
whose scores differ the way a real sampler's would, and so that training data can be varied
without changing any label. Every rewrite keeps each step's meaning, its written arithmetic
(``a op b = c`` still holds) and the final answer; the number of steps never changes, so the
labels still apply step by step.

Rewrites (each decided once per chain, so a chain is consistent with itself):

- spacing around operators and ``=`` (``20*2=40`` / ``20 * 2 = 40``);
- the multiplication sign (``*``, ``x``, ``×``);
- operand order of a written two-operand sum or product (``5 * 12 = 60`` / ``12 * 5 = 60``);
- a connective before some middle steps (``So``, ``Then``, ``Now``, ``Next,``);
- the wording of the final-answer step (``The answer is 72.`` / ``So the answer is 72.``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from prm_plugins.errors import InvalidInputError

__all__ = ["restyle_steps"]

_NUM = r"\$?\d[\d,]*(?:\.\d+)?%?"
#: A two-operand sum or product right before "=": "5 * 12 =", "$3+$4=".
_PAIR = re.compile(rf"(?P<a>{_NUM})(?P<s1>\s*)(?P<op>[+*×])(?P<s2>\s*)(?P<b>{_NUM})(?P<s3>\s*)=")
#: An operator or "=" between two numbers / parentheses, with its spaces.
_OPERATOR = re.compile(r"(?<=[\d)%])[ \t]*([-+*/×÷=])[ \t]*(?=[$\d(])")
_MULT = re.compile(r"(?<=[\d)%])([ \t]*)[*×]([ \t]*)(?=[$\d(])")
_FINAL = re.compile(
    r"^(?:So,? |Therefore,? |Thus,? )?(?:the|The) (?:final )?answer is (?P<rest>.+)$")
_CONNECTIVES = ("So ", "Then ", "Now ", "Next, ", "This means ")
_STARTS_WITH_CONNECTIVE = re.compile(
    r"^(?:so|then|now|next|thus|therefore|hence|this means|finally|first|after|in total)\b",
    re.IGNORECASE)
#: First words lowercased after a connective (names and other words keep their capital).
_LOWER = frozenset({"He", "She", "They", "It", "We", "The", "There", "This", "That", "Her",
                    "His", "Their", "Its", "A", "An", "In", "Each", "All", "Both", "If",
                    "With", "For", "On", "At", "To", "Since", "When", "These", "Those",
                    "One", "Two", "Three", "Half", "Every", "Altogether", "Together"})
_FINAL_FORMS = ("The answer is {}", "So the answer is {}", "Therefore, the answer is {}",
                "The final answer is {}")


def _swap_pairs(step: str) -> str:
    def swap(m: re.Match[str]) -> str:
        before = step[: m.start()].rstrip()
        # only a whole expression: nothing arithmetic right before it ("10 - 3 + 2 =")
        if (before and before[-1] in "+-*/×÷x()=.,0123456789") or (
                m.start() > 0 and step[m.start() - 1].isalpha()):  # "spends$25*4"
            return m.group()
        return (f"{m['b']}{m['s1']}{m['op']}{m['s2']}{m['a']}{m['s3']}=")

    return _PAIR.sub(swap, step)


def _mult_style(text: str, mult: str) -> Callable[[re.Match[str]], str]:
    def sub(m: re.Match[str]) -> str:
        # "x" reads as a multiplication only between numbers: "$30 x (10/100)" would not
        if mult == "x":
            return " x " if text[m.end():m.end() + 1] != "(" else m.group()
        return f"{m[1]}{mult}{m[2]}"

    return sub


def _with_connective(step: str, connective: str) -> str:
    if not step or _STARTS_WITH_CONNECTIVE.match(step):
        return step
    first, _, rest = step.partition(" ")
    if first not in _LOWER:  # a name keeps its place at the start ("Janet sells ...")
        return step
    first = first.lower()
    return connective + (f"{first} {rest}" if rest else first)


def restyle_steps(steps: Sequence[str], rng: random.Random) -> list[str]:
    """One surface variant of a chain: same steps, same meaning, same arithmetic.

    Args:
        steps: the chain's steps (e.g. a GSM8K chain from ``prm label gsm8k``).
        rng: the random source (seed it for a reproducible variant).

    Returns:
        The restyled steps, one per input step.

    Raises:
        InvalidInputError: if ``steps`` is not a sequence of strings.

    Examples:
        >>> restyle_steps(["He has 5*12=60 apples", "The answer is 60."], random.Random(3))
        ['He has 12 × 5 = 60 apples', 'The final answer is 60.']
    """
    if isinstance(steps, str) or not all(isinstance(s, str) for s in steps):
        raise InvalidInputError("restyle_steps takes a sequence of step strings")
    spaced = rng.random() < 0.5
    mult = rng.choice(("*", "x", "×"))
    swap = rng.random() < 0.5
    connective_p = rng.choice((0.0, 0.3, 0.6))
    final_form = rng.choice(_FINAL_FORMS)
    out: list[str] = []
    last = len(steps) - 1
    for i, step in enumerate(steps):
        text = step
        if swap:
            text = _swap_pairs(text)
        text = _OPERATOR.sub((lambda m: f" {m[1]} ") if spaced else (lambda m: m[1]), text)
        text = _MULT.sub(_mult_style(text, mult), text)
        m = _FINAL.match(text.strip())
        if i == last and m:
            text = final_form.format(m["rest"])
        elif 0 < i < last and rng.random() < connective_p:
            text = _with_connective(text, rng.choice(_CONNECTIVES))
        out.append(text)
    return out
