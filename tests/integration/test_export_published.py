"""Published checkpoint layouts exported as downloaded, without ``--format`` (issue 17, 5-7).

* Skywork-o1-Open-PRM ships ``pytorch_model.bin`` only, value head included
  (``v_head.summary.*`` beside the causal LM's ``model.*``/``lm_head.weight``, as its
  ``PRM_MODEL`` wrapper's ``state_dict`` writes them).
* math-shepherd-mistral-7b-prm ships ``pytorch_model-0000x-of-0000y.bin`` shards with
  ``pytorch_model.bin.index.json`` and a sentencepiece ``tokenizer.model``, no
  ``tokenizer.json``. The tiny stand-in's ``tokenizer.model`` is trained here with the
  ``sentencepiece`` trainer with Mistral's/Llama 2's settings (BPE, byte fallback, split
  digits, identity normalisation, no extra-whitespace removal, ``<unk>``/``<s>``/``</s>`` =
  0/1/2), saved in the real ``.model`` protobuf format.

References are the families' published inference code, run with transformers and torch on
the same files: Skywork's ``prepare_input`` + ``PRM_MODEL`` (skywork-o1-prm-inference,
``model_utils/io_utils.py`` and ``prm_model.py``), and the Math-Shepherd model card snippet
(``tokenizer.encode(f"{question} {output}")``, ``softmax(logits[..., [+, -]])[..., 0]`` at
``step_tag_id``), tokenised by sentencepiece itself.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prm_plugins import load_prm
from prm_plugins.cli import main
from prm_plugins.errors import InvalidInputError, ModelLoadError
from prm_plugins.manifest import Manifest, sha256_file

from support.chat_families import prepare_input
from support.paths import ROOT

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have?"
CHAINS: list[tuple[str, list[str]]] = [
    (QUESTION, ["Tom has 3 apples.", "He buys 2 more, so 3 + 2 = 5.", "The answer is 5."]),
    ("Ann has 12 pens. She sells half. How many are left?", ["Half of 12 is 6."]),
    ("What is 7 times 8?", ["7 * 8 = 56", "so the answer is 56", "Step 3: check 56 / 8 = 7",
                            "each of 8 is 7", "total is 56", "then add 0", "the sum is 56",
                            "The answer is 56."]),
]
#: Test-sized parity, and the TorchScript exporter (2 s here against 30 s for dynamo on these
#: tiny models; the layouts under test are about loading, not about the exporter).
PARITY_FLAGS = ("--parity-chains", "4", "--parity-batch-sizes", "1", "3",
                "--parity-max-tokens", "96", "--exporter", "legacy")


# -- builders ----------------------------------------------------------------------------------
def make_skywork_bin(path: Path) -> Path:
    """Skywork-o1-Open-PRM's layout: ``pytorch_model.bin`` (LM + ``v_head``), no safetensors."""
    from support.tiny_chat_models import make_tiny_skywork_prm

    ckpt = make_tiny_skywork_prm(path)
    from safetensors.torch import load_file

    tensors = load_file(str(ckpt / "model.safetensors"))
    torch.save(tensors, ckpt / "pytorch_model.bin")
    (ckpt / "model.safetensors").unlink()
    return ckpt


