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


def run(args: argparse.Namespace) -> int:
    """Run ``prm calibrate``; returns 0, or 2 for bad input."""
    from prm_plugins.calibration import calibrate_model_dir, remove_calibration
    from prm_plugins.errors import PRMError
    from prm_plugins.labeling.stepwise import read_stepwise_jsonl

    model_dir = Path(args.model_dir)
    try:
        if args.remove:
            removed = remove_calibration(model_dir)
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
        if args.batch_size < 1:
            return error(VERB, f"--batch-size must be >= 1, got {args.batch_size}")
        entry = calibrate_model_dir(model_dir, rows, batch_size=args.batch_size,
                                    data_name=data.name)
    except PRMError as exc:
        return error(VERB, exc)
    if args.json:
        sys.stdout.write(json.dumps(entry) + "\n")
    else:
        sys.stdout.write(
            f"calibrated {model_dir}: a {entry['a']:.4f}, b {entry['b']:.4f} on "
            f"{plural(entry['steps'], 'step')} of {plural(entry['rows'], 'chain')}; log-loss "
            f"{entry['log_loss']['before']:.4f} -> {entry['log_loss']['after']:.4f}, Brier "
            f"{entry['brier']['before']:.4f} -> {entry['brier']['after']:.4f}\n")
    return OK
