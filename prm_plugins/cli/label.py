"""``prm label``: build step-labelled training data.

``prm label gsm8k --input train.jsonl --out data/gsm8k_train_stepwise.jsonl [--seed N]
[--per-problem K] [--limit N] [--kinds a,b] [--json]`` writes TRL stepwise JSONL made of the
checked GSM8K reference solutions and perturbed chains (see ``LABELS.md``).

``prm label agreement --human H.jsonl --graded G.jsonl [--json]`` reports how the labels of
``G`` (e.g. written by the LLM grader) agree with the human labels of ``H`` on the chains both
files hold: step accuracy, Cohen's kappa, first-error agreement, confusion counts.

``prm label merge --human H.jsonl --graded G.jsonl --out M.jsonl [--json]`` writes the merged
data set: human labels where a chain has them, ``G``'s labels for the other chains.

Neither needs a model: grading itself runs in Python (``LLMStepGrader``) with the chat model
of your choice.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prm_plugins.cli.output import OK, error, output_problem, plural

__all__ = ["add_parser", "make_parser", "run"]

VERB = "label"


def make_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``label`` verb (with its ``gsm8k`` source) to ``prm``'s sub-parsers.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The ``label`` parser.
    """
    from prm_plugins.labeling.perturb import PERTURBATION_KINDS

    parser: argparse.ArgumentParser = subparsers.add_parser(
        VERB,
        help="build step-labelled (TRL stepwise) data sets",
        description="Build step-labelled data in TRL stepwise JSONL "
        "({prompt, completions, labels} per line).",
    )
    parser.set_defaults(run=run)
    sources = parser.add_subparsers(dest="label_source", metavar="SOURCE")
    gsm8k = sources.add_parser(
        "gsm8k",
        help="GSM8K references (annotations checked exactly) plus perturbed chains",
        description=(
            "Label GSM8K: every reference solution whose calculator annotations all check "
            "exactly becomes an all-good chain, and up to --per-problem perturbed chains "
            "(kinds: " + ", ".join(PERTURBATION_KINDS) + ") are added with labels good "
            "before the first error and bad from it on."
        ),
    )
    gsm8k.add_argument("--input", "-i", required=True, help="GSM8K JSONL (question/answer rows)")
    gsm8k.add_argument("--out", "-o", required=True, help="output stepwise JSONL file")
    gsm8k.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    gsm8k.add_argument("--per-problem", type=int, default=1, dest="per_problem",
                       help="perturbed chains per problem, each of another kind (default 1)")
    gsm8k.add_argument("--limit", type=int, default=None, help="only the first N rows")
    gsm8k.add_argument("--kinds", default=None,
                       help="comma-separated perturbation kinds (default: all)")
    gsm8k.add_argument("--source", default="gsm8k",
                       help="value of the 'source' key and id prefix (default gsm8k)")
    gsm8k.add_argument("--json", action="store_true", help="machine-readable summary")
    gsm8k.add_argument("--no-progress", action="store_true", help="no progress bar")

    agreement = sources.add_parser(
        "agreement",
        help="agreement of graded labels with human labels on the chains both files hold",
        description=(
            "Compare two stepwise JSONL files chain by chain (chains match when prompt and "
            "steps are the same): step accuracy, Cohen's kappa, first-error agreement and "
            "confusion counts of --graded against the --human reference."
        ),
    )
    agreement.add_argument("--human", required=True, help="human-labelled stepwise JSONL")
    agreement.add_argument("--graded", required=True,
                           help="stepwise JSONL labelled otherwise (e.g. by the LLM grader)")
    agreement.add_argument("--json", action="store_true", help="machine-readable report")

    merge = sources.add_parser(
        "merge",
        help="merge human labels with graded labels (human labels win)",
        description=(
            "Write every --human row, then every --graded row whose chain has no human "
            "labels; print the agreement on the chains both hold."
        ),
    )
    merge.add_argument("--human", required=True, help="human-labelled stepwise JSONL")
    merge.add_argument("--graded", required=True, help="grader-labelled stepwise JSONL")
    merge.add_argument("--out", "-o", required=True, help="output stepwise JSONL file")
    merge.add_argument("--json", action="store_true", help="machine-readable summary")
    return parser


#: The name the verb modules had before ``prm_plugins.cli`` became a package.
add_parser = make_parser


def _progress(rows: Iterable[dict[str, Any]], enabled: bool,
              total: int | None = None) -> Iterator[dict[str, Any]]:
    if not enabled:
        yield from rows
        return
    from tqdm import tqdm

    yield from tqdm(rows, total=total, unit="problem", desc="labelling", file=sys.stderr,
                    disable=None)


