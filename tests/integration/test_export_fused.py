"""``prm export --optimize fused``: opset-23 Attention/RMSNormalization/RotaryEmbedding graphs.

Tiny random-weight Qwen2, Llama and Mistral decoder PRMs are exported fused; the tests check the
fused ops are there in the numbers the architecture implies, that the graph matches the
torch wrapper on left- and right-padded batches on ONNX Runtime's CPU provider, that
``prm.json`` carries the counts and parity, and that an encoder is refused with a clear error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prm_plugins.errors import InvalidInputError
from prm_plugins.manifest import Manifest

from support.tiny_chat_models import make_tiny_qwen_prm, pad_rendered

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

LAYERS = 2  # the tiny builders' default
#: A tiny decoder's fused ops: one Attention per layer, two RMSNorms per layer + the final
#: one, Q and K rotary per layer.
FUSED_OPS = {"Attention": LAYERS, "RMSNormalization": 2 * LAYERS + 1,
             "RotaryEmbedding": 2 * LAYERS}
QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have?"
CHAINS: list[tuple[str, list[str]]] = [
    (QUESTION, ["Tom has 3 apples.", "He buys 2 more, so 3 + 2 = 5.", "The answer is 5."]),
    (QUESTION, ["3 + 2 = 5"]),
    ("How many pens?", ["Ann has 4 pens", "she sells 1", "so 4 - 1 = 3", "answer 3"]),
]


@pytest.fixture(scope="module")
def qwen_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_qwen_prm(tmp_path_factory.mktemp("fused_qwen") / "ckpt")


@pytest.fixture(scope="module")
def qwen_fused(qwen_ckpt: Path, tmp_path_factory: pytest.TempPathFactory,
               export_small: Callable[..., Path]) -> Path:
    return export_small(qwen_ckpt, tmp_path_factory.mktemp("fused_qwen_out") / "m", "qwen-prm",
                        optimize="fused")


@pytest.fixture(scope="module")
def llama_fused(tiny_causal_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                export_cli: Callable[..., Path]) -> Path:
    """Through the command line a user types: ``prm export ... --optimize fused``."""
    out = tmp_path_factory.mktemp("fused_llama") / "m"
    return export_cli(tiny_causal_lm_dir, out, "math-shepherd", "--optimize", "fused",
                      "--parity-batch-sizes", "1", "3", "--parity-max-tokens", "96")


@pytest.fixture(scope="module")
def mistral_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The third decoder family of the issue: a Mistral trunk (sliding-window config)."""
    from support.tiny_models import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("fused_mistral") / "ckpt",
                               arch="mistral", config_overrides={"sliding_window": 4096})


@pytest.fixture(scope="module")
def mistral_fused(mistral_ckpt: Path, tmp_path_factory: pytest.TempPathFactory,
                  export_small: Callable[..., Path]) -> Path:
    return export_small(mistral_ckpt, tmp_path_factory.mktemp("fused_mistral_out") / "m",
                        "math-shepherd", optimize="fused")


def graph_ops(model_dir: Path) -> dict[str, int]:
    from prm_plugins.onnx_export.fuse import count_ops

    return count_ops(onnx.load(str(model_dir / "model.onnx"), load_external_data=False))


def torch_vs_graph(model_dir: Path, ckpt: Path, format_name: str) -> dict[str, float]:
    """max |Δp| at step positions between the torch wrapper and the graph, per padding side.

    Independent of the export's own parity check: the batch here is made by the test.
    """
    from prm_plugins.onnx_export.parity import onnx_session
    from prm_plugins.onnx_export.wrappers import build_step_prob_model
    from prm_plugins.runtime import OnnxPRM

    prm = OnnxPRM(model_dir, device="cpu")
    man = prm.manifest
    model = build_step_prob_model(format_name, ckpt, man.format_options, torch.float32)
    session = onnx_session(model_dir / "model.onnx")
    rendered = [prm.format.render(q, s) for q, s in CHAINS]
    worst = {}
    for side in ("right", "left"):
        ids, mask, offsets = pad_rendered([r.input_ids for r in rendered], side, extra=5,
                                          pad_id=man.extra["pad_token_id"])
        with torch.inference_mode():
            want = model(ids, mask).numpy()
        got = session.run(["step_probs"], {"input_ids": ids.numpy(),
                                           "attention_mask": mask.numpy()})[0]
        diffs = [np.abs(got[r, np.asarray(row.step_positions) + offsets[r]]
                        - want[r, np.asarray(row.step_positions) + offsets[r]])
                 for r, row in enumerate(rendered)]
        worst[side] = float(np.concatenate(diffs).max())
        assert np.isfinite(got[mask.numpy().astype(bool)]).all()
    return worst


