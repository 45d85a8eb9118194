"""``skywork``: rendering vs. Skywork's ``prepare_input``, and scores vs. its inference code."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from prm_plugins.errors import InvalidInputError, ModelLoadError
from prm_plugins.formats.skywork import SkyworkFormat

from support.family_checks import assert_torch_wrapper_equals_reference
from support.tiny_chat_models import make_tiny_skywork_prm, runtime_tokenizer

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have?"
PLAIN_CHAINS: list[tuple[str, list[str]]] = [
    (QUESTION, ["Tom has 3 apples.", "He buys 2 more, so 3 + 2 = 5.", "The answer is 5."]),
    (QUESTION, ["3 + 2 = 5"]),
    (QUESTION + "\n", ["  Step 1: 3 + 2 = 5.  ", " The answer is 5."]),
    ("How many?\n\nThink.", ["café 12 × 3 = 36 ÷ 2", "e\u0301 then $\\boxed{5}$"]),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_skywork_prm(tmp_path_factory.mktemp("skywork") / "ckpt")


@pytest.fixture(scope="module")
def hf_tok(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


@pytest.fixture(scope="module")
def fmt(hf_tok: Any) -> SkyworkFormat:
    return SkyworkFormat(runtime_tokenizer(hf_tok), SkyworkFormat.options_from_hf(hf_tok))


def prepare_input(problem: str, response: str, tokenizer: Any,
                  step_token: str) -> tuple[list[int], list[str], list[int]]:
    """Skywork's ``prepare_input`` (skywork-o1-prm-inference, ``model_utils/io_utils.py``)."""
    prompt_ids = tokenizer.encode(tokenizer.bos_token + problem + "\n")
    response_ids = []
    steps = []
    reward_flags = [0] * len(prompt_ids)
    step_token_id = tokenizer.encode(step_token)[-1]
    for step in response.split(step_token):
        if step != "":
            step_ids = tokenizer.encode(step)
        else:
            step_ids = []
        step_ids += [step_token_id]
        step = step + step_token
        flag = [0] * len(step_ids)
        flag[-1] = 1
        response_ids.extend(step_ids)
        reward_flags.extend(flag)
        steps.append(step)
    input_ids = prompt_ids + response_ids
    return input_ids, steps, reward_flags


class PublishedReference:
    """Skywork's PRM_MODEL: causal LM ``hidden_states[-1]`` -> ``v_head.summary`` -> sigmoid."""

    def __init__(self, model_dir: Path, hf_tok: Any) -> None:
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        self.tok = hf_tok
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        weights = load_file(str(model_dir / "model.safetensors"))
        self.summary = torch.nn.Linear(weights["v_head.summary.weight"].shape[1], 1)
        self.summary.load_state_dict({"weight": weights["v_head.summary.weight"],
                                      "bias": weights["v_head.summary.bias"]})

    @torch.no_grad()
    def score(self, question: str, steps: list[str]) -> list[float]:
        input_ids, _, reward_flags = prepare_input(question, "\n".join(steps), self.tok, "\n")
        ids = torch.tensor([input_ids])
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                         output_hidden_states=True)
        rewards = torch.sigmoid(self.summary(out.hidden_states[-1]).squeeze(-1))
        flags = torch.tensor([reward_flags])
        indices = torch.nonzero(flags[0] == 1).view(-1)
        return [rewards[0][i].item() for i in indices]


@pytest.fixture(scope="module")
def reference(model_dir: Path, hf_tok: Any) -> PublishedReference:
    return PublishedReference(model_dir, hf_tok)


# -- (a) rendering -------------------------------------------------------------------------
@pytest.mark.parametrize("question, steps", PLAIN_CHAINS)
def test_render_equals_prepare_input_token_for_token(
    fmt: SkyworkFormat, hf_tok: Any, question: str, steps: list[str]
) -> None:
    assert fmt.options["bos_token"] == "<|endoftext|>"
    rendered = fmt.render(question, steps)
    ids, _, flags = prepare_input(question, "\n".join(steps), hf_tok, "\n")
    assert rendered.input_ids == ids
    assert rendered.step_positions == [i for i, f in enumerate(flags) if f == 1]


