"""``prm export`` of a token-classification PRM, checked against TRL's convention.

The reference is independent of the library: TRL ``PRMTrainer.tokenize_row`` written out
with the transformers tokenizer, and the transformers model's own logits.
"""

from __future__ import annotations

import json
import shutil
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prm_plugins import ChainTooLongError, load_prm
from prm_plugins.errors import InvalidInputError, ModelIntegrityError, ModelLoadError, ParityError
from prm_plugins.manifest import Manifest, sha256_file

FORMAT = "token-classification"
CHAINS = [
    ("Tom has 3 apples and buys 2 more. How many apples does he have?",
     ["Tom has 3 apples.", "He buys 2 more, so 3 + 2 = 5.", "The answer is 5."]),
    ("Ann has 12 pens. She sells half. How many are left?",
     ["Half of 12 is 6.", "So 12 - 6 = 6 pens are left."]),
    ("What is 7 times 8?", ["7 * 8 = 56"]),
]


# -- the independent reference -------------------------------------------------------------
def trl_tokenize_row(tokenizer: Any, prompt: str, completions: list[str],
                     step_separator: str = "\n") -> tuple[list[int], list[int]]:
    """TRL ``PRMTrainer.tokenize_row``: input ids and the positions that carry a label."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completions_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
    separator_ids = tokenizer.encode(step_separator, add_special_tokens=False)
    completions_ids = [c + separator_ids for c in completions_ids]
    labels = [[-100] * (len(c) - 1) + [1] for c in completions_ids]
    if tokenizer.bos_token_id is not None:
        prompt_ids = [tokenizer.bos_token_id] + prompt_ids
    input_ids = prompt_ids + list(chain(*completions_ids))
    flat = [-100] * len(prompt_ids) + list(chain(*labels))
    return input_ids, [i for i, label in enumerate(flat) if label != -100]


@pytest.fixture(scope="module")
def hf(tiny_token_classifier_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_token_classifier_dir)
    model = AutoModelForTokenClassification.from_pretrained(tiny_token_classifier_dir).eval()
    return tok, model


def reference_scores(hf: tuple[Any, Any], question: str, steps: list[str]) -> list[float]:
    import torch

    tok, model = hf
    ids, positions = trl_tokenize_row(tok, question, steps)
    with torch.no_grad():
        probs = model(torch.tensor([ids])).logits.softmax(-1)[0, :, 1]
    return [float(probs[p]) for p in positions]


@pytest.fixture(scope="module")
def exported(tiny_token_classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory,
             export_small: Any) -> Path:
    return export_small(tiny_token_classifier_dir, tmp_path_factory.mktemp("tc") / "m", FORMAT)


# -- tests -----------------------------------------------------------------------------------
def test_scores_match_trl_reference(exported: Path, hf: tuple[Any, Any]) -> None:
    prm = load_prm(exported, device="cpu")
    results = prm.score_batch(CHAINS)
    for (question, steps), got in zip(CHAINS, results, strict=True):
        want = reference_scores(hf, question, steps)
        assert len(got.scores) == len(steps)
        np.testing.assert_allclose(got.scores, want, atol=1e-4)
    # The scores are not a constant: a wrong position would show.
    assert np.ptp([s for r in results for s in r.scores]) > 0.05


def test_graph_contract(exported: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = sess.get_outputs()
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert all(i.type == "tensor(int64)" for i in inputs.values())
    assert [o.name for o in outputs] == ["step_probs"] and outputs[0].type == "tensor(float)"
    for arg in [*inputs.values(), *outputs]:  # dynamic batch and sequence
        assert len(arg.shape) == 2 and all(isinstance(d, str) for d in arg.shape), arg.shape


def test_manifest_records_hashes_parity_versions_source(
    exported: Path, tiny_token_classifier_dir: Path
) -> None:
    man = Manifest.read(exported)
    assert man.format == FORMAT and man.dtype == "fp32"
    assert man.format_options == {"separator": "\n", "bos_token_id": None, "prompt_suffix": ""}
    assert man.max_length == 128  # the tiny model's max_position_embeddings
    assert isinstance(man.opset, int) and man.opset >= 17
    assert set(man.files) == {"model.onnx", "tokenizer.json"}
    for name, digest in man.files.items():
        assert sha256_file(exported / name) == digest
    par = man.parity
    assert par["passed"] is True and par["tolerance"] == 1e-4
    assert 0 <= par["max_abs_diff"] <= 1e-4 and par["mean_abs_diff"] <= par["max_abs_diff"]
    assert par["n_chains"] == 4 and par["padding_sides"] == ["right", "left"]
    assert [b for b, _ in par["shapes"]] == [1, 3]
    assert par["runtime_check"]["max_abs_diff"] <= 1e-4
    assert {"torch", "transformers", "onnx", "onnxruntime", "prm-plugins"} <= set(man.versions)
    assert man.source["model_dir"] == str(tiny_token_classifier_dir.resolve())
    assert man.source["architecture"] == "BertForTokenClassification"
    assert man.source["num_params"] > 10_000
    assert man.extra["pad_token_id"] == 0  # [PAD]
    assert sorted(p.name for p in exported.iterdir()) == ["model.onnx", "prm.json",
                                                          "tokenizer.json"]


def test_tampered_graph_is_refused(exported: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(exported, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_prm(copy, device="cpu")


def test_separator_and_special_tokens_in_steps(exported: Path, hf: tuple[Any, Any]) -> None:
    prm = load_prm(exported, device="cpu")
    steps = ["Tom has 3\napples.", "He buys [SEP] 2 [CLS] more.\n\n", "so [PAD] 5"]
    got = prm.score("How many apples?", steps)
    assert len(got.scores) == 3
    # Neutralised by hand: special tokens are broken; line breaks stay, as TRL tokenises
    # each step verbatim (issue 17 item 1: they used to become spaces).
    neutral = ["Tom has 3\napples.", "He buys [ SEP] 2 [ CLS] more.\n\n", "so [ PAD] 5"]
    np.testing.assert_allclose(got.scores, reference_scores(hf, "How many apples?", neutral),
                               atol=1e-4)


def test_long_chain_raises_or_is_windowed(exported: Path) -> None:
    steps = [f"Step {i}: add {i} and {i + 1} to get {2 * i + 1}." for i in range(30)]
    with pytest.raises(ChainTooLongError, match="max_length"):
        load_prm(exported, device="cpu").score("What is the sum?", steps)
    prm = load_prm(exported, device="cpu", long_chains="window")
    got = prm.score("What is the sum?", steps)
    assert len(got.scores) == len(steps)
    assert all(0.0 <= s <= 1.0 for s in got.scores)


def test_weights_past_the_threshold_go_to_external_data(
    tiny_token_classifier_dir: Path, tmp_path: Path, export_small: Any, hf: tuple[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prm_plugins.onnx_export.export as export

    monkeypatch.setattr(export, "EXTERNAL_DATA_THRESHOLD", 0)  # as if the model were > 2 GB
    out = export_small(tiny_token_classifier_dir, tmp_path / "ext", FORMAT, exporter="legacy")
    man = Manifest.read(out)
    assert set(man.files) == {"model.onnx", "model.onnx.data", "tokenizer.json"}
    assert (out / "model.onnx").stat().st_size < (out / "model.onnx.data").stat().st_size
    question, steps = CHAINS[0]
    np.testing.assert_allclose(load_prm(out, device="cpu").score(question, steps).scores,
                               reference_scores(hf, question, steps), atol=1e-4)
    with open(out / "model.onnx.data", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="model.onnx.data"):
        load_prm(out, device="cpu")


def test_parity_failure_writes_nothing(
    exported: Path, tiny_token_classifier_dir: Path, tmp_path: Path, export_small: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prm_plugins.onnx_export.parity as parity

    previous = tmp_path / "previous"
    shutil.copytree(exported, previous)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    real_run = parity.run_session
    monkeypatch.setattr(parity, "run_session",
                        lambda sess, ids, mask: real_run(sess, ids, mask) * 0.99 + 0.005)
    for out, kwargs in ((tmp_path / "new", {}), (previous, {"overwrite": True})):
        with pytest.raises(ParityError, match="fails parity") as info:
            export_small(tiny_token_classifier_dir, out, FORMAT, exporter="legacy", **kwargs)
        assert "tolerance 0.0001" in str(info.value)
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous"]  # no staging left


def test_int8_via_cli(tiny_token_classifier_dir: Path, tmp_path: Path, hf: tuple[Any, Any],
                      capsys: pytest.CaptureFixture[str]) -> None:
    from prm_plugins.cli import main

    out = tmp_path / "int8"
    # A 32-wide random BERT is near the int8 default (max |Δp| 0.1); trained PRMs sit well
    # inside it. The test sets its own bound, which must reach the manifest.
    code = main(["export", str(tiny_token_classifier_dir), str(out), "--format", FORMAT,
                 "--quantize", "int8", "--exporter", "legacy", "--parity-chains", "4",
                 "--parity-batch-sizes", "1", "3", "--parity-max-tokens", "96",
                 "--tolerance", "0.25", "--mean-tolerance", "0.05", "--checks", "arithmetic",
                 "--quantize-embeddings", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["dtype"] == "int8" and summary["out_dir"] == str(out)
    man = Manifest.read(out)
    assert man.dtype == "int8" and set(man.files) == {"model.onnx", "tokenizer.json"}
    assert man.parity["tolerance"] == 0.25 and man.parity["mean_tolerance"] == 0.05
    assert man.parity["max_abs_diff"] <= 0.25 and man.parity["mean_abs_diff"] <= 0.05
    assert man.parity["fp32_graph"]["max_abs_diff"] <= 1e-4
    assert man.parity["fp32_graph"]["tolerance"] == 1e-4  # the fp32 graph keeps its own
    assert man.extra["quantization"]["weight_type"] == "QInt8"
    assert man.extra["quantization"]["op_types"] == ["MatMul", "Gemm", "Gather"]
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "prm.json", "tokenizer.json"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    # --quantize-embeddings: the embedding tables are stored as int8 and dequantised.
    assert "DequantizeLinear" in ops
    assert man.extra["checks"] == ["arithmetic"]  # the runtime applies it by default
    assert load_prm(out, device="cpu").checks == ("arithmetic",)
    prm = load_prm(out, device="cpu", checks=())
    for question, steps in CHAINS:
        np.testing.assert_allclose(prm.score(question, steps).scores,
                                   reference_scores(hf, question, steps), atol=0.25)


def test_int8_weights_scores_a_chain_the_same_in_any_batch(
        tiny_token_classifier_dir: Path, tmp_path: Path, hf: tuple[Any, Any],
        export_small: Any) -> None:
    out = export_small(tiny_token_classifier_dir, tmp_path / "w8", FORMAT, exporter="legacy",
                       quantize="int8-weights", tolerance=0.25, mean_tolerance=0.05)
    man = Manifest.read(out)
    assert man.dtype == "int8" and man.extra["quantization"]["batch_independent"] is True
    assert man.extra["quantization"]["method"].endswith("MatMulNBitsQuantizer")
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "MatMulNBits" in ops and not ops & {"DynamicQuantizeLinear", "MatMulInteger"}
    prm = load_prm(out, device="cpu")
    long_chain = ("Q: " + "big numbers 987654 " * 3, ["9 * 9 = 81 " * 3, "81 + 1 = 82"])
    for question, steps in CHAINS:
        alone = prm.score(question, steps).scores
        # the same chain batched behind a long chain with other activations: same scores
        batched = prm.score_batch([long_chain, (question, steps)])[1].scores
        assert batched == alone
        np.testing.assert_allclose(alone, reference_scores(hf, question, steps), atol=0.25)


def test_cli_refuses_non_empty_out_dir(tiny_token_classifier_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from prm_plugins.cli import main

    (tmp_path / "notes.txt").write_text("mine")
    code = main(["export", str(tiny_token_classifier_dir), str(tmp_path), "--format", FORMAT])
    assert code == 2
    assert "not empty" in capsys.readouterr().err
    code = main(["export", str(tiny_token_classifier_dir), str(tmp_path), "--format", FORMAT,
                 "--overwrite"])
    assert code == 2
    assert "not a model directory" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_bad_settings_are_refused_early(tiny_token_classifier_dir: Path, tmp_path: Path,
                                        export_small: Any) -> None:
    from prm_plugins.onnx_export.export import resolve_max_length

    with pytest.raises(InvalidInputError, match="unknown option"):
        export_small(tiny_token_classifier_dir, tmp_path / "a", FORMAT,
                     format_options={"seperator": "\n"})
    with pytest.raises(InvalidInputError, match="--quantize-embeddings needs --quantize int8"):
        export_small(tiny_token_classifier_dir, tmp_path / "a", FORMAT, quantize_embeddings=True)
    with pytest.raises(InvalidInputError, match="unknown step check.*known checks: arithmetic"):
        export_small(tiny_token_classifier_dir, tmp_path / "a", FORMAT, checks=("spelling",))
    with pytest.raises(InvalidInputError, match="context of 128"):
        export_small(tiny_token_classifier_dir, tmp_path / "b", FORMAT, max_length=4096)
    with pytest.raises(InvalidInputError, match="checkpoint directory"):
        export_small(tiny_token_classifier_dir, tiny_token_classifier_dir, FORMAT)
    with pytest.raises(InvalidInputError, match="int8 starts from the fp32"):
        export_small(tiny_token_classifier_dir, tmp_path / "c", FORMAT, dtype="fp16",
                     quantize="int8")
    assert not any(tmp_path.iterdir())

    class Cfg:
        max_position_embeddings = 131072

    assert resolve_max_length(None, Cfg()) == 4096
    assert resolve_max_length(1000, Cfg()) == 1000


def test_only_safetensors_checkpoints_load(tiny_token_classifier_dir: Path,
                                           tmp_path: Path) -> None:
    from prm_plugins.onnx_export.checkpoint import load_pretrained

    ckpt = tmp_path / "bin-only"
    ckpt.mkdir()
    shutil.copy(tiny_token_classifier_dir / "config.json", ckpt)
    (ckpt / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_pretrained("AutoModelForTokenClassification", ckpt, None)
