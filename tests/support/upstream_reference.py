"""Tiny published-PRM look-alikes and references written from each family's upstream code.

Every reference below is written from the family's published usage code (cited above each
class), run with transformers' own tokenizer and model: it never calls prm_plugins. The
checkpoints are random-weight, with tokenizers built the way each family's is built:

* TRL token classifiers: Llama 3 byte-level BPE (``PreTrainedTokenizerFast``, BOS added) and
  Qwen2's ``Qwen2Tokenizer`` (no BOS), each with ``*ForTokenClassification`` (2 labels).
* Qwen2.5-Math-PRM, RLHFlow, Skywork: the builders of ``tests/support/tiny_chat_models.py``.
* Math-Shepherd: a SentencePiece BPE model with byte fallback trained here (as Mistral's and
  Llama 2's are), turned into transformers' ``LlamaTokenizer`` (``Metaspace``, BOS added) and
  saved as ``tokenizer.json``, with a ``MistralForCausalLM``.

Each :class:`Family` knows how a user marks a step's end with its tag, a whole solution in
its convention, and a reference with ``scores(question, steps)`` and
``solution_scores(question, text)``, both aligned to the project's steps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from support.tiny_chat_models import (
    QWEN_PRM_SYSTEM,
    make_tiny_qwen_prm,
    make_tiny_rlhflow_prm,
    make_tiny_skywork_prm,
    train_llama3_tokenizer,
    train_qwen2_tokenizer,
)
from support.tiny_models import math_corpus

__all__ = ["FAMILIES", "Family"]


def _torch() -> Any:
    import torch

    return torch


# -- builders ----------------------------------------------------------------------------------
def _spread_head(model: Any, prefix: str, scale: float, seed: int) -> None:
    """Redraw the head so probabilities spread (random init is near-constant)."""
    torch = _torch()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(prefix):
                param.copy_(torch.randn(param.shape, generator=gen) * scale)


def make_trl_token_classifier(path: Path, *, arch: str, seed: int = 0) -> Path:
    """A TRL ``PRMTrainer``-style checkpoint: ``{Llama,Qwen2}ForTokenClassification``, 2 labels.

    Args:
        path: output directory.
        arch: ``"llama"`` (Llama 3 tokenizer, BOS) or ``"qwen2"`` (Qwen2 tokenizer, no BOS).
        seed: seed of the random weights.
    """
    import transformers

    torch = _torch()
    if arch == "llama":
        tok = train_llama3_tokenizer(path)
        config_cls, model_cls = transformers.LlamaConfig, transformers.LlamaForTokenClassification
    else:
        tok = train_qwen2_tokenizer(path, step_tag=None)
        config_cls, model_cls = transformers.Qwen2Config, transformers.Qwen2ForTokenClassification
    config = config_cls(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        num_labels=2, tie_word_embeddings=False, initializer_range=0.4,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    _spread_head(model, "score", 0.5, seed)
    model.save_pretrained(path)
    return path


def make_math_shepherd_prm(path: Path, *, seed: int = 0) -> Path:
    """A math-shepherd-mistral-7b-prm look-alike: Mistral causal LM, SentencePiece tokenizer.

    The tokenizer is a SentencePiece BPE model (byte fallback, dummy prefix, no whitespace
    normalisation: Mistral's settings) trained on a math corpus with ``ки``, ``+`` and ``-``,
    loaded by transformers' ``LlamaTokenizer`` with BOS added, and saved as ``tokenizer.json``.
    """
    import sentencepiece as spm
    import transformers

    torch = _torch()
    path.mkdir(parents=True, exist_ok=True)
    spm_dir = path.parent / f"{path.name}-spm"
    spm_dir.mkdir(exist_ok=True)
    corpus = spm_dir / "corpus.txt"
    corpus.write_text("\n".join(math_corpus(600, seed=seed)), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(spm_dir / "tokenizer"), vocab_size=560,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, add_dummy_prefix=True, remove_extra_whitespaces=False,
        split_digits=True, normalization_rule_name="identity", hard_vocab_limit=False,
        minloglevel=2,
    )
    tok_src = spm_dir / "tok"
    tok_src.mkdir(exist_ok=True)
    (tok_src / "tokenizer.model").write_bytes((spm_dir / "tokenizer.model").read_bytes())
    tok = transformers.LlamaTokenizer.from_pretrained(str(tok_src), add_bos_token=True)
    assert tok.convert_ids_to_tokens(tok.encode("ки")[-1]) == "\u2581ки"
    config = transformers.MistralConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=False, initializer_range=0.3, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=None,
    )
    torch.manual_seed(seed)
    model = transformers.MistralForCausalLM(config).eval()
    _spread_head(model, "lm_head", 0.3, seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


# -- references ---------------------------------------------------------------------------------
class TRLReference:
    """TRL ``PRMTrainer.tokenize_row`` (``trl/experimental/prm/prm_trainer.py``).

    Upstream: ``prompt_ids = tokenizer(prompt, add_special_tokens=False)``; each completion
    tokenised on its own the same way; ``separator_ids = tokenizer.encode(step_separator,
    add_special_tokens=False)`` appended to every completion; the label on the last token of
    each completion + separator; ``[bos_token_id]`` put first when the tokenizer has one. A
    whole solution is its completions joined by the separator (``"\\n"``).
    """

    separator = "\n"

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForTokenClassification.from_pretrained(
            model_dir, dtype=_torch().float32).eval()

    def scores(self, question: str, steps: Sequence[str]) -> list[float]:
        torch = _torch()
        tok = self.tok
        prompt_ids = tok(question, add_special_tokens=False)["input_ids"]
        completions = [tok(c, add_special_tokens=False)["input_ids"] for c in steps]
        separator_ids = tok.encode(self.separator, add_special_tokens=False)
        completions = [c + separator_ids for c in completions]
        labels = [[-100] * (len(c) - 1) + [1] for c in completions]
        if tok.bos_token_id is not None:
            prompt_ids = [tok.bos_token_id] + prompt_ids
        ids = prompt_ids + list(chain(*completions))
        flat = [-100] * len(prompt_ids) + list(chain(*labels))
        with torch.no_grad():
            probs = self.model(torch.tensor([ids])).logits.softmax(-1)[0, :, 1]
        return [float(probs[i]) for i, label in enumerate(flat) if label != -100]

    def solution_scores(self, question: str, text: str) -> list[float]:
        return self.scores(question, text.split(self.separator))


class QwenModelCardReference:
    """The Qwen2.5-Math-PRM-7B model card's inference code (``Qwen/Qwen2.5-Math-PRM-7B``).

    Upstream: messages ``system`` / ``user: query`` / ``assistant: "<extra_0>".join(response)
    + "<extra_0>"``; ``apply_chat_template(..., tokenize=False)``; ``tokenizer.encode`` of that
    string; ``step_sep_id = tokenizer.encode("<extra_0>")[0]``; ``make_step_rewards``: softmax
    of the 2-class head, class 1 where ``input_ids == step_sep_id``. The head
    (``Qwen2ForProcessRewardModel.score``, Linear-ReLU-Linear) is applied from the raw
    tensors. The card: steps separated by ``"\\n\\n"``. A response the user already joined
    with ``<extra_0>`` is the assistant content as it is.
    """

    tag = "<extra_0>"

    def __init__(self, model_dir: Path) -> None:
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, Qwen2Model

        self.tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.trunk = Qwen2Model.from_pretrained(model_dir, dtype=_torch().float32).eval()
        weights = load_file(str(model_dir / "model.safetensors"))
        self.head = {k: v for k, v in weights.items() if k.startswith("score.")}

    def _response_scores(self, question: str, response: str) -> list[float]:
        import torch.nn.functional as F

        torch = _torch()
        messages = [{"role": "system", "content": QWEN_PRM_SYSTEM},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": response}]
        text = self.tok.apply_chat_template(messages, tokenize=False,
                                            add_generation_prompt=False)
        input_ids = torch.tensor([self.tok.encode(text)])
        with torch.no_grad():
            h = self.trunk(input_ids=input_ids).last_hidden_state
            h = F.relu(F.linear(h, self.head["score.0.weight"], self.head["score.0.bias"]))
            logits = F.linear(h, self.head["score.2.weight"], self.head["score.2.bias"])
        step_sep_id = self.tok.encode(self.tag)[0]
        probs = F.softmax(logits, dim=-1)[0]
        return [float(p) for p in probs[input_ids[0] == step_sep_id][:, 1]]

    def scores(self, question: str, steps: Sequence[str]) -> list[float]:
        return self._response_scores(
            question, "".join(s if s.endswith(self.tag) else s + self.tag for s in steps))

    def solution_scores(self, question: str, text: str) -> list[float]:
        if self.tag in text:
            return self._response_scores(question, text)
        return self.scores(question, text.split("\n\n"))


class MathShepherdCardReference:
    """The model card code of ``peiyi9979/math-shepherd-mistral-7b-prm``.

    Upstream: ``candidate_tokens = tokenizer.encode(f"{good_token} {bad_token}")[1:]``,
    ``step_tag_id = tokenizer.encode(f"{step_tag}")[-1]`` with ``step_tag = "ки"``,
    ``input_for_prm = f"{question} {output}"``, ``input_id = tokenizer.encode(input_for_prm)``,
    ``logits = model(input_id).logits[:, :, candidate_tokens]``,
    ``scores = logits.softmax(dim=-1)[:, :, 0]``, ``step_scores = scores[input_id ==
    step_tag_id]``. ``output`` is the card's ``"Step 1: ... ки\\nStep 2: ... ки"``: steps,
    each ending ``" ки"``, joined by ``"\\n"``.
    """

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=_torch().float32).eval()

    def solution_scores(self, question: str, text: str) -> list[float]:
        torch = _torch()
        tokenizer = self.tok
        candidate_tokens = tokenizer.encode("+ -")[1:]
        step_tag_id = tokenizer.encode("ки")[-1]
        input_id = torch.tensor([tokenizer.encode(f"{question} {text}")])
        with torch.no_grad():
            logits = self.model(input_id).logits[:, :, candidate_tokens]
            scores = logits.softmax(dim=-1)[:, :, 0]
        return [float(s) for s in scores[input_id == step_tag_id]]

    def scores(self, question: str, steps: Sequence[str]) -> list[float]:
        output = "\n".join(s if s.rstrip().endswith(" ки") else f"{s} ки" for s in steps)
        return self.solution_scores(question, output)


class RLHFlowReference:
    """RLHFlow's ``math-rm/prm_evaluate.py`` (``RLHFlow/RLHF-Reward-Modeling``).

    Upstream: ``ans_list = ans.split("\\n\\n")``; ``ans_list = [j.strip() for j in
    ans_list]``; for each k the user turn is ``prompt + " " + ans_list[0]`` (k = 0) or
    ``ans_list[k]``, then an assistant ``"+"``; ``apply_chat_template(conversation)``;
    ``logits[:, -3, [plus_tag_id, minus_tag_id]].softmax(-1)[:, 0]`` with
    ``plus_tag_id = tokenizer.encode("+")[-1]``.
    """

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=_torch().float32).eval()
        self.candidate_tokens = [self.tok.encode("+")[-1], self.tok.encode("-")[-1]]

    def scores(self, question: str, steps: Sequence[str]) -> list[float]:
        torch = _torch()
        ans_list = [j.strip() for j in steps]
        out: list[float] = []
        conversation: list[dict[str, str]] = []
        for k in range(len(ans_list)):
            text = question + " " + ans_list[0] if k == 0 else ans_list[k]
            conversation.append({"content": text, "role": "user"})
            conversation.append({"content": "+", "role": "assistant"})
            input_ids = self.tok.apply_chat_template(conversation, return_tensors="pt",
                                                     return_dict=False)
            with torch.no_grad():
                logits = self.model(input_ids).logits[:, -3, self.candidate_tokens]
            out.append(float(logits.softmax(dim=-1)[0, 0]))
        return out

    def solution_scores(self, question: str, text: str) -> list[float]:
        return self.scores(question, text.split("\n\n"))


class SkyworkReference:
    """Skywork-o1-Open-PRM's ``prepare_input`` and ``PRM_MODEL``.

    From ``SkyworkAI/skywork-o1-prm-inference`` (``model_utils/io_utils.py``,
    ``model_utils/prm_model.py``), as the Skywork-o1-Open-PRM model card's example runs them.

    Upstream: ``tokenizer.encode(tokenizer.bos_token + problem + "\\n")``; for each
    ``step in response.split("\\n")``: ``tokenizer.encode(step)`` (nothing for an empty step)
    followed by ``tokenizer.encode("\\n")[-1]``, flagged; reward ``sigmoid(v_head(last hidden
    state))`` at the flags. Upstream's step is a line, so:

    * ``scores(question, steps)`` is upstream on ``"\\n".join(steps)`` (a step's trailing
      ``"\\n"`` being its end), read at each step's last line: the project's documented
      reading of a multi-line step.
    * ``solution_scores`` is upstream on the text, read at its non-empty lines (upstream's
      empty steps are not reported by the project).
    """

    def __init__(self, model_dir: Path) -> None:
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch = _torch()
        self.tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        weights = load_file(str(model_dir / "model.safetensors"))
        self.v_head = torch.nn.Linear(weights["v_head.summary.weight"].shape[1], 1)
        self.v_head.load_state_dict({"weight": weights["v_head.summary.weight"],
                                     "bias": weights["v_head.summary.bias"]})

    def _line_scores(self, question: str, response: str) -> list[float]:
        torch = _torch()
        tok = self.tok
        input_ids = tok.encode(tok.bos_token + question + "\n")
        flags = [0] * len(input_ids)
        step_token_id = tok.encode("\n")[-1]
        for step in response.split("\n"):
            step_ids = tok.encode(step) if step != "" else []
            step_ids += [step_token_id]
            input_ids += step_ids
            flags += [0] * (len(step_ids) - 1) + [1]
        ids = torch.tensor([input_ids])
        with torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                             output_hidden_states=True)
            rewards = torch.sigmoid(self.v_head(out.hidden_states[-1]).squeeze(-1))[0]
        return [float(rewards[i]) for i, f in enumerate(flags) if f]

    def scores(self, question: str, steps: Sequence[str]) -> list[float]:
        bodies = [s[:-1] if s.endswith("\n") else s for s in steps]
        every = self._line_scores(question, "\n".join(bodies))
        ends, n = [], 0
        for body in bodies:
            n += body.count("\n") + 1
            ends.append(n - 1)
        return [every[e] for e in ends]

    def solution_scores(self, question: str, text: str) -> list[float]:
        every = self._line_scores(question, text)
        return [s for s, line in zip(every, text.split("\n"), strict=True) if line.strip()]


# -- the families ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """One published PRM family as the parity tests see it.

    Attributes:
        name: test id.
        format: the ``prm export --format`` name.
        tag: what a user writes at a step's end to mark it (the family's step tag).
        solution: a whole solution written in the family's convention.
        build: ``build(path) -> path`` writes the tiny checkpoint.
        reference: ``reference(path)`` loads the upstream-code reference.
    """

    name: str
    format: str
    tag: str
    solution: str
    build: Callable[[Path], Path]
    reference: Callable[[Path], Any]


_LINES = "Step 1: Tom has 3 apples.\n  He buys 2 more, so 3 + 2 = 5.\nThe answer is 5."

FAMILIES: tuple[Family, ...] = (
    Family("trl-llama3", "token-classification", "\n", _LINES,
           lambda p: make_trl_token_classifier(p, arch="llama"), TRLReference),
    Family("trl-qwen2", "token-classification", "\n", _LINES,
           lambda p: make_trl_token_classifier(p, arch="qwen2"), TRLReference),
    Family("qwen-prm", "qwen-prm", "<extra_0>",
           "Tom has 3 apples.\nHe buys 2 more.\n\n  So 3 + 2 = 5.\n\nThe answer is $\\boxed{5}$.",
           make_tiny_qwen_prm, QwenModelCardReference),
    Family("math-shepherd", "math-shepherd", " ки",
           "Step 1: Tom has 3 apples. ки\nStep 2: He buys 2 more,\n  so 3 + 2 = 5. ки\n"
           "Step 3: The answer is: 5 ки",
           make_math_shepherd_prm, MathShepherdCardReference),
    Family("rlhflow", "rlhflow", "\n\n",
           "  Tom has 3 apples.\n\nHe buys 2 more,\n  so 3 + 2 = 5.\n\n The answer is 5. ",
           make_tiny_rlhflow_prm, RLHFlowReference),
    Family("skywork", "skywork", "\n",
           "Tom has 3 apples.\n  He buys 2 more.\n\nSo 3 + 2 = 5.\n\tThe answer is 5.",
           make_tiny_skywork_prm, SkyworkReference),
)


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Rows as JSON lines (test input for ``prm score --input``)."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path
