"""Train a token-classification PRM (BERT trunk, 2 labels) on TRL stepwise data.

:func:`train` runs the stages in order: the output directory is checked, the data prepared
(:mod:`~prm_plugins.training.data`), the model and optimiser built
(:mod:`~prm_plugins.training.model`, :mod:`~prm_plugins.training.objective`), a saved run
restored under ``--resume`` (:mod:`~prm_plugins.training.resume`), the optimisation loop run
with its validations and periodic checkpoints (:mod:`~prm_plugins.training.loop`,
:mod:`~prm_plugins.training.validation`), the ``--eval-data`` set scored and the final
checkpoint written (:func:`~prm_plugins.training.checkpoint.save_checkpoint`).

Needs the ``train`` extra: ``pip install "prm-plugins[train]"``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prm_plugins.errors import require
from prm_plugins.lazy import lazy_exports
from prm_plugins.training.checkpoint import (
    FORMAT_FILE,
    TRAINING_FILE,
    load_resume_state,
    prepare_out_dir,
    save_checkpoint,
)
from prm_plugins.training.config import TrainConfig
from prm_plugins.training.data import (
    IGNORE_INDEX,
    EncodedChain,
    StepwiseRow,
    TrainData,
    build_format,
    encode_rows,
    length_bucketed_batches,
    load_stepwise,
    outcome_rows,
    prepare_data,
    split_by_question,
    token_labels,
)
from prm_plugins.training.loop import TrainRun, lr_factor, run_loop, training_info
from prm_plugins.training.model import build_model, build_optimizer, count_params, pick_device
from prm_plugins.training.objective import objective_for
from prm_plugins.training.resume import (
    RESUME_FREE_FIELDS,
    BatchCursor,
    check_resumable,
    data_fingerprint,
    restore_run,
)
from prm_plugins.training.validation import eval_data_report, predict_steps

__all__ = [
    "FORMAT_FILE",
    "IGNORE_INDEX",
    "RESUME_FREE_FIELDS",
    "TRAINING_FILE",
    "EncodedChain",
    "StepwiseRow",
    "TrainResult",
    "build_format",
    "build_model",
    "encode_rows",
    "length_bucketed_batches",
    "load_stepwise",
    "lr_factor",
    "outcome_rows",
    "predict_steps",
    "save_checkpoint",
    "split_by_question",
    "token_labels",
    "train",
]

logger = logging.getLogger(__name__)

#: Names that moved to :mod:`prm_plugins.experimental.training` (tried, not shipped); the
#: old path warns for one release.
__getattr__, __dir__ = lazy_exports(__name__, {}, moved=dict.fromkeys(
    ["position_class_weights", "question_batches", "question_pairs"],
    "prm_plugins.experimental.training"))


@dataclass
class TrainResult:
    """What :func:`train` did: where it wrote, and the figures it measured."""

    out_dir: Path
    steps: int
    seconds: float
    best_val_auroc: float
    history: list[dict[str, Any]] = field(default_factory=list)
    test: dict[str, Any] | None = None


def _build_run(config: TrainConfig, out: Path, torch: Any, device: Any, data: TrainData,
               fingerprint: dict[str, str | None], t_start: float) -> TrainRun:
    """The model, objective, optimiser, schedule and batch order of a run."""
    model = build_model(config, data.tokenizer.get_vocab_size(), data.old_ids).to(device)
    model.train()
    logger.info("model: %s, %d layers, %.1f M parameters, device %s",
                type(model).__name__, model.config.num_hidden_layers,
                count_params(model) / 1e6, device)
    objective = objective_for(config, data.train_chains, device, torch)
    optimizer = build_optimizer(model, config, torch)
    batches_per_epoch = math.ceil(len(data.train_chains) / config.batch_size)
    total = config.max_steps or max(1, math.ceil(batches_per_epoch * config.epochs))
    cursor = BatchCursor(lambda: objective.batches(data.order_rng), data.order_rng)
    return TrainRun(
        config=config, out=out, torch=torch, device=device, data=data, model=model,
        optimizer=optimizer, objective=objective, cursor=cursor, total=total,
        fingerprint=fingerprint, t_start=t_start,
        base_lrs=[g["lr"] for g in optimizer.param_groups],
        budget_s=None if config.max_minutes is None else 60.0 * config.max_minutes,
        save_every=config.save_every or config.eval_every)


def train(config: TrainConfig) -> TrainResult:
    """Train a PRM as ``config`` says and write its checkpoint directory.

    The directory holds ``config.json``, ``model.safetensors``, the fast tokenizer,
    ``prm_format.json`` (``{"format": "token-classification", "options": {...}}``) and
    ``training.json`` (the config, the figures measured, the time taken, the sha256 of every
    file, ``"complete": true``).

    While the run is in progress a checkpoint is saved every ``save_every`` steps (default:
    at each validation): the same files with the best weights so far and
    ``"complete": false``, plus ``resume/`` for ``resume=True`` (``--resume``). Every save is
    atomic (see :mod:`prm_plugins.training.checkpoint`): a run killed at any moment leaves
    the previous complete checkpoint or the new one. ``--out`` is checked before anything is
    loaded.

    Examples:
        >>> from prm_plugins.training import TrainConfig, train
        >>> result = train(TrainConfig(data="data/gsm8k_train_stepwise.jsonl",
        ...                            out="runs/prm", layers=3, max_steps=100))  # doctest: +SKIP
        >>> result.best_val_auroc  # doctest: +SKIP
        0.93
    """
    config.validate()
    out = prepare_out_dir(config.out, resume=config.resume)  # before any loading
    torch: Any = require("torch", "train")
    require("tqdm", "train")
    t_start = time.monotonic()
    fingerprint = data_fingerprint(config)
    resumed = load_resume_state(out) if config.resume else None
    if resumed is not None:
        check_resumable(resumed, config, fingerprint)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device, torch)
    data = prepare_data(config)
    run = _build_run(config, out, torch, device, data, fingerprint, t_start)
    if resumed is not None:
        restore_run(run, resumed)
    train_seconds = run_loop(run)
    st = run.state
    if config.keep_best and st.best_state is not None:
        run.model.load_state_dict(st.best_state)
        logger.info("keeping the weights of step %d (validation AUROC %.4f)", st.best_step,
                    st.best_auroc)
    test = eval_data_report(config, run.model, data, device)
    info = training_info(run, complete=True, train_seconds=train_seconds, test=test)
    save_checkpoint(run.model, data.tokenizer, data.fmt, out, info,
                    max_length=config.max_length)
    logger.info("wrote %s in %.1f min", out, info["total_seconds"] / 60)
    return TrainResult(out, st.step, train_seconds, st.best_auroc, st.history, test)
