"""The validation stage of training: score held-out chains, keep the best weights, test.

Figures come from :func:`prm_plugins.evaluation.metrics.step_auroc_report`, the one metrics
module evaluation uses too, so training and ``prm eval`` cannot disagree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prm_plugins.errors import require
from prm_plugins.evaluation.metrics import step_auroc_report
from prm_plugins.training.config import TrainConfig
from prm_plugins.training.data import (
    EncodedChain,
    TrainData,
    collate,
    encode_rows,
    load_stepwise,
)

if TYPE_CHECKING:
    from prm_plugins.training.loop import TrainRun

__all__ = ["eval_data_report", "evaluate_chains", "predict_steps", "validate"]

logger = logging.getLogger(__name__)


def predict_steps(
    model: Any, chains: Sequence[EncodedChain], pad_id: int, device: Any,
    *, batch_size: int = 32,
) -> list[list[float]]:
    """P(correct) at every step position of every chain (eval mode, no grad)."""
    torch: Any = require("torch", "train")
    was_training = model.training
    model.eval()
    out: list[list[float]] = [[] for _ in chains]
    order = sorted(range(len(chains)), key=lambda i: len(chains[i]))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = collate([chains[i] for i in idx], pad_id, torch)
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
            probs = torch.softmax(logits.float(), dim=-1)[..., 1].cpu()
            for row, i in enumerate(idx):
                out[i] = [float(probs[row, p]) for p in chains[i].step_positions]
    model.train(was_training)
    return out


def evaluate_chains(
    model: Any, chains: Sequence[EncodedChain], pad_id: int, device: Any
) -> dict[str, Any]:
    """Step AUROC report (overall, first error, per kind) of the model on ``chains``."""
    scores = predict_steps(model, chains, pad_id, device)
    return step_auroc_report(scores, [c.step_labels for c in chains], [c.kind for c in chains])


def validate(run: TrainRun) -> None:
    """Score the validation chains, log, append to the history, keep the best weights."""
    st = run.state
    report = evaluate_chains(run.model, run.data.val_chains, run.data.pad_id, run.device)
    # None (one class absent from the validation steps) never counts as the best
    val = float("nan") if report["auroc"] is None else float(report["auroc"])
    per_kind = {k: round(v["auroc"], 4) for k, v in report["per_kind"].items()
                if v["auroc"] is not None}
    first = report["first_error_auroc"]
    loss = st.running / max(1, st.running_n)
    st.history.append({"step": st.step, "train_loss": loss,
                       "val_auroc": report["auroc"], "val_first_error_auroc": first,
                       "val_per_kind": per_kind, "seconds": time.monotonic() - run.t_train})
    logger.info("step %d: validation step AUROC %.4f, first-error AUROC %s (train loss "
                "%.4f); per kind %s", st.step, val,
                "-" if first is None else f"{first:.4f}", loss,
                ", ".join(f"{k} {v:.3f}" for k, v in per_kind.items()))
    run.bar.set_postfix(loss=f"{loss:.4f}", val_auroc=f"{val:.4f}")
    st.running, st.running_n = 0.0, 0
    if val > st.best_auroc:
        st.best_auroc, st.best_step = val, st.step
        if run.config.keep_best:
            st.best_state = {k: v.detach().to("cpu", copy=True)
                             for k, v in run.model.state_dict().items()}


def eval_data_report(config: TrainConfig, model: Any, data: TrainData,
                device: Any) -> dict[str, Any] | None:
    """The ``--eval-data`` report (None without it): scored once, after training."""
    if not config.eval_data:
        return None
    test_rows = load_stepwise(config.eval_data)
    test_chains, test_stats = encode_rows(data.fmt, test_rows, config.max_length)
    scores = predict_steps(model, test_chains, data.pad_id, device)
    report = step_auroc_report(scores, [c.step_labels for c in test_chains],
                               [c.kind for c in test_chains])
    report["data"] = config.eval_data
    report["encode"] = test_stats
    logger.info("test %s: step AUROC %s, first-error AUROC %s", config.eval_data,
                *("-" if v is None else f"{v:.4f}"
                  for v in (report["auroc"], report["first_error_auroc"])))
    return report