def test_qwen_prm_fused_graph_has_the_fused_ops(qwen_fused: Path) -> None:
    ops = graph_ops(qwen_fused)
    # one Attention per layer, two RMSNorms per layer + the final one, Q and K rotary per layer
    assert ops.get("Attention") == LAYERS
    assert ops.get("RMSNormalization") == 2 * LAYERS + 1
    assert ops.get("RotaryEmbedding") == 2 * LAYERS
    # attention is not MatMul-Softmax-MatMul any more: the only Softmax is the 2-class head's
    assert ops.get("Softmax", 0) == 1
    # grouped K/V go into Attention unexpanded (4 query heads, 2 K/V heads in the tiny model)
    assert ops.get("Expand", 0) <= 2
    proto = onnx.load(str(qwen_fused / "model.onnx"), load_external_data=False)
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 23


def test_qwen_prm_fused_manifest_carries_counts_and_parity(qwen_fused: Path) -> None:
    man = Manifest.read(qwen_fused)
    fusion = man.fusion
    assert fusion["mode"] == "fused"
    assert fusion["fused_ops"] == FUSED_OPS
    assert fusion["fusions"]["RepeatKVIntoAttention"] == 2 * LAYERS
    assert fusion["nodes_after"] < fusion["nodes_before"]
    assert fusion["ops_before"].get("RotaryEmbedding", 0) == 0  # fused here, not before
    assert fusion["ops_after"] == graph_ops(qwen_fused)
    fp32 = fusion["parity"]["fp32"]
    assert set(fp32["by_padding"]) == {"left", "right"}
    assert fp32["max_abs_diff"] <= 1e-4
    assert fp32["provider"] == "CPUExecutionProvider"
    assert "not measured" in fusion["parity"]["fp16"]
    assert man.opset == 23
    # the export's own parity and runtime check ran on the fused graph
    assert man.parity["passed"] and man.parity["runtime_check"]["max_abs_diff"] <= 1e-4


#: (fused graph fixture, its checkpoint's fixture, format) of each decoder family: Qwen2
#: exported through the API, Llama through the command line, Mistral through the API.
FUSED_DECODERS = [
    pytest.param("qwen_fused", "qwen_ckpt", "qwen-prm", id="qwen2-qwen-prm"),
    pytest.param("llama_fused", "tiny_causal_lm_dir", "math-shepherd",
                 id="llama-math-shepherd-cli"),
    pytest.param("mistral_fused", "mistral_ckpt", "math-shepherd", id="mistral-math-shepherd"),
]


@pytest.mark.parametrize("graph, ckpt, format_name", FUSED_DECODERS)
def test_fused_decoder_matches_torch_on_padded_batches(
    graph: str, ckpt: str, format_name: str, request: pytest.FixtureRequest
) -> None:
    model_dir = request.getfixturevalue(graph)
    assert Manifest.read(model_dir).fusion["fused_ops"] == FUSED_OPS
    worst = torch_vs_graph(model_dir, request.getfixturevalue(ckpt), format_name)
    assert worst["right"] < 1e-4 and worst["left"] < 1e-4, worst


