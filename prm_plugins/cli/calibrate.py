"""``prm calibrate MODEL_DIR --data VAL.jsonl``: fit Platt calibration, write it to prm.json.

The model's raw step probabilities on held-out TRL stepwise rows (``{"prompt", "completions",
"labels"}``) are fitted to the labels (:func:`prm_plugins.calibration.fit_platt`); the result
goes into ``prm.json`` under ``extra.calibration`` with the data it was fitted on and the
log-loss and Brier score before and after. The model files are untouched, so their hashes
still hold. ``--remove`` deletes the entry. Use held-out data: questions the model was not
trained on (calibrating on test data makes thresholded test figures optimistic).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prm_plugins.cli.output import OK, error, plural

__all__ = ["add_parser", "make_parser", "run"]

VERB = "calibrate"

_DESCRIPTION = (
    "Fit Platt calibration of the model's raw step probabilities on held-out TRL stepwise "
    "rows ({\"prompt\", \"completions\", \"labels\"}) and write it into prm.json under "
    "extra.calibration, with the data it was fitted on and the log-loss and Brier score "
    "before and after. The model files are untouched, so their hashes still hold. --remove "
    "deletes the entry. Use held-out data: questions the model was not trained on "
    "(calibrating on test data makes thresholded test figures optimistic)."
)


def make_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``prm calibrate`` to the ``prm`` sub-command parsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        VERB, help="fit Platt calibration of step scores and write it to prm.json",
        description=_DESCRIPTION)
    p.set_defaults(run=run)
    p.add_argument("model_dir", help="model directory made by prm export")
    p.add_argument("--data", help="held-out TRL stepwise JSONL with labels")
    p.add_argument("--limit", type=int, default=None, help="use at most this many rows")
    p.add_argument("--batch-size", type=int, default=32, help="chains per scoring call")
    p.add_argument("--remove", action="store_true", help="delete the calibration entry")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


#: The name the verb modules had before ``prm_plugins.cli`` became a package.
add_parser = make_parser


def _log_loss_brier(p: Any, y: Any) -> tuple[float, float]:
    import numpy as np

    q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    t = np.asarray(y, dtype=np.float64)
    ll = float(-np.mean(t * np.log(q) + (1 - t) * np.log1p(-q)))
    return ll, float(np.mean((q - t) ** 2))


def run(args: argparse.Namespace) -> int:
    """Run ``prm calibrate``; returns 0, or 2 for bad input."""
    from prm_plugins.calibration import fit_platt
    from prm_plugins.errors import PRMError
    from prm_plugins.labeling.stepwise import read_stepwise_jsonl
    from prm_plugins.manifest import Manifest
    from prm_plugins.runtime import load_prm

    model_dir = Path(args.model_dir)
    try:
        manifest = Manifest.read(model_dir)
        if args.remove:
            removed = manifest.extra.pop("calibration", None) is not None
            manifest.write(model_dir)
            sys.stdout.write(("removed the calibration from " if removed else
                              "no calibration to remove in ") + f"{model_dir}/prm.json\n")
            return OK
        if not args.data:
            return error(VERB, "prm calibrate needs --data VAL.jsonl (TRL stepwise rows with "
                               "labels) or --remove")
        data = Path(args.data)
        if data.is_dir():
            return error(VERB, f"--data {str(data)!r} is a folder; give the JSONL file of "
                               "stepwise rows")
        if not data.is_file():
            return error(VERB, f"--data file {data} not found; give held-out TRL stepwise rows "
                               "{prompt, completions, labels}")
        if args.limit is not None and args.limit < 1:
            return error(VERB, f"--limit must be >= 1, got {args.limit}")
        rows = read_stepwise_jsonl(args.data)[: args.limit]
        if not rows:
            return error(VERB, f"{args.data} holds no rows")
        prm = load_prm(model_dir, device="cpu", checks=(), calibrate=False,
                       long_chains="window")
        probs: list[float] = []
        labels: list[bool] = []
        for start in range(0, len(rows), args.batch_size):
            chunk = rows[start:start + args.batch_size]
            scored = prm.score_batch([(r["prompt"], r["completions"]) for r in chunk])
            for r, s in zip(chunk, scored, strict=True):
                probs.extend(s.scores)
                labels.extend(bool(v) for v in r["labels"])
        cal = fit_platt(probs, labels)
        before = _log_loss_brier(probs, labels)
        after = _log_loss_brier(cal.apply(probs), labels)
    except PRMError as exc:
        return error(VERB, exc)
    entry = {**cal.to_dict(), "data": Path(args.data).name, "rows": len(rows),
             "steps": len(labels), "good_steps": int(sum(labels)),
             "log_loss": {"before": round(before[0], 5), "after": round(after[0], 5)},
             "brier": {"before": round(before[1], 5), "after": round(after[1], 5)}}
    manifest.extra["calibration"] = entry
    manifest.write(model_dir)
    if args.json:
        sys.stdout.write(json.dumps(entry) + "\n")
    else:
        sys.stdout.write(
            f"calibrated {model_dir}: a {cal.a:.4f}, b {cal.b:.4f} on "
            f"{plural(len(labels), 'step')} of {plural(len(rows), 'chain')}; log-loss "
            f"{before[0]:.4f} -> {after[0]:.4f}, Brier {before[1]:.4f} -> {after[1]:.4f}\n")
    return OK
