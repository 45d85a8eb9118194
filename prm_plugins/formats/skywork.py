"""``skywork``: Skywork-o1-Open-PRM (Qwen2.5-1.5B / -7B) and look-alikes.

Convention (Skywork's ``skywork-o1-prm-inference``, ``prepare_input``)::

    input_ids = tokenizer.encode(tokenizer.bos_token + question + "\\n")
    for step in response.split("\\n"):
        input_ids += tokenizer.encode(step) + [tokenizer.encode("\\n")[-1]]   # flag the "\\n"
    reward = sigmoid(v_head(last_hidden_state)) at every flagged "\\n"

The value head is ``Linear(hidden, 1)`` on the causal LM's last hidden state. Each step is
tokenised on its own and followed by the id of the step token, exactly as above.

Upstream's step *is* a line: it splits the response on ``"\\n"``. A step given here that
holds line breaks is therefore several upstream steps. The project keeps its text and
renders it the way upstream renders those lines (each line tokenised on its own, verbatim,
each followed by the step token's id), so the token ids are exactly upstream's for
``"\\n".join(steps)``; the step's one score is read at the step token after its last line,
which is upstream's score for that line. ``StepScores.meta["upstream_steps"]`` then says how
many upstream steps each given step spans (its inner lines' own scores are not reported:
pass the lines as steps to get them). A trailing ``"\\n"`` on a step is its boundary, not
an extra empty line. :meth:`SkyworkFormat.split_solution` is ``response.split("\\n")`` with
lines verbatim; a blank line is kept with the step after it (as upstream's empty step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from prm_plugins.errors import InvalidInputError
from prm_plugins.formats.base import PRMFormat, Rendered, strip_trailing_tag
from prm_plugins.formats.token_sequence import TokenSequenceBuilder, added_token_id

__all__ = ["SkyworkFormat"]


class SkyworkFormat(PRMFormat):
    """Skywork-o1-Open-PRM convention: ``[bos] question\\n``, then ``step`` + ``"\\n"`` id.

    A step holding the step token is rendered line by line, as the reference code would
    (see the module docstring); a step token other than whitespace is broken inside a step
    instead; special tokens are broken too. Every given step gets exactly one score, read
    at the step token after its last line.

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

    def split_trailing_tag(self, step: str) -> tuple[str, bool]:
        """A step ending with the step token ends there (one trailing token is removed)."""
        step_token = self.options["step_token"]
        if step_token.isspace():  # whitespace before it is text, so no rstrip here
            return (step[: -len(step_token)], True) if step.endswith(step_token) else (step, False)
        return strip_trailing_tag(step, step_token)

    def step_lines(self, step: str) -> list[str]:
        """The upstream steps (lines) that ``step`` spans, verbatim; at least one."""
        text = self.split_trailing_tag(step)[0]
        step_token = self.options["step_token"]
        return text.split(step_token) if step_token.isspace() else [text]

    def split_solution(self, text: str) -> list[str]:
        """``response.split("\\n")`` with every line verbatim, as Skywork's ``prepare_input``.

        Upstream scores an empty line as a step of its own; here a blank line goes with the
        step after it, so the token ids stay upstream's (``meta["upstream_steps"]`` counts
        it). Blank lines at the end are dropped.
        """
        step_token = self.options["step_token"]
        steps: list[str] = []
        pending: list[str] = []
        for line in text.split(step_token):
            pending.append(line)
            if line.strip():
                steps.append(step_token.join(pending))
                pending = []
        return steps

    def step_notes(self, question: str, steps: Sequence[str]) -> dict[str, Any]:
        """Base notes plus ``"upstream_steps"``: upstream steps per step, when one spans >1."""
        notes = super().step_notes(question, steps)
        counts = [len(self.step_lines(step)) for step in steps]
        if any(n > 1 for n in counts):
            notes["upstream_steps"] = counts
        return notes

    def render(self, question: str, steps: Sequence[str]) -> Rendered:
        b = TokenSequenceBuilder(self)
        for tid in self._prefix:
            b.token(tid)
        b.user(question)
        b.text(self.options["question_suffix"])
        b.flush()
        positions = []
        for step in steps:
            for line in self.step_lines(step):
                b.user(line)
                position = b.token(self.step_token_id)
            positions.append(position)
        return Rendered(b.finish(), positions)

    @classmethod
    def options_from_hf(cls, hf_tokenizer: Any, **overrides: Any) -> dict[str, Any]:
        """Options for a transformers tokenizer: its BOS token, as ``prepare_input`` uses."""
        opts = super().options_from_hf(hf_tokenizer, **overrides)
        if "bos_token" not in overrides:
            opts["bos_token"] = getattr(hf_tokenizer, "bos_token", None)
        return opts
