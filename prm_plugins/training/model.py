"""The model stage of training: the device, the BERT token classifier and its optimiser."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, require
from prm_plugins.training.config import TrainConfig
from prm_plugins.training.tokenizer import minilm_dir

__all__ = ["build_model", "build_optimizer", "count_params", "pick_device"]

logger = logging.getLogger(__name__)

#: Parameter names (suffixes) that AdamW does not decay.
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")


def pick_device(name: str, torch: Any) -> Any:
    """The torch device ``--device`` names (``auto``: CUDA when torch sees a GPU)."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InvalidInputError("--device cuda was asked for but torch sees no GPU")
        return torch.device("cuda")
    return torch.device("cpu")


def count_params(model: Any) -> int:
    """Number of parameters of a torch module."""
    return int(sum(p.numel() for p in model.parameters()))


def build_model(
    config: TrainConfig, vocab_size: int, old_ids: Sequence[int] | None = None
) -> Any:
    """BertForTokenClassification (2 labels) with its trunk from ``config.base_model``.

    Args:
        config: the run's config (base model, layers, dropout).
        vocab_size: the tokenizer's vocabulary size.
        old_ids: after :func:`prune_vocabulary`, the base-model id of every new id; the word
            embedding keeps those rows only.
    """
    transformers: Any = require("transformers", "train")
    base = Path(config.base_model) if config.base_model else minilm_dir()
    overrides: dict[str, Any] = {
        "num_labels": 2,
        "id2label": {0: "incorrect", 1: "correct"},
        "label2id": {"incorrect": 0, "correct": 1},
    }
    if config.layers is not None:
        overrides["num_hidden_layers"] = config.layers
    if config.dropout is not None:
        overrides["hidden_dropout_prob"] = config.dropout
        overrides["attention_probs_dropout_prob"] = config.dropout
    hf_config = transformers.AutoConfig.from_pretrained(str(base), local_files_only=True,
                                                        **overrides)
    if config.layers is not None and config.layers > getattr(hf_config, "num_hidden_layers", 0):
        raise InvalidInputError(f"--layers {config.layers} is more than the base model has")
    hf_config.architectures = ["BertForTokenClassification"]
    # The load report would list the dropped layers, the pooler and the new head as
    # "UNEXPECTED"/"MISSING": all intended here, so say it once in our own words.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = transformers.BertForTokenClassification.from_pretrained(
            str(base), config=hf_config, local_files_only=True)
        model = model.float()  # train in fp32 whatever dtype the base checkpoint was saved in
    finally:
        transformers.logging.set_verbosity(verbosity)
    logger.info("trunk from %s (first %d layers); new 2-label classification head", base,
                hf_config.num_hidden_layers)
    if old_ids is not None:
        torch: Any = require("torch", "train")
        emb = model.get_input_embeddings()
        index = torch.tensor(list(old_ids), dtype=torch.long)
        new = torch.nn.Embedding(len(old_ids), emb.embedding_dim,
                                 padding_idx=emb.padding_idx)
        with torch.no_grad():
            new.weight.copy_(emb.weight[index])
        model.set_input_embeddings(new)
        model.config.vocab_size = len(old_ids)
    if model.config.vocab_size != vocab_size:
        raise InvalidInputError(
            f"tokenizer has {vocab_size} tokens but {base} has a vocabulary of "
            f"{model.config.vocab_size}; use the base model's own tokenizer")
    return model


def build_optimizer(model: Any, config: TrainConfig, torch: Any) -> Any:
    """AdamW with the head at ``head_lr`` and no decay on biases and LayerNorm weights."""
    head_names = {n for n, _ in model.named_parameters() if n.startswith("classifier.")}
    groups: list[dict[str, Any]] = []
    for is_head in (False, True):
        lr = (config.head_lr or config.lr) if is_head else config.lr
        for decay in (True, False):
            params = [p for n, p in model.named_parameters()
                      if (n in head_names) == is_head and (not n.endswith(NO_DECAY)) == decay]
            if params:
                groups.append({"params": params, "lr": lr,
                               "weight_decay": config.weight_decay if decay else 0.0})
    return torch.optim.AdamW(groups, lr=config.lr)
