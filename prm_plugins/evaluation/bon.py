"""Best-of-N evaluation: how often a PRM picks a correct solution among N candidates.

Input rows (JSONL)::

    {"question": "...", "answer": "72",
     "candidates": [{"solution": "...", "is_correct": true}, ...]}

``answer`` is optional; ``is_correct`` may be left out of a candidate when ``answer`` is
given (it is then whether the candidate's extracted final answer matches it). Each solution is
split into steps with :func:`prm_plugins.split_steps` and every candidate is scored in batched
calls. Then, for each N from 1 to the largest candidate count, the subset of a row is its first
N candidates under a random permutation, averaged over several seeded permutations (rows with
fewer than N candidates do not count at that N). Methods:

- ``min``, ``prod``, ``mean``, ``last``: pick the candidate with the highest chain score under
  that aggregation; candidates tied at the top share the pick (the expected accuracy of
  breaking the tie at random). A candidate that could not be scored (no steps, too long) is
  picked only when nothing in the subset was scored.
- ``majority``: the most frequent normalised final answer (:mod:`prm_plugins.answers`); its
  accuracy is the share of correct candidates among those giving it (ties between answers
  averaged); 0 when no candidate states an answer.
- ``weighted_min``, ``weighted_last``: PRM-weighted majority vote (as
  :func:`prm_plugins.weighted_best_of_n`): each candidate votes for its final answer with its
  chain score under ``min`` or ``last`` aggregation, and the answer with the largest total
  wins; accuracy is counted as for ``majority``. Candidates with no answer or no score do not
  vote.
- ``random``: the expected accuracy of a random pick, i.e. the fraction correct among the N.
- ``oracle``: whether any of the N is correct.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prm_plugins.answers import answers_match, extract_answer, normalize_answer
from prm_plugins.errors import InvalidInputError, MissingExtraError, PRMError
from prm_plugins.evaluation.step_data import RowIssue, iter_jsonl
from prm_plugins.evaluation.steps import score_chains
from prm_plugins.steps import split_steps
from prm_plugins.types import Aggregation, StepScorer, aggregate_scores

__all__ = [
    "AGGREGATION_METHODS",
    "METHODS",
    "WEIGHTED_METHODS",
    "CandidateSet",
    "best_of_n_curves",
    "evaluate_best_of_n",
    "load_candidates",
    "make_permutations",
    "score_candidates",
    "write_bon_plot",
]

logger = logging.getLogger(__name__)

#: PRM chain-score aggregations compared (see :func:`prm_plugins.aggregate_scores`).
AGGREGATION_METHODS: tuple[str, ...] = ("min", "prod", "mean", "last")
#: Aggregations whose chain scores weight a vote over final answers.
WEIGHTED_METHODS: dict[str, str] = {"weighted_min": "min", "weighted_last": "last"}
#: Every method in the output, in plotting order.
METHODS: tuple[str, ...] = (*AGGREGATION_METHODS, "majority", *WEIGHTED_METHODS, "random",
                            "oracle")

_EXAMPLE = ('{"question": "...", "answer": "72", "candidates": [{"solution": "...", '
            '"is_correct": true}]}')


@dataclass
class CandidateSet:
    """One question with its candidate solutions.

    Attributes:
        question: the problem.
        solutions: candidate solution texts.
        correct: per candidate, whether it is correct.
        answer: the gold final answer, when given.
        where: ``"path:line"`` of the row.
        answers: per candidate, the normalised extracted final answer (``None`` if none).
    """

    question: str
    solutions: list[str]
    correct: list[bool]
    answer: str | None = None
    where: str = ""
    answers: list[str | None] | None = None

    def __post_init__(self) -> None:
        if len(self.solutions) != len(self.correct):
            raise InvalidInputError(
                f"{self.where or 'candidate set'}: {len(self.solutions)} solutions but "
                f"{len(self.correct)} correctness labels; give one per candidate"
            )
        if self.answers is None:
            self.answers = [normalize_answer(extract_answer(s)) for s in self.solutions]


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _parse_row(row: dict[str, Any], where: str) -> CandidateSet:
    question = row.get("question")
    if not isinstance(question, str):
        raise ValueError(f"'question' must be a string, got {_type(question)}; rows look like "
                         f"{_EXAMPLE}")
    answer = row.get("answer")
    if answer is not None and not isinstance(answer, (str, int, float)):
        raise ValueError(f"'answer' must be a string or number, got {_type(answer)}")
    gold = None if answer is None else str(answer)
    cands = row.get("candidates")
    if not isinstance(cands, list) or not cands:
        got = "an empty list" if cands == [] else _type(cands)
        raise ValueError(f"'candidates' must be a non-empty list, got {got}; rows look like "
                         f"{_EXAMPLE}")
    solutions: list[str] = []
    correct: list[bool] = []
    for k, cand in enumerate(cands):
        if not isinstance(cand, dict):
            raise ValueError(f"candidates[{k}] must be an object with 'solution' and "
                             f"'is_correct', got {_type(cand)}")
        sol = cand.get("solution")
        if not isinstance(sol, str):
            raise ValueError(f"candidates[{k}].solution must be a string, got {_type(sol)}")
        ok = cand.get("is_correct")
        if ok is None:
            if gold is None:
                raise ValueError(f"candidates[{k}] has no 'is_correct' and the row has no "
                                 "'answer' to judge it by; give one of them")
            ok = answers_match(extract_answer(sol), gold)
        elif not isinstance(ok, bool):
            raise ValueError(f"candidates[{k}].is_correct must be true or false, got "
                             f"{_type(ok)} {ok!r}")
        solutions.append(sol)
        correct.append(bool(ok))
    return CandidateSet(question, solutions, correct, gold, where)


def load_candidates(
    path: str | Path, *, limit: int | None = None
) -> tuple[list[CandidateSet], list[RowIssue]]:
    """Read a best-of-N candidates JSONL file.

    Args:
        path: the file.
        limit: most rows to use.

    Returns:
        ``(rows, issues)``: the candidate sets, and the lines skipped with the reason.

    Raises:
        InvalidInputError: if the file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"candidates file {str(p)!r} does not exist; pass a JSONL "
                                f"file of rows like {_EXAMPLE}")
    rows: list[CandidateSet] = []
    issues: list[RowIssue] = []
    for lineno, row in iter_jsonl(p, issues):
        if limit is not None and len(rows) >= limit:
            break
        where = f"{p}:{lineno}"
        try:
            rows.append(_parse_row(row, where))
        except ValueError as exc:
            issues.append(RowIssue(where, str(exc)))
    return rows, issues


