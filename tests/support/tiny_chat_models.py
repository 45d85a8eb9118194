"""Tiny chat-model PRM checkpoints (Qwen2.5-Math-PRM, RLHFlow, Skywork) for offline tests.

Each builder trains a byte-level BPE tokenizer here with the ``tokenizers`` library, using
the real family's pre-tokeniser (Qwen2's or Llama 3's split regex), special tokens and chat
template, and saves a random-weight checkpoint laid out like the published one: the same
``config.json`` architecture, the same safetensors weight names (``model.*``,
``score.0.*``/``score.2.*`` for Qwen2.5-Math-PRM, ``v_head.summary.*`` for Skywork,
``lm_head.weight`` for RLHFlow). Nothing is downloaded.

Examples:
    >>> path = make_tiny_qwen_prm(tmp_path / "qwen-prm")  # doctest: +SKIP
    >>> tok = AutoTokenizer.from_pretrained(path)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from support.tiny_models import MATH_WORDS, math_corpus

__all__ = [
    "LLAMA31_CHAT_TEMPLATE",
    "QWEN25_MATH_CHAT_TEMPLATE",
    "QWEN_PRM_SYSTEM",
    "chat_corpus",
    "make_tiny_qwen_prm",
    "make_tiny_rlhflow_prm",
    "make_tiny_skywork_prm",
    "pad_rendered",
    "train_llama3_tokenizer",
    "train_qwen2_tokenizer",
]

#: System prompt of the Qwen2.5-Math-PRM model card.
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

#: Pre-tokeniser split regex of Qwen2 / Qwen2.5 (transformers' ``Qwen2Tokenizer``).
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: Pre-tokeniser split regex of Llama 3 / 3.1 (digits grouped by up to three).
LLAMA3_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: The Qwen2.5-Math chat template (Qwen2.5 ChatML with tool calls; default system prompt of
#: the Math models), as shipped in Qwen2.5-Math-PRM's ``tokenizer_config.json``.
QWEN25_MATH_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'Please reason step by step, and put your final answer within \\\\boxed{}.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user "
    "query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:"
    "\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name "
    "and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": "
    "<function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nPlease reason step by step, and put your final answer "
    "within \\\\boxed{}.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + "
    "'\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

#: The Llama 3.1 Instruct chat template (as in Llama-3.1-8B-Instruct's, and so RLHFlow's
#: Llama3.1-8B-PRM, ``tokenizer_config.json``): BOS, a system block with the knowledge and
#: today dates, then each message trimmed between header tokens and ``<|eot_id|>``.
LLAMA31_CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if custom_tools is defined %}\n"
    "    {%- set tools = custom_tools %}\n"
    "{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}\n"
    "    {%- set tools_in_user_message = true %}\n"
    "{%- endif %}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- set date_string = \"26 Jul 2024\" %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- System message + builtin tools #}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if builtin_tools is defined or tools is not none %}\n"
    "    {{- \"Environment: ipython\\n\" }}\n"
    "{%- endif %}\n"
    "{%- if builtin_tools is defined %}\n"
    "    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") "
    "+ \"\\n\\n\"}}\n"
    "{%- endif %}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in "
    "message) %}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
    "message['content'] | trim + '<|eot_id|>' }}\n"
    "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n"
    "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n"
    "        {{- message.content }}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

#: Weight init std of the tiny trunks: larger than transformers' 0.02 so that the context,
#: not only the current token, moves the last hidden state (and so the step scores).
INIT_RANGE = 0.4

QWEN2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
LLAMA3_SPECIALS = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|finetune_right_pad_id|>",
)


def chat_corpus(n_lines: int = 300, *, seed: int = 0) -> list[str]:
    """Math lines plus chat words, newlines and ``+``/``-`` verdicts, to train tiny tokenizers."""
    rng = random.Random(seed)
    lines = math_corpus(n_lines, seed=seed)
    for _ in range(n_lines // 3):
        words = " ".join(rng.choice(MATH_WORDS) for _ in range(rng.randint(3, 8)))
        lines.append(f"system\nuser\n{words}\n\nassistant\n\n+\n{QWEN_PRM_SYSTEM}\n\n")
        lines.append(f"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{words}")
        lines.append(f"{words}.\n{rng.randint(0, 999)} - {rng.randint(0, 99)}\n\n\n")
    return lines


def _train_bpe(corpus: Sequence[str], *, split_regex: str, nfc: bool, vocab_size: int) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def train_qwen2_tokenizer(
    path: str | Path,
    *,
    corpus: Sequence[str] | None = None,
    vocab_size: int = 500,
    step_tag: str | None = "<extra_0>",
    step_tag_special: bool = True,
    bos_token: str | None = None,
    chat_template: str = QWEN25_MATH_CHAT_TEMPLATE,
) -> Any:
    """Train a Qwen2-style tokenizer, save it to ``path`` and load it back with AutoTokenizer.

    The backend matches transformers' ``Qwen2Tokenizer`` (NFC, Qwen2 split regex, byte-level
    BPE, no BOS by default); the chat template is written into ``tokenizer_config.json``.

    Args:
        path: directory to save into (created).
        corpus: training lines (default :func:`chat_corpus`).
        vocab_size: BPE vocabulary size.
        step_tag: an extra added token (Qwen2.5-Math-PRM's ``"<extra_0>"``), or ``None``.
        step_tag_special: whether the step tag is a *special* added token.
        bos_token: BOS string (Qwen has none; Skywork's inference code needs one).
        chat_template: Jinja chat template saved with the tokenizer.

    Returns:
        The reloaded transformers tokenizer.
    """
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, Qwen2Tokenizer

    backend = _train_bpe(corpus or chat_corpus(), split_regex=QWEN2_SPLIT_REGEX, nfc=True,
                         vocab_size=vocab_size)
    model = json.loads(backend.to_str())["model"]
    tok = Qwen2Tokenizer(
        vocab=model["vocab"], merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                                      for m in model["merges"]],
        unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
    )
    tok.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True)
                                                         for t in QWEN2_SPECIALS]})
    if step_tag:
        tok.add_tokens([AddedToken(step_tag, special=step_tag_special, normalized=False)],
                       special_tokens=step_tag_special)
    if bos_token:
        tok.bos_token = bos_token
    tok.chat_template = chat_template
    path = Path(path)
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def train_llama3_tokenizer(
    path: str | Path,
    *,
    corpus: Sequence[str] | None = None,
    vocab_size: int = 500,
    chat_template: str = LLAMA31_CHAT_TEMPLATE,
) -> Any:
    """Train a Llama-3-style tokenizer (BOS added by the post-processor), save and reload it.

    Args:
        path: directory to save into (created).
        corpus: training lines (default :func:`chat_corpus`).
        vocab_size: BPE vocabulary size.
        chat_template: Jinja chat template saved with the tokenizer.

    Returns:
        The reloaded transformers tokenizer.
    """
    from tokenizers import AddedToken, processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    backend = _train_bpe(corpus or chat_corpus(), split_regex=LLAMA3_SPLIT_REGEX, nfc=False,
                         vocab_size=vocab_size)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in LLAMA3_SPECIALS])
    bos = LLAMA3_SPECIALS[0]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, backend.token_to_id(bos))],
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token="<|eot_id|>",
        chat_template=chat_template,
    )
    path = Path(path)
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _spread(tensor: Any, gen: Any, scale: float) -> Any:
    import torch

    return torch.randn(tensor.shape, generator=gen) * scale


def _save_safetensors(path: Path, tensors: dict[str, Any], config: Any,
                      config_fields: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()},
              str(path / "model.safetensors"), metadata={"format": "pt"})
    data = json.loads(config.to_json_string())
    data.update(config_fields)
    (path / "config.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _qwen2_config(tok: Any, hidden_size: int, num_layers: int, **extra: Any) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=False, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        initializer_range=INIT_RANGE, **extra,
    )


def make_tiny_qwen_prm(
    path: str | Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    step_tag_special: bool = True,
    seed: int = 0,
) -> Path:
    """Save a tiny Qwen2.5-Math-PRM look-alike: Qwen2 trunk + 2-class ``score`` MLP head.

    Weight names are those of the real checkpoint (``model.*``, ``score.0.weight``,
    ``score.0.bias``, ``score.2.weight``, ``score.2.bias``); ``config.json`` names the
    remote-code architecture ``Qwen2ForProcessRewardModel`` with an ``auto_map``, as the real
    one does, so the loader must not need that code.

    Returns:
        ``path``.
    """
    import torch
    from transformers import Qwen2Model

    path = Path(path)
    tok = train_qwen2_tokenizer(path, step_tag_special=step_tag_special)
    config = _qwen2_config(tok, hidden_size, num_layers)
    torch.manual_seed(seed)
    trunk = Qwen2Model(config).eval()
    gen = torch.Generator().manual_seed(seed)
    tensors = {f"model.{k}": v for k, v in trunk.state_dict().items()}
    h = hidden_size
    tensors["score.0.weight"] = _spread(torch.empty(h, h), gen, 0.2)
    tensors["score.0.bias"] = _spread(torch.empty(h), gen, 0.1)
    tensors["score.2.weight"] = _spread(torch.empty(2, h), gen, 0.3)
    tensors["score.2.bias"] = _spread(torch.empty(2), gen, 0.1)
    _save_safetensors(path, tensors, config, {
        "architectures": ["Qwen2ForProcessRewardModel"],
        "auto_map": {"AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
                     "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"},
    })
    return path


def make_tiny_skywork_prm(
    path: str | Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Save a tiny Skywork-o1-Open-PRM look-alike: Qwen2 causal LM + ``v_head.summary``.

    The checkpoint holds the causal LM's weights (``model.*``, ``lm_head.weight``) and the
    value head ``v_head.summary.weight [1, hidden]`` / ``v_head.summary.bias [1]``, as the
    published PRM_MODEL (a TRL value-head wrapper) saves them. The tokenizer has a BOS token,
    which Skywork's ``prepare_input`` puts first.

    Returns:
        ``path``.
    """
    import torch
    from transformers import Qwen2ForCausalLM

    path = Path(path)
    tok = train_qwen2_tokenizer(path, step_tag=None, bos_token="<|endoftext|>")
    config = _qwen2_config(tok, hidden_size, num_layers)
    torch.manual_seed(seed)
    lm = Qwen2ForCausalLM(config).eval()
    gen = torch.Generator().manual_seed(seed)
    tensors = dict(lm.state_dict())
    tensors["v_head.summary.weight"] = _spread(torch.empty(1, hidden_size), gen, 0.3)
    tensors["v_head.summary.bias"] = _spread(torch.empty(1), gen, 0.1)
    _save_safetensors(path, tensors, config, {"architectures": ["Qwen2ForPrmModel"]})
    return path


def make_tiny_rlhflow_prm(
    path: str | Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Save a tiny RLHFlow Llama3.1-8B-PRM look-alike: a Llama causal LM, Llama 3.1 template.

    The ``lm_head`` is scaled up so that P("+") vs P("-") spreads away from 0.5.

    Returns:
        ``path``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tok = train_llama3_tokenizer(path)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=False, rope_theta=500000.0,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        initializer_range=INIT_RANGE,
    )
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(config).eval()
    gen = torch.Generator().manual_seed(seed)
    tensors = dict(lm.state_dict())
    tensors["lm_head.weight"] = _spread(tensors["lm_head.weight"], gen, 0.3)
    _save_safetensors(path, tensors, config, {"architectures": ["LlamaForCausalLM"]})
    return path


def pad_rendered(seqs: Sequence[Sequence[int]], side: str, *, extra: int = 3,
                 pad_id: int = 0) -> tuple[Any, Any, list[int]]:
    """Pad token-id lists into ``input_ids``/``attention_mask`` tensors, left or right.

    Returns:
        ``(input_ids, attention_mask, offsets)``; ``offsets[i]`` is where row i's tokens start.
    """
    import torch

    length = max(len(s) for s in seqs) + extra
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    offsets = []
    for row, seq in enumerate(seqs):
        off = length - len(seq) if side == "left" else 0
        ids[row, off:off + len(seq)] = torch.tensor(list(seq))
        mask[row, off:off + len(seq)] = 1
        offsets.append(off)
    return ids, mask, offsets


def runtime_tokenizer(hf_tok: Any) -> Any:
    """The ``tokenizers`` tokenizer a model directory ships (what the runtime loads), built
    from a transformers tokenizer of that directory."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