def train_mistral_sentencepiece(corpus: list[str], vocab_size: int = 400) -> bytes:
    """A ``tokenizer.model`` trained with Mistral's / Llama 2's sentencepiece settings."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, model_type="bpe",
        vocab_size=vocab_size, byte_fallback=True, split_digits=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=1.0, minloglevel=2, num_threads=1,
    )
    return model.getvalue()


def make_math_shepherd_bin_shards(path: Path) -> Path:
    """math-shepherd-mistral-7b-prm's layout: 2 ``.bin`` shards + index, ``tokenizer.model``."""
    from transformers import MistralConfig, MistralForCausalLM

    from support.tiny_models import _spread_weights, math_corpus

    path.mkdir(parents=True)
    (path / "tokenizer.model").write_bytes(train_mistral_sentencepiece(math_corpus(400)))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False,
        "legacy": True, "model_max_length": 1000000000000000019884624838656,
        "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
    }))
    (path / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    vocab = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model")).get_piece_size()
    config = MistralConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        initializer_range=0.3, architectures=["MistralForCausalLM"],
    )
    torch.manual_seed(0)
    model = MistralForCausalLM(config).eval()
    _spread_weights(model, 0, scale=0.2)
    config.save_pretrained(path)
    state = model.state_dict()
    names = list(state)
    shards = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        file = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        torch.save({n: state[n].clone() for n in shard}, path / file)
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(t.numel() * t.element_size() for t in state.values())
    (path / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return path


@pytest.fixture(scope="session")
def skywork_bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_skywork_bin(tmp_path_factory.mktemp("published") / "skywork-bin")


@pytest.fixture(scope="session")
def math_shepherd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_math_shepherd_bin_shards(tmp_path_factory.mktemp("published") / "ms-mistral")


def _hf(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    from prm_plugins.onnx_export.wrappers import load_hf_tokenizer

    cfg = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    tok = load_hf_tokenizer(model_dir) if not (model_dir / "tokenizer.json").is_file() else \
        AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return cfg, tok


def _detect(model_dir: Path) -> str:
    from prm_plugins.onnx_export.detect import detect_format

    return detect_format(model_dir, *_hf(model_dir))


# -- upstream references -----------------------------------------------------------------------
def skywork_reference(model_dir: Path, question: str, steps: list[str]) -> list[float]:
    """Skywork's ``PRM_MODEL``: ``sigmoid(v_head.summary(hidden_states[-1]))`` at the flags.

    The weights come from ``pytorch_model.bin`` (read tensors-only), as the published
    wrapper's ``post_init`` loads its ``v_head`` from the same file.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                              local_files_only=True).eval()
    state = torch.load(model_dir / "pytorch_model.bin", weights_only=True)
    summary = torch.nn.Linear(state["v_head.summary.weight"].shape[1], 1)
    summary.load_state_dict({"weight": state["v_head.summary.weight"],
                             "bias": state["v_head.summary.bias"]})
    ids, _, flags = prepare_input(question, "\n".join(steps), tok, "\n")
    with torch.no_grad():
        out = lm(input_ids=torch.tensor([ids]), output_hidden_states=True)
        rewards = torch.sigmoid(summary(out.hidden_states[-1]).squeeze(-1))[0]
    return [float(rewards[i]) for i, f in enumerate(flags) if f == 1]


def math_shepherd_reference(model_dir: Path, question: str, steps: list[str], *,
                            weights: Any = None, compute: Any = None) -> list[float]:
    """The Math-Shepherd model card's snippet, tokenised by sentencepiece itself.

    ``tokenizer.encode`` of the card is the slow LlamaTokenizer: BOS + sentencepiece ids.
    ``weights``/``compute``: load the model in one torch dtype and run it in another (the
    card's default: as stored, fp32 here).
    """
    from transformers import AutoModelForCausalLM

    sp = spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))

    def encode(text: str) -> list[int]:
        return [sp.bos_id(), *sp.encode(text)]

    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True,
                                                 dtype=weights or torch.float32).eval()
    model = model.to(compute or model.dtype)
    good_token, bad_token, step_tag = "+", "-", "ки"
    candidate_tokens = encode(f"{good_token} {bad_token}")[1:]
    step_tag_id = encode(f"{step_tag}")[-1]
    output = "\n".join(f"{step} {step_tag}" for step in steps)
    input_for_prm = f"{question} {output}"
    input_id = torch.tensor([encode(input_for_prm)])
    with torch.no_grad():
        logits = model(input_id).logits[:, :, candidate_tokens]
        scores = logits.softmax(dim=-1)[:, :, 0]
        step_scores = scores[input_id == step_tag_id]
    return [float(s) for s in step_scores]


def _check_scores(out_dir: Path, reference: Any, model_dir: Path) -> None:
    prm = load_prm(out_dir, device="cpu")
    single = [prm.score(q, s).scores for q, s in CHAINS]
    batch = [r.scores for r in prm.score_batch(CHAINS)]
    for (question, steps), one, many in zip(CHAINS, single, batch, strict=True):
        want = reference(model_dir, question, steps)
        assert len(want) == len(steps) == len(one)
        np.testing.assert_allclose(one, want, atol=1e-4)
        np.testing.assert_allclose(many, want, atol=1e-4)
    assert np.ptp([s for r in batch for s in r]) > 0.02  # scores depend on the input


def _check_hashes(out_dir: Path) -> Manifest:
    man = Manifest.read(out_dir)
    assert set(man.files) >= {"model.onnx", "tokenizer.json"}
    for name, digest in man.files.items():
        assert sha256_file(out_dir / name) == digest
    return man


# -- Skywork: pytorch_model.bin with the value head --------------------------------------------
def test_skywork_bin_value_head_is_read_tensors_only(skywork_bin_dir: Path) -> None:
    from prm_plugins.onnx_export.wrappers.skywork import SkyworkPRMValueModel

    assert not list(skywork_bin_dir.glob("*.safetensors"))  # the .bin is all there is
    prm = SkyworkPRMValueModel.from_pretrained(skywork_bin_dir, torch.float32)
    state = torch.load(skywork_bin_dir / "pytorch_model.bin", weights_only=True)
    torch.testing.assert_close(prm.v_head.summary.weight, state["v_head.summary.weight"])
    torch.testing.assert_close(prm.v_head.summary.bias, state["v_head.summary.bias"])
    torch.testing.assert_close(prm.model.embed_tokens.weight, state["model.embed_tokens.weight"])


# -- Math-Shepherd: .bin shards and a sentencepiece tokenizer.model ----------------------------
def test_sentencepiece_tokenizer_converts_exactly(math_shepherd_dir: Path) -> None:
    from tokenizers import Tokenizer

    from prm_plugins.onnx_export.wrappers import load_hf_tokenizer

    assert not (math_shepherd_dir / "tokenizer.json").exists()
    tok = load_hf_tokenizer(math_shepherd_dir)
    runtime = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    sp = spm.SentencePieceProcessor(model_file=str(math_shepherd_dir / "tokenizer.model"))
    for text in [f"{q} " + "\n".join(f"{s} ки" for s in steps) for q, steps in CHAINS] + [
        "  indented\n\n  twice", "tab\there", "Ünïcödé ≠ 42 😀"
    ]:
        assert runtime.encode(text, add_special_tokens=False).ids == sp.encode(text)
    assert "ки" in sp.id_to_piece(sp.encode("ки")[-1])


def test_sentencepiece_without_the_package_is_one_clear_error(
    math_shepherd_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from prm_plugins.errors import MissingExtraError
    from prm_plugins.onnx_export.wrappers import load_hf_tokenizer

    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(MissingExtraError, match=r"sentencepiece.*prm-plugins\[export\]"):
        load_hf_tokenizer(math_shepherd_dir)


# -- both layouts: exported as downloaded, without --format ----------------------------------
@dataclass(frozen=True)
class PublishedLayout:
    """A published checkpoint layout as ``prm export`` meets it without ``--format``.

    Attributes:
        fixture: the session fixture that builds it.
        format: the format detection must find.
        reference: ``reference(model_dir, question, steps)``: upstream's step scores.
        printed: what ``prm export`` says about the detection.
        extra: ``prm.json`` extra fields, each with the text it starts with and a word in it.
    """

    fixture: str
    format: str
    reference: Callable[..., list[float]]
    printed: str
    extra: dict[str, tuple[str, str]]


LAYOUTS = [
    pytest.param(PublishedLayout(
        "skywork_bin_dir", "skywork", skywork_reference,
        "format skywork detected: the weights hold Skywork's value head",
        {"format_source": ("detected: ", "v_head")}), id="skywork-bin"),
    pytest.param(PublishedLayout(
        "math_shepherd_dir", "math-shepherd", math_shepherd_reference,
        "format math-shepherd detected: ",
        {"format_source": ("detected: ", ""), "tokenizer_source": ("tokenizer.model", "")}),
        id="math-shepherd-bin-shards"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_published_layout_exports_without_format_and_scores_as_upstream(
    layout: PublishedLayout, request: pytest.FixtureRequest, tmp_path: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = request.getfixturevalue(layout.fixture)
    out = tmp_path / "out"
    assert main(["export", str(model_dir), str(out), *PARITY_FLAGS]) == 0
    assert layout.printed in capsys.readouterr().out
    man = _check_hashes(out)
    assert man.format == layout.format
    for key, (prefix, word) in layout.extra.items():
        assert man.extra[key].startswith(prefix) and word in man.extra[key], man.extra[key]
    assert man.source["weights"] == "bin"
    assert man.parity["passed"] and man.parity["max_abs_diff"] <= 1e-4
    _check_scores(out, layout.reference, model_dir)


# -- loader failures: one line, with the fix ---------------------------------------------------
def _error_lines(stderr: str) -> list[str]:
    """The error lines of ``prm export``'s stderr (progress lines start with "prm export:")."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines()
             if not line.startswith("prm export: ") or line.startswith("prm export: error: ")]
    assert all(line.startswith("prm export: error: ") for line in lines), stderr
    return lines


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: code a checkpoint must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


def test_a_bin_that_runs_code_is_refused_unexecuted(skywork_bin_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from prm_plugins.onnx_export.checkpoint import load_bin

    ckpt = tmp_path / "evil"
    shutil.copytree(skywork_bin_dir, ckpt)
    marker = tmp_path / "code-ran"
    state = torch.load(ckpt / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "payload": _RunsCode(marker)}, ckpt / "pytorch_model.bin")
    # The payload is live: an unrestricted unpickler runs it.
    torch.load(ckpt / "pytorch_model.bin", weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ModelLoadError, match="refused.*weights_only=True"):
        load_bin(ckpt / "pytorch_model.bin")
    assert main(["export", str(ckpt), str(tmp_path / "out"), "--format", "skywork"]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "refused" in errors[0]
    assert main(["export", str(ckpt), str(tmp_path / "out2")]) == 2  # detection reads it too
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_other_pickles_of_a_checkpoint_are_never_opened(skywork_bin_dir: Path,
                                                        tmp_path: Path) -> None:
    """A Trainer's ``training_args.bin`` (a pickle of objects) sits beside the weights."""
    from prm_plugins.onnx_export.checkpoint import find_weights, tensor_names

    ckpt = tmp_path / "with-args"
    shutil.copytree(skywork_bin_dir, ckpt)
    marker = tmp_path / "code-ran"
    torch.save(_RunsCode(marker), ckpt / "training_args.bin")
    assert find_weights(ckpt).files == ("pytorch_model.bin",)
    assert "v_head.summary.weight" in tensor_names(ckpt)
    assert _detect(ckpt) == "skywork" and not marker.exists()


@pytest.mark.parametrize("damage, match", [
    ("no-weights", "holds no weights"),
    ("missing-shard", "incomplete"),
    ("garbage-bin", "not a readable PyTorch weights file"),
    ("bad-config", "could not read"),
    ("no-tokenizer", "no tokenizer.json or sentencepiece tokenizer.model"),
])
def test_loader_failures_are_one_line_errors(math_shepherd_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             damage: str, match: str) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(math_shepherd_dir, ckpt)
    if damage == "no-weights":
        for p in ckpt.glob("pytorch_model*"):
            p.unlink()
    elif damage == "missing-shard":
        (ckpt / "pytorch_model-00002-of-00002.bin").unlink()
    elif damage == "garbage-bin":
        (ckpt / "pytorch_model-00001-of-00002.bin").write_bytes(b"not a weights file")
    elif damage == "bad-config":
        (ckpt / "config.json").write_text('{"model_type": "no-such-model"}')
    else:
        (ckpt / "tokenizer.model").unlink()
    code = main(["export", str(ckpt), str(tmp_path / "out"), "--format", "math-shepherd",
                 *PARITY_FLAGS])
    err = capsys.readouterr().err
    errors = _error_lines(err)
    assert code == 2, err
    assert len(errors) == 1 and match in errors[0], err


# -- detection ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen_prm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from support.tiny_chat_models import make_tiny_qwen_prm

    return make_tiny_qwen_prm(tmp_path_factory.mktemp("published") / "qwen")


#: (checkpoint fixture, the format detection finds, from what evidence).
DETECTED = [
    pytest.param("skywork_bin_dir", "skywork", id="skywork-bin-value-head"),
    pytest.param("math_shepherd_dir", "math-shepherd", id="math-shepherd-sentencepiece-tag"),
    pytest.param("tiny_causal_lm_dir", "math-shepherd", id="math-shepherd-byte-bpe-tag"),
    pytest.param("qwen_prm_dir", "qwen-prm", id="qwen-prm"),
    pytest.param("tiny_token_classifier_dir", "token-classification", id="token-classification"),
]


@pytest.mark.parametrize("fixture, format_name", DETECTED)
def test_each_family_is_detected(fixture: str, format_name: str,
                                 request: pytest.FixtureRequest) -> None:
    assert _detect(request.getfixturevalue(fixture)) == format_name


def test_rlhflow_needs_its_format_named(tmp_path: Path) -> None:
    from prm_plugins.onnx_export.detect import _has_tag_token

    from support.tiny_chat_models import make_tiny_rlhflow_prm

    ckpt = make_tiny_rlhflow_prm(tmp_path / "rlhflow")
    # Its vocabulary holds "ки" too (as Llama 3's may): the chat tokens tell it apart.
    assert _has_tag_token(_hf(ckpt)[1])
    with pytest.raises(InvalidInputError, match=r"plain causal LM.*chat tokens.*--format rlhflow"):
        _detect(ckpt)


def test_math_shepherd_with_a_mistral_chat_template_and_legacy_false(
    math_shepherd_dir: Path, tmp_path: Path
) -> None:
    """Later Mistral tokenizer configs carry an [INST] chat template and ``legacy: false``:
    still Math-Shepherd, and still converted exactly (texts not starting with a space)."""
    ckpt = tmp_path / "ms"
    shutil.copytree(math_shepherd_dir, ckpt)
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    config["legacy"] = False
    config["chat_template"] = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' "
                               "%}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}"
                               "{{ m['content'] + eos_token }}{% endif %}{% endfor %}")
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config))
    assert _detect(ckpt) == "math-shepherd"