def run(args: argparse.Namespace) -> int:
    """Run ``prm label``; returns the exit code (0 ok, 2 bad input).

    Args:
        args: parsed arguments from the parser made by :func:`add_parser`.

    Returns:
        The exit code.
    """
    from prm_plugins.errors import InvalidInputError
    from prm_plugins.jsonl import count_lines, refuse_same_file
    from prm_plugins.labeling.gsm8k import read_gsm8k_jsonl
    from prm_plugins.labeling.stepwise import write_stepwise_jsonl
    from prm_plugins.labeling.verifier import LabelingStats, build_verifier_dataset

    source = getattr(args, "label_source", None)
    if source in ("agreement", "merge"):
        return _run_agreement(args, write=source == "merge")
    if source != "gsm8k":
        return error(VERB, "prm label needs a source; available: gsm8k, agreement, merge (e.g. "
                           "prm label gsm8k --input train.jsonl --out out.jsonl)")
    if args.limit is not None and args.limit < 0:
        return error(VERB, f"--limit must be >= 0, got {args.limit}")
    input_path = Path(args.input)
    if input_path.is_dir():
        return error(VERB, f"--input {str(input_path)!r} is a folder; pass a GSM8K JSONL file")
    if not input_path.is_file():
        return error(VERB, f"--input file {input_path} not found; pass a GSM8K JSONL file")
    problem = output_problem("--out", args.out, parents_made=True)
    if problem is not None:
        return error(VERB, problem)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else None
    stats = LabelingStats()
    try:
        refuse_same_file(input_path, args.out, what="--out")
        total = None if args.no_progress else count_lines(input_path)
        if total is not None and args.limit is not None:
            total = min(total, args.limit)
        rows: Iterable[dict[str, Any]] = read_gsm8k_jsonl(input_path)
        if args.limit is not None:
            rows = itertools.islice(rows, args.limit)
        records = build_verifier_dataset(
            _progress(rows, not args.no_progress, total),
            seed=args.seed,
            n_perturbed_per_problem=args.per_problem,
            kinds=kinds,
            source=args.source,
            stats=stats,
        )
        written = write_stepwise_jsonl(records, args.out)
    except InvalidInputError as exc:
        return error(VERB, exc)
    summary = {"out": str(args.out), "rows_written": written, "seed": args.seed,
               **stats.as_dict()}
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        kinds_text = ", ".join(f"{k} {n}" for k, n in sorted(stats.perturbed.items()))
        sys.stdout.write(
            f"wrote {plural(written, 'chain')} to {args.out}: "
            f"{plural(stats.references, 'reference')}, "
            f"{sum(stats.perturbed.values())} perturbed ({kinds_text}); "
            f"{plural(stats.references_dropped, 'reference')} dropped for failed annotations "
            f"({plural(stats.failed_annotations, 'annotation')}), "
            f"{plural(stats.malformed_rows, 'malformed row')}\n"
        )
    return OK


def _run_agreement(args: argparse.Namespace, *, write: bool) -> int:
    """``prm label agreement`` and ``prm label merge``."""
    from prm_plugins.errors import InvalidInputError
    from prm_plugins.jsonl import refuse_same_file
    from prm_plugins.labeling.hybrid import label_agreement, merge_labels
    from prm_plugins.labeling.stepwise import read_stepwise_jsonl, write_stepwise_jsonl

    paths = {"--human": Path(args.human), "--graded": Path(args.graded)}
    verb = f"{VERB} {'merge' if write else 'agreement'}"
    for flag, path in paths.items():
        if path.is_dir():
            return error(verb, f"{flag} {str(path)!r} is a folder; pass a stepwise JSONL file")
        if not path.is_file():
            return error(verb, f"{flag} file {path} not found; pass a stepwise JSONL file")
    problem = output_problem("--out", args.out, parents_made=True) if write else None
    if problem is not None:
        return error(verb, problem)
    try:
        if write:
            for path in paths.values():
                refuse_same_file(path, args.out, what="--out")
        human = read_stepwise_jsonl(paths["--human"])
        graded = read_stepwise_jsonl(paths["--graded"])
        report = label_agreement(human, graded)
        written = write_stepwise_jsonl(merge_labels(human, graded), args.out) if write else None
    except InvalidInputError as exc:
        return error(verb, exc)
    if not write and report.chains == 0:
        return error(verb, f"no chain is in both files ({report.human_only} human, "
                           f"{report.grader_only} graded chains); chains match when their "
                           "prompt and steps are the same")
    if args.json:
        payload: dict[str, Any] = report.as_dict()
        if write:
            payload = {"out": str(args.out), "rows_written": written, "agreement": payload}
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        if write:
            assert written is not None
            sys.stdout.write(f"wrote {plural(written, 'chain')} to {args.out} "
                             f"({written - report.grader_only} with human labels, "
                             f"{report.grader_only} graded)\n")
        sys.stdout.write(report.summary() + "\n")
    return OK
