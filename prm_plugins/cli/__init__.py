"""The ``prm`` command line: ``prm score``, ``prm info``, ``prm export``, ``prm train``, ...

One module per verb in this package, each with ``make_parser(subparsers)`` (which also sets
the verb's ``run``) as TRL's CLI does; :func:`build_parser` imports them and lets each add
itself. A verb imports what it needs when it runs, so ``prm --help`` is instant. Every verb
prints its errors one way (:mod:`prm_plugins.cli.output`): ``prm <verb>: error: <message>``,
exit status 2 when the command could not run as asked, 1 when some data failed.

Examples:
    $ prm score --question "2 + 3 * 4?" --steps "3 * 4 = 12" "2 + 12 = 15"
    $ python -m prm_plugins.cli info --json
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from prm_plugins.cli import calibrate, info, label, score, train
from prm_plugins.cli import eval as eval_verb
from prm_plugins.cli import export as export_verb
from prm_plugins.cli.output import USAGE
from prm_plugins.cli.signals import SIGNALS, Interrupted

__all__ = ["Interrupted", "build_parser", "main"]

#: The verb modules, in the order ``prm --help`` lists them.
VERBS: tuple[ModuleType, ...] = (score, info, export_verb, train, label, eval_verb, calibrate)

_EPILOG = ("Exit status: 0 done, 1 the command ran but some data failed (bad rows, failed "
           "parity), 2 it could not run as asked (flags, paths, model); errors read "
           "'prm VERB: error: ...'. In text output steps are numbered from 1.")


def build_parser() -> argparse.ArgumentParser:
    """The ``prm`` argument parser with every available verb."""
    parser = argparse.ArgumentParser(
        prog="prm", description="Process reward models on ONNX Runtime", epilog=_EPILOG)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for module in VERBS:
        try:
            module.make_parser(sub)
        except ModuleNotFoundError as exc:  # a verb whose optional part is not in this build
            if exc.name and exc.name.startswith("prm_plugins."):
                continue
            raise
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prm`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    if args.verb is None:
        parser.print_help()
        return USAGE
    SIGNALS.install()  # SIGTERM takes Ctrl-C's path: finally blocks run, partial rows stay
    try:
        return int(args.run(args))
    except KeyboardInterrupt as exc:
        signum = int(getattr(exc, "signum", signal.SIGINT))
        sys.stderr.write(f"prm {args.verb}: interrupted by {signal.Signals(signum).name}\n")
        return 128 + signum
    finally:
        SIGNALS.restore()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
