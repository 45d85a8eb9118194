"""``token-classification``: TRL ``PRMTrainer`` models (AutoModelForTokenClassification).

Convention (TRL ``PRMTrainer.tokenize_row``, ``trl/experimental/prm/prm_trainer.py``):
``[bos] + prompt`` tokens, then each step tokenised on its own, verbatim, followed by the
separator's tokens (default ``"\\n"``); the label, and so the score, sits on the separator's
last token. The exported graph gives ``P(correct) = softmax(logits)[..., 1]`` at every token.

Step text is tokenised as given, line breaks, indentation and edge spaces included, as TRL
does: a score position comes from the rendering, never from searching the ids, so a
``"\\n"`` inside a step cannot add a step. A separator that is not whitespace (``"[SEP]"``)
is broken where it appears inside a step; at the end of a step it is the boundary the user
already marked, and no second one is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from prm_plugins.errors import InvalidInputError
from prm_plugins.formats.base import PRMFormat, Rendered, strip_trailing_tag

__all__ = ["TokenClassificationFormat"]


class TokenClassificationFormat(PRMFormat):
    """TRL PRMTrainer convention.

    Options:
        separator: text appended after every step (TRL ``step_separator``), default ``"\\n"``.
        bos_token_id: id put first, as TRL does when the tokenizer has a BOS token.
        prompt_suffix: template text placed after the question (e.g. ``"[SEP]"`` for BERT
            models); TRL itself uses ``""``.

    Examples:
        >>> fmt = TokenClassificationFormat(tok, {"separator": "\\n"})  # doctest: +SKIP
        >>> r = fmt.render("What is 2+2?", ["2+2=4", "The answer is 4."])  # doctest: +SKIP
        >>> len(r.step_positions)  # doctest: +SKIP
        2
    """

    name: ClassVar[str] = "token-classification"
    default_options: ClassVar[dict[str, Any]] = {
        "separator": "\n",
        "bos_token_id": None,
        "prompt_suffix": "",
    }

    def setup(self) -> None:
        sep = self.options["separator"]
        if not isinstance(sep, str) or not sep:
            raise InvalidInputError(f"separator must be a non-empty string, got {sep!r}")
        self._sep_ids = self.encode_template(sep)
        if not self._sep_ids:
            raise InvalidInputError(
                f"separator {sep!r} encodes to no tokens with this tokenizer (its normaliser or "
                "pre-tokeniser drops it); choose a separator the tokenizer keeps, such as the "
                "model's [SEP] token"
            )
        self._suffix_ids = self.encode_template(self.options["prompt_suffix"] or "")
        bos = self.options["bos_token_id"]
        self._prefix_ids = [] if bos is None else [int(bos)]

    def step_tags(self) -> list[str]:
        sep = self.options["separator"]
        return [] if sep.isspace() else [sep]

    def split_trailing_tag(self, step: str) -> tuple[str, bool]:
        """A step ending with a non-whitespace separator ends there; whitespace is text."""
        sep = self.options["separator"]
        if sep.isspace():  # TRL tokenises "a\\n" + "\\n": a trailing newline is step text
            return step, False
        return strip_trailing_tag(step, sep)

    def neutralise_step(self, text: str) -> str:
        """The step's text as rendered: a trailing separator dropped, the rest verbatim.

        Special tokens and a non-whitespace separator inside the step are broken; line
        breaks and other whitespace are kept (TRL tokenises each completion as given).
        """
        return self.neutralise(self.split_trailing_tag(text)[0])

    def split_solution(self, text: str) -> list[str]:
        """Steps of a solution joined by the separator (TRL's convention), kept verbatim.

        With a whitespace separator (``"\\n"``) every non-blank piece of
        ``text.split(separator)`` is a step, spaces and indentation kept. With another
        separator (``"[SEP]"``) a text that holds it is cut there; one that does not is
        split by :func:`prm_plugins.steps.split_steps`.
        """
        from prm_plugins.steps import split_steps, split_verbatim

        sep = self.options["separator"]
        if sep.isspace() or sep in text:
            return split_verbatim(text, sep)
        return split_steps(text)

    def render(self, question: str, steps: Sequence[str]) -> Rendered:
        ids = [*self._prefix_ids, *self.encode_text(question), *self._suffix_ids]
        positions: list[int] = []
        for step in steps:
            ids.extend(self.encode_text(self.neutralise_step(step)))
            ids.extend(self._sep_ids)
            positions.append(len(ids) - 1)
        return Rendered(ids, positions)

    @classmethod
    def options_from_hf(cls, hf_tokenizer: Any, **overrides: Any) -> dict[str, Any]:
        opts = super().options_from_hf(hf_tokenizer, **overrides)
        if "bos_token_id" not in overrides:
            opts["bos_token_id"] = getattr(hf_tokenizer, "bos_token_id", None)
        return opts