def score_candidates(
    scorer: StepScorer,
    rows: Sequence[CandidateSet],
    *,
    split: str = "auto",
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[list[list[list[float] | None]], list[RowIssue]]:
    """Split every candidate into steps and score them all in batched calls.

    Returns:
        ``(scores, issues)``: per row, per candidate, its step scores, or ``None`` when it
        could not be scored (no steps, or the scorer refused it); and why.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size!r}")
    out: list[list[list[float] | None]] = [[None] * len(r.solutions) for r in rows]
    issues: list[RowIssue] = []
    todo: list[tuple[int, int, list[str]]] = []
    for i, row in enumerate(rows):
        for k, sol in enumerate(row.solutions):
            steps = split_steps(sol, split)
            if steps:
                todo.append((i, k, steps))
            else:
                issues.append(RowIssue(row.where, f"candidates[{k}] has no steps after "
                                                  f"split_steps(mode={split!r}); not scored"))
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="scoring candidates", unit="chain", file=sys.stderr)
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            requests = [(rows[i].question, steps) for i, _, steps in chunk]
            for (i, k, _), scores in zip(chunk, score_chains(scorer, requests), strict=True):
                if isinstance(scores, PRMError):
                    issues.append(RowIssue(rows[i].where,
                                           f"candidates[{k}] could not be scored: {scores}"))
                else:
                    out[i][k] = [float(s) for s in scores]
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return out, issues


def make_permutations(
    counts: Sequence[int], permutations: int = 8, seed: int = 0
) -> list[np.ndarray]:
    """Per row, an ``[permutations, count]`` array of seeded random candidate orders."""
    if permutations < 1:
        raise InvalidInputError(f"permutations must be >= 1, got {permutations!r}")
    rng = np.random.default_rng(seed)
    return [np.stack([rng.permutation(c) for _ in range(permutations)]) for c in counts]


def _chain_score(scores: list[float] | None, how: Aggregation) -> float:
    """The chain score by :func:`prm_plugins.types.aggregate_scores` (an unknown ``how`` is
    refused there, naming the known ones); ``-inf`` for an unscored candidate."""
    return -math.inf if scores is None else aggregate_scores(scores, how)


def _vote_accuracy(totals: Mapping[str, float], votes: Mapping[str, int],
                   vote_correct: Mapping[str, float]) -> float:
    """Expected accuracy of the answer(s) with the largest total (ties averaged): for each,
    the share of correct candidates among those giving it."""
    top = max(totals.values())
    leaders = [a for a, v in totals.items() if v == top]
    return sum(vote_correct[a] / votes[a] for a in leaders) / len(leaders)


def _add_order(acc: dict[str, np.ndarray], order: np.ndarray,
               chain: Mapping[str, Sequence[float]], answers: Sequence[str | None],
               correct: np.ndarray) -> None:
    """Add to ``acc[method][n - 1]`` each method's expected accuracy after the first ``n``
    candidates of ``order``, for every ``n``."""
    best = {m: -math.inf for m in AGGREGATION_METHODS}
    tied: dict[str, list[int]] = {m: [] for m in AGGREGATION_METHODS}
    votes: Counter[str] = Counter()
    vote_correct: dict[str, float] = {}
    weights: dict[str, dict[str, float]] = {m: {} for m in WEIGHTED_METHODS}
    n_correct = 0.0
    for n, c in enumerate(order):
        c = int(c)
        n_correct += correct[c]
        for m in AGGREGATION_METHODS:
            v = chain[m][c]
            if v > best[m]:
                best[m], tied[m] = v, [c]
            elif v == best[m]:
                tied[m].append(c)
            acc[m][n] += float(np.mean(correct[tied[m]]))
        key = answers[c]
        if key is not None:
            votes[key] += 1
            vote_correct[key] = vote_correct.get(key, 0.0) + correct[c]
        if votes:
            acc["majority"][n] += _vote_accuracy(votes, votes, vote_correct)
        for m, how in WEIGHTED_METHODS.items():
            w = chain[how][c]
            if key is not None and w > -math.inf:
                weights[m][key] = weights[m].get(key, 0.0) + w
            if weights[m]:
                acc[m][n] += _vote_accuracy(weights[m], votes, vote_correct)
        acc["random"][n] += n_correct / (n + 1)
        acc["oracle"][n] += float(n_correct > 0)


def best_of_n_curves(
    rows: Sequence[CandidateSet],
    step_scores: Sequence[Sequence[list[float] | None]],
    permutations: Sequence[np.ndarray],
) -> dict[str, Any]:
    """Accuracy of every method at every N (pure; no scoring).

    Args:
        rows: the candidate sets.
        step_scores: per row, per candidate, its step scores (``None``: not scored).
        permutations: per row, an ``[P, count]`` integer array of candidate orders; the
            subset at N is the first N candidates of each order.

    Returns:
        ``{"n": [1..max], "n_rows": [rows with >= N candidates], "accuracy": {method:
        [figure per N]}, "per_row": {method: array [rows, max N]}}``; a figure is ``None``
        where no row has N candidates. ``per_row`` holds each row's expected accuracy (NaN
        past its candidate count), for paired comparisons of methods or models on the same
        rows (:func:`prm_plugins.evaluation.metrics.paired_bootstrap`).
    """
    if not (len(rows) == len(step_scores) == len(permutations)):
        raise InvalidInputError(
            f"best_of_n_curves needs one score list and one permutation array per row; got "
            f"{len(rows)} rows, {len(step_scores)} score lists, {len(permutations)} arrays"
        )
    max_n = max((len(r.solutions) for r in rows), default=0)
    sums = {m: np.zeros(max_n) for m in METHODS}
    n_rows = np.zeros(max_n, dtype=np.int64)
    per_row = {m: np.full((len(rows), max_n), np.nan) for m in METHODS}
    for r, (row, scores, perms) in enumerate(zip(rows, step_scores, permutations, strict=True)):
        k = len(row.solutions)
        perms = np.asarray(perms)
        if perms.ndim != 2 or perms.shape[1] != k:
            raise InvalidInputError(f"{row.where}: permutations must have shape [P, {k}], got "
                                    f"{perms.shape}")
        if len(scores) != k:
            raise InvalidInputError(f"{row.where}: {len(scores)} score lists for {k} candidates")
        correct = np.asarray(row.correct, dtype=np.float64)
        chain = {m: [_chain_score(s, m) for s in scores] for m in AGGREGATION_METHODS}
        answers = row.answers or [None] * k
        acc = {m: np.zeros(k) for m in METHODS}
        for order in perms:
            _add_order(acc, order, chain, answers, correct)
        for m in METHODS:
            per_row[m][r, :k] = acc[m] / len(perms)
            sums[m][:k] += per_row[m][r, :k]
        n_rows[:k] += 1
    accuracy = {
        m: [float(sums[m][i] / n_rows[i]) if n_rows[i] else None for i in range(max_n)]
        for m in METHODS
    }
    return {"n": list(range(1, max_n + 1)), "n_rows": n_rows.tolist(), "accuracy": accuracy,
            "per_row": per_row}


def write_bon_plot(result: dict[str, Any], path: str | Path) -> Path:
    """Plot accuracy against N, one line per method, to a PNG file.

    Raises:
        MissingExtraError: when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtraError(
            "the best-of-N plot needs matplotlib, which is not installed (bon.json was "
            'written). Install it with: pip install ".[eval]" in a prm-plugins checkout '
            '(once published: pip install "prm-plugins[eval]")'
        ) from exc
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = {"oracle": ":", "random": "--", "majority": "-.", "weighted_min": (0, (5, 1)),
              "weighted_last": (0, (5, 1))}
    for m in METHODS:
        ys = result["accuracy"][m]
        ax.plot(result["n"], [math.nan if y is None else y for y in ys], marker="o",
                markersize=3, linestyle=styles.get(m, "-"), label=m)
    if len(result["n"]) > 1 and result["n"][-1] >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("N (candidates)")
    ax.set_ylabel("accuracy")
    title = result.get("title") or "best-of-N"
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def paired_difference(
    a: dict[str, Any], method_a: str, b: dict[str, Any], method_b: str, n: int, *,
    resamples: int = 10_000, seed: int = 0,
) -> dict[str, float]:
    """Accuracy of ``method_a`` in result ``a`` minus ``method_b`` in ``b`` at N = ``n``, with
    a paired bootstrap 95% interval over the rows both have N candidates for.

    ``a`` and ``b`` are results of :func:`evaluate_best_of_n` (or :func:`best_of_n_curves`)
    on the same rows, e.g. two models, or one result twice for two methods.

    Examples:
        >>> rows = [CandidateSet("q", ["#### 1", "#### 2"], [True, False])] * 3
        >>> r = best_of_n_curves(rows, [[[0.9], [0.1]]] * 3, [np.array([[1, 0]])] * 3)
        >>> paired_difference(r, "min", r, "random", 2)["mean"]
        0.5
    """
    from prm_plugins.evaluation.metrics import paired_bootstrap

    x = np.asarray(a["per_row"][method_a])
    y = np.asarray(b["per_row"][method_b])
    if x.shape[0] != y.shape[0]:
        raise InvalidInputError(f"paired_difference needs results on the same rows; got "
                                f"{x.shape[0]} and {y.shape[0]} rows")
    if not 1 <= n <= min(x.shape[1], y.shape[1]):
        raise InvalidInputError(f"n must be in [1, {min(x.shape[1], y.shape[1])}], got {n}")
    keep = ~(np.isnan(x[:, n - 1]) | np.isnan(y[:, n - 1]))
    return paired_bootstrap(x[keep, n - 1], y[keep, n - 1], resamples=resamples, seed=seed)


