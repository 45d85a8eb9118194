"""Models that lie, and model directories that cheat, are refused with a clear error.

Every graph here is real ONNX built with ``onnx.helper`` and run by onnxruntime: the running-
mean contract graph of :mod:`graph_models`, with a tail that makes it lie (NaN, 1.5, rank 3,
one token short, one row short). Model directories are the ones ``make_model_dir`` writes,
then broken one way each: a manifest field of the wrong type, external data the manifest does
not list, a symlink that leaves the directory, a file swapped between its hash check and its
use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prm_plugins import ModelIntegrityError, ModelLoadError, PRMError, load_prm
from prm_plugins.errors import ManifestError, ModelOutputError
from prm_plugins.manifest import Manifest, external_data_files, sha256_file

try:
    import onnx
    from onnx import TensorProto, helper
except ImportError:
    pytest.skip("the model integrity tests build graphs with onnx: "
                "pip install 'prm-plugins[export]'", allow_module_level=True)

from support.graph_models import VOCAB, make_model_dir, reference_probs, token_weights

Q = "w1 w2 w3 + w4 = ?"
STEPS = ["w5 w6 = 7", "w7 + 8 = w9", "w10 .", "w11 w12 w13 w14"]

Tail = Callable[[str], tuple[list[Any], list[Any], str, list[Any]]]


def _scalar(name: str, value: float, dtype: int = TensorProto.FLOAT) -> Any:
    return helper.make_tensor(name, dtype, [], [value])


def build_graph(path: Path, tail: Tail | None = None, *, weights: np.ndarray | None = None,
                out_shape: list[Any] | None = None, external: str | None = None) -> None:
    """The running-mean graph; ``tail(probs_name)`` may add nodes that make it lie.

    ``tail`` returns (nodes, initializers, output name, declared output shape).
    """
    w = token_weights() if weights is None else weights
    nodes = [
        helper.make_node("Gather", ["w", "input_ids"], ["v"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["v", "m"], ["vm"]),
        helper.make_node("CumSum", ["vm", "axis"], ["cs"]),
        helper.make_node("CumSum", ["m", "axis"], ["cn"]),
        helper.make_node("Max", ["cn", "one"], ["cn1"]),
        helper.make_node("Div", ["cs", "cn1"], ["mean"]),
        helper.make_node("Sigmoid", ["mean"], ["p"]),
    ]
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [len(w)], w.astype("<f4").tobytes(),
                                raw=True),
             helper.make_tensor("axis", TensorProto.INT64, [], [1]), _scalar("one", 1.0)]
    out, shape, out_type = "p", out_shape or ["B", "T"], TensorProto.FLOAT
    if tail is not None:
        more_nodes, more_inits, out, shape = tail("p")
        nodes += more_nodes
        inits += more_inits
    nodes.append(helper.make_node("Identity", [out], ["step_probs"]))
    graph = helper.make_graph(
        nodes, "lying_prm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "T"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "T"])],
        [helper.make_tensor_value_info("step_probs", out_type, out_shape or shape)],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external is not None:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=external, size_threshold=0)
    else:
        onnx.save(model, str(path))


def rehash(d: Path, names: list[str] | None = None) -> None:
    man = Manifest.read(d)
    man.hash_files(d, names or ["model.onnx", "tokenizer.json"])
    man.write(d)


def model_with(tmp_path: Path, tail: Tail | None, **kw: Any) -> Path:
    d = make_model_dir(tmp_path / "m", max_length=64)
    build_graph(d / "model.onnx", tail, **kw)
    rehash(d)
    return d


def add_const(value: float) -> Tail:
    def tail(p: str) -> tuple[list[Any], list[Any], str, list[Any]]:
        return ([helper.make_node("Mul", [p, "zero"], ["p0"]),
                 helper.make_node("Add", ["p0", "c"], ["pc"])],
                [_scalar("zero", 0.0), _scalar("c", value)], "pc", ["B", "T"])
    return tail


def add_offset(value: float) -> Tail:
    def tail(p: str) -> tuple[list[Any], list[Any], str, list[Any]]:
        return [helper.make_node("Add", [p, "c"], ["pc"])], [_scalar("c", value)], "pc", \
            ["B", "T"]
    return tail


def rank3(p: str) -> tuple[list[Any], list[Any], str, list[Any]]:
    return ([helper.make_node("Unsqueeze", [p, "ax2"], ["p3"])],
            [helper.make_tensor("ax2", TensorProto.INT64, [1], [2])], "p3", ["B", "T", 1])


def hidden_rank3(p: str) -> tuple[list[Any], list[Any], str, list[Any]]:
    """Rank 3 at run time behind an ``If`` whose branches differ, so no load-time check sees
    it (the declared output stays [B, T])."""
    then = helper.make_graph(
        [helper.make_node("Unsqueeze", [p, "ax2"], ["p3"])], "then", [],
        [helper.make_tensor_value_info("p3", TensorProto.FLOAT, None)])
    other = helper.make_graph(
        [helper.make_node("Identity", [p], ["p2"])], "else", [],
        [helper.make_tensor_value_info("p2", TensorProto.FLOAT, None)])
    return ([helper.make_node("ReduceMax", ["m"], ["mx"], keepdims=0),
             helper.make_node("Greater", ["mx", "zero"], ["any"]),
             helper.make_node("If", ["any"], ["pr"], then_branch=then, else_branch=other)],
            [helper.make_tensor("ax2", TensorProto.INT64, [1], [2]), _scalar("zero", 0.0)],
            "pr", ["B", "T"])


def _slice(axis: int) -> Tail:
    def tail(p: str) -> tuple[list[Any], list[Any], str, list[Any]]:
        return ([helper.make_node("Slice", [p, "st", "en", "ax"], ["ps"])],
                [helper.make_tensor("st", TensorProto.INT64, [1], [0]),
                 helper.make_tensor("en", TensorProto.INT64, [1], [-1]),
                 helper.make_tensor("ax", TensorProto.INT64, [1], [axis])], "ps", ["B", "T"])
    return tail


def as_double(p: str) -> tuple[list[Any], list[Any], str, list[Any]]:
    return [helper.make_node("Cast", [p], ["pi"], to=TensorProto.INT64)], [], "pi", ["B", "T"]


def expected(prm: Any, question: str, steps: list[str]) -> list[float]:
    r = prm.format.render(question, steps)
    probs = reference_probs(r.input_ids)
    return [float(probs[p]) for p in r.step_positions]


# -- 1. outputs are checked on every run -------------------------------------------------------
LIES = {
    "nan": (add_const(float("nan")), "not finite"),
    "inf": (add_offset(float("inf")), "not finite"),
    "above one": (add_const(1.5), r"outside \[0, 1\]"),
    "negative": (add_const(-0.25), r"outside \[0, 1\]"),
    "rank 3": (hidden_rank3, r"shape \(\d+, \d+, 1\)"),
    "one token short": (_slice(1), r"shape \(\d+, \d+\).*expected \(\d+, \d+\)"),
}
RUN_PATHS = {"session.run": {}, "io binding": {"io_binding": True},
             "io binding, buckets": {"io_binding": True, "buckets": "auto"},
             "buckets": {"buckets": [16, 32, 64]}}


@pytest.mark.parametrize("lie", list(LIES))
@pytest.mark.parametrize("path", list(RUN_PATHS))
def test_a_lying_graph_raises_naming_the_model(tmp_path: Path, lie: str, path: str) -> None:
    tail, message = LIES[lie]
    if path == "io binding, buckets" and lie in ("rank 3", "one token short"):
        message = "shape"  # the output buffer is preallocated: ONNX Runtime itself refuses
    d = model_with(tmp_path, tail)
    prm = load_prm(d, device="cpu", checks=(), **RUN_PATHS[path])
    with pytest.raises(ModelOutputError, match=message) as err:
        prm.score_batch([(Q, STEPS), (Q, STEPS[:2])])
    assert str(d) in str(err.value)
    assert isinstance(err.value, PRMError)


def test_a_row_short_graph_raises(tmp_path: Path) -> None:
    d = model_with(tmp_path, _slice(0))
    prm = load_prm(d, device="cpu", checks=())
    with pytest.raises(ModelOutputError, match=r"shape \(2, \d+\) for inputs of shape \(3,"):
        prm.score_batch([(Q, STEPS), (Q, STEPS[:2]), (Q, STEPS[:3])])


def test_a_non_float_output_is_refused(tmp_path: Path) -> None:
    d = model_with(tmp_path, as_double, out_shape=None)
    # the declared output is float, the real one int64: caught at load or on the first run
    with pytest.raises(PRMError, match="int64|float"):
        load_prm(d, device="cpu", checks=()).score(Q, STEPS)


def test_run_graph_is_checked_too(tmp_path: Path) -> None:
    prm = load_prm(model_with(tmp_path, add_const(float("nan"))), device="cpu", checks=())
    ids = np.array([[2, 5, 6, 3]], dtype=np.int64)
    with pytest.raises(ModelOutputError, match="not finite"):
        prm.run_graph(ids, np.ones_like(ids))


def test_values_a_hair_outside_are_clipped_not_refused(tmp_path: Path) -> None:
    prm = load_prm(model_with(tmp_path, add_const(1.0 + 2e-6)), device="cpu", checks=(),
                   calibrate=False)
    assert prm.score(Q, STEPS).scores == [1.0] * len(STEPS)
    prm = load_prm(model_with(tmp_path / "neg", add_const(-2e-6)), device="cpu", checks=())
    assert prm.score(Q, STEPS).scores == [0.0] * len(STEPS)


def test_nan_in_padding_only_is_not_an_error(tmp_path: Path) -> None:
    """A graph may give NaN where the mask is 0 (softmax over no keys); nothing reads it."""
    def nan_where_masked(p: str) -> tuple[list[Any], list[Any], str, list[Any]]:
        return ([helper.make_node("Cast", ["attention_mask"], ["mb"], to=TensorProto.BOOL),
                 helper.make_node("Where", ["mb", p, "nan"], ["pn"])],
                [_scalar("nan", float("nan"))], "pn", ["B", "T"])

    prm = load_prm(model_with(tmp_path, nan_where_masked), device="cpu", checks=())
    got = prm.score_batch([(Q, STEPS), (Q, STEPS[:1])])
    np.testing.assert_allclose(got[1].scores, expected(prm, Q, STEPS[:1]), atol=1e-6)


def test_a_declared_rank_3_output_is_refused_at_load(tmp_path: Path) -> None:
    d = model_with(tmp_path, rank3, out_shape=["B", "T", 1])
    with pytest.raises(ModelLoadError, match=r"rank|\[B, T\]"):
        load_prm(d, device="cpu")


# -- 2. every file the graph reads is hashed, and what is hashed is what is used -----------------
def test_external_data_parser_agrees_with_onnx(tmp_path: Path) -> None:
    build_graph(tmp_path / "g.onnx", external="weights.bin")
    names = {t.name for t in onnx.load(str(tmp_path / "g.onnx"), load_external_data=False)
             .graph.initializer}
    assert names == {"w", "axis", "one"}
    assert external_data_files((tmp_path / "g.onnx").read_bytes()) == {"weights.bin"}
    build_graph(tmp_path / "plain.onnx")
    assert external_data_files((tmp_path / "plain.onnx").read_bytes()) == set()
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        external_data_files(b"\xff" * 40)


def test_unlisted_external_data_is_refused(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path / "m", max_length=64)
    build_graph(d / "model.onnx", external="weights.bin")
    rehash(d)  # lists model.onnx and tokenizer.json, not weights.bin
    with pytest.raises(ModelLoadError, match="weights.bin.*not listed"):
        load_prm(d, device="cpu")
    rehash(d, ["model.onnx", "tokenizer.json", "weights.bin"])
    prm = load_prm(d, device="cpu", checks=())
    np.testing.assert_allclose(prm.score(Q, STEPS).scores, expected(prm, Q, STEPS), atol=1e-6)
    # and a tampered data file is now caught
    data = bytearray((d / "weights.bin").read_bytes())
    data[0] ^= 0xFF
    (d / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="weights.bin does not match"):
        load_prm(d, device="cpu")


@pytest.mark.parametrize("location", ["../outside.bin", "/tmp/outside.bin", "a/../../x.bin"])
def test_external_data_outside_the_directory_is_refused(tmp_path: Path, location: str) -> None:
    d = make_model_dir(tmp_path / "m", max_length=64)
    build_graph(d / "model.onnx", external="weights.bin")
    model = onnx.load(str(d / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    (d / "model.onnx").write_bytes(model.SerializeToString())
    rehash(d, ["model.onnx", "tokenizer.json", "weights.bin"])
    with pytest.raises(ModelLoadError, match=re.escape(repr(location))):
        load_prm(d, device="cpu")
    with pytest.raises(ModelLoadError, match=re.escape(repr(location))):
        load_prm(d, device="cpu", verify=False)


@pytest.fixture
def swap_after_hash(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path, bytes], list[str]]:
    """Replace a file on disk right after its verified hash is computed (a TOCTOU attacker)."""
    real = hashlib.sha256

    def arm(path: Path, replacement: bytes) -> list[str]:
        expected = sha256_file(path)
        fired: list[str] = []

        class Spy:
            def __init__(self, data: bytes = b"") -> None:
                self._h = real(data)

            def update(self, data: bytes) -> None:
                self._h.update(data)

            def hexdigest(self) -> str:
                digest = self._h.hexdigest()
                if digest == expected and not fired:
                    path.write_bytes(replacement)
                    fired.append(path.name)
                return digest

        monkeypatch.setattr(hashlib, "sha256", Spy)
        return fired

    return arm


def test_a_model_swapped_after_verification_is_not_used(
        tmp_path: Path, swap_after_hash: Callable[[Path, bytes], list[str]]) -> None:
    d = make_model_dir(tmp_path / "m", max_length=64)
    build_graph(tmp_path / "evil.onnx", add_const(0.99))
    fired = swap_after_hash(d / "model.onnx", (tmp_path / "evil.onnx").read_bytes())
    prm = load_prm(d, device="cpu", checks=())
    assert fired == ["model.onnx"]  # the swap happened, after the check
    np.testing.assert_allclose(prm.score(Q, STEPS).scores, expected(prm, Q, STEPS), atol=1e-6)


def test_external_data_swapped_after_verification_is_not_used(
        tmp_path: Path, swap_after_hash: Callable[[Path, bytes], list[str]]) -> None:
    d = make_model_dir(tmp_path / "m", max_length=64)
    build_graph(d / "model.onnx", external="weights.bin")
    rehash(d, ["model.onnx", "tokenizer.json", "weights.bin"])
    evil = bytearray((d / "weights.bin").read_bytes())
    evil[: 4 * len(VOCAB)] = (-token_weights()).tobytes()  # "w" comes first in the file
    fired = swap_after_hash(d / "weights.bin", bytes(evil))
    prm = load_prm(d, device="cpu", checks=())
    assert fired == ["weights.bin"]
    np.testing.assert_allclose(prm.score(Q, STEPS).scores, expected(prm, Q, STEPS), atol=1e-6)


def test_a_tokenizer_swapped_after_verification_is_not_used(
        tmp_path: Path, swap_after_hash: Callable[[Path, bytes], list[str]]) -> None:
    d = make_model_dir(tmp_path / "m", max_length=64)
    tok = json.loads((d / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    words = [k for k in vocab if k.startswith("w")]
    half = len(words) // 2
    for a, b in zip(words[:half], words[::-1][:half], strict=True):  # same tokens, other ids
        vocab[a], vocab[b] = vocab[b], vocab[a]
    assert vocab["w0"] != VOCAB.index("w0")
    fired = swap_after_hash(d / "tokenizer.json", json.dumps(tok).encode())
    prm = load_prm(d, device="cpu", checks=())
    assert fired == ["tokenizer.json"]
    assert prm.tokenizer.token_to_id("w0") == VOCAB.index("w0")
    np.testing.assert_allclose(prm.score(Q, STEPS).scores, expected(prm, Q, STEPS), atol=1e-6)


# -- 3. the manifest is validated, one error naming the field ----------------------------------
BAD_FIELDS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("max_length 'abc'", lambda m: m.update(max_length="abc"), "max_length"),
    ("max_length null", lambda m: m.update(max_length=None), "max_length"),
    ("max_length 0", lambda m: m.update(max_length=0), "max_length"),
    ("max_length huge", lambda m: m.update(max_length=10**30), "max_length"),
    ("max_length bool", lambda m: m.update(max_length=True), "max_length"),
    ("max_length float", lambda m: m.update(max_length=64.5), "max_length"),
    ("format null", lambda m: m.update(format=None), "format"),
    ("format list", lambda m: m.update(format=["token-classification"]), "format"),
    ("format_options list", lambda m: m.update(format_options=["[SEP]"]), "format_options"),
    ("format_options null", lambda m: m.update(format_options=None), "format_options"),
    ("files list", lambda m: m.update(files=["model.onnx"]), "files"),
    ("files hash int", lambda m: m["files"].update({"model.onnx": 5}), "files"),
    ("files hash short", lambda m: m["files"].update({"model.onnx": "abc"}), "files"),
    ("extra list", lambda m: m.update(extra=[1]), "extra"),
    ("parity str", lambda m: m.update(parity="ok"), "parity"),
    ("opset str", lambda m: m.update(opset="17"), "opset"),
    ("dtype int", lambda m: m.update(dtype=32), "dtype"),
    ("dtype unknown", lambda m: m.update(dtype="fp7"), "dtype"),
    ("model_file abs", lambda m: m.update(model_file="/etc/passwd"), "model_file"),
    ("model_file up", lambda m: m.update(model_file="../model.onnx"), "model_file"),
    ("tokenizer_file int", lambda m: m.update(tokenizer_file=3), "tokenizer_file"),
    ("manifest_version str", lambda m: m.update(manifest_version="1"), "manifest_version"),
    ("negative bos", lambda m: m["format_options"].update(bos_token_id=-1), "bos_token_id"),
    ("huge bos", lambda m: m["format_options"].update(bos_token_id=10**30), "bos_token_id"),
    ("bos out of vocab", lambda m: m["format_options"].update(bos_token_id=len(VOCAB)),
     "bos_token_id"),
    ("bos str", lambda m: m["format_options"].update(bos_token_id="2"), "bos_token_id"),
    ("bos bool", lambda m: m["format_options"].update(bos_token_id=True), "bos_token_id"),
    ("separator int", lambda m: m["format_options"].update(separator=5), "separator"),
    ("pad out of vocab", lambda m: m["extra"].update(pad_token_id=10**6), "pad_token_id"),
    ("pad str", lambda m: m["extra"].update(pad_token_id="0"), "pad_token_id"),
    ("checks str", lambda m: m["extra"].update(checks="arithmetic"), "checks"),
    ("calibration list", lambda m: m["extra"].update(calibration=[1, 2]), "calibration"),
    ("unknown option", lambda m: m["format_options"].update(sepparator="x"), "sepparator"),
]


@pytest.mark.parametrize(("case", "breaker", "field"), BAD_FIELDS, ids=[c[0] for c in BAD_FIELDS])
def test_a_bad_manifest_field_is_named(tmp_path: Path, case: str,
                                       breaker: Callable[[dict[str, Any]], None],
                                       field: str) -> None:
    d = make_model_dir(tmp_path / "m", max_length=64)
    man = json.loads((d / "prm.json").read_text())
    breaker(man)
    (d / "prm.json").write_text(json.dumps(man))
    with pytest.raises(ModelLoadError) as err:
        load_prm(d, device="cpu").score(Q, STEPS)
    message = str(err.value)
    assert field in message and "prm.json" in message, message


def test_manifest_errors_are_collected_into_one(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path / "m", max_length=64)
    man = json.loads((d / "prm.json").read_text())
    man.update(max_length="abc", opset="x", format_options=[])
    (d / "prm.json").write_text(json.dumps(man))
    with pytest.raises(ManifestError) as err:
        load_prm(d, device="cpu")
    text = str(err.value)
    assert "max_length" in text and "opset" in text and "format_options" in text
    assert "'abc'" in text  # what it got


# -- 4. symlinks that leave the directory ------------------------------------------------------
@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json", "prm.json"])
def test_a_symlink_out_of_the_directory_is_refused(tmp_path: Path, name: str) -> None:
    d = make_model_dir(tmp_path / "m", max_length=64)
    outside = tmp_path / f"outside-{name}"
    outside.write_bytes((d / name).read_bytes())
    (d / name).unlink()
    (d / name).symlink_to(outside)
    with pytest.raises(ModelLoadError, match="symlink.*outside.*Copy the file in") as err:
        load_prm(d, device="cpu")
    assert str(outside) in str(err.value)


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_a_symlink_inside_the_directory_and_a_linked_directory_load(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path / "m", max_length=64)
    (d / "graph.onnx").write_bytes((d / "model.onnx").read_bytes())
    (d / "model.onnx").unlink()
    (d / "model.onnx").symlink_to("graph.onnx")
    link = tmp_path / "link"
    link.symlink_to(d, target_is_directory=True)
    prm = load_prm(link, device="cpu", checks=())
    np.testing.assert_allclose(prm.score(Q, STEPS).scores, expected(prm, Q, STEPS), atol=1e-6)


@pytest.mark.parametrize("text", ['{"format": "token-classification", "max_length": 1' + "0" * 5000
                                  + "}", "[" * 100_000 + "]" * 100_000, "{\"format\": 1e999}"])
def test_a_hostile_manifest_file_is_a_model_load_error(tmp_path: Path, text: str) -> None:
    d = make_model_dir(tmp_path / "m", max_length=64)
    (d / "prm.json").write_text(text)
    with pytest.raises(ModelLoadError, match="prm.json"):
        load_prm(d, device="cpu")


def test_the_cli_writes_an_error_row_not_nan_for_a_lying_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prm_plugins.cli import main

    d = model_with(tmp_path, add_const(float("nan")))
    rows = tmp_path / "in.jsonl"
    rows.write_text("".join(json.dumps({"question": Q, "steps": STEPS[:k]}) + "\n"
                            for k in (1, 2, 3)))
    out = tmp_path / "out.jsonl"
    assert main(["score", str(d), "--input", str(rows), "--output", str(out),
                 "--no-progress", "--no-checks"]) == 1
    lines = out.read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert "NaN" not in line
        row = json.loads(line)
        assert "step_scores" not in row and "not finite" in row["error"]
        assert str(d) in row["error"]


# -- 5. memory: long batches are capped by attention cells ---------------------------------------
def test_plan_batches_caps_attention_cells() -> None:
    from prm_plugins.runtime.batching import plan_batches
    from prm_plugins.runtime.buckets import plan_bucketed_batches, rows_cap

    lengths = [500] * 20 + [250] * 40 + [100] * 100
    for budget in (None, 1 << 20, 1 << 18):
        batches = plan_batches(lengths, token_budget=8192, max_batch_size=64, max_length=512,
                               attention_budget=budget)
        assert sorted(i for b in batches for i in b.indices) == list(range(len(lengths)))
        for b in batches:
            assert len(b.indices) * b.length <= 8192
            if budget is not None:
                assert len(b.indices) == 1 or len(b.indices) * b.length ** 2 <= budget
        longest = max(len(b.indices) for b in batches if b.length == 512)
        assert longest == {None: 16, 1 << 20: 4, 1 << 18: 1}[budget]
    assert rows_cap(512, token_budget=8192, max_batch_size=64, attention_budget=1 << 20) == 4
    assert rows_cap(128, token_budget=8192, max_batch_size=64, attention_budget=1 << 20) == 64
    assert rows_cap(2048, token_budget=8192, max_batch_size=64, attention_budget=1 << 20) == 1
    bucketed = plan_bucketed_batches(lengths, (128, 256, 512), token_budget=8192,
                                     max_batch_size=64, attention_budget=1 << 20)
    assert max(len(b.indices) for b in bucketed if b.length == 512) == 4


def test_attention_budget_changes_batches_not_scores(tmp_path: Path) -> None:
    from prm_plugins.runtime import CPU_ATTENTION_BUDGET

    d = make_model_dir(tmp_path / "m", max_length=64)
    items = [(Q, STEPS[: 1 + k % 4]) for k in range(12)]
    default = load_prm(d, device="cpu", checks=())
    assert default.attention_budget == CPU_ATTENTION_BUDGET
    uncapped = load_prm(d, device="cpu", checks=(), attention_budget=0)
    assert uncapped.attention_budget is None
    tight = load_prm(d, device="cpu", checks=(), attention_budget=32 * 32 * 2)
    lengths = [len(tight.format.render(q, s)) for q, s in items]
    assert len(tight._plan(lengths)) > len(uncapped._plan(lengths))
    for a, b, c in zip(*(p.score_batch(items) for p in (default, uncapped, tight)), strict=True):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-7)
        np.testing.assert_allclose(a.scores, c.scores, atol=1e-7)
    with pytest.raises(PRMError, match="attention_budget must be"):
        load_prm(d, device="cpu", attention_budget=-1)


def test_large_files_are_memory_mapped_and_still_verified(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files past MMAP_THRESHOLD (multi-GB external data) are hashed and used as one mapping."""
    import mmap

    from prm_plugins import manifest as manifest_module

    monkeypatch.setattr(manifest_module, "MMAP_THRESHOLD", 0)
    d = make_model_dir(tmp_path / "m", max_length=64)
    build_graph(d / "model.onnx", external="weights.bin")
    rehash(d, ["model.onnx", "tokenizer.json", "weights.bin"])
    data = manifest_module.read_verified(d, Manifest.read(d), "weights.bin")
    assert isinstance(data, mmap.mmap)
    prm = load_prm(d, device="cpu", checks=())
    np.testing.assert_allclose(prm.score(Q, STEPS).scores, expected(prm, Q, STEPS), atol=1e-6)
    (d / "weights.bin").write_bytes(b"\0" * len(data))
    with pytest.raises(ModelIntegrityError, match="weights.bin does not match"):
        load_prm(d, device="cpu")
