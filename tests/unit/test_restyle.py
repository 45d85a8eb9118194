"""restyle_steps: surface variants keep every step's arithmetic, the answer and the labels."""

from __future__ import annotations

import random
import sys

import pytest
from test_labeling_gsm8k import ROWS  # GSM8K-format problems written for the tests

from prm_plugins.answers import extract_answer, normalize_answer
from prm_plugins.checks import check_arithmetic
from prm_plugins.errors import InvalidInputError
from prm_plugins.labeling.verifier import build_verifier_dataset

from support.paths import ROOT

# restyle_steps is a benchmark tool (benchmarks/restyle.py), not part of the library.
sys.path.insert(0, str(ROOT / "benchmarks"))
from restyle import restyle_steps


def _chains() -> list[dict]:
    """Reference and perturbed chains (every kind that applies, several seeds)."""
    return [c for seed in range(4)
            for c in build_verifier_dataset(ROWS, seed=seed, n_perturbed_per_problem=6)]


def test_variants_keep_arithmetic_answer_and_step_count() -> None:
    chains = _chains()
    assert len(chains) > 60 and len({c["perturbation"] for c in chains}) >= 6
    distinct = 0
    for k, chain in enumerate(chains):
        steps = chain["completions"]
        variants = {tuple(restyle_steps(steps, random.Random(k * 10 + s))) for s in range(4)}
        distinct += len(variants) > 1
        for v in variants:
            assert len(v) == len(steps)
            for before, after in zip(steps, v, strict=True):
                # the calculator check sees the same thing: a slip stays a slip
                assert check_arithmetic(after)[0] == check_arithmetic(before)[0], (before, after)
            assert normalize_answer(extract_answer("\n".join(v))) == normalize_answer(
                extract_answer("\n".join(steps)))
    assert distinct > 0.9 * len(chains)


def test_rewrites_on_a_known_chain() -> None:
    steps = ["He has 5*12=60 apples.", "He sells 18, so 60-18=42 are left.",
             "She eats 10 - 3 + 2 = 9 of them.", "The answer is 42."]
    seen = {tuple(restyle_steps(steps, random.Random(s))) for s in range(40)}
    texts = {t for v in seen for t in v}
    assert "He has 12 * 5 = 60 apples." in texts or "He has 12*5=60 apples." in texts
    assert any(t.startswith(("So he sells", "Then he sells", "Now he sells")) for t in texts)
    assert "So the answer is 42." in texts
    # never a swap inside a longer expression: 10 - 2 + 3 is 11, not 9
    assert not any("10 - 2 + 3" in t or "10-2+3" in t for t in texts)
    # deterministic under a seed
    assert restyle_steps(steps, random.Random(7)) == restyle_steps(steps, random.Random(7))


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="sequence of step strings"):
        restyle_steps("one step", random.Random(0))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        restyle_steps(["ok", 3], random.Random(0))  # type: ignore[list-item]
