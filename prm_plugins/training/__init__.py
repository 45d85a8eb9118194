"""Training of token-classification PRMs (the default PRM's pipeline).

Needs the ``train`` extra: ``pip install "prm-plugins[train]"``. Importing this package loads
no torch or transformers; :func:`train` does.

:func:`train` runs in stages, one module each: :mod:`~prm_plugins.training.data` (rows,
split, encoding, batches), :mod:`~prm_plugins.training.model` (trunk, head, optimiser),
:mod:`~prm_plugins.training.objective` (the loss), :mod:`~prm_plugins.training.loop` (the
optimisation loop), :mod:`~prm_plugins.training.validation`,
:mod:`~prm_plugins.training.resume` and :mod:`~prm_plugins.training.checkpoint` (atomic
saves). Objectives that were tried and not shipped are in
:mod:`prm_plugins.experimental.training`.

Examples:
    >>> from prm_plugins.training import TrainConfig, train
    >>> cfg = TrainConfig(data="data/gsm8k_train_stepwise.jsonl", out="runs/prm", layers=3)
    >>> result = train(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

from prm_plugins.evaluation.metrics import auroc, step_auroc_report
from prm_plugins.training.config import TrainConfig, add_config_arguments, config_from_args
from prm_plugins.training.data import (
    StepwiseRow,
    build_format,
    encode_rows,
    load_stepwise,
    outcome_rows,
    token_labels,
)
from prm_plugins.training.tokenizer import digit_splitting_tokenizer, minilm_dir
from prm_plugins.training.trainer import TrainResult, train

__all__ = [
    "StepwiseRow",
    "TrainConfig",
    "TrainResult",
    "add_config_arguments",
    "auroc",
    "build_format",
    "config_from_args",
    "digit_splitting_tokenizer",
    "encode_rows",
    "load_stepwise",
    "minilm_dir",
    "outcome_rows",
    "step_auroc_report",
    "token_labels",
    "train",
]
