"""The optimisation stage of training: the loop, its schedule and its periodic checkpoints.

One :class:`TrainRun` holds what the stages share; :func:`run_loop` takes optimiser steps
until the planned steps or the time budget are used up, validating every ``eval_every``
steps (:func:`prm_plugins.training.validation.validate`) and saving a resumable checkpoint
every ``save_every`` steps (:func:`save_progress`).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prm_plugins.errors import require
from prm_plugins.training.checkpoint import save_checkpoint
from prm_plugins.training.config import TrainConfig
from prm_plugins.training.data import TrainData, collate
from prm_plugins.training.model import count_params
from prm_plugins.training.objective import Objective
from prm_plugins.training.resume import BatchCursor, resume_payload
from prm_plugins.training.validation import validate

__all__ = ["RunState", "TrainRun", "lr_factor", "run_loop", "save_progress", "training_info"]

logger = logging.getLogger(__name__)


def lr_factor(progress: float, warmup_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup_ratio`` of the run, then linear decay to 0.

    ``progress`` is the fraction of the run done: steps done / planned steps, or, under
    ``--max-minutes``, the larger of that and time spent / time budget, so a time-budgeted run
    still decays to 0 by its end.

    Examples:
        >>> [round(lr_factor(p, 0.1), 2) for p in (0.0, 0.05, 0.1, 0.55, 1.0)]
        [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup_ratio > 0 and progress < warmup_ratio:
        return progress / warmup_ratio
    return max(0.0, (1.0 - progress) / max(1e-12, 1.0 - warmup_ratio))


@dataclass
class RunState:
    """What changes as the run goes, and what a checkpoint carries over to ``--resume``."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_auroc: float = -1.0
    best_state: dict[str, Any] | None = None
    best_step: int = 0
    running: float = 0.0  # training loss summed since the last validation
    running_n: int = 0
    spent_before: float = 0.0  # training seconds of the run before it was resumed
    resumed_at: list[int] = field(default_factory=list)
    stopped_early: bool = False


@dataclass
class TrainRun:
    """What the stages of :func:`prm_plugins.training.train` share."""

    config: TrainConfig
    out: Path
    torch: Any
    device: Any
    data: TrainData
    model: Any
    optimizer: Any
    objective: Objective
    cursor: BatchCursor
    total: int  # planned optimiser steps
    fingerprint: dict[str, str | None]
    t_start: float
    base_lrs: list[float] = field(default_factory=list)
    budget_s: float | None = None
    save_every: int = 1
    t_train: float = 0.0  # monotonic time the training loop started, less time spent before
    bar: Any = None
    state: RunState = field(default_factory=RunState)


def training_info(run: TrainRun, *, complete: bool, train_seconds: float,
                  test: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content of ``training.json``: config, data, model, history, times, versions."""
    config, data, model, st, torch = run.config, run.data, run.model, run.state, run.torch
    n_pos, n_steps = data.n_correct, data.n_steps
    return {
        "complete": complete,
        "config": config.to_dict(),
        "format": {"format": data.fmt.name, "options": data.fmt.options},
        "data": {"train_chains": len(data.train_chains), "train_steps": n_steps,
                 "train_correct": n_pos, "train_incorrect": n_steps - n_pos,
                 "val_chains": len(data.val_chains), "train_encode": data.train_stats,
                 "val_encode": data.val_stats, **run.objective.data_info(),
                 "sha256": run.fingerprint},
        "model": {"architecture": type(model).__name__,
                  "layers": int(model.config.num_hidden_layers),
                  "hidden_size": int(model.config.hidden_size),
                  "parameters": count_params(model),
                  "vocab_size": data.tokenizer.get_vocab_size(),
                  "base_vocab_size": data.full_vocab, "base_model": str(data.base)},
        "steps": st.step, "planned_steps": run.total,
        "stopped_early": st.stopped_early if complete else False,
        "resumed_at": st.resumed_at,
        "best_step": st.best_step, "best_val_auroc": st.best_auroc, "history": st.history,
        "train_seconds": train_seconds, "total_seconds": time.monotonic() - run.t_start,
        "device": str(run.device), "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": _version("transformers")},
        "test": test,
    }


def save_progress(run: TrainRun) -> None:
    """Save a checkpoint mid-run: the best weights so far, ready for export, and ``resume/``."""
    config, st = run.config, run.state
    export = copy.deepcopy(run.model).to("cpu")
    if config.keep_best and st.best_state is not None:
        export.load_state_dict(st.best_state)
    train_seconds = time.monotonic() - run.t_train
    resume = resume_payload(run, train_seconds)
    save_checkpoint(export, run.data.tokenizer, run.data.fmt, run.out,
                    training_info(run, complete=False, train_seconds=train_seconds),
                    max_length=config.max_length, resume=resume)
    logger.info("checkpoint at step %d written to %s", st.step, run.out)


def _set_lr(run: TrainRun) -> None:
    """Learning rate for this step, from the fraction of the run done (steps or time)."""
    progress = run.state.step / run.total
    if run.budget_s is not None:
        progress = max(progress, (time.monotonic() - run.t_train) / run.budget_s)
    factor = lr_factor(progress + 0.5 / run.total, run.config.warmup_ratio)
    for group, base_lr in zip(run.optimizer.param_groups, run.base_lrs, strict=True):
        group["lr"] = base_lr * factor


def train_step(run: TrainRun) -> None:
    """One optimiser step on the next batch."""
    config, st, torch = run.config, run.state, run.torch
    _set_lr(run)
    idx = run.cursor.next()
    batch = collate([run.data.train_chains[i] for i in idx], run.data.pad_id, torch)
    batch = {k: v.to(run.device) for k, v in batch.items()}
    logits = run.model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits
    loss = run.objective.loss(logits, batch, idx)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.optimizer.step()
    st.step += 1
    st.running += float(loss.detach())
    st.running_n += 1
    run.bar.update(1)
    run.bar.set_postfix(loss=f"{st.running / st.running_n:.4f}")
    if st.step % config.log_every == 0:
        logger.info("step %d/%d loss %.4f lr %.2e (%.1f s)", st.step, run.total,
                    st.running / st.running_n, run.optimizer.param_groups[0]["lr"],
                    time.monotonic() - run.t_train)


def _after_step(run: TrainRun) -> bool:
    """Validate and save when due; True when the run is over (steps or time used up)."""
    config, st = run.config, run.state
    progress = st.step / run.total
    out_of_time = run.budget_s is not None and time.monotonic() - run.t_train >= run.budget_s
    if out_of_time:
        progress = 1.0
    if st.step % config.eval_every == 0 or progress >= 1.0:
        validate(run)
    if progress < 1.0 and st.step % run.save_every == 0:
        save_progress(run)
    if out_of_time and st.step < run.total:
        logger.info("stopping at step %d of %d: the --max-minutes %.1f budget is spent "
                    "(the learning rate has decayed to 0 with it)", st.step, run.total,
                    config.max_minutes)
        st.stopped_early = True
    return progress >= 1.0


def run_loop(run: TrainRun) -> float:
    """Train until the planned steps or the time budget are used up; returns the seconds."""
    tqdm_mod: Any = require("tqdm", "train")
    run.t_train = time.monotonic() - run.state.spent_before
    run.bar = tqdm_mod.tqdm(total=run.total, initial=run.state.step,
                            disable=not run.config.progress, desc="train", unit="step",
                            dynamic_ncols=True)
    done = False
    while not done:
        train_step(run)
        done = _after_step(run)
    run.bar.close()
    return time.monotonic() - run.t_train


def _version(module: str) -> str:
    mod: Any = require(module, "train")
    return str(mod.__version__)