# -- (c) injection -------------------------------------------------------------------------
INJECTIONS = ["a\nb\nc", "\nx\n", "x <|endoftext|> y", "1 + 1 = 2\r\n", "<|im_end|>\n\n"]


def test_injected_newlines_and_specials_keep_one_score_per_step(fmt: SkyworkFormat) -> None:
    r = fmt.render("Q\n<|endoftext|>", INJECTIONS)
    n = len(INJECTIONS)
    assert len(r.step_positions) == n
    assert [r.input_ids[p] for p in r.step_positions] == [fmt.step_token_id] * n
    # newlines inside a step are kept, line by line as upstream renders them (issue 17
    # item 1): one step token per upstream line, the score read after the step's last line
    lines = [len(fmt.step_lines(s)) for s in INJECTIONS]
    assert lines == [3, 2, 1, 1, 2]
    prompt = len(fmt.render("Q\n<|endoftext|>", []))
    flagged = [i for i in range(prompt, len(r)) if r.input_ids[i] == fmt.step_token_id]
    assert len(flagged) == sum(lines)
    ends = [sum(lines[: k + 1]) - 1 for k in range(n)]
    assert [flagged[e] for e in ends] == r.step_positions
    bos = fmt.tokenizer.token_to_id("<|endoftext|>")
    assert r.input_ids.count(bos) == 1 and r.input_ids[0] == bos


def test_no_bos_and_bad_options(hf_tok: Any) -> None:
    tok = runtime_tokenizer(hf_tok)
    r = SkyworkFormat(tok).render(QUESTION, ["a"])
    assert r.input_ids[0] != tok.token_to_id("<|endoftext|>")
    with pytest.raises(InvalidInputError, match="step_token"):
        SkyworkFormat(tok, {"step_token": ""})
    with pytest.raises(InvalidInputError, match="bos_token='<s>' is not an added token"):
        SkyworkFormat(tok, {"bos_token": "<s>"})


# -- (b) scores: torch wrapper vs. the published inference ---------------------------------
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_torch_wrapper_equals_published_inference(
    model_dir: Path, fmt: SkyworkFormat, reference: PublishedReference, padding_side: str
) -> None:
    assert_torch_wrapper_equals_reference("skywork", model_dir, fmt, reference, PLAIN_CHAINS[:3],
                                          padding_side)


def test_missing_value_head_is_a_clear_error(model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from prm_plugins.onnx_export.wrappers import build_step_prob_model

    broken = tmp_path / "no_head"
    shutil.copytree(model_dir, broken)
    weights = load_file(str(broken / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("v_head.")},
              str(broken / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"v_head\.summary\.weight"):
        build_step_prob_model("skywork", broken, {}, torch.float32)


# -- (b) scores: exported ONNX graph through load_prm vs. the published inference ----------
@pytest.fixture(scope="module")
def exported(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory, export_cli: Callable[..., Path]
) -> Path:
    """Exported through the command line, as a user would: `prm export ... --format skywork`."""
    pytest.importorskip("prm_plugins.onnx_export.export")
    out = tmp_path_factory.mktemp("skywork_onnx") / "model"
    return export_cli(model_dir, out, "skywork")


def test_onnx_scores_equal_published_inference(
    exported: Path, fmt: SkyworkFormat, reference: PublishedReference
) -> None:
    from prm_plugins import load_prm

    prm = load_prm(exported, device="cpu")
    assert prm.manifest.format == "skywork"
    assert prm.manifest.parity["max_abs_diff"] < 1e-4
    chains = [*PLAIN_CHAINS, ("Q\n<|endoftext|>", INJECTIONS)]
    results = prm.score_batch(chains)
    for (question, steps), scored in zip(chains, results, strict=True):
        assert len(scored.scores) == len(steps)
        # upstream scores every line; a step's score is its last line's (issue 17 item 1)
        lines = [fmt.step_lines(s) for s in steps]
        ref_all = reference.score(fmt.neutralise(question),
                                  [fmt.neutralise(line) for ls in lines for line in ls])
        ends = [sum(len(ls) for ls in lines[: k + 1]) - 1 for k in range(len(steps))]
        ref = [ref_all[e] for e in ends]
        assert max(abs(a - b) for a, b in zip(scored.scores, ref, strict=True)) < 1e-4
