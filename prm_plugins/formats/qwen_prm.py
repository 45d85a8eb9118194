"""``qwen-prm``: Qwen2.5-Math-PRM-7B / -72B (``Qwen2ForProcessRewardModel``).

Convention (the model card's inference code)::

    messages = [{"role": "system", "content": system},
                {"role": "user", "content": question},
                {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
    ids = tokenizer.encode(tokenizer.apply_chat_template(messages, tokenize=False))
    p = softmax(model(ids).logits)[..., 1] at every <extra_0> token

The Qwen2.5 ChatML template is rendered here in Python (no Jinja at run time)::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n{step_1}<extra_0>...{step_n}<extra_0><|im_end|>\\n

and the token ids equal the reference's for plain text, including its whitespace: the
question and steps are not stripped, and a newline inside a step stays a newline (a step
ends at the ``<extra_0>`` token the format inserts, never at text). A step that already
ends with ``<extra_0>`` (a response the user joined with the tag) ends there: the tag is
taken as its boundary, not broken and doubled. :meth:`QwenPRMFormat.split_solution` cuts a
whole response at its ``<extra_0>`` tags if it has any, else at ``"\\n\\n"`` (the model card:
"We recommend using double line breaks to separate individual steps").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from prm_plugins.errors import InvalidInputError
from prm_plugins.formats.base import PRMFormat, Rendered, strip_trailing_tag
from prm_plugins.formats.token_sequence import TokenSequenceBuilder, added_token_id

__all__ = ["QWEN_PRM_SYSTEM_PROMPT", "QwenPRMFormat"]

#: System prompt of the Qwen2.5-Math-PRM model card's inference example.
QWEN_PRM_SYSTEM_PROMPT = (
    "Please reason step by step, and put your final answer within \\boxed{}."
)


class QwenPRMFormat(PRMFormat):
    """Qwen2.5-Math-PRM convention: ChatML, steps joined and ended by ``<extra_0>``.

    Each step's score is read at the ``<extra_0>`` token the format puts after it. Step and
    question text is neutralised: special tokens and the step tag inside it are broken
    (``"<extra_0>"`` becomes ``"< extra_0>"``), so text cannot add, merge or drop a step.

    Options:
        system_prompt: content of the system turn (the model card's math prompt).
        step_tag: the step tag; must be an added token of the tokenizer.
        im_start: ChatML turn opener (added token).
        im_end: ChatML turn closer (added token).

    Examples:
        >>> fmt = QwenPRMFormat(tok)  # doctest: +SKIP
        >>> r = fmt.render("What is 2+3?", ["2 + 3 = 5.", "The answer is 5."])  # doctest: +SKIP
        >>> [r.input_ids[p] for p in r.step_positions] == [fmt.step_tag_id] * 2  # doctest: +SKIP
        True
    """

    name: ClassVar[str] = "qwen-prm"
    default_options: ClassVar[dict[str, Any]] = {
        "system_prompt": QWEN_PRM_SYSTEM_PROMPT,
        "step_tag": "<extra_0>",
        "im_start": "<|im_start|>",
        "im_end": "<|im_end|>",
    }

    def setup(self) -> None:
        for key in ("system_prompt", "step_tag", "im_start", "im_end"):
            if not isinstance(self.options[key], str):
                raise InvalidInputError(
                    f"format {self.name!r}: option {key} must be a string, got "
                    f"{self.options[key]!r}"
                )
        self.step_tag_id = added_token_id(self, self.options["step_tag"], "step_tag")
        self._im_start = added_token_id(self, self.options["im_start"], "im_start")
        self._im_end = added_token_id(self, self.options["im_end"], "im_end")
        # The fixed head of every chain, up to the first step's text.
        b = TokenSequenceBuilder(self)
        b.token(self._im_start)
        b.text("system\n" + self.options["system_prompt"])
        b.token(self._im_end)
        b.text("\n")
        b.token(self._im_start)
        self._head = b.finish()

    def step_tags(self) -> list[str]:
        return [self.options["step_tag"]]

    def split_trailing_tag(self, step: str) -> tuple[str, bool]:
        """A step ending with ``<extra_0>`` ends there (whitespace after the tag dropped)."""
        return strip_trailing_tag(step, self.options["step_tag"])

    def split_solution(self, text: str) -> list[str]:
        """A response's steps: cut at its ``<extra_0>`` tags if it has any, else at ``"\\n\\n"``.

        Pieces are kept verbatim (no stripping); blank pieces are dropped.
        """
        from prm_plugins.steps import split_verbatim

        tag = self.options["step_tag"]
        return split_verbatim(text, tag if tag in text else "\n\n")

    def render(self, question: str, steps: Sequence[str]) -> Rendered:
        b = TokenSequenceBuilder(self)
        for tid in self._head:
            b.token(tid)
        b.text("user\n")
        b.user(question)
        b.token(self._im_end)
        b.text("\n")
        b.token(self._im_start)
        b.text("assistant\n")  # tokenised together with the first step, as in the reference
        positions = []
        for step in steps:
            b.user(self.split_trailing_tag(step)[0])
            positions.append(b.token(self.step_tag_id))
        b.token(self._im_end)
        b.text("\n")
        return Rendered(b.finish(), positions)
