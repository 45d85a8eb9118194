"""``math-shepherd``: causal-LM PRMs scored by ``+``/``-`` at each step tag (Math-Shepherd).

Convention (Math-Shepherd's published inference code)::

    input_for_prm = f"{question} {output}"     # output: steps, each ending " ки", joined "\\n"
    input_id = tokenizer.encode(input_for_prm)
    logits = model(input_id).logits[:, :, [id("+"), id("-")]]
    scores = logits.softmax(-1)[:, :, 0][input_id == step_tag_id]

This format renders the same string, tokenises it once with offsets, and reads each
step's score at the token that holds the last character of its tag (found by character
offset, never by searching for the tag id, so step text cannot create, merge or drop
steps). Step text is otherwise kept as written, line breaks and indentation included: the
card's own steps are ``"Step k: ..."`` lines and a multi-line step is one step ending at its
tag. A step that already ends with the tag (``"Step 1: ... ки"``, as in Math-Shepherd's data)
ends there, rendered verbatim, without a second tag. The tag's core (``"ки"``) anywhere else
in a step, and special-token strings, are broken (see ``StepScores.meta``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from prm_plugins.errors import InvalidInputError
from prm_plugins.formats.base import PRMFormat, Rendered, strip_trailing_tag

__all__ = ["MathShepherdFormat"]



class MathShepherdFormat(PRMFormat):
    """Math-Shepherd convention: ``question + " " + "\\n".join(step + " ки")``.

    Options:
        step_tag: text appended to every step, default ``" ки"``; the score is read at the
            token holding its last character.
        good_token: text of the "correct" token, default ``"+"``.
        bad_token: text of the "incorrect" token, default ``"-"``.
        good_token_id: vocabulary id of ``good_token`` as the reference finds it
            (``tokenizer.encode(f"{good} {bad}")`` without special tokens, first id);
            filled in at export.
        bad_token_id: likewise, second id.
        bos_token_id: id put first, when the checkpoint's tokenizer adds a BOS token.

    Examples:
        >>> fmt = MathShepherdFormat(tok, {"bos_token_id": 1})  # doctest: +SKIP
        >>> r = fmt.render("What is 2+2?", ["2+2=4", "The answer is 4."])  # doctest: +SKIP
        >>> len(r.step_positions)  # doctest: +SKIP
        2
    """

    name: ClassVar[str] = "math-shepherd"
    default_options: ClassVar[dict[str, Any]] = {
        "step_tag": " ки",
        "good_token": "+",
        "bad_token": "-",
        "good_token_id": None,
        "bad_token_id": None,
        "bos_token_id": None,
    }

    def setup(self) -> None:
        tag = self.options["step_tag"]
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidInputError(
                f"step_tag must be a string with visible characters, got {tag!r}; "
                "Math-Shepherd uses ' ки'"
            )
        if not self.encode_template(tag):
            raise InvalidInputError(
                f"step_tag {tag!r} encodes to no tokens with this tokenizer; choose a tag the "
                "tokenizer keeps"
            )
        self._tag_core = tag.strip()
        good, bad = self.options["good_token_id"], self.options["bad_token_id"]
        if good is None or bad is None:
            ids = self.encode_template(f"{self.options['good_token']} {self.options['bad_token']}")
            good, bad = _two_ids(ids, self.options["good_token"], self.options["bad_token"])
        vocab = self.tokenizer.get_vocab_size(with_added_tokens=True)
        for key, tid in (("good_token_id", good), ("bad_token_id", bad)):
            if not isinstance(tid, int) or not 0 <= tid < vocab:
                raise InvalidInputError(
                    f"{key} must be a token id in [0, {vocab}), got {tid!r}; fix it in prm.json "
                    "or re-export"
                )
        if good == bad:
            raise InvalidInputError(
                f"good_token_id and bad_token_id are both {good}; they must differ"
            )
        self.good_token_id, self.bad_token_id = good, bad
        bos = self.options["bos_token_id"]
        self._prefix_ids = [] if bos is None else [int(bos)]

    def step_tags(self) -> list[str]:
        return [self._tag_core]

    def split_trailing_tag(self, step: str) -> tuple[str, bool]:
        """A step whose text ends with the tag (``" ки"``, then maybe spaces) ends there."""
        return strip_trailing_tag(step, self.options["step_tag"])

    def neutralise_step(self, text: str) -> str:
        """Step text without a trailing tag, with tags and specials inside it broken."""
        return self.neutralise(self.split_trailing_tag(text)[0])

    def split_solution(self, text: str) -> list[str]:
        """Steps of a Math-Shepherd output: each ends at a tag that ends a line.

        The card's output is ``"Step 1: ... ки\\nStep 2: ... ки"``: the text is cut after
        every tag followed by the end of a line, and the one ``"\\n"`` after it (the joiner)
        is dropped, so ``render`` of the steps gives the card's string back. Each step keeps
        its tag and its text verbatim (a step may span lines); non-blank text after the last
        tag is a last step. A text with no tag at all is one step per line, verbatim.
        """
        from prm_plugins.steps import split_verbatim

        ends = list(re.finditer(re.escape(self._tag_core) + r"[^\S\n]*(?:\n|\Z)", text))
        if not ends:
            return split_verbatim(text, "\n")
        pieces, prev = [], 0
        for m in ends:
            end = m.end()
            pieces.append(text[prev:end - 1] if text[m.start():end].endswith("\n")
                          else text[prev:end])
            prev = end
        pieces.append(text[prev:])
        return [p for p in pieces if p.strip()]

    def render_text(self, question: str, steps: Sequence[str]) -> tuple[str, list[int]]:
        """The prompt string and, per step, the character offset just past its tag.

        This is the text Math-Shepherd's reference code tokenises (after neutralising):
        ``f"{question} {output}"`` with ``output = "\\n".join(step + " ки")``, where a step
        that already ends with the tag is taken as it is.
        """
        tag = self.options["step_tag"]
        parts = [self.neutralise(question), " "]
        length = len(parts[0]) + 1
        tag_ends: list[int] = []
        for i, step in enumerate(steps):
            body, tagged = self.split_trailing_tag(step)
            tail = step[len(step.rstrip()):] if tagged else ""
            piece = ("\n" if i else "") + self.neutralise(body) + tag
            tag_ends.append(length + len(piece))
            piece += tail
            parts.append(piece)
            length += len(piece)
        return "".join(parts), tag_ends

    def render(self, question: str, steps: Sequence[str]) -> Rendered:
        text, tag_ends = self.render_text(question, steps)
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        ids = list(enc.ids)
        leaked = [i for i in ids if i in self._leak_ids]
        if leaked:  # pragma: no cover - defensive: neutralise must prevent this
            raise InvalidInputError(
                f"chain text {text[:60]!r} still encodes to special token ids {leaked}; "
                "report this as a bug with the text"
            )
        positions = _tokens_ending_at(enc.offsets, tag_ends)
        offset = len(self._prefix_ids)
        return Rendered([*self._prefix_ids, *ids], [offset + p for p in positions])

    @classmethod
    def options_from_hf(cls, hf_tokenizer: Any, **overrides: Any) -> dict[str, Any]:
        opts = super().options_from_hf(hf_tokenizer, **overrides)
        if "bos_token_id" not in overrides:
            opts["bos_token_id"] = _added_bos(hf_tokenizer)
        if "good_token_id" not in overrides or "bad_token_id" not in overrides:
            ids = hf_tokenizer.encode(f"{opts['good_token']} {opts['bad_token']}",
                                      add_special_tokens=False)
            good, bad = _two_ids(ids, opts["good_token"], opts["bad_token"])
            if "good_token_id" not in overrides:
                opts["good_token_id"] = good
            if "bad_token_id" not in overrides:
                opts["bad_token_id"] = bad
        return opts


def _two_ids(ids: Sequence[int], good: str, bad: str) -> tuple[int, int]:
    if len(ids) != 2:
        raise InvalidInputError(
            f"'{good} {bad}' encodes to {len(ids)} tokens {list(ids)}, not one per candidate; "
            "set the good_token_id and bad_token_id options explicitly "
            "(prm export ... --option good_token_id=N --option bad_token_id=M)"
        )
    return int(ids[0]), int(ids[1])


def _added_bos(hf_tokenizer: Any) -> int | None:
    """The BOS id when the tokenizer prepends it on ``encode`` (as the reference calls it)."""
    bos = getattr(hf_tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    with_special = hf_tokenizer.encode("1 + 1")
    plain = hf_tokenizer.encode("1 + 1", add_special_tokens=False)
    if with_special and with_special[0] == bos and (not plain or plain[0] != bos):
        return int(bos)
    return None


def _tokens_ending_at(offsets: Sequence[tuple[int, int]], char_ends: Sequence[int]) -> list[int]:
    """For each character end offset, the last token that covers the character before it.

    Args:
        offsets: ``(start, end)`` character offsets of each token, in order.
        char_ends: increasing offsets just past each step tag.

    Raises:
        AssertionError: a tag has no covering token, or two tags share one (a format bug).
    """
    positions: list[int] = []
    tok = 0
    n = len(offsets)
    for end in char_ends:
        last = end - 1
        # Advance to the first token that ends past the tag's last character.
        while tok < n and offsets[tok][1] <= last:
            tok += 1
        if tok == n or offsets[tok][0] > last:
            raise AssertionError(f"no token covers character {last} of the rendered chain")
        # Byte-fallback tokenizers may split one character over several tokens: take the last.
        while tok + 1 < n and offsets[tok + 1][0] <= last < offsets[tok + 1][1]:
            tok += 1
        if positions and tok <= positions[-1]:
            raise AssertionError(f"two step tags map to token {tok}; a format bug")
        positions.append(tok)
    return positions
