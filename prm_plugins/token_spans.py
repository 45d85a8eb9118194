"""Character spans of a policy tokenizer's tokens, for placing rewards on tokens.

:func:`token_offsets` re-tokenises text; :func:`decode_with_offsets` decodes the ids a
policy actually sampled and gives each its span in the decoded text (streaming, linear
cost). :mod:`prm_plugins.rewards` puts step rewards on tokens with these spans (and
re-exports both functions). ``tokenizers``/``transformers`` objects are used only when
passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from prm_plugins.errors import InvalidInputError

__all__ = ["decode_with_offsets", "token_offsets"]


def token_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Tokenise ``text`` (no special tokens) and return ids and character offsets.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` or a transformers *fast* tokenizer (one with
            ``is_fast == True``; slow tokenizers have no offsets).
        text: the text to tokenise.

    Returns:
        ``(ids, offsets)``: offsets are ``(start, end)`` code-point indices into ``text``.

    Raises:
        InvalidInputError: for a slow tokenizer or an object that is not a tokenizer.

    Examples:
        >>> ids, offsets = token_offsets(policy_tokenizer, "2 + 3 = 5")  # doctest: +SKIP
    """
    if hasattr(tokenizer, "is_fast"):
        if not tokenizer.is_fast:
            raise InvalidInputError(
                f"{type(tokenizer).__name__} is a slow (Python) tokenizer, which has no token "
                "offsets; load the fast one (AutoTokenizer.from_pretrained(..., use_fast=True)) "
                "or pass offsets= yourself"
            )
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [(int(s), int(e)) for s, e in enc["offset_mapping"]]
    if callable(getattr(tokenizer, "encode", None)) and callable(
        getattr(tokenizer, "decode", None)
    ) and type(tokenizer).__module__.split(".")[0] == "tokenizers":
        enc = tokenizer.encode(text, add_special_tokens=False)
        return list(enc.ids), [(int(s), int(e)) for s, e in enc.offsets]
    raise InvalidInputError(
        f"tokenizer must be a tokenizers.Tokenizer or a transformers fast tokenizer; received "
        f"{type(tokenizer).__module__}.{type(tokenizer).__name__}"
    )


def decode_with_offsets(
    tokenizer: Any, token_ids: Sequence[int], *, skip_special_tokens: bool = True
) -> tuple[str, list[tuple[int, int]]]:
    """Decode sampled token ids and give each token its character span in the decoded text.

    Use this when rewards must line up with the ids the policy actually sampled (they need
    not be how the tokenizer would tokenise the decoded text). Token ``i`` spans the
    characters that decoding ``ids[:i+1]`` adds to decoding ``ids[:i]``. A token that adds no
    complete character (a special token skipped in decoding, or the first bytes of a
    multi-byte character under byte-level BPE, which decode to U+FFFD) gets an empty span;
    the token that completes the character gets it. Decoding streams over short windows
    (linear cost); a decoder whose windows disagree with the full text falls back to
    decoding every prefix (quadratic, exact).

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` or a transformers tokenizer (slow ones work
            too: only ``decode`` is used).
        token_ids: the sampled completion ids (no prompt).
        skip_special_tokens: drop special tokens from the text, as TRL does when it decodes
            completions.

    Returns:
        ``(text, offsets)`` with ``len(offsets) == len(token_ids)``.

    Examples:
        >>> text, offsets = decode_with_offsets(policy_tokenizer, [412, 88, 9])  # doctest: +SKIP
    """
    decode = getattr(tokenizer, "decode", None)
    if not callable(decode):
        raise InvalidInputError(
            f"tokenizer must have a decode method; received {type(tokenizer).__name__}"
        )
    ids = [int(i) for i in token_ids]

    def dec(part: list[int]) -> str:
        return str(decode(part, skip_special_tokens=skip_special_tokens))

    full = dec(ids)
    incremental = _incremental_offsets(dec, ids)
    if incremental is not None and incremental[0] == full:
        return full, incremental[1]
    # Fallback for decoders that are not prefix-stable in short windows: one decode of the
    # whole prefix per token (quadratic, but exact).
    offsets: list[tuple[int, int]] = []
    done = 0
    for i in range(len(ids)):
        if i == len(ids) - 1:
            settled = len(full)
        else:
            prefix = dec(ids[: i + 1]).rstrip("\ufffd")
            settled = len(os.path.commonprefix([prefix, full]))
        settled = max(settled, done)
        offsets.append((done, settled))
        done = settled
    return full, offsets


def _incremental_offsets(
    dec: Callable[[list[int]], str], ids: list[int]
) -> tuple[str, list[tuple[int, int]]] | None:
    """Streaming detokenisation (as LLM servers do it): each token's new text is found by
    decoding a short window that starts a few tokens back, so the cost is linear. A token
    whose window ends in U+FFFD (an incomplete character) adds nothing yet; the next token
    that completes it takes the text. Returns ``None`` when a window is inconsistent."""
    text = ""
    offsets: list[tuple[int, int]] = []
    prefix_offset = read_offset = 0
    for i in range(len(ids)):
        before = dec(ids[prefix_offset:read_offset])
        after = dec(ids[prefix_offset : i + 1])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            if not after.startswith(before):
                return None
            start = len(text)
            text += after[len(before):]
            offsets.append((start, len(text)))
            prefix_offset, read_offset = read_offset, i + 1
        else:
            offsets.append((len(text), len(text)))
    return text, offsets
