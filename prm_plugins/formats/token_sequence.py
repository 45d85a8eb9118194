"""Build a chain's token ids piece by piece, as a chat template plus a tokenizer would.

A tokenizer cuts text at its added tokens (``<|im_start|>``, ``<extra_0>``, ...) before it
pre-tokenises, so the text between two added tokens is tokenised on its own. The
:class:`TokenSequenceBuilder` keeps that text in one pending string (fixed template text
and neutralised user text together) and tokenises it as one piece when the next inserted
token comes. The ids therefore equal those of tokenising the fully rendered chat string
at once, as ``apply_chat_template`` does, while every inserted token's position is known
by construction, never found by searching the ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prm_plugins.errors import InvalidInputError

if TYPE_CHECKING:
    from prm_plugins.formats.base import PRMFormat

__all__ = ["TokenSequenceBuilder", "added_token_id"]


def added_token_id(fmt: PRMFormat, token: str, option: str) -> int:
    """The id of ``token``, which must be one of the tokenizer's added tokens.

    Chat markers and step tags have to be added tokens: only then does the tokenizer cut
    the text there, as the reference rendering (one string, tokenised at once) relies on.

    Args:
        fmt: the format (for its tokenizer and name).
        token: the token's text, e.g. ``"<|im_start|>"``.
        option: the format option that names it, quoted in the error.

    Raises:
        InvalidInputError: ``token`` is not an added token of the tokenizer.
    """
    for tid, added in fmt.tokenizer.get_added_tokens_decoder().items():
        if added.content == token:
            return int(tid)
    raise InvalidInputError(
        f"format {fmt.name!r}: {option}={token!r} is not an added token of this tokenizer, "
        "so it would not be cut out as one token. Check the option against the model's "
        "tokenizer (tokenizer.json 'added_tokens')"
    )


class TokenSequenceBuilder:
    """Token ids of one rendered chain, built from template text, user text and tokens.

    Args:
        fmt: the format whose tokenizer and :meth:`PRMFormat.neutralise` are used.

    Examples:
        >>> b = TokenSequenceBuilder(fmt)  # doctest: +SKIP
        >>> b.token(im_start); b.text("user\\n")  # doctest: +SKIP
        >>> b.user(question); b.token(im_end)  # doctest: +SKIP
        >>> ids = b.finish()  # doctest: +SKIP
    """

    def __init__(self, fmt: PRMFormat) -> None:
        self._fmt = fmt
        self._ids: list[int] = []
        self._pending: list[str] = []

    def text(self, text: str) -> None:
        """Append fixed template text written by the format (no special tokens in it)."""
        self._pending.append(text)

    def user(self, text: str) -> None:
        """Append user text (question or step), neutralised first."""
        self._pending.append(self._fmt.neutralise(text))

    def token(self, token_id: int) -> int:
        """Tokenise the pending text, append ``token_id`` and return its position."""
        self.flush()
        self._ids.append(int(token_id))
        return len(self._ids) - 1

    def ids_of(self, text: str) -> list[int]:
        """Token ids of a piece of plain text, checked to hold no special token."""
        if not text:
            return []
        ids = self._fmt.tokenizer.encode(text, add_special_tokens=False).ids
        leaked = [i for i in ids if i in self._fmt.special_ids]
        if leaked:
            raise InvalidInputError(
                f"format {self._fmt.name!r}: text {text[:80]!r} encodes to special token ids "
                f"{leaked}. Template options must not hold special tokens; if the text came "
                "from a question or step, report it as a bug with the text"
            )
        return ids

    def flush(self) -> None:
        """Tokenise the pending text as one piece."""
        if self._pending:
            self._ids.extend(self.ids_of("".join(self._pending)))
            self._pending = []

    def __len__(self) -> int:
        """Number of tokens so far (pending text not counted until flushed)."""
        return len(self._ids)

    def finish(self) -> list[int]:
        """Flush and return the token ids."""
        self.flush()
        return list(self._ids)
