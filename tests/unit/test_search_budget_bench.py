"""benchmarks/search_budget.py: the step generator's rule, and the core on 2 questions x 1 budget.

The benchmark is a script, not part of the library: it is loaded from its file. The questions
are the GSM8K-style rows written in ``test_labeling_gsm8k`` (nothing is read from ../shared);
the core runs every strategy with the shipped default PRM (``load_prm()``).
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest
from test_labeling_gsm8k import APPLES, CLIPS, WENG  # GSM8K-format problems written for tests

from prm_plugins import load_prm
from prm_plugins.answers import answers_match, extract_answer
from prm_plugins.budget import estimate_tokens
from prm_plugins.errors import InvalidInputError

from support.paths import ROOT


def _load() -> ModuleType:
    path = ROOT / "benchmarks" / "search_budget.py"
    spec = importlib.util.spec_from_file_location("search_budget", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_budget"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


sb = _load()


@pytest.fixture(scope="module")
def pools() -> list:
    out = [sb.build_pool(i, row, [0, 1]) for i, row in enumerate([CLIPS, APPLES, WENG])]
    assert all(p is not None for p in out)
    return out


def _run(gen, steps: int = 20) -> list[str]:
    prefix: list[str] = []
    for _ in range(steps):
        step = gen.propose_next_steps(gen.pool.question, prefix, 1)[0]
        if not step:
            break
        prefix.append(step)
    return prefix


def test_pool_wrong_chains_share_the_reference_prefix_and_end_wrong(pools) -> None:
    pool = pools[0]
    assert pool.chains[0] == tuple(sb.parse_gsm8k_row(CLIPS).completions)
    assert len(pool.chains) > 1
    for chain, fe in zip(pool.chains[1:], pool.first_error[1:], strict=True):
        assert chain[:fe] == pool.reference[:fe] and chain[fe] != pool.reference[fe]
        assert not answers_match(extract_answer("\n".join(chain)), pool.gold)


def test_generator_error_rate_zero_and_one(pools) -> None:
    pool = pools[0]
    right = sb.GSM8KStepGenerator(pool, error_rate=0.0, seed=3)
    assert right.sample(pool.question, 3) == ["\n".join(pool.reference)] * 3
    assert _run(right) == list(pool.reference)
    wrong = sb.GSM8KStepGenerator(pool, error_rate=1.0, seed=3)
    chain = _run(wrong)
    # The first step that has a perturbation goes wrong, and the chain then follows that
    # perturbation (the wrong value carried on) to its wrong answer.
    k = min(pool.forks)
    assert chain[:k] == list(pool.reference[:k]) and chain[k] != pool.reference[k]
    assert tuple(chain) in pool.chains[1:]
    assert not answers_match(extract_answer("\n".join(chain)), pool.gold)


def test_generator_is_seeded_and_counts_tokens(pools) -> None:
    pool = pools[1]
    a = sb.GSM8KStepGenerator(pool, error_rate=0.5, seed=7)
    b = sb.GSM8KStepGenerator(pool, error_rate=0.5, seed=7)
    texts = a.sample(pool.question, 8)
    assert texts == b.sample(pool.question, 8)
    assert a.tokens == sum(estimate_tokens(t) for t in texts) and a.calls == 1
    assert a.propose_next_steps(pool.question, [], 4) == b.propose_next_steps(
        pool.question, [], 4)


def test_generator_refuses_what_it_cannot_have_made(pools) -> None:
    gen = sb.GSM8KStepGenerator(pools[0], error_rate=0.2, seed=0)
    with pytest.raises(InvalidInputError, match="row 0 only"):
        gen.sample("another question", 1)
    with pytest.raises(InvalidInputError, match="not produced by this generator"):
        gen.propose_next_steps(pools[0].question, ["a step it never wrote"], 1)
    with pytest.raises(InvalidInputError, match="error_rate"):
        sb.GSM8KStepGenerator(pools[0], error_rate=1.5, seed=0)


def test_core_on_two_questions_one_budget(pools) -> None:
    methods = (*sb.METHODS, *sb.BASELINES)
    n = 2
    result = sb.run_benchmark(pools[:2], load_prm(), [n], methods, error_rate=0.3, seed=0,
                              resamples=200)
    records, rows = result["records"], result["rows"]
    assert len(records) == 2 * len(methods)
    by_pool = {p.index: p for p in pools}
    for r in records:
        pool = by_pool[r["question"]]
        assert r["limit"] == n * pool.tokens()
        assert r["error"] is None, r
        # Within the budget, up to the documented one-round overshoot.
        assert r["tokens"] <= r["limit"] + sb.overshoot_bound(pool, r["method"], n), r
        # The strategy's meter counted exactly what the generator returned.
        assert r["tokens"] == r["generator_tokens"], r
        if r["method"] not in sb.BASELINES:
            assert r["prm_calls"] >= 1 and r["generator_calls"] >= 1
    assert [(row["method"], row["n"]) for row in rows] == [(m, n) for m in methods]
    for row in rows:
        assert 0.0 <= row["ci"][0] <= row["accuracy"] <= row["ci"][1] <= 1.0
        assert row["questions"] == 2
        for ref in ("best_of_n", "particle_filter"):
            assert (f"vs_{ref}" in row) == (row["method"] != ref)
    lines = sb.table(rows)
    assert len(lines) == 2 + len(methods)
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert len(sb.findings(rows)) == len(sb.METHODS) - 1
    # One PRM comparison per wrong chain, each a win, a tie or a loss of the reference.
    pairs = result["pairs"]
    assert len(pairs) == sum(len(p.chains) - 1 for p in pools[:2])
    assert {v for pair in pairs for v in (pair["fork"], pair["final_last"], pair["final_min"])
            } <= {0.0, 0.5, 1.0}
    summary = sb.pair_summary(pairs)
    assert summary[2].startswith(f"| all | {len(pairs)} |")
