"""Numbers as written in solutions: reading, rounding and writing them exactly.

Two readers, for two kinds of text:

- :func:`parse_number` / :data:`NUMBER_RE`: a number as GSM8K reference text writes it (``24``,
  ``0.2``, ``.5``, ``1,000``); strict, raises on anything else. Used by the labelling parser.
- :func:`read_written_number` / :data:`WRITTEN_NUMBER`: a number as a model may write it in a
  step (``$1,200.50``, ``15%``, ``.5``), with its decimal places; lenient, gives ``None``.
  Used by the calculator check. It reads the digits with :func:`parse_number`.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from prm_plugins.errors import InvalidInputError

__all__ = [
    "MAX_NUMBER_CHARS",
    "MAX_WRITTEN_NUMBER_CHARS",
    "NUMBER_RE",
    "WRITTEN_NUMBER",
    "decimal_places",
    "find_numbers",
    "format_number",
    "parse_number",
    "quantize",
    "read_written_number",
    "round_half_up",
]

#: A number as written in GSM8K text: ``24``, ``0.2``, ``.5``, ``1,000``, ``12.50``.
NUMBER_RE = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")
#: Longest number (characters) :func:`parse_number` reads; GSM8K's longest has 13. A longer
#: run of digits in a step is text, not a number, so hostile text costs no big-integer work.
MAX_NUMBER_CHARS = 100
#: A number as written in a step or question: "$1,200.50", "15%", ".5".
WRITTEN_NUMBER = r"(?<![\w.])[$€£]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)%?"
#: Longest number (characters, sign and separators included) :func:`read_written_number`
#: reads; a longer run of digits is text, so a step holding ``"9" * 100000`` costs no
#: big-integer work. GSM8K's longest number has 13 characters.
MAX_WRITTEN_NUMBER_CHARS = 64


def parse_number(text: str) -> Fraction:
    """Parse a number as GSM8K writes it, exactly.

    Args:
        text: digits with an optional decimal part and thousands commas, e.g. ``"1,000.5"``;
            a leading ``$`` and surrounding spaces are ignored.

    Returns:
        The exact value.

    Raises:
        InvalidInputError: if ``text`` is not a plain decimal number.

    Examples:
        >>> parse_number("1,250.50")
        Fraction(2501, 2)
        >>> parse_number(".5")
        Fraction(1, 2)
    """
    cleaned = text.strip().lstrip("$").replace(",", "")
    if len(cleaned) > MAX_NUMBER_CHARS:
        raise InvalidInputError(
            f"number of {len(cleaned)} characters is longer than the {MAX_NUMBER_CHARS} read; "
            f"got {cleaned[:40]!r}..."
        )
    if not re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)", cleaned):
        raise InvalidInputError(
            f"expected a plain decimal number such as '24', '0.2' or '1,000', got {text!r}"
        )
    return Fraction(Decimal(cleaned))


def quantize(value: Fraction) -> Fraction:
    """Round a value to what a solver would write down and carry on with.

    Terminating decimals with at most 6 places are kept exactly; anything else (``10/3``) is
    rounded half-up to 2 decimal places (4 when ``|value| < 0.1``), so later steps reuse the
    written number, as a model would.

    Args:
        value: an exact value.

    Returns:
        The value as it would be written.

    Examples:
        >>> quantize(Fraction(1, 8))
        Fraction(1, 8)
        >>> quantize(Fraction(10, 3))
        Fraction(333, 100)
    """
    if decimal_places(value) is not None:
        return value
    places = 2 if abs(value) >= Fraction(1, 10) else 4
    return round_half_up(value, places)


def decimal_places(value: Fraction, limit: int = 6) -> int | None:
    """Decimal places needed to write ``value`` exactly, or None if more than ``limit``."""
    for places in range(limit + 1):
        if (value * 10**places).denominator == 1:
            return places
    return None


def round_half_up(value: Fraction, places: int) -> Fraction:
    """``value`` rounded half-up to ``places`` decimals, exactly."""
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return Fraction(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def format_number(
    value: Fraction, *, money: bool = False, commas: bool = False, min_places: int = 0
) -> str:
    """Write a value the way GSM8K text does.

    Integers have no ``.0``; money (``money=True``, the number follows a ``$``) that is not
    whole gets two decimals; other decimals are written exactly up to 6 places, rounded to 2
    beyond that.

    Args:
        value: the value to write.
        money: the number is an amount of money (shown after ``$``).
        commas: group thousands with commas, as in ``"1,000"``.
        min_places: for money written with cents (2 or more decimals), write at least this
            many decimals (keeps ``"$333,200.00"`` in the style it was written in).

    Returns:
        The text, without the ``$`` itself.

    Examples:
        >>> format_number(Fraction(24))
        '24'
        >>> format_number(Fraction(1, 5), money=True)
        '0.20'
        >>> format_number(Fraction(12345), commas=True)
        '12,345'
    """
    places = decimal_places(value)
    if places is None:
        value = round_half_up(value, 2)
        places = 2
    if money and places > 0:
        places = max(places, 2)
    if money and min_places >= 2:  # "$12.00" style: cents always shown
        places = max(places, min_places)
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    if places == 0:
        body = f"{int(magnitude):,}" if commas else str(int(magnitude))
        return sign + body
    exact = Decimal(magnitude.numerator) / Decimal(magnitude.denominator)
    text = f"{exact.quantize(Decimal(1).scaleb(-places)):f}"
    whole, frac = text.split(".")
    if commas:
        whole = f"{int(whole):,}"
    return f"{sign}{whole}.{frac}"



def read_written_number(tok: str) -> tuple[Fraction, int] | None:
    """Value and decimal places of a number token (``$1,200.50``, ``15%`` -> 0.15), or None.

    A token longer than :data:`MAX_WRITTEN_NUMBER_CHARS` is not read.

    Examples:
        >>> read_written_number("15%")
        (Fraction(3, 20), 2)
    """
    if len(tok) > MAX_WRITTEN_NUMBER_CHARS:
        return None
    t = tok.lstrip("$€£").replace(",", "")
    pct = t.endswith("%")
    t = t.rstrip("%")
    try:
        value = parse_number(t)
    except InvalidInputError:
        return None
    places = len(t.split(".")[1]) if "." in t else 0
    return (value / 100 if pct else value), places + (2 if pct else 0)


def find_numbers(text: str) -> list[tuple[int, int, Fraction]]:
    """Every number written in ``text`` (GSM8K style) as ``(start, end, value)``.

    A run of digits longer than :data:`MAX_NUMBER_CHARS` is text, not a number.
    """
    return [(m.start(), m.end(), parse_number(m.group())) for m in NUMBER_RE.finditer(text)
            if len(m.group()) <= MAX_NUMBER_CHARS]
