"""Accuracy against compute: search strategies with the shipped PRM at equal token budgets.

Issue 21 item 5. Six strategies of :mod:`prm_plugins.strategies` are run with the shipped
default PRM (``load_prm()``) over the same step-level generator, at several equal budgets of
generated tokens, on a fixed set of GSM8K-test questions, and compared by accuracy (the final
answer equals the GSM8K answer, :func:`prm_plugins.answers.answers_match`) with paired
bootstrap intervals. It writes ``benchmarks/results/search_budget.md`` (the table) and
``benchmarks/results/search_budget.png`` (accuracy against mean generated tokens)::

    nice -n 10 .venv/bin/python benchmarks/search_budget.py --questions 150

(``pip install "prm-plugins[eval]"`` for matplotlib: the plot needs it, the library does not.)

**The generator** (:class:`GSM8KStepGenerator`; no LLM). For each question a *pool* of chains is
built from the project's labelling pipeline: the GSM8K reference solution parsed into visible
steps (:func:`prm_plugins.labeling.gsm8k.parse_gsm8k_row`; the ``#### N`` line becomes "The
answer is N."), and its perturbations (:mod:`prm_plugins.labeling.perturb`: every kind, at
every reasoning step, seeds ``--perturb-seeds``), each a realistic wrong step whose later steps
*carry on consistently with the wrong value* to a wrong final answer (a perturbation that does
not change the final answer is refused by the pipeline). ``propose_next_steps(question,
prefix, n)`` draws each of its ``n`` proposals independently from a seeded
``random.Random``:

* while ``prefix`` is the reference's first ``k`` steps, the next step is wrong with
  probability ``--error-rate`` (then one of the perturbations whose first wrong step is
  ``k``, uniformly), else it is the reference's step ``k``; where no perturbation of step
  ``k`` exists (the pipeline found no consistent one) the reference's step is returned, so
  the *effective* error rate is lower: the table states the generator's measured single-sample
  accuracy;
* once ``prefix`` has gone wrong, the next step is the wrong chain's next step (the wrong value
  carried on), uniformly among the pool chains that share the prefix; one error per chain
  (the perturbation tools apply to reference solutions, so errors do not compound);
* after a chain's last step (the answer), the proposal is empty (nothing left to add).

``sample(prompt, n)`` builds each whole solution by calling the same step rule from an empty
prefix until the answer step, so whole-solution strategies (best-of-N, weighted, adaptive) and
step-level ones (beam search, DVTS, particle filtering) draw from one distribution. Step texts
are the reference's own (no restyling), so a sampler repeats itself the way a low-temperature
model does. The generator counts what it returns with the budget's ``count_tokens``
(:func:`prm_plugins.budget.estimate_tokens`); the strategies' meters count the same texts, and
the benchmark checks the two counts agree.

**Budgets.** For budget ``N`` a question's token limit is ``N`` times the tokens of its
reference solution: what ``N`` whole solutions cost. Every strategy gets
``Budget(generated_tokens=limit)`` and its natural size for ``N``: best-of-N and weighted
best-of-N sample ``n=N``, adaptive best-of-N ``max_n=N`` (rounds of ``max(1, N // 4)``),
beam search and DVTS ``n=N`` with ``beam_width=2``, particle filtering ``n=N`` particles. All
run with ``max_concurrency=1`` (a deterministic call order, so a seed reproduces a run); the
token limit is checked before each round (:mod:`prm_plugins.budget`), so a whole-solution
method overshoots by at most one solution and a step-level one by at most one iteration
(``N`` steps): :func:`overshoot_bound`. Options are the library's defaults otherwise
(best-of-N picks the top ``min`` chain score; weighted best-of-N votes with ``min``; search
values chains by the ``last`` step; particle filtering weights by the newest step's score,
logit weighting, multinomial resampling, temperature 1, the highest-weight particle); particle
filtering is also run with ``select="vote"`` (the final answer with the largest summed weight),
its other documented choice. Majority vote (no PRM) and a single sample (the mean of 16 draws:
the generator's expected accuracy) are listed for reference.

**Scoring.** The PRM is wrapped in :class:`ScoreOnce`, which scores each distinct
``(question, steps)`` once per question (the pools are small, so methods and budgets revisit
the same partial chains); PRM calls in the table are the chains each strategy *sent*, as its
budget meter counted them, not the cache's misses.

**Statistics.** Questions are the units: the 95% intervals are percentile bootstraps over
questions (``--resamples``, seeded), paired for differences (each method against best-of-N,
and against particle filtering, at the same budget).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from prm_plugins.answers import answers_match, extract_answer
from prm_plugins.budget import Budget, BudgetSpent, estimate_tokens
from prm_plugins.errors import InvalidInputError, PRMError
from prm_plugins.evaluation.metrics import paired_bootstrap
from prm_plugins.labeling.gsm8k import parse_gsm8k_row, read_gsm8k_jsonl
from prm_plugins.labeling.perturb import PERTURBATIONS
from prm_plugins.strategies import (
    DVTS,
    AdaptiveBestOfN,
    BestOfN,
    ParticleFilter,
    StepBeamSearch,
    has_final_answer,
    majority_vote,
    weighted_best_of_n,
)
from prm_plugins.strategies.particle_results import ParticleSelect
from prm_plugins.types import StepScorer, StepScores

logger = logging.getLogger("search_budget")

ROOT = Path(__file__).resolve().parents[1]
GSM8K_TEST = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
RESULTS = ROOT / "benchmarks" / "results"

#: The PRM-guided strategies compared, in table order.
METHODS: tuple[str, ...] = ("best_of_n", "weighted_best_of_n", "adaptive_best_of_n",
                            "beam_search", "dvts", "particle_filter", "particle_filter_vote")
#: References without a PRM (cheap: no scoring).
BASELINES: tuple[str, ...] = ("single_sample", "majority_vote")
#: Whole-solution methods (one generator call = one solution).
WHOLE_SOLUTION = {"best_of_n", "weighted_best_of_n", "adaptive_best_of_n", "majority_vote",
                  "single_sample"}
LABELS = {"best_of_n": "best-of-N (top min score)", "weighted_best_of_n": "weighted best-of-N",
          "adaptive_best_of_n": "adaptive best-of-N", "beam_search": "beam search (width 2)",
          "dvts": "DVTS (width 2)", "particle_filter": "particle filtering",
          "particle_filter_vote": "particle filtering (select=vote)",
          "single_sample": "single sample (no PRM; mean of 16)",
          "majority_vote": "majority vote (no PRM)"}
MAX_CHAIN_STEPS = 16
#: Draws averaged into the single-sample baseline's expected accuracy.
PASS1_DRAWS = 16


# -- the question pools ---------------------------------------------------------------------

@dataclass(frozen=True)
class QuestionPool:
    """A question's reference chain and its perturbed (wrong) chains.

    Attributes:
        index: the row's index in the GSM8K file.
        question: the question text.
        gold: the GSM8K final answer.
        chains: chain 0 is the reference; the others are perturbations of it.
        first_error: per chain, the index of its first wrong step (``None`` for the reference).
        kinds: per chain, the perturbation kind (``"reference"`` for chain 0).
    """

    index: int
    question: str
    gold: str
    chains: tuple[tuple[str, ...], ...]
    first_error: tuple[int | None, ...]
    kinds: tuple[str, ...]
    by_prefix: dict[tuple[str, ...], tuple[int, ...]] = field(repr=False, compare=False,
                                                               default_factory=dict)
    forks: dict[int, tuple[int, ...]] = field(repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        by_prefix: dict[tuple[str, ...], list[int]] = {}
        forks: dict[int, list[int]] = {}
        for cid, chain in enumerate(self.chains):
            for k in range(len(chain) + 1):
                by_prefix.setdefault(chain[:k], []).append(cid)
            fe = self.first_error[cid]
            if fe is not None:
                forks.setdefault(fe, []).append(cid)
        self.by_prefix.update({k: tuple(v) for k, v in by_prefix.items()})
        self.forks.update({k: tuple(v) for k, v in forks.items()})

    @property
    def reference(self) -> tuple[str, ...]:
        """The reference solution's steps (the last one states the answer)."""
        return self.chains[0]

    def tokens(self, count: Callable[[str], int] = estimate_tokens) -> int:
        """Tokens of the reference solution: the cost of one whole solution."""
        return sum(count(s) for s in self.reference)


