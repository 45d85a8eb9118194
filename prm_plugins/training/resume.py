"""What ``prm train --resume`` restores: the batch position, the RNG states, the run's figures.

A resumed run must end with the same weights as an uninterrupted one (on the same machine),
so everything that decides what is computed next is saved at every checkpoint and put back
here: the weights, the optimiser, the Python and torch RNG states, and the position in the
data (:class:`BatchCursor`). A run is resumed only with the settings and data it started
with (:func:`check_resumable`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prm_plugins.errors import InvalidInputError
from prm_plugins.training.checkpoint import TRAINING_FILE, sha256_file
from prm_plugins.training.config import TrainConfig

if TYPE_CHECKING:
    from prm_plugins.training.loop import TrainRun

__all__ = [
    "RESUME_FREE_FIELDS",
    "BatchCursor",
    "check_resumable",
    "data_fingerprint",
    "restore_run",
    "resume_payload",
    "rng_from_json",
    "rng_to_json",
]

logger = logging.getLogger(__name__)

#: Config fields a resumed run may change: they do not change what is computed.
RESUME_FREE_FIELDS = frozenset({"resume", "progress", "threads", "device", "log_every",
                                "save_every", "eval_data", "out", "data", "val_data"})


def rng_to_json(state: Any) -> Any:
    """A ``random.Random`` state as JSON (tuples become lists)."""
    if state is None:
        return None
    version, internal, gauss = state
    return [version, list(internal), gauss]


def rng_from_json(value: Any) -> Any:
    """The ``random.Random`` state :func:`rng_to_json` wrote."""
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


class BatchCursor:
    """The training batches, epoch after epoch, with a position that can be saved.

    Each epoch's batches are drawn from ``rng`` when the previous epoch is used up. The saved
    position is (epoch, batches used, ``rng`` state at the epoch's start): restoring it draws
    that epoch's batches again, identically, and skips the used ones, so a resumed run sees
    the same batches in the same order as an uninterrupted one.
    """

    def __init__(self, make: Callable[[], list[list[int]]], rng: random.Random) -> None:
        self._make, self._rng = make, rng
        self._batches: list[list[int]] = []
        self._epoch_start: Any = None
        self.epoch, self.pos = -1, 0

    def next(self) -> list[int]:
        """The next batch (indices into the training chains)."""
        while self.pos >= len(self._batches):
            self._epoch_start = self._rng.getstate()
            self._batches = self._make()
            self.epoch, self.pos = self.epoch + 1, 0
        self.pos += 1
        return self._batches[self.pos - 1]

    def state(self) -> dict[str, Any]:
        """The position, as JSON."""
        return {"epoch": self.epoch, "batch": self.pos,
                "batches_in_epoch": len(self._batches),
                "rng_at_epoch_start": rng_to_json(self._epoch_start)}

    def restore(self, state: dict[str, Any]) -> None:
        """Go back to a position :meth:`state` saved."""
        if state.get("rng_at_epoch_start") is None:  # saved before the first batch
            return
        self._rng.setstate(rng_from_json(state["rng_at_epoch_start"]))
        self._epoch_start = self._rng.getstate()
        self._batches = self._make()
        if len(self._batches) != state.get("batches_in_epoch"):
            raise InvalidInputError(
                "--resume: the training batches differ from the saved run's "
                f"({len(self._batches)} against {state.get('batches_in_epoch')} in the epoch); "
                "resume with the same data and settings")
        self.epoch, self.pos = int(state["epoch"]), int(state["batch"])


def data_fingerprint(config: TrainConfig) -> dict[str, str | None]:
    """sha256 of the training and validation files (None where there is no such file)."""
    out: dict[str, str | None] = {}
    for name in ("data", "val_data"):
        value = getattr(config, name)
        out[name] = sha256_file(value) if value and Path(value).is_file() else None
    return out


def _current_names(old: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the names the experimental knobs had before they moved."""
    old = dict(old)
    if "pair_weight" in old:
        old.setdefault("experimental_pair_weight", old.pop("pair_weight"))
    if old.get("class_weight") == "position-balanced":
        old["class_weight"] = "none"
        old.setdefault("experimental_position_balanced", True)
    old.setdefault("experimental_position_balanced", False)
    return old


def check_resumable(saved: dict[str, Any], config: TrainConfig,
                    fingerprint: dict[str, str | None]) -> None:
    """Refuse to resume a run with other settings or other data."""
    old = _current_names(saved["info"].get("config", {}))
    new = config.to_dict()
    changed = [f"--{k.replace('_', '-')} {old.get(k)!r} -> {new[k]!r}" for k in sorted(new)
               if k not in RESUME_FREE_FIELDS and old.get(k) != new[k]]
    if changed:
        raise InvalidInputError(
            f"--resume: settings differ from the run in {config.out!r}: {'; '.join(changed)}. "
            f"Resume with the settings it was started with (its {TRAINING_FILE} lists them) "
            "or start a new run in another --out")
    was = saved["state"].get("data_sha256", {})
    for name, digest in fingerprint.items():
        if was.get(name) != digest:
            raise InvalidInputError(
                f"--resume: the --{name.replace('_', '-')} file is not the one the run in "
                f"{config.out!r} was trained on (its sha256 differs); resume with the same data")


def _load_weights(run: TrainRun, resumed: dict[str, Any]) -> None:
    try:
        run.model.load_state_dict(resumed["weights"])
        run.optimizer.load_state_dict(resumed["tensors"]["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise InvalidInputError(
            f"--resume: the checkpoint in {run.config.out!r} does not fit this model or "
            f"optimiser ({str(exc).splitlines()[0]}); resume with the same settings and "
            "base model") from None


def restore_run(run: TrainRun, resumed: dict[str, Any]) -> None:
    """Put a saved run back: weights, optimiser, data position, figures and RNG states.

    Raises:
        InvalidInputError: the checkpoint does not fit, or the run has no steps left.
    """
    torch, state, st = run.torch, resumed["state"], run.state
    _load_weights(run, resumed)
    run.cursor.restore(state["data"])
    st.step, st.history = int(state["step"]), list(state["history"])
    st.best_auroc, st.best_step = float(state["best_auroc"]), int(state["best_step"])
    st.running, st.running_n = float(state["running_loss"]), int(state["running_n"])
    st.spent_before = float(state["train_seconds"])
    st.resumed_at = [*state.get("resumed_at", []), st.step]
    if state["best_weights"] == "file":
        st.best_state = dict(resumed["best"])
    elif state["best_weights"] == "current":
        st.best_state = {k: v.detach().to("cpu", copy=True)
                         for k, v in run.model.state_dict().items()}
    random.setstate(rng_from_json(state["python_rng"]))
    torch.set_rng_state(resumed["tensors"]["torch_rng"])
    cuda_rng = resumed["tensors"].get("cuda_rng")
    if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)
    logger.info("resuming %s at step %d of %d (epoch %d, batch %d)", run.out, st.step,
                run.total, run.cursor.epoch, run.cursor.pos)
    if st.step >= run.total:
        raise InvalidInputError(
            f"--resume: the run in {run.config.out!r} is at step {st.step} of {run.total}; "
            "nothing left to train")


def resume_payload(run: TrainRun, train_seconds: float) -> dict[str, Any]:
    """What a periodic checkpoint saves for ``--resume`` (keyword arguments of
    :func:`~prm_plugins.training.checkpoint.save_resume_state`)."""
    torch, st = run.torch, run.state
    state = {
        "step": st.step, "data": run.cursor.state(), "history": st.history,
        "best_auroc": st.best_auroc, "best_step": st.best_step,
        "best_weights": ("none" if st.best_state is None else
                         "current" if st.best_step == st.step else "file"),
        "running_loss": st.running, "running_n": st.running_n,
        "train_seconds": train_seconds, "resumed_at": st.resumed_at,
        "python_rng": rng_to_json(random.getstate()), "data_sha256": run.fingerprint,
    }
    tensors = {"optimizer": run.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
               "cuda_rng": (torch.cuda.get_rng_state_all()
                            if torch.cuda.is_available() else [])}
    return {"weights": run.model.state_dict(), "tensors": tensors, "state": state,
            "best": st.best_state if state["best_weights"] == "file" else None}
