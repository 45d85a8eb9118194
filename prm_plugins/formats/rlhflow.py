"""``rlhflow``: RLHFlow Llama3.1-8B-PRM (Mistral-Data / Deepseek-Data) and look-alikes.

Convention (RLHFlow's ``math-rm/prm_evaluate.py`` in ``RLHFlow/RLHF-Reward-Modeling``)::

    steps = ans.split("\\n\\n")           # "ки\\n" for the Mistral-Data model
    steps = [j.strip() for j in steps]  # each step stripped first
    conversation = []
    for k, step in enumerate(steps):
        text = question + " " + step if k == 0 else step
        conversation += [{"role": "user", "content": text},
                         {"role": "assistant", "content": "+"}]
        ids = tokenizer.apply_chat_template(conversation, return_tensors="pt")
        logits = model(ids).logits[:, -3, [id("+"), id("-")]]
        score_k = logits.softmax(-1)[:, 0]

Position ``-3`` is the last token before the assistant's ``"+"`` (the ``"+"`` itself is at
``-2`` and ``<|eot_id|>`` at ``-1``): the logits there predict the verdict. The model is
causal, so one forward pass over the whole conversation gives every step's score at the
token before that step's ``"+"``; the format renders the whole conversation once.

The Llama 3 / 3.1 chat template is rendered in Python::

    <|begin_of_text|>[<|start_header_id|>system<|end_header_id|>\\n\\n{system_block}<|eot_id|>]
    (<|start_header_id|>user<|end_header_id|>\\n\\n{text.strip()}<|eot_id|>
     <|start_header_id|>assistant<|end_header_id|>\\n\\n+<|eot_id|>)*

Llama 3.1's template always writes a system block with two dates, even with no system
message; ``tokenizer.apply_chat_template(conversation)``, as RLHFlow calls it, therefore
includes ``"Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n"``. That is
the default ``system_block``; set it to ``None`` for the Llama 3.0 template (no system
block). A template that fills the date with ``strftime_now`` renders a different date each
day; pin it with this option. Message content is trimmed, as the template's ``| trim`` does,
after each step has been stripped on its own (so the first step's leading whitespace does
not survive between the question and the step). The verdict is a turn of its own, so the
family has no step tag in text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from prm_plugins.errors import InvalidInputError
from prm_plugins.formats.base import PRMFormat, Rendered
from prm_plugins.formats.token_sequence import TokenSequenceBuilder, added_token_id

__all__ = ["LLAMA31_SYSTEM_BLOCK", "RLHFlowFormat"]

#: The system block Llama 3.1's chat template writes when no system message is given.
LLAMA31_SYSTEM_BLOCK = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"


class RLHFlowFormat(PRMFormat):
    """RLHFlow convention: one user turn per step, each answered by an assistant ``"+"``.

    The score of step k is ``softmax([logit("+"), logit("-")])[0]`` read at the last token
    of the k-th assistant header (the token that predicts the ``"+"``). Step text is
    neutralised (special tokens broken); a ``"+"`` inside a step is plain text and
    harmless, since score positions come from the rendering, not from searching the ids.

    Options:
        good_token: the assistant's verdict for a correct step (``"+"``).
        bad_token: the verdict for an incorrect step (``"-"``).
        good_token_id: id of ``good_token``, as ``tokenizer.encode(good_token)[-1]``.
        bad_token_id: id of ``bad_token``, likewise. Both filled by :meth:`options_from_hf`.
        bos_token: text put first (``"<|begin_of_text|>"``), or ``None``.
        system_block: content of the system turn; ``None`` writes no system turn.
        start_header: header opener (``"<|start_header_id|>"``).
        end_header: header closer (``"<|end_header_id|>"``).
        end_of_turn: turn closer (``"<|eot_id|>"``).
        header_suffix: text after a header (``"\\n\\n"``).
        trim_content: strip each message's content, as Llama templates do.
        solution_separator: what :meth:`split_solution` cuts a whole solution at:
            ``"\\n\\n"`` (Deepseek-Data model, the default) or ``"ки\\n"`` (Mistral-Data).

    Examples:
        >>> fmt = RLHFlowFormat(tok, RLHFlowFormat.options_from_hf(hf_tok))  # doctest: +SKIP
        >>> r = fmt.render("What is 2+3?", ["2 + 3 = 5.", "The answer is 5."])  # doctest: +SKIP
        >>> plus = [r.input_ids[p + 1] for p in r.step_positions]  # doctest: +SKIP
        >>> plus == [fmt.good_token_id] * 2  # doctest: +SKIP
        True
    """

    name: ClassVar[str] = "rlhflow"
    default_options: ClassVar[dict[str, Any]] = {
        "good_token": "+",
        "bad_token": "-",
        "good_token_id": None,
        "bad_token_id": None,
        "bos_token": "<|begin_of_text|>",
        "system_block": LLAMA31_SYSTEM_BLOCK,
        "start_header": "<|start_header_id|>",
        "end_header": "<|end_header_id|>",
        "end_of_turn": "<|eot_id|>",
        "header_suffix": "\n\n",
        "trim_content": True,
        "solution_separator": "\n\n",
    }

    def setup(self) -> None:
        opts = self.options
        for key in ("good_token", "bad_token", "start_header", "end_header", "end_of_turn",
                    "header_suffix", "solution_separator"):
            if not isinstance(opts[key], str) or not opts[key]:
                raise InvalidInputError(
                    f"format {self.name!r}: option {key} must be a non-empty string, got "
                    f"{opts[key]!r}"
                )
        self.good_token_id = self._verdict_id("good")
        self.bad_token_id = self._verdict_id("bad")
        if self.good_token_id == self.bad_token_id:
            raise InvalidInputError(
                f"format {self.name!r}: good_token and bad_token have the same id "
                f"{self.good_token_id}; they must be different tokens"
            )
        self._start = added_token_id(self, opts["start_header"], "start_header")
        self._end = added_token_id(self, opts["end_header"], "end_header")
        self._eot = added_token_id(self, opts["end_of_turn"], "end_of_turn")
        # The assistant turn's content "+" is tokenised with the header suffix before it; the
        # last token must be the "+" whose logit is read, the score sits just before it.
        b = TokenSequenceBuilder(self)
        self._verdict_ids = b.ids_of(opts["header_suffix"] + opts["good_token"])
        if len(self._verdict_ids) < 2 or self._verdict_ids[-1] != self.good_token_id:
            raise InvalidInputError(
                f"format {self.name!r}: {opts['header_suffix'] + opts['good_token']!r} encodes "
                f"to {self._verdict_ids}, which does not end with a token before good_token id "
                f"{self.good_token_id}; this tokenizer does not fit the RLHFlow convention"
            )
        head = TokenSequenceBuilder(self)
        if opts["bos_token"] is not None:
            head.token(added_token_id(self, opts["bos_token"], "bos_token"))
        if opts["system_block"] is not None:
            if not isinstance(opts["system_block"], str):
                raise InvalidInputError(
                    f"format {self.name!r}: system_block must be a string or None, got "
                    f"{opts['system_block']!r}"
                )
            self._turn(head, "system", opts["system_block"], template=True)
        self._head = head.finish()

    def _verdict_id(self, which: str) -> int:
        """``good_token_id``/``bad_token_id``: the option, else the token's last id."""
        tid = self.options[f"{which}_token_id"]
        token = self.options[f"{which}_token"]
        if tid is None:
            ids = self.encode_template(token)
            if not ids:
                raise InvalidInputError(
                    f"format {self.name!r}: {which}_token {token!r} encodes to no tokens"
                )
            tid = ids[-1]
        if not isinstance(tid, int) or not 0 <= tid < self.tokenizer.get_vocab_size():
            raise InvalidInputError(
                f"format {self.name!r}: {which}_token_id must be a vocabulary id, got {tid!r}"
            )
        return tid

    def _turn(self, b: TokenSequenceBuilder, role: str, content: str, *,
              template: bool = False) -> None:
        b.token(self._start)
        b.text(role)
        b.token(self._end)
        b.text(self.options["header_suffix"])
        if template:
            b.text(content)
        else:
            b.user(content.strip() if self.options["trim_content"] else content)
        b.token(self._eot)

    def split_solution(self, text: str) -> list[str]:
        """Steps as RLHFlow's evaluation cuts them: at ``solution_separator``, each stripped."""
        from prm_plugins.steps import split_verbatim

        return [p.strip() for p in split_verbatim(text, self.options["solution_separator"])]

    def render(self, question: str, steps: Sequence[str]) -> Rendered:
        b = TokenSequenceBuilder(self)
        for tid in self._head:
            b.token(tid)
        positions = []
        for k, step in enumerate(steps):
            step = step.strip()  # upstream: ans_list = [j.strip() for j in ans_list]
            self._turn(b, "user", f"{question} {step}" if k == 0 else step)
            b.token(self._start)
            b.text("assistant")
            b.token(self._end)
            for tid in self._verdict_ids:
                b.token(tid)
            positions.append(len(b) - 2)
            b.token(self._eot)
        return Rendered(b.finish(), positions)

    @classmethod
    def options_from_hf(cls, hf_tokenizer: Any, **overrides: Any) -> dict[str, Any]:
        """Options for a transformers tokenizer: BOS, verdict ids, and the system block.

        ``good_token_id``/``bad_token_id`` follow RLHFlow's ``tokenizer.encode("+")[-1]``.
        ``system_block`` is dropped when the tokenizer's chat template has no
        "Cutting Knowledge Date" block (a Llama 3.0 template).
        """
        opts = super().options_from_hf(hf_tokenizer, **overrides)
        if "bos_token" not in overrides:
            opts["bos_token"] = getattr(hf_tokenizer, "bos_token", None)
        for which in ("good", "bad"):
            if f"{which}_token_id" not in overrides:
                opts[f"{which}_token_id"] = int(hf_tokenizer.encode(opts[f"{which}_token"])[-1])
        template = getattr(hf_tokenizer, "chat_template", None)
        if ("system_block" not in overrides and isinstance(template, str)
                and "Cutting Knowledge Date" not in template):
            opts["system_block"] = None
        return opts