def build_pool(index: int, row: dict[str, Any], seeds: Sequence[int]) -> QuestionPool | None:
    """The pool of one GSM8K row, or ``None`` when its reference cannot be parsed and checked."""
    try:
        solution = parse_gsm8k_row(row)
    except (PRMError, ValueError) as exc:
        logger.info("row %d skipped: %s", index, exc)
        return None
    if not solution.is_checked:
        return None
    reference = tuple(s.strip() for s in solution.completions)
    gold = extract_answer(row["answer"]) or ""
    chains: dict[tuple[str, ...], tuple[int, str]] = {}
    for k in range(len(reference) - 1):
        for kind, perturbation in PERTURBATIONS.items():
            for seed in seeds:
                p = perturbation(solution, random.Random(seed), step=k)
                if p is None:
                    continue
                steps = tuple(s.strip() for s in p.completions)
                if (steps[:p.first_error] != reference[:p.first_error] or steps == reference
                        or answers_match(str(p.answer), gold) or not all(steps)):
                    continue
                chains.setdefault(steps, (p.first_error, kind))
    wrong = sorted(chains.items())
    return QuestionPool(
        index=index, question=row["question"], gold=gold,
        chains=(reference, *(c for c, _ in wrong)),
        first_error=(None, *(fe for _, (fe, _) in wrong)),
        kinds=("reference", *(kind for _, (_, kind) in wrong)))


