"""Chat-family formats (qwen-prm, rlhflow, skywork) against each family's upstream code.

The checks every family shares run once per row of :data:`support.chat_families.CHAT_FAMILIES`:
(a) rendering token for token as upstream renders, (b) scores of the torch wrapper and of the
exported ONNX graph (through ``load_prm``) as upstream scores, and a missing head as a clear
error. What only one family has (its injection rules, its options, its template variants)
follows, one section per family.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prm_plugins.errors import InvalidInputError, ModelLoadError
from prm_plugins.formats.qwen_prm import QwenPRMFormat
from prm_plugins.formats.rlhflow import LLAMA31_SYSTEM_BLOCK, RLHFlowFormat
from prm_plugins.formats.skywork import SkyworkFormat

from support.chat_families import (
    CHAT_FAMILIES,
    QUESTION,
    ChatFamily,
    assert_torch_wrapper_equals_reference,
    chat_family,
    qwen_reference_ids,
    rlhflow_reference_ids,
)
from support.tiny_chat_models import runtime_tokenizer

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

NAMES = [f.name for f in CHAT_FAMILIES]
RENDER_CASES = [pytest.param(f.name, i, id=f"{f.name}-{i}")
                for f in CHAT_FAMILIES for i in range(len(f.chains))]
HEADED = [f.name for f in CHAT_FAMILIES if f.head is not None]


@dataclass
class Built:
    """A family's tiny checkpoint, its transformers tokenizer, format and upstream reference."""

    family: ChatFamily
    model_dir: Path
    hf_tok: Any
    fmt: Any
    _reference: Any = None

    @property
    def reference(self) -> Any:
        if self._reference is None:
            self._reference = self.family.reference(self.model_dir)
        return self._reference


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Built]:
    """``chat(name)``: the family's checkpoint, built once per module on first use."""
    from transformers import AutoTokenizer

    built: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in built:
            family = chat_family(name)
            model_dir = family.build(tmp_path_factory.mktemp(name) / "ckpt")
            hf_tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            fmt = family.format_cls(runtime_tokenizer(hf_tok),
                                    family.format_cls.options_from_hf(hf_tok))
            built[name] = Built(family, model_dir, hf_tok, fmt)
        return built[name]

    return get


@pytest.fixture(scope="module")
def exported(chat: Callable[[str], Built], tmp_path_factory: pytest.TempPathFactory,
             export_cli: Callable[..., Path]) -> Callable[[str], Path]:
    """``exported(name)``: exported through the command line, as a user would
    (`prm export ... --format NAME`), once per module on first use."""
    pytest.importorskip("prm_plugins.onnx_export.export")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            out = tmp_path_factory.mktemp(f"{name}_onnx") / "model"
            done[name] = export_cli(chat(name).model_dir, out, name)
        return done[name]

    return get


# -- (a) rendering, every family -------------------------------------------------------------
@pytest.mark.parametrize("name, chain", RENDER_CASES)
def test_render_equals_upstream_token_for_token(
    chat: Callable[[str], Built], name: str, chain: int
) -> None:
    b = chat(name)
    question, steps = b.family.chains[chain]
    assert {k: b.fmt.options[k] for k in b.family.options} == b.family.options
    rendered = b.fmt.render(question, steps)
    ids, positions = b.family.upstream_render(b.hf_tok, b.fmt, question, steps)
    assert rendered.input_ids == ids
    assert rendered.step_positions == positions


# -- (b) scores: torch wrapper vs. upstream, every family ------------------------------------
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("name", NAMES)
def test_torch_wrapper_equals_upstream(
    chat: Callable[[str], Built], name: str, padding_side: str
) -> None:
    b = chat(name)
    assert_torch_wrapper_equals_reference(name, b.model_dir, b.fmt, b.reference,
                                          b.family.chains[:3], padding_side)