def _with_architectures(src: Path, dst: Path, archs: list[str]) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["architectures"] = archs
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_ambiguous_and_unknown_checkpoints_list_the_candidates(
    skywork_bin_dir: Path, tiny_token_classifier_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    both = _with_architectures(skywork_bin_dir, tmp_path / "both",
                               ["Qwen2ForProcessRewardModel"])
    with pytest.raises(InvalidInputError, match=r"more than one.*qwen-prm.*skywork"):
        _detect(both)
    assert main(["export", str(both), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Pass --format with one of ['qwen-prm', 'skywork']" in err
    assert not (tmp_path / "out").exists()

    plain = _with_architectures(tiny_token_classifier_dir, tmp_path / "plain", ["BertModel"])
    with pytest.raises(InvalidInputError, match=r"BertModel.*Pass --format, one of \[.*rlhflow"):
        _detect(plain)


def test_format_given_still_wins_over_detection(skywork_bin_dir: Path, tmp_path: Path) -> None:
    """``--format`` is taken as given; a wrong one fails on the checkpoint, never silently."""
    code = main(["export", str(skywork_bin_dir), str(tmp_path / "out"), "--format",
                 "qwen-prm", *PARITY_FLAGS])
    assert code == 2 and not (tmp_path / "out").exists()


def test_detection_reads_no_tensor_data_from_safetensors(tmp_path: Path) -> None:
    """Names come from the headers and the shard index; a damaged tensor body is not read."""
    from prm_plugins.onnx_export.checkpoint import tensor_names

    from support.tiny_chat_models import make_tiny_skywork_prm

    ckpt = make_tiny_skywork_prm(tmp_path / "sky")
    path = ckpt / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-64:] = os.urandom(64)
    path.write_bytes(bytes(data))
    assert "v_head.summary.weight" in tensor_names(ckpt)


# -- bf16 --------------------------------------------------------------------------------------
def test_onnxruntime_cpu_has_no_bf16_kernels() -> None:
    """The fact ``--dtype bf16`` rests on (onnxruntime 1.31): a bf16 MatMul/Mul/Add/Softmax
    graph cannot start on the CPU provider, while a bf16 -> float Cast can. If this fails,
    ONNX Runtime has gained CPU bf16 kernels: revisit the CPU refusal in onnx_export/bf16.py."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def session(op: str, out_type: int, **attrs: Any) -> Any:
        n_in = 1 if op in ("Softmax", "Cast") else 2
        x = [helper.make_tensor_value_info(f"x{i}", TensorProto.BFLOAT16, [2, 2])
             for i in range(n_in)]
        y = helper.make_tensor_value_info("y", out_type, [2, 2])
        graph = helper.make_graph([helper.make_node(op, [v.name for v in x], ["y"], **attrs)],
                                  "g", x, [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)],
                                  ir_version=10)
        return ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])

    for op in ("MatMul", "Mul", "Add", "Softmax"):
        with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
            session(op, TensorProto.BFLOAT16)
    assert session("Cast", TensorProto.FLOAT, to=TensorProto.FLOAT) is not None


def test_bf16_compute_export_needs_cuda(math_shepherd_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", str(math_shepherd_dir), str(tmp_path / "out"), "--dtype", "bf16"])
    errors = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(errors) == 1
    assert "needs --device cuda" in errors[0] and "--dtype bf16-weights" in errors[0]
    assert not (tmp_path / "out").exists()


def test_a_bf16_compute_model_is_refused_on_cpu_with_the_fix(tmp_path: Path) -> None:
    from support.graph_models import make_model_dir

    model = make_model_dir(tmp_path / "m")
    man = Manifest.read(model)
    man.dtype = "bf16"
    man.write(model)
    with pytest.raises(ModelLoadError, match=r"bf16-compute graph.*device='cuda'.*bf16-weights"):
        load_prm(model, device="cpu")


def test_bf16_weights_export_keeps_bf16_weights_and_reports_parity_per_dtype(
    math_shepherd_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bf16 weights computed in fp32: equal to upstream's code run on the bf16 weights in
    fp32, and within bf16's noise of upstream's code run in bf16 (as its card loads it)."""
    import onnx

    out = tmp_path / "bw"
    assert main(["export", str(math_shepherd_dir), str(out), "--dtype", "bf16-weights",
                 *PARITY_FLAGS]) == 0
    assert "graph vs torch in bf16 (for information)" in capsys.readouterr().out
    man = _check_hashes(out)
    assert man.dtype == "bf16-weights"
    by_dtype = man.parity["by_dtype"]
    assert by_dtype["fp32"]["gate"] and by_dtype["fp32"]["passed"]
    assert by_dtype["fp32"]["max_abs_diff"] <= 1e-4
    assert not by_dtype["bf16"]["gate"] and "bf16" in by_dtype["bf16"]["reference"]
    assert 0 < by_dtype["bf16"]["max_abs_diff"] < 0.1
    graph = onnx.load(str(out / "model.onnx")).graph
    stored = {onnx.TensorProto.DataType.Name(i.data_type) for i in graph.initializer
              if i.name.endswith("_bf16")}
    assert stored == {"BFLOAT16"} and man.extra["bf16_weights"]["initializers_bf16"] > 0

    bf16_in_fp32 = partial(math_shepherd_reference, weights=torch.bfloat16, compute=torch.float32)
    _check_scores(out, bf16_in_fp32, math_shepherd_dir)
    prm = load_prm(out, device="cpu")
    for question, steps in CHAINS:  # the card's model in bf16, as upstream runs it
        want = math_shepherd_reference(math_shepherd_dir, question, steps,
                                       weights=torch.bfloat16)
        np.testing.assert_allclose(prm.score(question, steps).scores, want, atol=5e-2)


@pytest.mark.slow
def test_example_exports_a_published_layout_without_format(skywork_bin_dir: Path,
                                                            tmp_path: Path) -> None:
    """``examples/export_checkpoint.py`` as a user runs it: no --format, default exporter."""
    import subprocess
    import sys

    root = ROOT
    out = tmp_path / "sky"
    run = subprocess.run([sys.executable, str(root / "examples" / "export_checkpoint.py"),
                          str(skywork_bin_dir), str(out)], capture_output=True, text=True,
                         timeout=600, cwd=root)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "format: skywork - detected: the weights hold Skywork's value head" in run.stdout
    assert Manifest.read(out).parity["by_dtype"]["fp32"]["max_abs_diff"] <= 1e-4
    scores = json.loads(run.stdout.split("scores: ")[1].split(" provider")[0])
    assert len(scores) == 3 and all(0 < s < 1 for s in scores)


def test_bf16_weights_converts_only_bf16_exact_initializers(tmp_path: Path) -> None:
    """Weights a bf16 checkpoint holds go to bf16; fp32-made constants stay fp32: the graph
    computes exactly what the fp32 graph did."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from prm_plugins.onnx_export.bf16 import bf16_weights

    rng = np.random.default_rng(0)
    exact = torch.randn(8, 8, dtype=torch.bfloat16).float().numpy()
    inexact = rng.standard_normal((8, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w_exact"], ["h"]),
         helper.make_node("MatMul", ["h", "w_inexact"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(exact, "w_exact"), numpy_helper.from_array(inexact, "w_inexact")],
    )
    src, dst = tmp_path / "fp32.onnx", tmp_path / "bf16w.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=9), str(src))
    stats = bf16_weights(src, dst)
    assert (stats["initializers_bf16"], stats["initializers_fp32"]) == (1, 1)
    types = {i.name: i.data_type for i in onnx.load(str(dst)).graph.initializer}
    assert types == {"w_exact_bf16": TensorProto.BFLOAT16, "w_inexact": TensorProto.FLOAT}
    x = rng.standard_normal((2, 8)).astype(np.float32)
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for p in (src, dst)]
    np.testing.assert_array_equal(run[0], run[1])
