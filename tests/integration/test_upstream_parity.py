"""Published PRM families scored exactly as their upstream code scores them (issue 17).

For each family a tiny random checkpoint is built with a tokenizer made the family's real
way, exported with ``prm export`` once per session, and scored through ``prm score``,
``load_prm().score`` and ``score_batch``; the reference is each family's own published usage
code, written out in ``tests/support/upstream_reference.py`` (upstream lines cited there). Cases:
1, 3 and 8 steps; line breaks inside steps; edge spaces and indentation; steps that end
with the family's tag; a whole solution through ``--solution``; a batch of mixed lengths.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support.upstream_reference import FAMILIES, Family, write_jsonl

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

#: The issue's bound on max |Δp| against the upstream reference.
TOLERANCE = 1e-4

QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have?"
EIGHT = [
    "Step 1: Tom has 3 apples.",
    "Step 2: He buys 2 more apples.",
    "Step 3: So he has 3 + 2 = 5 apples.",
    "Step 4: Ann has 4 pens and sells half, so 4 / 2 = 2 pens are left.",
    "Step 5: Each pen costs 3 dollars.",
    "Step 6: The total cost is 2 * 3 = 6 dollars.",
    "Step 7: First add, then subtract: 6 - 1 = 5.",
    "Step 8: The answer is 5.",
]


def cases(family: Family) -> dict[str, list[str]]:
    """The step lists every family is checked on (the tag case uses the family's tag)."""
    return {
        "one_step": ["Tom has 3 apples and buys 2 more, so 3 + 2 = 5."],
        "three_steps": EIGHT[:3],
        "eight_steps": EIGHT,
        "line_breaks": ["Step 1: Tom has 3 apples.\nHe buys 2 more.",
                        "Step 2: 3 + 2 = 5\n\nso 5 in all.", "Step 3:\nThe answer is 5."],
        "spaces": ["  Step 1: Tom has 3 apples.  ", "\tHe buys 2 more:", "    3 + 2 = 5",
                   " The answer is 5. "],
        "tagged": [EIGHT[0] + family.tag, EIGHT[1] + family.tag, EIGHT[2]],
    }


CASE_NAMES = list(cases(FAMILIES[0]))


@dataclass
class Published:
    """A family's tiny checkpoint, its ``prm export`` output and its upstream reference."""

    family: Family
    checkpoint: Path
    exported: Path
    reference: Any
    prm: Any


@pytest.fixture(scope="session", params=FAMILIES, ids=[f.name for f in FAMILIES])
def published(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Published:
    """Built and exported once per session and family, as a user would: ``prm export``."""
    pytest.importorskip("prm_plugins.onnx_export.export")
    from prm_plugins import load_prm
    from prm_plugins.cli import main

    family: Family = request.param
    root = tmp_path_factory.mktemp(f"parity-{family.name}")
    checkpoint = family.build(root / "ckpt")
    exported = root / "onnx"
    code = main(["export", str(checkpoint), str(exported), "--format", family.format,
                 "--parity-chains", "4"])
    assert code == 0, f"prm export of {family.name} exited with {code}"
    return Published(family, checkpoint, exported, family.reference(checkpoint),
                     load_prm(exported, device="cpu"))


def assert_close(got: Sequence[float], want: Sequence[float], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} scores, upstream has {len(want)}"
    diff = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    assert diff <= TOLERANCE, f"{what}: max |dp| {diff:.2e} > {TOLERANCE}"


def cli_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    from prm_plugins.cli import main

    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


# -- load_prm().score, every case (fast: the export is shared by the session) --------------
@pytest.mark.parametrize("case", CASE_NAMES)
def test_score_equals_upstream(published: Published, case: str) -> None:
    steps = cases(published.family)[case]
    got = published.prm.score(QUESTION, steps)
    assert got.steps == steps  # the steps as given, never rewritten
    assert_close(got.scores, published.reference.scores(QUESTION, steps),
                 f"{published.family.name}/{case}")


def test_scores_spread(published: Published) -> None:
    """The reference comparisons can fail: scores depend on the text, not a constant."""
    scores = published.prm.score(QUESTION, EIGHT).scores
    assert max(scores) - min(scores) > 0.01


# -- score_batch: every case in one batch of mixed lengths -----------------------------------
def test_score_batch_of_mixed_lengths_equals_upstream(published: Published) -> None:
    chains = [(QUESTION, steps) for steps in cases(published.family).values()]
    chains.append(("What is 7 times 8?", ["7 * 8 = 56"]))
    results = published.prm.score_batch(chains)
    for (question, steps), got in zip(chains, results, strict=True):
        assert_close(got.scores, published.reference.scores(question, steps),
                     f"{published.family.name} batch")


# -- prm score: --steps, --input (a batch) and --solution -------------------------------------
def test_prm_score_steps_equals_upstream(published: Published,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    steps = cases(published.family)["line_breaks"]
    out = cli_json(["score", str(published.exported), "--question", QUESTION, "--steps",
                    *steps, "--json", "--no-checks"], capsys)
    assert out["steps"] == steps
    assert_close(out["step_scores"], published.reference.scores(QUESTION, steps),
                 f"{published.family.name} prm score --steps")


@pytest.mark.slow
def test_prm_score_input_file_equals_upstream(
    published: Published, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prm_plugins.cli import main

    rows = [{"question": QUESTION, "steps": s} for s in cases(published.family).values()]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert main(["score", str(published.exported), "--input", str(src), "--output", str(out),
                 "--no-progress", "--no-checks"]) == 0
    for row, line in zip(rows, out.read_text(encoding="utf-8").splitlines(), strict=True):
        assert_close(json.loads(line)["step_scores"],
                     published.reference.scores(row["question"], row["steps"]),
                     f"{published.family.name} prm score --input")


def test_prm_score_solution_follows_the_family_convention(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    solution = published.family.solution
    out = cli_json(["score", str(published.exported), "--question", QUESTION, "--solution",
                    solution, "--json", "--no-checks"], capsys)
    assert out["steps"] == published.prm.format.split_solution(solution)
    assert_close(out["step_scores"], published.reference.solution_scores(QUESTION, solution),
                 f"{published.family.name} prm score --solution")


def test_tagged_steps_are_reported(published: Published) -> None:
    """A trailing tag is taken as the boundary and said so in meta (not for whitespace tags
    that are step text upstream: TRL tokenises a trailing newline, RLHFlow strips it)."""
    steps = cases(published.family)["tagged"]
    meta = published.prm.score(QUESTION, steps).meta
    takes_tag = published.family.format in {"qwen-prm", "math-shepherd", "skywork"}
    assert meta.get("tagged_steps") == ([0, 1] if takes_tag else None)
    assert "neutralised_steps" not in meta


def test_inner_tags_and_specials_are_neutralised_and_reported(published: Published) -> None:
    fmt = published.prm.format
    special = next(t.content for t in fmt.tokenizer.get_added_tokens_decoder().values()
                   if t.special)
    tag = published.family.tag.strip() or "x"
    steps = [f"3 + 2 {special} = 5", f"so {tag} 5 in all", "The answer is 5."]
    got = published.prm.score(f"How many? {special}", steps)
    assert len(got.scores) == 3
    assert got.meta["neutralised_question"] is True
    inner_tag_broken = published.family.format in {"qwen-prm", "math-shepherd"}
    assert got.meta["neutralised_steps"] == ([0, 1] if inner_tag_broken else [0])


def test_multi_line_steps_say_how_many_upstream_steps_they_span(published: Published) -> None:
    """Skywork's upstream step is a line: meta counts them; other families have no such key."""
    meta = published.prm.score(QUESTION, cases(published.family)["line_breaks"]).meta
    if published.family.format == "skywork":
        assert meta["upstream_steps"] == [2, 3, 2]
    else:
        assert "upstream_steps" not in meta


def test_split_verbatim_keeps_text_and_refuses_bad_separators() -> None:
    from prm_plugins.errors import InvalidInputError
    from prm_plugins.steps import split_verbatim

    assert split_verbatim("  a\n\n \n\tb \n", "\n") == ["  a", "\tb "]
    with pytest.raises(InvalidInputError, match="non-empty str separator"):
        split_verbatim("a", "")
    with pytest.raises(InvalidInputError, match="needs `text` to be a str"):
        split_verbatim(b"a", "\n")  # type: ignore[arg-type]