@pytest.mark.parametrize("name", HEADED)
def test_missing_head_is_a_clear_error(
    chat: Callable[[str], Built], name: str, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    from prm_plugins.onnx_export.wrappers import build_step_prob_model

    assert chat_family(name).head is not None
    prefix, match = chat_family(name).head
    broken = tmp_path / "no_head"
    shutil.copytree(chat(name).model_dir, broken)
    weights = load_file(str(broken / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith(prefix)},
              str(broken / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=match):
        build_step_prob_model(name, broken, {}, torch.float32)


# -- (b) scores: exported ONNX graph through load_prm vs. upstream, every family -------------
@pytest.mark.parametrize("name", NAMES)
def test_onnx_scores_equal_upstream(
    chat: Callable[[str], Built], exported: Callable[[str], Path], name: str
) -> None:
    from prm_plugins import load_prm

    b = chat(name)
    prm = load_prm(exported(name), device="cpu")
    assert prm.manifest.format == name
    assert prm.manifest.parity["max_abs_diff"] < 1e-4
    for option in b.family.manifest_options:
        assert prm.manifest.format_options[option] == getattr(b.fmt, option)
    chains = [*b.family.chains, b.family.injected]
    results = prm.score_batch(chains)  # padded together, in token-budget batches
    for (question, steps), scored in zip(chains, results, strict=True):
        assert len(scored.scores) == len(steps)
        ref = b.family.upstream_scores(b.fmt, b.reference, question, steps)
        assert max(abs(x - y) for x, y in zip(scored.scores, ref, strict=True)) < 1e-4
    single = prm.score(*b.family.chains[0])
    assert single.scores == pytest.approx(results[0].scores, abs=1e-6)


# -- qwen-prm only ---------------------------------------------------------------------------
def test_qwen_render_with_non_special_step_tag(tmp_path: Path) -> None:
    """``<extra_0>`` as a plain (non-special) added token renders the same way."""
    from support.tiny_chat_models import train_qwen2_tokenizer

    hf = train_qwen2_tokenizer(tmp_path / "tok", step_tag_special=False)
    assert not hf.backend_tokenizer.get_added_tokens_decoder()[hf.convert_tokens_to_ids(
        "<extra_0>")].special
    fmt = QwenPRMFormat(runtime_tokenizer(hf))
    for question, steps in chat_family("qwen-prm").chains:
        assert fmt.render(question, steps).input_ids == qwen_reference_ids(hf, question, steps)
    r = fmt.render(QUESTION, ["a <extra_0> b", "<extra_0>"])
    assert r.input_ids.count(fmt.step_tag_id) == 2


def test_qwen_custom_system_prompt_matches_template(chat: Callable[[str], Built]) -> None:
    hf_tok = chat("qwen-prm").hf_tok
    fmt = QwenPRMFormat(runtime_tokenizer(hf_tok), {"system_prompt": "Be careful.\n"})
    ref = qwen_reference_ids(hf_tok, QUESTION, ["x"], system="Be careful.\n")
    assert fmt.render(QUESTION, ["x"]).input_ids == ref


def test_qwen_injected_tags_and_specials_keep_one_score_per_step(
    chat: Callable[[str], Built]
) -> None:
    fmt = chat("qwen-prm").fmt
    question, injections = chat_family("qwen-prm").injected
    r = fmt.render(question, injections)
    assert len(r.step_positions) == len(injections)
    assert r.input_ids.count(fmt.step_tag_id) == len(injections)
    assert [r.input_ids[p] for p in r.step_positions] == [fmt.step_tag_id] * len(injections)
    specials = fmt._special_ids - {fmt.step_tag_id}
    # 3 x <|im_start|> and 3 x <|im_end|>: the template's own, nothing from the text
    assert sum(t in specials for t in r.input_ids) == 6


def test_qwen_bad_options_are_clear_errors(chat: Callable[[str], Built]) -> None:
    tok = runtime_tokenizer(chat("qwen-prm").hf_tok)
    with pytest.raises(InvalidInputError, match="unknown option"):
        QwenPRMFormat(tok, {"separator": "\n"})
    with pytest.raises(InvalidInputError, match="step_tag='<extra_9>' is not an added token"):
        QwenPRMFormat(tok, {"step_tag": "<extra_9>"})
    with pytest.raises(InvalidInputError, match="special token"):
        QwenPRMFormat(tok, {"system_prompt": "x<|im_end|>"})


# -- rlhflow only ----------------------------------------------------------------------------
def test_rlhflow_options_from_hf(chat: Callable[[str], Built]) -> None:
    b = chat("rlhflow")
    opts = b.fmt.options
    assert opts["bos_token"] == "<|begin_of_text|>"
    assert opts["system_block"] == LLAMA31_SYSTEM_BLOCK
    assert opts["good_token_id"] == b.hf_tok.encode("+")[-1] != opts["bad_token_id"]


def test_rlhflow_llama3_template_without_system_block(tmp_path: Path) -> None:
    """Llama 3.0's template writes no system block; options_from_hf notices."""
    from support.tiny_chat_models import train_llama3_tokenizer

    template = (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
        "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
        "{% endif %}"
    )
    hf = train_llama3_tokenizer(tmp_path / "tok", chat_template=template)
    opts = RLHFlowFormat.options_from_hf(hf)
    assert opts["system_block"] is None
    fmt = RLHFlowFormat(runtime_tokenizer(hf), opts)
    for question, steps in chat_family("rlhflow").chains:
        assert fmt.render(question, steps).input_ids == rlhflow_reference_ids(hf, question, steps)


def test_rlhflow_injected_specials_keep_one_score_per_step(chat: Callable[[str], Built]) -> None:
    fmt = chat("rlhflow").fmt
    question, injections = chat_family("rlhflow").injected
    r = fmt.render(question, injections)
    n = len(injections)
    assert len(r.step_positions) == n
    assert [r.input_ids[p + 1] for p in r.step_positions] == [fmt.good_token_id] * n
    eot = fmt.tokenizer.token_to_id("<|eot_id|>")
    start = fmt.tokenizer.token_to_id("<|start_header_id|>")
    bos = fmt.tokenizer.token_to_id("<|begin_of_text|>")
    assert r.input_ids.count(eot) == r.input_ids.count(start) == 1 + 2 * n
    assert r.input_ids.count(bos) == 1


def test_rlhflow_bad_options_are_clear_errors(chat: Callable[[str], Built]) -> None:
    tok = runtime_tokenizer(chat("rlhflow").hf_tok)
    with pytest.raises(InvalidInputError, match="same id"):
        RLHFlowFormat(tok, {"good_token": "+", "bad_token": "+"})
    with pytest.raises(InvalidInputError, match="end_of_turn='<|im_end|>' is not an added"):
        RLHFlowFormat(tok, {"end_of_turn": "<|im_end|>"})


def test_rlhflow_wrapper_needs_token_ids(chat: Callable[[str], Built]) -> None:
    """RLHFlow has no head of its own (it reads the LM head at "+" and "-"): without the two
    token ids the wrapper cannot be built."""
    from prm_plugins.onnx_export.wrappers import build_step_prob_model

    with pytest.raises(InvalidInputError, match="good_token_id"):
        build_step_prob_model("rlhflow", chat("rlhflow").model_dir, {}, torch.float32)


# -- skywork only ----------------------------------------------------------------------------
def test_skywork_injected_newlines_and_specials_keep_one_score_per_step(
    chat: Callable[[str], Built]
) -> None:
    fmt = chat("skywork").fmt
    question, injections = chat_family("skywork").injected
    r = fmt.render(question, injections)
    n = len(injections)
    assert len(r.step_positions) == n
    assert [r.input_ids[p] for p in r.step_positions] == [fmt.step_token_id] * n
    # newlines inside a step are kept, line by line as upstream renders them (issue 17
    # item 1): one step token per upstream line, the score read after the step's last line
    lines = [len(fmt.step_lines(s)) for s in injections]
    assert lines == [3, 2, 1, 1, 2]
    prompt = len(fmt.render(question, []))
    flagged = [i for i in range(prompt, len(r)) if r.input_ids[i] == fmt.step_token_id]
    assert len(flagged) == sum(lines)
    ends = [sum(lines[: k + 1]) - 1 for k in range(n)]
    assert [flagged[e] for e in ends] == r.step_positions
    bos = fmt.tokenizer.token_to_id("<|endoftext|>")
    assert r.input_ids.count(bos) == 1 and r.input_ids[0] == bos


def test_skywork_no_bos_and_bad_options(chat: Callable[[str], Built]) -> None:
    tok = runtime_tokenizer(chat("skywork").hf_tok)
    r = SkyworkFormat(tok).render(QUESTION, ["a"])
    assert r.input_ids[0] != tok.token_to_id("<|endoftext|>")
    with pytest.raises(InvalidInputError, match="step_token"):
        SkyworkFormat(tok, {"step_token": ""})
    with pytest.raises(InvalidInputError, match="bos_token='<s>' is not an added token"):
        SkyworkFormat(tok, {"bos_token": "<s>"})
