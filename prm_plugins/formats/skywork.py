"""``skywork``: Skywork-o1-Open-PRM (Qwen2.5-1.5B / -7B) and look-alikes.

Convention (Skywork's ``skywork-o1-prm-inference``, ``prepare_input``)::

    input_ids = tokenizer.encode(tokenizer.bos_token + question + "\\n")
    for step in response.split("\\n"):
        input_ids += tokenizer.encode(step) + [tokenizer.encode("\\n")[-1]]   # flag the "\\n"
    reward = sigmoid(v_head(last_hidden_state)) at every flagged "\\n"

The value head is ``Linear(hidden, 1)`` on the causal LM's last hidden state. Each step is
tokenised on its own and followed by the id of the step token, exactly as above.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from prm_plugins.errors import InvalidInputError
from prm_plugins.formats.base import PRMFormat, Rendered
from prm_plugins.formats.token_sequence import TokenSequenceBuilder, added_token_id

__all__ = ["SkyworkFormat"]


class SkyworkFormat(PRMFormat):
    """Skywork-o1-Open-PRM convention: ``[bos] question\\n``, then ``step`` + ``"\\n"`` id.

    A step that contains the step token would be cut in two by the reference code (it
    splits the response on ``"\\n"``), so here a whitespace step token inside a step becomes
    a space and any other step token is broken; special tokens are broken too. Every
    given step gets exactly one score, read at the step token the format appends.

    Options:
        bos_token: text put first (Skywork's tokenizer's BOS), or ``None`` for none.
        step_token: the step separator whose last token id follows every step (``"\\n"``).
        question_suffix: text after the question, tokenised with it (``"\\n"``).

    Examples:
        >>> fmt = SkyworkFormat(tok, {"bos_token": "<|endoftext|>"})  # doctest: +SKIP
        >>> r = fmt.render("What is 2+3?", ["2 + 3 = 5.", "The answer is 5."])  # doctest: +SKIP
        >>> [r.input_ids[p] for p in r.step_positions] == [fmt.step_token_id] * 2  # doctest: +SKIP
        True
    """

    name: ClassVar[str] = "skywork"
    default_options: ClassVar[dict[str, Any]] = {
        "bos_token": None,
        "step_token": "\n",
        "question_suffix": "\n",
    }

    def setup(self) -> None:
        step_token = self.options["step_token"]
        if not isinstance(step_token, str) or not step_token:
            raise InvalidInputError(
                f"format {self.name!r}: step_token must be a non-empty string, got "
                f"{step_token!r}"
            )
        if not isinstance(self.options["question_suffix"], str):
            raise InvalidInputError(
                f"format {self.name!r}: question_suffix must be a string, got "
                f"{self.options['question_suffix']!r}"
            )
        ids = self.encode_template(step_token)
        if not ids:
            raise InvalidInputError(
                f"format {self.name!r}: step_token {step_token!r} encodes to no tokens with "
                "this tokenizer"
            )
        self.step_token_id = ids[-1]
        bos = self.options["bos_token"]
        self._prefix = [] if bos is None else [added_token_id(self, bos, "bos_token")]

    def step_tags(self) -> list[str]:
        step_token = self.options["step_token"]
        return [] if step_token.isspace() else [step_token]

    def neutralise_step(self, text: str) -> str:
        """Steps may not hold the step token: a whitespace one becomes a space."""
        step_token = self.options["step_token"]
        return text.replace(step_token, " ") if step_token.isspace() else text

    def render(self, question: str, steps: Sequence[str]) -> Rendered:
        b = TokenSequenceBuilder(self)
        for tid in self._prefix:
            b.token(tid)
        b.user(question)
        b.text(self.options["question_suffix"])
        b.flush()
        positions = []
        for step in steps:
            b.user(self.neutralise_step(step))
            positions.append(b.token(self.step_token_id))
        return Rendered(b.finish(), positions)

    @classmethod
    def options_from_hf(cls, hf_tokenizer: Any, **overrides: Any) -> dict[str, Any]:
        """Options for a transformers tokenizer: its BOS token, as ``prepare_input`` uses."""
        opts = super().options_from_hf(hf_tokenizer, **overrides)
        if "bos_token" not in overrides:
            opts["bos_token"] = getattr(hf_tokenizer, "bos_token", None)
        return opts