def test_cli_summary_reports_fused_ops(llama_fused: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from prm_plugins.cli.export import print_summary as _summary

    _summary(llama_fused, as_json=False)
    assert (f"fused graph: Attention {LAYERS}, RMSNormalization {2 * LAYERS + 1}, "
            f"RotaryEmbedding {2 * LAYERS}") in capsys.readouterr().out
    _summary(llama_fused, as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["fusion"]["fused_ops"]["Attention"] == LAYERS


def test_fused_and_plain_graphs_score_alike(llama_fused: Path, tiny_causal_lm_dir: Path,
                                            tmp_path: Path,
                                            export_small: Callable[..., Path]) -> None:
    from prm_plugins.runtime import OnnxPRM

    plain = export_small(tiny_causal_lm_dir, tmp_path / "plain", "math-shepherd",
                         parity_chains=2, parity_batch_sizes=(2,))
    assert Manifest.read(plain).fusion == {"mode": "plain"}
    assert "Attention" not in graph_ops(plain)
    a = OnnxPRM(plain, device="cpu", checks=()).score_batch(CHAINS)
    b = OnnxPRM(llama_fused, device="cpu", checks=()).score_batch(CHAINS)
    # the fused graph through the bucketed IO-binding path the GPU uses
    c = OnnxPRM(llama_fused, device="cpu", checks=(), buckets="auto",
                io_binding=True).score_batch(CHAINS)
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_allclose(x.scores, y.scores, atol=1e-5)
        assert z.scores == y.scores


def test_encoder_with_fused_is_refused(tiny_token_classifier_dir: Path, tmp_path: Path,
                                       export_small: Callable[..., Path]) -> None:
    from prm_plugins.onnx_export.fuse import FusionError

    out = tmp_path / "bert"
    with pytest.raises(FusionError, match=r"--optimize plain") as err:
        export_small(tiny_token_classifier_dir, out, "token-classification", optimize="fused")
    assert "Bert" in str(err.value) and "rms_norm_eps" in str(err.value)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(("fields", "match"), [
    ({"exporter": "legacy"}, "--exporter dynamo"),
    ({"opset": 20}, "opset 23"),
    ({"quantize": "int8"}, "choose one"),
    ({"optimize": "turbo"}, "optimize must be one of"),
])
def test_fused_config_errors(fields: dict[str, Any], match: str) -> None:
    from prm_plugins.onnx_export.export import ExportConfig

    config = ExportConfig("ckpt", "out", format="qwen-prm",
                          **{"optimize": "fused", **fields})
    with pytest.raises(InvalidInputError, match=match):
        config.validate()


def _tiny_graph(opset: int, ops: list[str]) -> Any:
    """A one-input float graph chaining ``ops`` (unary ops that keep the shape)."""
    from onnx import TensorProto, helper

    nodes, prev = [], "x"
    for i, op in enumerate(ops):
        nodes.append(helper.make_node(op, [prev], [f"y{i}"]))
        prev = f"y{i}"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_fuse_refuses_graph_without_fusable_ops(tmp_path: Path) -> None:
    from prm_plugins.onnx_export.fuse import FusionError, fuse_decoder_graph

    src = tmp_path / "g.onnx"
    onnx.save(_tiny_graph(23, ["Relu", "Sigmoid"]), str(src))
    with pytest.raises(FusionError, match="no Attention, RMSNormalization, RotaryEmbedding"):
        fuse_decoder_graph(src, tmp_path / "out.onnx", what="tiny")
    assert not (tmp_path / "out.onnx").exists()
    onnx.save(_tiny_graph(20, ["Relu"]), str(src))
    with pytest.raises(FusionError, match="opset 20"):
        fuse_decoder_graph(src, tmp_path / "out.onnx")


def test_fuse_writes_external_data(qwen_fused: Path, tmp_path: Path) -> None:
    """Refusing an already fused graph is a no-op that keeps the ops; >2 GB graphs keep
    their weights beside the graph."""
    from prm_plugins.onnx_export.fuse import fuse_decoder_graph
    from prm_plugins.onnx_export.parity import onnx_session

    dst = tmp_path / "model.onnx"
    report = fuse_decoder_graph(qwen_fused / "model.onnx", dst, external_data=True)
    assert report.fused_ops["Attention"] == LAYERS
    assert (tmp_path / "model.onnx.data").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    ids = np.array([[3, 4, 5, 6, 0, 0]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1, 0, 0]], dtype=np.int64)
    a = onnx_session(dst).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    b = onnx_session(qwen_fused / "model.onnx").run(
        None, {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_array_equal(a[mask.astype(bool)], b[mask.astype(bool)])


def test_manifest_without_fusion_still_loads(qwen_fused: Path, tmp_path: Path) -> None:
    data = json.loads((qwen_fused / "prm.json").read_text())
    del data["fusion"]
    (tmp_path / "prm.json").write_text(json.dumps(data))
    old = Manifest.read(tmp_path)
    assert old.fusion == {} and old.format == "qwen-prm" and "fusion" not in old.extra


@pytest.mark.slow
def test_qwen_prm_fused_fp16_on_cpu(qwen_ckpt: Path, tmp_path: Path,
                                    export_small: Callable[..., Path]) -> None:
    """fp16 trunk: rotary cos/sin pass a Cast, which RotaryEmbeddingCast fuses; ORT 1.31's
    CPU provider runs the fp16 graph, so parity is measured here too."""
    out = export_small(qwen_ckpt, tmp_path / "fp16", "qwen-prm", optimize="fused",
                       dtype="fp16")
    man = Manifest.read(out)
    assert man.dtype == "fp16"
    assert man.fusion["fusions"]["RotaryEmbeddingCast"] == 2 * LAYERS
    assert man.fusion["fused_ops"]["RotaryEmbedding"] == 2 * LAYERS
    assert man.fusion["parity"]["fp16"]["max_abs_diff"] <= 2e-2


@pytest.mark.slow
@pytest.mark.parametrize("family", ["skywork", "rlhflow"])
def test_other_decoder_formats_fuse(family: str, tmp_path: Path,
                                    export_small: Callable[..., Path]) -> None:
    from support import tiny_chat_models

    ckpt = getattr(tiny_chat_models, f"make_tiny_{family}_prm")(tmp_path / "ckpt")
    out = export_small(ckpt, tmp_path / "m", family, optimize="fused")
    man = Manifest.read(out)
    assert man.fusion["fused_ops"] == FUSED_OPS
    assert man.parity["passed"] and man.parity["by_padding"]["left"]["max_abs_diff"] <= 1e-4
