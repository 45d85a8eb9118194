"""``token-classification``: TRL ``PRMTrainer`` models (AutoModelForTokenClassification).

Convention (TRL ``PRMTrainer.tokenize_row``): ``[bos] + prompt`` tokens, then each step
tokenised on its own followed by the separator's tokens (default ``"\\n"``); the label,
and so the score, sits on the separator's last token. The exported graph gives
``P(correct) = softmax(logits)[..., 1]`` at every token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from prm_plugins.errors import InvalidInputError
from prm_plugins.formats.base import PRMFormat, Rendered

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

    def neutralise_step(self, text: str) -> str:
        """Steps may not contain the separator: whitespace separators become spaces."""
        sep = self.options["separator"]
        if sep.isspace():
            text = text.replace(sep, " ")
        return self.neutralise(text)

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