def result_as_json(result: dict[str, Any], *, per_row: bool = False) -> dict[str, Any]:
    """``result`` of :func:`evaluate_best_of_n` as plain JSON values: without the per-row
    arrays, or (``per_row=True``) with them as lists, ``None`` past a row's candidates."""
    out = {k: v for k, v in result.items() if k != "per_row"}
    if per_row and "per_row" in result:
        out["per_row"] = {
            m: [[None if math.isnan(v) else round(float(v), 6) for v in row] for row in arr]
            for m, arr in result["per_row"].items()}
    return out


def _candidate_counts(
    rows: Sequence[CandidateSet], scores: Sequence[Sequence[list[float] | None]]
) -> dict[str, int]:
    """How many rows and candidates, scored, correct, without an answer, and whose
    ``is_correct`` disagrees with their extracted answer (logged: majority vote is judged by
    ``is_correct``)."""
    disagree = sum(
        1 for r in rows if r.answer is not None
        for sol, ok in zip(r.solutions, r.correct, strict=True)
        if answers_match(extract_answer(sol), r.answer) != ok
    )
    if disagree:
        logger.warning("%d candidate(s) have an is_correct that disagrees with their extracted "
                       "answer vs the row's answer; majority vote is judged by is_correct",
                       disagree)
    return {
        "rows": len(rows), "candidates": sum(len(r.solutions) for r in rows),
        "scored_candidates": sum(1 for r in scores for s in r if s is not None),
        "correct_candidates": sum(sum(r.correct) for r in rows),
        "rows_with_a_correct_candidate": sum(1 for r in rows if any(r.correct)),
        "candidates_without_answer": sum(
            1 for r in rows for a in (r.answers or []) if a is None),
        "is_correct_disagrees_with_answer": disagree,
    }


