"""``prm export`` of a Math-Shepherd-style PRM, checked against the published inference code.

The reference is Math-Shepherd's model-card snippet run with the transformers tokenizer and
model (full-vocabulary logits): ``input_for_prm = f"{question} {output}"``, scores read
where ``input_id == step_tag_id`` from ``softmax(logits[..., [+, -]])[..., 0]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prm_plugins import ChainTooLongError, load_prm
from prm_plugins.errors import InvalidInputError
from prm_plugins.manifest import Manifest, sha256_file

FORMAT = "math-shepherd"
CHAINS = [
    ("Tom has 3 apples and buys 2 more. How many apples does he have?",
     ["Step 1: Tom has 3 apples.", "Step 2: He buys 2 more, so 3 + 2 = 5.",
      "Step 3: The answer is 5."]),
    ("Ann has 12 pens. She sells half. How many are left?",
     ["Step 1: Half of 12 is 6.", "Step 2: So 12 - 6 = 6 pens are left."]),
    ("What is 7 times 8?", ["7 * 8 = 56"]),
]


# -- the independent reference -------------------------------------------------------------
@pytest.fixture(scope="module")
def hf(tiny_causal_lm_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_causal_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm_dir).eval()
    return tok, model


def reference_scores(hf: tuple[Any, Any], question: str, steps: list[str]) -> list[float]:
    """Math-Shepherd's published inference snippet, verbatim where the tokenizer allows.

    ``step_tag_id`` is the id of the tag as it sits in the text (``" ки"``): the published
    code's ``tokenizer.encode("ки")[-1]`` gets that token only through SentencePiece's dummy
    prefix space, which a byte-level tokenizer does not add.
    """
    import torch

    tokenizer, model = hf
    good_token, bad_token = "+", "-"
    candidate_tokens = tokenizer.encode(f"{good_token} {bad_token}")[1:]
    step_tag_id = tokenizer.encode(" ки")[-1]
    output = "\n".join(f"{step} ки" for step in steps)
    input_for_prm = f"{question} {output}"
    input_id = torch.tensor([tokenizer.encode(input_for_prm)])
    with torch.no_grad():
        logits = model(input_id).logits[:, :, candidate_tokens]
        scores = logits.softmax(dim=-1)[:, :, 0]
        step_scores = scores[input_id == step_tag_id]
    return [float(s) for s in step_scores]


@pytest.fixture(scope="module")
def exported(tiny_causal_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory,
             export_small: Any) -> Path:
    return export_small(tiny_causal_lm_dir, tmp_path_factory.mktemp("ms") / "m", FORMAT)


# -- tests -----------------------------------------------------------------------------------
def test_scores_match_published_reference(exported: Path, hf: tuple[Any, Any]) -> None:
    prm = load_prm(exported, device="cpu")
    results = prm.score_batch(CHAINS)
    for (question, steps), got in zip(CHAINS, results, strict=True):
        want = reference_scores(hf, question, steps)
        assert len(want) == len(got.scores) == len(steps)
        np.testing.assert_allclose(got.scores, want, atol=1e-4)
    assert np.ptp([s for r in results for s in r.scores]) > 0.05


def test_render_is_the_reference_string(exported: Path, hf: tuple[Any, Any]) -> None:
    tok, _ = hf
    fmt = load_prm(exported, device="cpu").format
    question, steps = CHAINS[0]
    text, _ = fmt.render_text(question, steps)
    assert text == f"{question} " + "\n".join(f"{s} ки" for s in steps)
    rendered = fmt.render(question, steps)
    assert rendered.input_ids == tok.encode(text)
    tag_id = tok.encode(" ки")[-1]
    assert [i for i, t in enumerate(rendered.input_ids) if t == tag_id] == \
        rendered.step_positions


def test_graph_has_no_full_vocabulary_head(exported: Path, hf: tuple[Any, Any]) -> None:
    import onnx
    from onnx import numpy_helper

    tok, model = hf
    vocab = model.config.vocab_size
    graph = onnx.load(str(exported / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["step_probs"]
    with_vocab = [i.name for i in graph.initializer if vocab in i.dims]
    assert len(with_vocab) == 1  # the input embedding table, not an LM head
    emb = numpy_helper.to_array(next(i for i in graph.initializer if i.name == with_vocab[0]))
    np.testing.assert_array_equal(emb, model.get_input_embeddings().weight.detach().numpy())


def test_manifest_contents(exported: Path, hf: tuple[Any, Any]) -> None:
    tok, model = hf
    man = Manifest.read(exported)
    good, bad = tok.encode("+ -", add_special_tokens=False)
    assert man.format == FORMAT and man.dtype == "fp32" and man.max_length == 256
    assert man.format_options == {"step_tag": " ки", "good_token": "+", "bad_token": "-",
                                  "good_token_id": good, "bad_token_id": bad,
                                  "bos_token_id": tok.bos_token_id}
    for name, digest in man.files.items():
        assert sha256_file(exported / name) == digest
    assert man.parity["passed"] and man.parity["max_abs_diff"] <= 1e-4
    assert man.parity["left_right_max_abs_diff"] <= 1e-4
    assert man.source["architecture"] == "LlamaForCausalLM"
    # Only two of the LM head's rows are exported.
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    assert man.source["num_params"] - man.source["num_params_exported"] == (vocab - 2) * hidden
    assert man.extra["pad_token_id"] == tok.eos_token_id  # no pad token: EOS pads


def test_tags_newlines_and_special_tokens_in_steps(exported: Path, hf: tuple[Any, Any]) -> None:
    prm = load_prm(exported, device="cpu")
    question = "Tom has 3 apples. ки How many?"
    steps = ["He buys 2 ки more", "so 3 + 2 = 5\nanswer <s> 5", "ки", "done </s>\n"]
    got = prm.score(question, steps)
    assert len(got.scores) == 4
    # Raw, the reference would find 6 tags for 4 steps: the hazard neutralising removes.
    assert len(reference_scores(hf, question, steps)) == 6
    neutral_q = "Tom has 3 apples. к и How many?"
    # line breaks inside steps stay (issue 17 item 1: they used to become spaces)
    neutral = ["He buys 2 к и more", "so 3 + 2 = 5\nanswer < s> 5", "к и", "done < /s>\n"]
    want = reference_scores(hf, neutral_q, neutral)
    assert len(want) == 4
    np.testing.assert_allclose(got.scores, want, atol=1e-4)


def test_long_chain_raises_or_is_windowed(exported: Path, hf: tuple[Any, Any]) -> None:
    question = "What is the sum of the numbers?"
    steps = [f"Step {i}: add {i} and {i + 1} to get {2 * i + 1}." for i in range(30)]
    with pytest.raises(ChainTooLongError, match="max_length"):
        load_prm(exported, device="cpu").score(question, steps)
    prm = load_prm(exported, device="cpu", long_chains="window")
    assert len(prm.format.render(question, steps)) > prm.max_length
    got = prm.score(question, steps)
    assert len(got.scores) == len(steps)
    # The first window is a prefix of the chain, so a causal LM scores it as the whole chain.
    first = max(k for k in range(1, len(steps) + 1)
                if len(prm.format.render(question, steps[:k])) <= prm.max_length)
    want = reference_scores(hf, question, steps)[:first]
    np.testing.assert_allclose(got.scores[:first], want, atol=1e-4)


def test_int8(tmp_path: Path, export_small: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from support.tiny_models import make_tiny_causal_lm

    # The session model's wide init (0.3) makes activations heavy-tailed, which per-tensor
    # int8 activation scales in 32 dimensions do not survive (max |Δp| 0.13-0.2): a property
    # of that random model, not of trained PRMs. The standard init (0.02) quantises as
    # trained models do (max |Δp| below 0.01 here).
    ckpt = make_tiny_causal_lm(tmp_path / "ckpt", config_overrides={"initializer_range": 0.02})
    out = export_small(ckpt, tmp_path / "int8", FORMAT, quantize="int8")
    man = Manifest.read(out)
    assert man.dtype == "int8" and sorted(man.files) == ["model.onnx", "tokenizer.json"]
    assert man.parity["tolerance"] == 0.1 and man.parity["mean_tolerance"] == 0.02
    assert man.parity["max_abs_diff"] <= 0.1 and man.parity["mean_abs_diff"] <= 0.02
    assert man.parity["fp32_graph"]["max_abs_diff"] <= 1e-4
    assert man.extra["quantization"]["per_channel"] is True
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "prm.json", "tokenizer.json"]
    hf = (AutoTokenizer.from_pretrained(ckpt), AutoModelForCausalLM.from_pretrained(ckpt).eval())
    prm = load_prm(out, device="cpu")
    for question, steps in CHAINS:
        np.testing.assert_allclose(prm.score(question, steps).scores,
                                   reference_scores(hf, question, steps), atol=0.05)


def test_fp16_on_cpu(tiny_causal_lm_dir: Path, tmp_path: Path, export_small: Any,
                     hf: tuple[Any, Any]) -> None:
    import onnx

    out = export_small(tiny_causal_lm_dir, tmp_path / "fp16", FORMAT, dtype="fp16")
    man = Manifest.read(out)
    assert man.dtype == "fp16" and man.parity["tolerance"] == 2e-2
    graph = onnx.load(str(out / "model.onnx")).graph
    assert {i.data_type for i in graph.initializer if len(i.dims) == 2} == {
        onnx.TensorProto.FLOAT16}
    question, steps = CHAINS[0]
    np.testing.assert_allclose(load_prm(out, device="cpu").score(question, steps).scores,
                               reference_scores(hf, question, steps), atol=2e-2)


def test_options_from_hf(hf: tuple[Any, Any]) -> None:
    from prm_plugins.formats.math_shepherd import MathShepherdFormat

    from support.tiny_models import math_corpus, train_byte_bpe_tokenizer

    tok, _ = hf
    opts = MathShepherdFormat.options_from_hf(tok)
    assert opts["bos_token_id"] == tok.bos_token_id
    assert [opts["good_token_id"], opts["bad_token_id"]] == tok.encode("+ -")[1:]
    no_bos = train_byte_bpe_tokenizer(math_corpus(60), vocab_size=300, add_bos=False)
    assert MathShepherdFormat.options_from_hf(no_bos)["bos_token_id"] is None
    assert MathShepherdFormat.options_from_hf(tok, bos_token_id=None)["bos_token_id"] is None
    with pytest.raises(InvalidInputError, match="good_token_id"):
        MathShepherdFormat.options_from_hf(tok, good_token="Tom has")
    with pytest.raises(InvalidInputError, match="unknown option"):
        MathShepherdFormat.options_from_hf(tok, step_token=" ки")