def load_pools(path: Path, questions: int, seeds: Sequence[int]) -> list[QuestionPool]:
    """Pools of the first ``questions`` usable rows of a GSM8K JSONL file, in file order."""
    pools: list[QuestionPool] = []
    for index, row in enumerate(read_gsm8k_jsonl(path)):
        if len(pools) >= questions:
            break
        pool = build_pool(index, row, seeds)
        if pool is not None:
            pools.append(pool)
    return pools


# -- the generator --------------------------------------------------------------------------

class GSM8KStepGenerator:
    """A step-level generator over one question's pool (module docs give the rule).

    Implements the generator protocol (:mod:`prm_plugins.generators`): ``sample`` and
    ``propose_next_steps``. Seeded: with calls in the same order (``max_concurrency=1``) the
    same seed returns the same texts.

    Args:
        pool: the question's chains.
        error_rate: probability that a step on the reference path goes wrong (where a
            perturbation of that step exists), in [0, 1].
        seed: seeds the ``random.Random`` behind every choice.
        count_tokens: counts the tokens of each returned text (default: the budget's
            :func:`~prm_plugins.budget.estimate_tokens`).

    Raises:
        InvalidInputError: a bad error rate; at call time, a question other than the pool's or
            a prefix this generator cannot have produced.

    Examples:
        >>> row = {"question": "Tom has 3 apples and buys 2. How many?",
        ...        "answer": "3 + 2 = <<3+2=5>>5\\n#### 5"}
        >>> gen = GSM8KStepGenerator(build_pool(0, row, [0]), error_rate=0.0, seed=0)
        >>> gen.sample(row["question"], 1)
        ['3 + 2 = 5\\nThe answer is 5.']
        >>> gen.tokens, gen.calls
        (10, 1)
    """

    def __init__(self, pool: QuestionPool, *, error_rate: float, seed: int,
                 count_tokens: Callable[[str], int] = estimate_tokens) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise InvalidInputError(f"error_rate must be in [0, 1], got {error_rate!r}")
        self.pool = pool
        self.error_rate = error_rate
        self.count_tokens = count_tokens
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.tokens = 0
        self.calls = 0

    def _next(self, prefix: tuple[str, ...]) -> str:
        pool = self.pool
        ids = pool.by_prefix.get(prefix)
        if ids is None:
            raise InvalidInputError(
                f"prefix {[s[:40] for s in prefix]!r} was not produced by this generator")
        k = len(prefix)
        if ids[0] == 0:  # still on the reference path
            if k >= len(pool.reference):
                return ""
            forks = pool.forks.get(k, ())
            if forks and self._rng.random() < self.error_rate:
                return pool.chains[self._rng.choice(forks)][k]
            return pool.reference[k]
        chain = pool.chains[self._rng.choice(ids)]
        return chain[k] if k < len(chain) else ""

    def _check(self, question: str) -> None:
        if question != self.pool.question:
            raise InvalidInputError(
                f"this generator answers GSM8K-test row {self.pool.index} only; got the "
                f"question {question[:60]!r}")

    def _charge(self, texts: list[str]) -> list[str]:
        self.calls += 1
        self.tokens += sum(self.count_tokens(t) for t in texts)
        return texts

    def propose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        """``n`` independent next steps after ``prefix`` (empty once the chain is done)."""
        self._check(question)
        with self._lock:
            key = tuple(s.strip() for s in prefix)
            return self._charge([self._next(key) for _ in range(n)])

    def sample(self, prompt: str, n: int) -> list[str]:
        """``n`` whole solutions, each built step by step with the same rule."""
        self._check(prompt)
        with self._lock:
            texts = []
            for _ in range(n):
                steps: list[str] = []
                while len(steps) < MAX_CHAIN_STEPS:
                    step = self._next(tuple(steps))
                    if not step:
                        break
                    steps.append(step)
                    if has_final_answer(step):
                        break
                texts.append("\n".join(steps))
            return self._charge(texts)