def evaluate_best_of_n(
    scorer: StepScorer,
    data: str | Path,
    out_dir: str | Path,
    *,
    split: str = "auto",
    permutations: int = 8,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
    plot: bool = True,
    config: dict[str, Any] | None = None,
    per_row: bool = False,
) -> dict[str, Any]:
    """Score candidate solutions and write best-of-N figures (``bon.json``, ``bon.png``).

    Args:
        scorer: the PRM, e.g. ``load_prm(path)``.
        data: the candidates JSONL file (see the module docstring).
        out_dir: folder for ``bon.json`` and ``bon.png`` (made if missing).
        split: :func:`prm_plugins.split_steps` mode for the solutions.
        permutations: random candidate orders averaged at each N.
        seed: seed of those orders.
        limit: most rows to use.
        batch_size: chains per ``score_batch`` call.
        progress: show a progress bar.
        plot: write ``bon.png``.
        config: the settings that ran (e.g. the CLI's), recorded in ``bon.json``.
        per_row: also write each row's accuracy per method and N to ``bon.json`` (method ->
            one list per row, ``null`` past its candidate count), for paired comparisons
            between runs. The returned dict always has them, as arrays.

    Returns:
        The figures written to ``bon.json``: ``n``, ``n_rows``, ``accuracy`` (method -> list
        per N), ``final`` (method -> accuracy at the largest N), ``counts`` and ``skipped``;
        and ``per_row`` (method -> ``[rows, N]`` array, see :func:`best_of_n_curves`).

    Raises:
        InvalidInputError: for a bad argument, a missing file or no usable row.
        MissingExtraError: when ``plot`` and matplotlib is missing (after bon.json is written).

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> r = evaluate_best_of_n(load_prm(), "cands.jsonl", "out/")  # doctest: +SKIP
        >>> r["final"]["min"], r["final"]["majority"]  # doctest: +SKIP
        (0.61, 0.58)
    """
    t0 = time.perf_counter()
    rows, issues = load_candidates(data, limit=limit)
    for issue in issues:
        logger.warning("skipped %s", issue)
    if not rows:
        raise InvalidInputError(f"no usable row in {str(data)!r} ({len(issues)} bad line(s)); "
                                f"rows look like {_EXAMPLE}")
    scores, score_issues = score_candidates(scorer, rows, split=split, batch_size=batch_size,
                                            progress=progress)
    perms = make_permutations([len(r.solutions) for r in rows], permutations, seed)
    curves = best_of_n_curves(rows, scores, perms)
    counts = _candidate_counts(rows, scores)
    result: dict[str, Any] = {
        **curves,
        "final": {m: curves["accuracy"][m][-1] for m in METHODS},
        "counts": {**counts, "permutations": permutations, "seed": seed, "split": split,
                   "bad_lines": len(issues)},
        "data": str(data),
        "skipped": [str(i) for i in [*issues, *score_issues]],
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if config is not None:
        result["config"] = config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "bon.json.tmp"
    tmp.write_text(json.dumps(result_as_json(result, per_row=per_row), indent=2) + "\n",
                   encoding="utf-8")
    os.replace(tmp, out / "bon.json")
    if plot:
        write_bon_plot({**result, "title": f"best-of-N on {Path(data).name}"}, out / "bon.png")
    return result
