"""Toy training data and a tiny BERT base for the training tests (``prm train``).

A WordPiece tokenizer trained here and a BERT trunk with hidden size 32 made from a config
here; separable toy chains (a step is wrong exactly when it says 'subtract').
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from prm_plugins.training import TrainConfig

WORDS = ("tom", "ann", "has", "apples", "pens", "buys", "sells", "more", "each", "total",
         "so", "the", "answer", "is", "add", "subtract", "then", "left", "she", "he")


def corpus() -> list[str]:
    rng = random.Random(0)
    lines = []
    for _ in range(300):
        words = " ".join(rng.choice(WORDS) for _ in range(6))
        lines.append(f"{words} {rng.randint(0, 999)} + {rng.randint(0, 99)} = {rng.randint(0, 9)}.")
    return lines


def make_tiny_bert_base(path: Path) -> Path:
    """A tiny BERT trunk (hidden 32) and a BERT-style WordPiece tokenizer, saved in ``path``."""
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import BertConfig, BertModel

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(
        vocab_size=400, special_tokens=specials, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tok.save(str(path / "tokenizer.json"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                        pad_token_id=0, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(path)
    return path


def toy_rows(n: int, seed: int) -> list[dict[str, object]]:
    """Separable toy chains: a step is wrong exactly when it says 'subtract'."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question = f"tom has {rng.randint(1, 99)} apples and buys {rng.randint(1, 9)} more. q{i}"
        steps, labels = [], []
        for _ in range(rng.randint(1, 4)):
            bad = rng.random() < 0.35
            verb = "subtract" if bad else "add"
            steps.append(f"then {verb} {rng.randint(1, 99)}")
            labels.append(not bad)
        rows.append({"prompt": question, "completions": steps, "labels": labels,
                     "perturbation": None if all(labels) else "toy"})
    return rows


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def toy_config(base_dir: Path, data: Path, out: Path, steps: int = 60,
                **changes: object) -> TrainConfig:
    """A quick CPU run on toy data: one thread, a 50-token vocabulary, validation at the end."""
    return TrainConfig(**{  # type: ignore[arg-type]
        "data": str(data), "out": str(out), "base_model": str(base_dir), "max_steps": steps,
        "batch_size": 16, "lr": 1e-2, "warmup_ratio": 0.1, "eval_every": steps,
        "log_every": 10, "val_fraction": 0.2, "device": "cpu", "progress": False,
        "vocab_keep_top": 50, "max_length": 128, "seed": 0, "threads": 1, **changes})