# -- the scorer -----------------------------------------------------------------------------

class ScoreOnce:
    """A :class:`~prm_plugins.StepScorer` that scores each distinct chain once.

    Misses of one ``score_batch`` call go to the wrapped scorer in one batch. ``sent`` counts
    the chains the wrapped scorer actually scored.
    """

    def __init__(self, prm: StepScorer) -> None:
        self.prm = prm
        self.memo: dict[tuple[str, tuple[str, ...]], StepScores] = {}
        self.sent = 0

    def clear(self) -> None:
        """Forget every score (between questions)."""
        self.memo.clear()

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score_batch([(question, steps)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        keys = [(q, tuple(s)) for q, s in items]
        todo = list(dict.fromkeys(k for k in keys if k not in self.memo))
        if todo:
            results = self.prm.score_batch([(q, list(s)) for q, s in todo])
            self.sent += len(todo)
            self.memo.update(zip(todo, results, strict=True))
        return [self.memo[k] for k in keys]

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score(question, steps)

    async def ascore_batch(
        self, items: Sequence[tuple[str, Sequence[str]]]
    ) -> list[StepScores]:
        return self.score_batch(items)


# -- one run --------------------------------------------------------------------------------

def run_method(method: str, pool: QuestionPool, gen: GSM8KStepGenerator, prm: StepScorer,
               n: int, budget: Budget, seed: int) -> tuple[str | None, BudgetSpent | None]:
    """Run one strategy on one question; the final answer and what it spent."""
    q = pool.question
    if method == "best_of_n":
        r = BestOfN(gen, prm, n, selection="top_score", max_concurrency=1,
                    budget=budget).run(q)
        return extract_answer(r.best.text or ""), r.budget
    if method == "weighted_best_of_n":
        v = weighted_best_of_n(q, gen, prm, n, max_concurrency=1, budget=budget)
        return v.answer, v.budget
    if method == "adaptive_best_of_n":
        a = AdaptiveBestOfN(gen, prm, max_n=n, round_size=max(1, n // 4), max_concurrency=1,
                            budget=budget).run(q)
        return a.answer, a.budget
    if method in ("beam_search", "dvts"):
        cls = StepBeamSearch if method == "beam_search" else DVTS
        s = cls(gen, prm, n=n, beam_width=min(2, n), max_steps=MAX_CHAIN_STEPS,
                max_concurrency=1, budget=budget).run(q)
        return extract_answer(s.text), s.budget
    if method in ("particle_filter", "particle_filter_vote"):
        select: ParticleSelect = "vote" if method == "particle_filter_vote" else "best"
        p = ParticleFilter(gen, prm, n=n, max_steps=MAX_CHAIN_STEPS, seed=seed, select=select,
                           max_concurrency=1, budget=budget).run(q)
        return p.answer, p.budget
    if method == "majority_vote":
        m = majority_vote(q, gen, n, max_concurrency=1, budget=budget)
        return m.answer, m.budget
    raise InvalidInputError(f"unknown method {method!r}; choose from {METHODS + BASELINES}")


def overshoot_bound(pool: QuestionPool, method: str, n: int,
                    count: Callable[[str], int] = estimate_tokens) -> int:
    """Most tokens a run may spend past its limit: one round (module docs).

    A whole-solution method (rounds of one call) overshoots by at most its longest solution;
    a step-level one by one iteration: at most ``n`` proposals of the longest step.
    """
    if method in WHOLE_SOLUTION:
        return max(sum(count(s) for s in c) for c in pool.chains)
    return n * max(count(s) for c in pool.chains for s in c)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def run_question(pool: QuestionPool, prm: ScoreOnce, budgets: Sequence[int],
                 methods: Sequence[str], *, error_rate: float, seed: int) -> list[dict[str, Any]]:
    """Every method at every budget on one question: one record per run."""
    records = []
    prm.clear()
    for n in budgets:
        limit = n * pool.tokens()
        for m, method in enumerate(methods):
            run_seed = _seed(seed, pool.index, n, m)
            gen = GSM8KStepGenerator(pool, error_rate=error_rate, seed=run_seed)
            budget = Budget(generated_tokens=limit)
            if method == "single_sample":
                records.append(_single_sample(pool, gen, n, limit))
                continue
            error = None
            try:
                answer, reported = run_method(method, pool, gen, prm, n, budget, run_seed)
                spent = reported or budget_spent(gen)
            except PRMError as exc:  # BudgetExhausted / AllCandidatesFailed: counted wrong
                answer, spent, error = None, budget_spent(gen), f"{type(exc).__name__}: {exc}"
            records.append({
                "question": pool.index, "method": method, "n": n, "limit": limit,
                "answer": answer, "correct": float(answers_match(answer, pool.gold)),
                "tokens": spent.generated_tokens, "generator_tokens": gen.tokens,
                "prm_calls": spent.prm_calls, "generator_calls": spent.generator_calls,
                "overshoot": max(0, spent.generated_tokens - limit),
                "exhausted": spent.exhausted, "error": error,
            })
    return records


def _win(a: float, b: float) -> float:
    return 1.0 if a > b else 0.5 if a == b else 0.0


def prm_pairs(pool: QuestionPool, prm: StepScorer) -> list[dict[str, Any]]:
    """How the PRM ranks the reference against each wrong chain of the pool.

    Per wrong chain: ``fork``, whether the reference's step scores above the wrong step at
    the step where they part (the newest step's score of each partial chain: what search
    and particle filtering weigh), and ``final_last`` / ``final_min``, whether the whole
    reference scores above the whole wrong chain by its last step / its weakest step
    (1 = yes, 0.5 = tie, 0 = no).
    """
    ref = pool.reference
    wrong = [(c, fe, kind) for c, fe, kind in zip(pool.chains[1:], pool.first_error[1:],
                                                   pool.kinds[1:], strict=True)
             if fe is not None]
    items = [(pool.question, list(ref[:k + 1])) for k in range(len(ref))]
    items += [(pool.question, list(c[:fe + 1])) for c, fe, _ in wrong]
    items += [(pool.question, list(c)) for c, _, _ in wrong]
    scores = [r.scores for r in prm.score_batch(items)]
    ref_at, forks, finals = scores[:len(ref)], scores[len(ref):len(ref) + len(wrong)], \
        scores[len(ref) + len(wrong):]
    full = ref_at[-1]
    return [{"question": pool.index, "kind": kind,
             "fork": _win(ref_at[fe][-1], fork[-1]),
             "final_last": _win(full[-1], final[-1]),
             "final_min": _win(min(full), min(final))}
            for (_, fe, kind), fork, final in zip(wrong, forks, finals, strict=True)]


def pair_rates(pairs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The win rates of :func:`prm_pairs`, overall (``"all"``) and by perturbation kind."""
    groups: dict[str, list[dict[str, Any]]] = {"all": pairs}
    for pair in pairs:
        groups.setdefault(pair["kind"], []).append(pair)
    return {name: {"pairs": len(group), **{k: round(float(np.mean([g[k] for g in group])), 4)
                                           for k in ("fork", "final_last", "final_min")}}
            for name, group in groups.items()}


def pair_summary(pairs: list[dict[str, Any]]) -> list[str]:
    """:func:`pair_rates` as a markdown table."""
    out = ["| wrong chains | pairs | step at the fork (`last` of the partial chains) | "
           "whole chain, last step | whole chain, weakest step (`min`) |",
           "|---|---|---|---|---|"]
    for name, r in pair_rates(pairs).items():
        out.append(f"| {name} | {r['pairs']} | {r['fork']:.3f} | {r['final_last']:.3f} | "
                   f"{r['final_min']:.3f} |")
    return out


def budget_spent(gen: GSM8KStepGenerator) -> BudgetSpent:
    """What a failed run spent, as the generator counted it (no PRM calls known)."""
    return BudgetSpent(generated_tokens=gen.tokens, generator_calls=gen.calls)


def _single_sample(pool: QuestionPool, gen: GSM8KStepGenerator, n: int,
                   limit: int) -> dict[str, Any]:
    """The generator alone: the expected accuracy of one sample (the mean of 16 draws)."""
    texts = gen.sample(pool.question, PASS1_DRAWS)
    correct = [answers_match(extract_answer(t), pool.gold) for t in texts]
    tokens = round(gen.tokens / PASS1_DRAWS)
    return {"question": pool.index, "method": "single_sample", "n": n, "limit": limit,
            "answer": None, "correct": float(np.mean(correct)), "tokens": tokens,
            "generator_tokens": tokens, "prm_calls": 0, "generator_calls": 1,
            "overshoot": 0, "exhausted": None, "error": None}


# -- statistics -----------------------------------------------------------------------------

def _interval(r: dict[str, float]) -> list[float]:
    return [round(r["low"], 4), round(r["high"], 4)]


def summarize(records: list[dict[str, Any]], methods: Sequence[str], budgets: Sequence[int],
              *, resamples: int, seed: int) -> list[dict[str, Any]]:
    """One row per (method, budget): accuracy, intervals, paired differences, mean costs."""
    questions = sorted({r["question"] for r in records})
    by = {(r["method"], r["n"], r["question"]): r for r in records}
    zeros = np.zeros(len(questions))

    def vec(method: str, n: int, key: str) -> np.ndarray:
        return np.array([float(by[method, n, q][key]) for q in questions])

    rows = []
    for n in budgets:
        for method in methods:
            correct = vec(method, n, "correct")
            row: dict[str, Any] = {
                "method": method, "n": n, "questions": len(questions),
                "accuracy": round(float(correct.mean()), 4),
                "ci": _interval(paired_bootstrap(correct, zeros, resamples=resamples,
                                                 seed=seed)),
                "mean_limit": round(float(vec(method, n, "limit").mean()), 1),
                "mean_tokens": round(float(vec(method, n, "tokens").mean()), 1),
                "mean_prm_calls": round(float(vec(method, n, "prm_calls").mean()), 2),
                "mean_generator_calls": round(float(vec(method, n, "generator_calls").mean()), 2),
                "over_limit": round(float((vec(method, n, "overshoot") > 0).mean()), 3),
                "errors": int(sum(by[method, n, q]["error"] is not None for q in questions)),
            }
            for ref in ("best_of_n", "particle_filter"):
                if ref in methods and ref != method:
                    d = paired_bootstrap(correct, vec(ref, n, "correct"), resamples=resamples,
                                         seed=seed)
                    row[f"vs_{ref}"] = {"mean": round(d["mean"], 4), "ci": _interval(d)}
            rows.append(row)
    return rows


# -- output ---------------------------------------------------------------------------------

def _diff(row: dict[str, Any], ref: str) -> str:
    d = row.get(f"vs_{ref}")
    if d is None:
        return "—"
    return f"{d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown table of :func:`summarize`'s rows."""
    out = ["| method | N | token limit (mean) | accuracy | 95% CI | vs best-of-N | "
           "vs particle filtering | mean tokens spent | over limit | PRM calls | "
           "generator calls |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {LABELS[r['method']]} | {r['n']} | {r['mean_limit']:.0f} | {r['accuracy']:.3f} | "
            f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] | {_diff(r, 'best_of_n')} | "
            f"{_diff(r, 'particle_filter')} | {r['mean_tokens']:.0f} | "
            f"{100 * r['over_limit']:.0f}% | {r['mean_prm_calls']:.1f} | "
            f"{r['mean_generator_calls']:.1f} |")
    return out


def plot(rows: list[dict[str, Any]], methods: Sequence[str], path: Path) -> None:
    """Accuracy against mean generated tokens, one line per method (95% CI bars)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError('the plot needs matplotlib: pip install "prm-plugins[eval]"') from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    for method in methods:
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["n"])
        x = [r["mean_tokens"] for r in pts]
        y = [r["accuracy"] for r in pts]
        err = [[r["accuracy"] - r["ci"][0] for r in pts], [r["ci"][1] - r["accuracy"]
                                                             for r in pts]]
        if method == "single_sample":  # one sample whatever N: a level, not a curve
            ax.axhline(float(np.mean(y)), color="gray", linestyle=":", label=LABELS[method])
            continue
        style = "--" if method in BASELINES else "-"
        ax.errorbar(x, y, yerr=err, marker="o", linestyle=style, capsize=3,
                    label=LABELS[method])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("mean generated tokens per question")
    ax.set_ylabel("accuracy (GSM8K answer)")
    ax.set_title("Accuracy against compute, shipped PRM, GSM8K-test step generator")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """Where particle filtering wins and where it does not: the paired intervals, in words."""
    out = []
    for r in rows:
        d = r.get("vs_particle_filter")
        if d is None or r["method"] in BASELINES:
            continue
        low, high = d["ci"]
        if high < 0:
            verdict = "particle filtering is better"
        elif low > 0:
            verdict = "particle filtering is worse"
        else:
            verdict = "no clear difference (the interval holds 0)"
        out.append(f"- N = {r['n']}, {LABELS[r['method']]}: {verdict}; "
                   f"{LABELS[r['method']]} minus particle filtering = {d['mean']:+.3f} "
                   f"[{low:+.3f}, {high:+.3f}].")
    return out


def markdown(rows: list[dict[str, Any]], info: dict[str, Any], pools: Sequence[QuestionPool],
             args: argparse.Namespace, pairs: list[dict[str, Any]]) -> list[str]:
    """The results page."""
    kinds: dict[str, int] = {}
    for pool in pools:
        for kind in pool.kinds[1:]:
            kinds[kind] = kinds.get(kind, 0) + 1
    return [
        "# Accuracy against compute: search strategies under equal token budgets",
        "",
        f"Command: `{info['command']}`  ",
        f"Machine: {info['machine']}  ",
        f"Date: {info['date']}; {info['seconds']} s, {info['chains_scored']} distinct chains "
        "scored by the shipped PRM (`load_prm()`).",
        "",
        f"Questions: the first {info['questions']} usable GSM8K-test rows (rows "
        f"{info['first_row']}..{info['last_row']} in file order), seed {args.seed}; "
        f"generator error rate {args.error_rate} per step, {info['wrong_chains_mean']} wrong "
        f"chains per question on average (perturbation seeds {args.perturb_seeds}; kinds: "
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + "); a reference "
        f"solution costs {info['reference_tokens_mean']} tokens on average "
        "(`estimate_tokens`). Budget N = a token limit of N reference solutions per question. "
        f"Intervals: 95% percentile bootstrap over questions, {args.resamples} resamples, "
        "paired for differences. How the generator, the budgets and the options are set: the "
        "docstring of `benchmarks/search_budget.py`.",
        "",
        *table(rows),
        "",
        "`over limit`: the share of runs that spent past the token limit (checked before each "
        "round, so by at most one round: one solution, or one iteration of N steps). PRM calls "
        "are the chains each strategy sent to the scorer; generator calls are "
        "`sample`/`propose_next_steps` calls.",
        "",
        "Plot: `search_budget.png` (accuracy against mean generated tokens, 95% CI bars).",
        "",
        "## Particle filtering against each method (paired, same questions and budget)",
        "",
        *findings(rows),
        "",
        "## What the PRM sees: the reference against each wrong chain",
        "",
        "Share of (reference, wrong chain) pairs of the pools in which the shipped PRM scores "
        "the reference higher (ties count half; 0.5 is chance). `step at the fork`: the "
        "newest step's score of the two partial chains where they part (what beam search, "
        "DVTS and particle filtering weigh at each step); `last step`: the final-answer "
        "step's score of the whole chains (how particle filtering with `select='best'` and "
        "the searches' `last` value rank finished chains); `weakest step`: the `min` "
        "aggregation (what best-of-N ranks by).",
        "",
        *pair_summary(pairs),
    ]


def machine() -> str:
    """The machine, in words."""
    import onnxruntime

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return (f"{platform.platform()}, {os.cpu_count()} CPUs (load average {load:.1f} at the "
            f"end), Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}")


# -- main -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=GSM8K_TEST, help="GSM8K JSONL file")
    p.add_argument("--questions", type=int, default=150, help="first usable rows, file order")
    p.add_argument("--budgets", type=int, nargs="+", default=[2, 4, 8, 16],
                   help="N: a token limit of N reference solutions")
    p.add_argument("--error-rate", type=float, default=0.2, help="per-step error rate")
    p.add_argument("--perturb-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the .md/.json/.png")
    p.add_argument("--name", default="search_budget", help="file name stem of the results")
    p.add_argument("--records", type=Path, default=None,
                   help="also write every run and PRM pair to this JSONL file")
    return p.parse_args(argv)


def run_benchmark(pools: Sequence[QuestionPool], prm: StepScorer, budgets: Sequence[int],
                  methods: Sequence[str], *, error_rate: float, seed: int,
                  resamples: int) -> dict[str, Any]:
    """The benchmark's core: every run, and the summary rows (what the unit test runs)."""
    memo = ScoreOnce(prm)
    records: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    start = time.monotonic()
    for i, pool in enumerate(pools):
        records += run_question(pool, memo, budgets, methods, error_rate=error_rate, seed=seed)
        if len(pool.chains) > 1:
            pairs += prm_pairs(pool, memo)
        if (i + 1) % 10 == 0:
            logger.info("%d/%d questions, %.0f s, %d chains scored", i + 1, len(pools),
                        time.monotonic() - start, memo.sent)
    rows = summarize(records, methods, budgets, resamples=resamples, seed=seed)
    return {"records": records, "rows": rows, "pairs": pairs, "chains_scored": memo.sent,
            "seconds": round(time.monotonic() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("prm_plugins").setLevel(logging.ERROR)
    from prm_plugins import load_prm

    pools = load_pools(args.data, args.questions, args.perturb_seeds)
    methods = (*METHODS, *BASELINES)
    result = run_benchmark(pools, load_prm(), args.budgets, methods,
                           error_rate=args.error_rate, seed=args.seed,
                           resamples=args.resamples)
    command = "nice -n 10 .venv/bin/python benchmarks/search_budget.py " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    info = {
        "command": command.strip(), "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "questions": len(pools), "first_row": pools[0].index, "last_row": pools[-1].index,
        "wrong_chains_mean": round(float(np.mean([len(p.chains) - 1 for p in pools])), 1),
        "reference_tokens_mean": round(float(np.mean([p.tokens() for p in pools])), 1),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": result["seconds"], "chains_scored": result["chains_scored"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(
        {"info": info, "rows": result["rows"], "prm_pairs": pair_rates(result["pairs"])},
        indent=1) + "\n")
    if args.records is not None:  # every run and every PRM pair, one JSON object a line
        with args.records.open("w") as f:
            for record in [*result["records"], *result["pairs"]]:
                f.write(json.dumps(record) + "\n")
    plot(result["rows"], methods, args.out / f"{args.name}.png")
    md = markdown(result["rows"], info, pools, args, result["pairs"])
    (args.out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
