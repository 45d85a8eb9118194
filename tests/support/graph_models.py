"""A hand-built ONNX graph that follows the exported-graph contract, for runtime tests.

The graph is real ONNX run by onnxruntime; it is not a PRM. Its ``step_probs`` at token t
is ``sigmoid(running mean of w[input_ids[:t+1]])``: it depends on the whole prefix (so
windowing and padding mistakes change the numbers) and is cheap to compute by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<tag>"] + [f"w{i}" for i in range(40)] + [
    str(d) for d in range(10)
] + ["+", "=", "."]


def make_tokenizer_json(path: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("[PAD]", "[CLS]", "[SEP]")])
    tok.save(str(path))


def token_weights() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(0.0, 1.5, size=len(VOCAB)).astype(np.float32)


def make_graph(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    w = token_weights()
    nodes = [
        helper.make_node("Gather", ["w", "input_ids"], ["v"]),              # [B,T]
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
        initializer=[
            helper.make_tensor("w", TensorProto.FLOAT, [len(w)], w.tolist()),
            helper.make_tensor("axis", TensorProto.INT64, [], [1]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_model_dir(out: Path, *, max_length: int = 64, separator: str = "[SEP]") -> Path:
    """A complete model directory (graph, tokenizer, manifest with hashes)."""
    from prm_plugins.manifest import Manifest

    out.mkdir(parents=True, exist_ok=True)
    make_graph(out / "model.onnx")
    make_tokenizer_json(out / "tokenizer.json")
    man = Manifest(
        format="token-classification",
        format_options={"separator": separator, "bos_token_id": VOCAB.index("[CLS]"),
                        "prompt_suffix": "[SEP]"},
        max_length=max_length, dtype="fp32", opset=17,
        extra={"pad_token_id": 0, "note": "hand-built running-mean test graph"},
    )
    man.hash_files(out, ["model.onnx", "tokenizer.json"])
    man.write(out)
    return out


def reference_probs(ids: list[int]) -> np.ndarray:
    """Per-token output of the graph computed by hand, for one unpadded sequence."""
    w = token_weights().astype(np.float64)
    v = w[np.asarray(ids)]
    mean = np.cumsum(v) / np.arange(1, len(ids) + 1)
    return 1.0 / (1.0 + np.exp(-mean))


def dump(obj: object) -> str:
    return json.dumps(obj)
