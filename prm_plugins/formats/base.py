"""The format contract: how a PRM family renders (question, steps) into tokens.

A format is the one place that knows a family's convention. Its :meth:`PRMFormat.render`
is the single, pure token/step mapping shared by export (parity chains), runtime
(scoring) and training (label positions).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from prm_plugins.errors import InvalidInputError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["PRMFormat", "Rendered", "break_token", "strip_trailing_tag"]

#: Zero-width-free breaker inserted after the first character of a forbidden string.
_BREAK = " "


@dataclass(frozen=True)
class Rendered:
    """A chain rendered for a model.

    Attributes:
        input_ids: token ids of the whole chain, no padding.
        step_positions: for each step, the index into ``input_ids`` at which the graph's
            ``step_probs`` output is read. Exactly one per step, strictly increasing.
    """

    input_ids: list[int]
    step_positions: list[int]

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        prev = -1
        for p in self.step_positions:
            if not prev < p < n:
                raise AssertionError(
                    f"bad step positions {self.step_positions} for {n} tokens: a format bug"
                )
            prev = p

    def __len__(self) -> int:
        return len(self.input_ids)


def break_token(text: str, token: str) -> str:
    """Replace every occurrence of ``token`` in ``text`` with a broken look-alike.

    The look-alike has a space after the token's first character, so a tokenizer no
    longer matches it as a special token or a step tag, while a reader still sees it.
    """
    if not token or token not in text:
        return text
    return text.replace(token, token[0] + _BREAK + token[1:])


class PRMFormat(ABC):
    """Base class of every PRM family format.

    Subclasses set :attr:`name`, implement :meth:`render`, and may override
    :meth:`neutralise`. A format is built from the runtime tokenizer (``tokenizers``
    library) and the ``format_options`` stored in the model's ``prm.json``.

    Args:
        tokenizer: the model's tokenizer (``tokenizers.Tokenizer``).
        options: format options as stored in the manifest; unknown keys are an error.
    """

    name: ClassVar[str] = ""
    #: option name -> default value; documented by each subclass.
    default_options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, tokenizer: Tokenizer, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.default_options))
        if unknown:
            raise InvalidInputError(
                f"format {self.name!r} got unknown option(s) {unknown}; "
                f"known options are {sorted(self.default_options)}"
            )
        self.tokenizer = tokenizer
        self.options: dict[str, Any] = {**self.default_options, **options}
        specials = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
        # Longest first so that "<|im_end|>" is broken before "<|im".
        self._special_strings: list[str] = sorted(set(specials), key=len, reverse=True)
        self._special_ids: frozenset[int] = frozenset(
            i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special
        )
        # Ordinary text with unknown characters legitimately encodes to the unknown token.
        unk = getattr(tokenizer.model, "unk_token", None)
        unk_id = tokenizer.token_to_id(unk) if isinstance(unk, str) else None
        self._leak_ids: frozenset[int] = self._special_ids - {unk_id}
        self.setup()

    @property
    def special_ids(self) -> frozenset[int]:
        """Token ids of the tokenizer's special tokens (text never renders to them)."""
        return self._special_ids

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Hook for subclasses: resolve token ids of tags once, check options."""

    # -- text hygiene ---------------------------------------------------------------------
    def step_tags(self) -> list[str]:
        """Strings that must never appear inside step or question text."""
        return []

    def neutralise(self, text: str) -> str:
        """Make ``text`` safe to place inside a rendered chain.

        Special-token strings and the format's step tags are broken so they cannot
        create, merge or drop steps. Subclasses extend this for their separators.
        """
        for tok in [*self.step_tags(), *self._special_strings]:
            text = break_token(text, tok)
        return text

    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text, never special tokens (after :meth:`neutralise`)."""
        ids = self.tokenizer.encode(self.neutralise(text), add_special_tokens=False).ids
        leaked = [i for i in ids if i in self._leak_ids]
        if leaked:  # pragma: no cover - defensive: neutralise must prevent this
            raise InvalidInputError(
                f"text {text[:60]!r} still encodes to special token ids {leaked}; "
                "report this as a bug with the text"
            )
        return ids

    def encode_template(self, text: str) -> list[int]:
        """Token ids of fixed template text written by the format (special tokens allowed)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def token_id(self, token: str) -> int:
        """The id of a single token, or a clear error naming the option to fix."""
        tid = self.tokenizer.token_to_id(token)
        if tid is None:
            raise InvalidInputError(
                f"format {self.name!r}: token {token!r} is not in the tokenizer's vocabulary; "
                "check the format options in prm.json (or pass them to prm export)"
            )
        return tid

    # -- the family's step convention -----------------------------------------------------
    def split_solution(self, text: str) -> list[str]:
        """Cut a whole solution into steps the way this family's published code does.

        The default, for formats without a convention of their own, is the generic
        :func:`prm_plugins.steps.split_steps` (``"auto"``). Families override it: Skywork
        splits on ``"\\n"`` and keeps every line verbatim, Qwen2.5-Math-PRM on ``"\\n\\n"``
        (or on the ``<extra_0>`` tags a response already holds), and so on.

        Args:
            text: the solution, as the policy model wrote it.

        Returns:
            The steps, each non-blank; ``render`` of them reproduces the family's input.
        """
        from prm_plugins.steps import split_steps

        return split_steps(text)

    def split_trailing_tag(self, step: str) -> tuple[str, bool]:
        """``(text, True)`` when ``step`` already ends with the family's step tag.

        A trailing tag is the step boundary the user already marked: the format takes it
        as the step's end and does not add a second one. ``text`` is what stays of the
        step without it. A tag anywhere else is neutralised (and reported by
        :meth:`step_notes`). The default: the family has no tag, ``(step, False)``.
        """
        return step, False

    def step_notes(self, question: str, steps: Sequence[str]) -> dict[str, Any]:
        """What rendering did to this chain's text, for ``StepScores.meta``.

        Keys appear only when they have something to say:

        * ``"neutralised_question"``: ``True`` when a special token or step tag in the
          question was broken.
        * ``"neutralised_steps"``: indices of steps in which a special token, or a step tag
          that is not at the step's end, was broken.
        * ``"tagged_steps"``: indices of steps that ended with the family's tag, taken as
          their boundary.

        Formats add their own (Skywork: ``"upstream_steps"``).
        """
        notes: dict[str, Any] = {}
        if self.neutralise(question) != question:
            notes["neutralised_question"] = True
        neutralised, tagged = [], []
        for i, step in enumerate(steps):
            text, has_tag = self.split_trailing_tag(step)
            if has_tag:
                tagged.append(i)
            if self.neutralise(text) != text:
                neutralised.append(i)
        if neutralised:
            notes["neutralised_steps"] = neutralised
        if tagged:
            notes["tagged_steps"] = tagged
        return notes

    # -- the mapping ----------------------------------------------------------------------
    @abstractmethod
    def render(self, question: str, steps: Sequence[str]) -> Rendered:
        """Render a chain into token ids and one score position per step."""

    @classmethod
    def options_from_hf(cls, hf_tokenizer: Any, **overrides: Any) -> dict[str, Any]:
        """Format options for a transformers tokenizer, used by ``prm export``.

        Only attributes of ``hf_tokenizer`` are read; no import of transformers here.
        """
        unknown = sorted(set(overrides) - set(cls.default_options))
        if unknown:
            raise InvalidInputError(
                f"format {cls.name!r} got unknown option(s) {unknown}; "
                f"known options are {sorted(cls.default_options)}"
            )
        return {**cls.default_options, **overrides}


def strip_trailing_tag(step: str, tag: str) -> tuple[str, bool]:
    """Remove ``tag`` (and whitespace after it) from the end of ``step``, if it is there.

    Returns:
        ``(step without the tag, True)``, or ``(step, False)`` when it does not end with it.
    """
    if tag:
        body = step.rstrip()
        if body.endswith(tag):
            return body[: len(body) - len(tag)], True
    return step, False


_WS = re.compile(r"\s+")


def collapse_whitespace(text: str) -> str:
    """Collapse runs of whitespace (newlines included) to single spaces."""
    return _WS.sub(" ", text).strip()
