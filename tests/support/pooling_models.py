"""Tiny model directories of the served PRM families (qwen-prm, math-shepherd), built fast.

Each directory is a complete, hash-checked prm-plugins model (``model.onnx``,
``tokenizer.json``, ``prm.json``) that :func:`prm_plugins.load_prm` loads:

* the tokenizer is a byte-level BPE trained here with ``tokenizers`` on math text, with the
  family's added tokens (ChatML's ``<|im_start|>``/``<|im_end|>`` and Qwen2.5-Math-PRM's
  ``<extra_0>``; Math-Shepherd's ``ки`` tag is learnt from the corpus);
* the graph is real ONNX run by onnxruntime and follows the exported-graph contract
  (``input_ids``, ``attention_mask`` -> ``step_probs [B, T]``): ``sigmoid(running mean of a
  random weight per token)``, so each token's probability depends on its whole prefix
  (a wrong position or a padding slip changes the numbers). It is not a trained PRM, and
  it need not be: the tests compare the served path with the ONNX path on it.

No torch, no transformers: a directory builds in well under a second.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["make_family_dir"]

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
WORDS = ("Tom", "Ann", "has", "apples", "pens", "buys", "sells", "more", "each", "total",
         "how", "many", "so", "the", "answer", "is", "Step", "first", "then", "left")


def _corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        a, b = rng.randint(0, 99), rng.randint(1, 99)
        lines.append(f"Step {i % 5 + 1}: {words} {a} + {b} = {a + b} ки")
        lines.append(f"system\nuser\n{words}?\nassistant\n{words}. + - ки\n\n")
    return lines


def _tokenizer(path: Path, specials: tuple[str, ...]) -> int:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.save(str(path))
    return int(tok.get_vocab_size(with_added_tokens=True))


def _graph(path: Path, vocab: int, seed: int) -> None:
    import onnx
    from onnx import TensorProto, helper

    w = np.random.default_rng(seed).normal(0.0, 1.5, size=vocab).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["w", "input_ids"], ["v"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["v", "m"], ["vm"]),
        helper.make_node("CumSum", ["vm", "axis"], ["cs"]),
        helper.make_node("CumSum", ["m", "axis"], ["cn"]),
        helper.make_node("Max", ["cn", "one"], ["cn1"]),
        helper.make_node("Div", ["cs", "cn1"], ["mean"]),
        helper.make_node("Sigmoid", ["mean"], ["step_probs"]),
    ]
    graph = helper.make_graph(
        nodes, "running_mean_prm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "T"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "T"])],
        [helper.make_tensor_value_info("step_probs", TensorProto.FLOAT, ["B", "T"])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [vocab], w.tolist()),
                     helper.make_tensor("axis", TensorProto.INT64, [], [1]),
                     helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_family_dir(out: Path, family: str, *, max_length: int = 512, seed: int = 0,
                    format_options: dict[str, Any] | None = None) -> Path:
    """A model directory of ``family`` (``"qwen-prm"`` or ``"math-shepherd"``).

    Args:
        out: the directory to create.
        family: the format name written into ``prm.json``.
        max_length: the manifest's ``max_length``.
        seed: seed of the graph's token weights.
        format_options: written into ``prm.json`` (default: none, the format's defaults).
    """
    from prm_plugins.manifest import Manifest

    out.mkdir(parents=True, exist_ok=True)
    specials = (*QWEN_SPECIALS, "<extra_0>") if family == "qwen-prm" else ("<s>",)
    vocab = _tokenizer(out / "tokenizer.json", specials)
    _graph(out / "model.onnx", vocab, seed)
    man = Manifest(format=family, format_options=dict(format_options or {}),
                   max_length=max_length, dtype="fp32", opset=17,
                   extra={"pad_token_id": 0, "note": "running-mean test graph"})
    man.hash_files(out, ["model.onnx", "tokenizer.json"])
    man.write(out)
    return out
