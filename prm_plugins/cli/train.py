"""``prm train``: train a token-classification PRM on TRL stepwise JSONL.

Every :class:`~prm_plugins.training.config.TrainConfig` field is a flag
(``--max-steps``, ``--layers``, ``--device`` ...); torch is imported only when the verb runs.

Checkpoints are saved into ``--out`` as the run goes (``--save-every``, default at each
validation), each one atomically; a run that was killed continues with ``--resume``.

Examples:
    prm train --data data/gsm8k_train_stepwise.jsonl --out runs/default --layers 3 \\
        --max-minutes 40 --eval-data data/gsm8k_test_stepwise_seed1.jsonl
    prm train --data data/gsm8k_train_stepwise.jsonl --out runs/default --layers 3 \\
        --max-minutes 40 --eval-data data/gsm8k_test_stepwise_seed1.jsonl --resume
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from prm_plugins.cli.output import DATA, OK, error, plural

__all__ = ["add_parser", "make_parser", "run"]

VERB = "train"


def make_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` verb to the ``prm`` parser's subparsers."""
    from prm_plugins.cli.options import add_dataclass_arguments
    from prm_plugins.training.config import TrainConfig

    p: argparse.ArgumentParser = subparsers.add_parser(
        VERB,
        help="train a token-classification PRM on stepwise JSONL",
        description=(
            "Train a BERT token-classification PRM on TRL stepwise rows {prompt, completions, "
            "labels}. Writes a checkpoint directory for `prm export ... --format "
            "token-classification`. Checkpoints are saved atomically as the run goes "
            "(--save-every); continue a killed run with the same command plus --resume."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.set_defaults(run=run)
    add_dataclass_arguments(p, TrainConfig, required=("data", "out"), none_word=True)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


#: The name the verb modules had before ``prm_plugins.cli`` became a package.
add_parser = make_parser


def run(args: argparse.Namespace) -> int:
    """Run ``prm train``; returns the exit status."""
    from prm_plugins.cli.options import dataclass_from_args
    from prm_plugins.errors import PRMError
    from prm_plugins.training.config import TrainConfig
    from prm_plugins.training.trainer import train

    logging.getLogger("prm_plugins.training").setLevel(logging.INFO)
    config = dataclass_from_args(TrainConfig, args)
    try:
        result = train(config)
    except PRMError as exc:
        return error(VERB, exc)
    except OSError as exc:  # disk full, permissions changed mid-run, ...
        where = f" {exc.filename!r}" if exc.filename else ""
        return error(VERB, f"cannot read or write{where}: {exc.strerror or exc}; the last "
                           f"complete checkpoint in {config.out!r} is kept", DATA)
    except KeyboardInterrupt:
        sys.stderr.write(
            f"prm train: interrupted; {config.out!r} holds the last complete checkpoint (if "
            "one was saved): continue with the same command plus --resume\n")
        return 130
    summary = {"out": str(result.out_dir), "steps": result.steps,
               "train_minutes": round(result.seconds / 60, 2),
               "best_val_auroc": result.best_val_auroc,
               "test_auroc": None if result.test is None else result.test["auroc"]}
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        sys.stdout.write(
            f"wrote {summary['out']}: {plural(result.steps, 'step')} in "
            f"{summary['train_minutes']} min, best validation step AUROC "
            f"{summary['best_val_auroc']:.4f}"
            + ("" if summary["test_auroc"] is None else
               f", test step AUROC {summary['test_auroc']:.4f}") + "\n")
    return OK
