"""Tiny random-weight checkpoints on disk, with tokenizers trained here, for offline tests.

Everything is built from a transformers config (random weights) and a tokenizer trained
in-process with the ``tokenizers`` library, then saved with ``save_pretrained`` as a normal
local checkpoint (``config.json``, ``model.safetensors``, ``tokenizer.json``, ...). Nothing
is downloaded. Test modules import the builders; ``conftest.py`` wraps them in
session-scoped fixtures.

Examples:
    >>> make_tiny_causal_lm(tmp_path / "lm", extra_special_tokens=["<x>"])  # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CAUSAL_LM_ARCHS",
    "MATH_WORDS",
    "make_tiny_causal_lm",
    "make_tiny_token_classifier",
    "math_corpus",
    "train_byte_bpe_tokenizer",
    "train_wordpiece_tokenizer",
]

#: Words the tiny tokenizers are trained on and the tests build chains from.
MATH_WORDS: tuple[str, ...] = (
    "Tom", "Ann", "has", "apples", "pens", "buys", "sells", "more", "each", "total", "how",
    "many", "does", "she", "he", "have", "left", "so", "the", "answer", "is", "step",
    "first", "then", "add", "subtract", "multiply", "divide", "by", "of", "and", "cost",
    "dollars", "minutes", "hours", "per", "day", "week", "half", "twice", "price", "sum",
)

#: ``arch`` name -> (config class, causal LM class) accepted by :func:`make_tiny_causal_lm`.
CAUSAL_LM_ARCHS: dict[str, tuple[str, str]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
}


def math_corpus(n_lines: int = 400, *, seed: int = 0, extra: Iterable[str] = ()) -> list[str]:
    """Lines of GSM8K-looking text: words, numbers, operators and Math-Shepherd tags.

    Args:
        n_lines: number of generated lines.
        seed: random seed.
        extra: strings appended to every 4th line so that they become single tokens.
    """
    rng = random.Random(seed)
    extra = list(extra)
    lines = []
    for i in range(n_lines):
        words = [rng.choice(MATH_WORDS) for _ in range(rng.randint(3, 9))]
        a, b = rng.randint(0, 99), rng.randint(1, 99)
        op = rng.choice(["+", "-", "*", "/"])
        line = f"Step {i % 7 + 1}: {' '.join(words)} {a} {op} {b} = {a + b} ки"
        if extra and i % 4 == 0:
            line += " " + " ".join(extra)
        lines.append(line)
        lines.append(f"{rng.choice(MATH_WORDS)} + - ки {rng.choice(MATH_WORDS)}")
    return lines


def train_byte_bpe_tokenizer(
    corpus: Sequence[str],
    *,
    vocab_size: int = 400,
    bos_token: str | None = "<s>",
    eos_token: str = "</s>",
    pad_token: str | None = None,
    extra_special_tokens: Sequence[str] = (),
    add_bos: bool = True,
) -> Any:
    """Train a Llama-3-like byte-level BPE tokenizer and wrap it as a transformers fast tokenizer.

    Args:
        corpus: training lines.
        vocab_size: target vocabulary size (the byte alphabet is always included).
        bos_token: BOS string, or ``None`` for a tokenizer without BOS (Qwen-like).
        eos_token: EOS string.
        pad_token: pad string, or ``None`` for none (like Llama).
        extra_special_tokens: more special tokens (e.g. ``"<extra_0>"``, chat markers).
        add_bos: the post-processor prepends BOS when encoding with special tokens.

    Returns:
        A ``transformers`` fast tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [t for t in (bos_token, eos_token, pad_token) if t] + list(extra_special_tokens)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if bos_token and add_bos:
        bos_id = tok.token_to_id(bos_token)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A {bos_token} $B",
            special_tokens=[(bos_token, bos_id)],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    kwargs: dict[str, Any] = {"eos_token": eos_token}
    if bos_token:
        kwargs["bos_token"] = bos_token
    if pad_token:
        kwargs["pad_token"] = pad_token
    if extra_special_tokens:
        kwargs["additional_special_tokens"] = list(extra_special_tokens)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def train_wordpiece_tokenizer(
    corpus: Sequence[str], *, vocab_size: int = 300, keep_newline: bool = True
) -> Any:
    """Train a BERT-like WordPiece tokenizer (lowercasing) as a transformers fast tokenizer.

    Args:
        corpus: training lines.
        vocab_size: target vocabulary size.
        keep_newline: keep ``"\\n"`` as a token of its own (TRL's default step separator);
            a stock BERT normaliser would drop it.

    Returns:
        A ``transformers`` fast tokenizer with ``[CLS] $A [SEP]`` post-processing.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(),
                                           normalizers.StripAccents()])
    splits = [
        pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
        pre_tokenizers.Punctuation(),
        pre_tokenizers.Digits(individual_digits=True),
    ]
    if keep_newline:
        splits.insert(0, pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"))
    else:
        splits[0] = pre_tokenizers.Whitespace()
    tok.pre_tokenizer = pre_tokenizers.Sequence(splits)
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                        show_progress=False)
    tok.train_from_iterator([line + "\n" for line in corpus], trainer=trainer)
    if keep_newline and tok.token_to_id("\n") is None:  # pragma: no cover - defensive
        tok.add_tokens(["\n"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )


def make_tiny_token_classifier(
    path: str | Path,
    *,
    tokenizer: Any | None = None,
    hidden_size: int = 32,
    num_layers: int = 2,
    max_position_embeddings: int = 128,
    seed: int = 0,
) -> Path:
    """Save a tiny BERT token classifier (2 labels, random weights) with its tokenizer.

    Args:
        path: output directory (created).
        tokenizer: a transformers fast tokenizer; default: :func:`train_wordpiece_tokenizer`
            on :func:`math_corpus`.
        hidden_size: hidden width.
        num_layers: transformer layers.
        max_position_embeddings: longest sequence the model takes.
        seed: torch seed for the random weights.

    Returns:
        ``path``.
    """
    import torch
    from transformers import BertConfig, BertForTokenClassification

    path = Path(path)
    tokenizer = tokenizer or train_wordpiece_tokenizer(math_corpus())
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=4, intermediate_size=hidden_size * 2,
        max_position_embeddings=max_position_embeddings, num_labels=2,
        pad_token_id=tokenizer.pad_token_id, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertForTokenClassification(config).eval()
    _spread_weights(model, seed, scale=0.1)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_causal_lm(
    path: str | Path,
    *,
    arch: str = "llama",
    tokenizer: Any | None = None,
    corpus: Sequence[str] | None = None,
    vocab_size: int = 400,
    extra_special_tokens: Sequence[str] = (),
    hidden_size: int = 32,
    num_layers: int = 2,
    max_position_embeddings: int = 256,
    config_overrides: Mapping[str, Any] | None = None,
    tokenizer_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Save a tiny causal LM (random weights) with a byte-level BPE tokenizer trained here.

    The default corpus (:func:`math_corpus`) makes ``" ки"``, ``"+"`` and ``"-"`` tokens, so
    Math-Shepherd-style chains work out of the box.

    Args:
        path: output directory (created).
        arch: one of :data:`CAUSAL_LM_ARCHS` (``"llama"``, ``"mistral"``, ``"qwen2"``).
        tokenizer: a transformers fast tokenizer to use instead of training one.
        corpus: tokenizer training lines (default :func:`math_corpus`).
        vocab_size: tokenizer vocabulary size when training one.
        extra_special_tokens: extra special tokens of the trained tokenizer.
        hidden_size: hidden width.
        num_layers: decoder layers.
        max_position_embeddings: the config's context length.
        config_overrides: more config fields (e.g. ``{"tie_word_embeddings": True}``).
        tokenizer_kwargs: more :func:`train_byte_bpe_tokenizer` arguments (``bos_token``,
            ``pad_token``, ``add_bos``).
        seed: seed of the random weights.

    Returns:
        ``path``.
    """
    import torch
    import transformers

    if arch not in CAUSAL_LM_ARCHS:
        raise ValueError(f"arch must be one of {sorted(CAUSAL_LM_ARCHS)}, got {arch!r}")
    path = Path(path)
    if tokenizer is None:
        tokenizer = train_byte_bpe_tokenizer(
            corpus or math_corpus(extra=extra_special_tokens), vocab_size=vocab_size,
            extra_special_tokens=extra_special_tokens, **dict(tokenizer_kwargs or {}),
        )
    config_cls_name, model_cls_name = CAUSAL_LM_ARCHS[arch]
    fields: dict[str, Any] = {
        "vocab_size": len(tokenizer), "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2, "num_hidden_layers": num_layers,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": max_position_embeddings, "tie_word_embeddings": False,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        # Wide init: the layers' outputs then rival the token embeddings, so the
        # probability at a tag token depends on its context, not only on the tag itself.
        "initializer_range": 0.3,
    }
    fields.update(config_overrides or {})
    config = getattr(transformers, config_cls_name)(**fields)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls_name)(config).eval()
    _spread_weights(model, seed, scale=0.2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _spread_weights(model: Any, seed: int, scale: float) -> None:
    """Redraw the classifier/LM-head weights with std ``scale`` so probabilities spread.

    Random init gives near-constant outputs; bigger heads make parity and reference checks
    meaningful (a wrong position or a wrong token shows up as a different probability).
    Too big saturates them at 0 or 1, which hides errors again: the scales used here give
    probabilities spread over roughly 0.4-0.9 (BERT) and 0.05-0.99 (causal LM).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(("classifier", "lm_head", "score")) and param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
