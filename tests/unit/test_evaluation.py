"""Evaluation: metrics, answer extraction, step-level benchmarks, best-of-N, ``prm eval``.

Scoring goes through the hand-built contract graph (graph_models.py) or a scripted scorer
whose step score is written in the step text, so every expected figure is computed by hand.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from prm_plugins import load_prm, split_steps
from prm_plugins.answers import (
    answer_is_correct,
    answers_match,
    extract_a_colon,
    extract_answer,
    extract_boxed,
    normalize_answer,
)
from prm_plugins.cli import main
from prm_plugins.errors import InvalidInputError, MissingExtraError
from prm_plugins.evaluation.bon import (
    CandidateSet,
    best_of_n_curves,
    evaluate_best_of_n,
    load_candidates,
    make_permutations,
    score_candidates,
)
from prm_plugins.evaluation.metrics import (
    BinaryCounts,
    auroc,
    auroc_or_none,
    f1_score,
    paired_bootstrap,
    processbench_scores,
)
from prm_plugins.evaluation.steps import (
    evaluate_steps,
    evaluate_stepwise,
    format_steps_report,
    load_step_items,
)
from prm_plugins.types import StepScores

from support.graph_models import make_model_dir


class ScriptedScorer:
    """A scorer whose score of a step is the number that starts the step text."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score_batch([(question, steps)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        self.batches.append(len(items))
        return [StepScores(steps=list(s), scores=[float(x.split()[0]) for x in s], question=q)
                for q, s in items]

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score(question, steps)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("eval") / "m", max_length=64)


def _jsonl(path: Path, rows: Sequence[object], extra: bytes = b"") -> Path:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + extra)
    return path


# -- metrics ---------------------------------------------------------------------------------
def test_auroc_matches_hand_computed_values_with_ties() -> None:
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    # positive 0.5 ties two negatives (2 x 1/2), positive 0.9 beats both (2): 3 / (2 * 2)
    assert auroc([0.5, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == 0.75
    assert auroc([0.3, 0.3, 0.3], [1, 0, 1]) == 0.5
    assert auroc([0.1, 0.2, 0.9], [False, True, True]) == 1.0
    assert auroc([0.9, 0.2, 0.1], [0, 1, 1]) == 0.0
    # 3 positives x 2 negatives; pairs won: 0.6>{0.2,0.6 tie}=1.5, 0.7>both=2, 0.1>none=0
    assert auroc([0.6, 0.2, 0.7, 0.6, 0.1], [1, 0, 1, 0, 1]) == pytest.approx(3.5 / 6)


def test_auroc_with_one_class_is_an_error_that_says_why() -> None:
    with pytest.raises(InvalidInputError, match="one class only; received 3 positive and 0"):
        auroc([0.1, 0.2, 0.3], [1, 1, 1])
    assert auroc_or_none([0.1, 0.2], [0, 0]) is None
    with pytest.raises(InvalidInputError, match="2 scores and 3 labels"):
        auroc([0.1, 0.2], [0, 1, 1])


def test_processbench_f1_on_a_hand_made_set() -> None:
    gold = [1, 2, -1, -1, 0, -1, 3]
    pred = [1, -1, 2, -1, 0, -1, 1]
    r = processbench_scores(pred, gold)
    assert r["n_error"] == 4 and r["n_correct"] == 3
    assert r["error_acc"] == 0.5  # gold 1 and 0 found; 2 and 3 missed
    assert r["correct_acc"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))  # 4/7
    assert processbench_scores([-1], [-1])["f1"] is None  # no erroneous sample: undefined


def test_binary_counts_f1_and_prm_score() -> None:
    c = BinaryCounts()
    for pred, gold in [(True, True), (True, True), (False, True), (False, False), (True, False)]:
        c.add(pred, gold)
    assert (c.tp, c.fn, c.tn, c.fp) == (2, 1, 1, 1)
    assert c.positive_f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # 2/3
    assert c.negative_f1 == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))  # 1/2
    assert c.prm_score == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert f1_score(0, 3, 0) is None  # class absent from gold


# -- answers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
     "Natalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72", "72"),
    ("The total is 1,000 + 250 = 1,250 dollars.\n#### 1,250", "1250"),
    ("So she pays 5 * $1.00 = $5.00 in all. The answer is $5.00.", "5"),
    ("Step 3: 18 - 3 = 15 eggs remain. The answer is 15 eggs.", "15"),
    (r"Therefore, the final answer is: $\boxed{\frac{3}{4}}$. I hope it is correct.", "3/4"),
    (r"so $x^2 = 8$ and the side is $\boxed{2\sqrt{2}}$.", r"2\sqrt{2}"),
    (r"First $\boxed{3}$ was wrong; the area is $\boxed{\dfrac{1}{2}\left(10\right)}$",
     r"\frac{1}{2}(10)"),
    ("He walks 3 miles a day, so in a week 3 * 7 = 21 miles", "21"),
    ("The answer is -4.", "-4"),
    ("Final Answer: 12.50", "25/2"),
])
def test_extract_and_normalize_real_looking_answers(text: str, expected: str) -> None:
    assert normalize_answer(extract_answer(text)) == expected


def test_boxed_with_nested_braces_and_numeric_normalisation() -> None:
    assert extract_boxed(r"\boxed{\frac{\sqrt{3}}{2}} and more") == r"\frac{\sqrt{3}}{2}"
    assert extract_boxed(r"unclosed \boxed{1 + {2}") is None
    assert normalize_answer("1,000") == "1000" and normalize_answer("$5.00") == "5"
    assert normalize_answer("1000.0") == normalize_answer("1,000")
    assert answers_match("0.5", r"\frac{1}{2}") and not answers_match("12", "13")
    assert extract_answer("no numbers here", fallback_last_number=True) is None
    assert extract_answer("I think 7", fallback_last_number=False) is None


# One extractor for strategies, evaluation and rewards. Each row: a solution as a user might
# see it, and the normalised answer every consumer now finds in it. The rows marked "changed"
# are the inputs on which one consumer's answer changed when the copies were unified (the
# comment says which and what it was).
ONE_EXTRACTOR_CASES = [
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
    (r"So the total is $\boxed{72}$.", "72"),
    ("She earns 8 * 9 = 72 dollars. The answer is $72.", "72"),
    ("Q: How many clips?\nA: 72", "72"),
    ("1,000 + 250 = 1,250 dollars.\n#### 1,250", "1250"),
    ("It costs 3 * $1.25 = $3.75 in all. The answer is $3.75.", "15/4"),
    ("A: \u22125", "-5"),
    # changed (strategies): the whole fraction, was "3" (the old A: number pattern had no /)
    ("Q: How much flour?\nA: 3/4 cup", "3/4"),
    # changed (prm eval, rewards): the A: line, was "2" (the last number, in the next question)
    ("Q: What is 6 * 7?\nA: 42\nQ: What is 2 + 2?", "42"),
    # changed (prm eval, rewards): a non-numeric A: answer, was None (no number in the text)
    ("Q: Which city is the capital of France?\nA: Paris.", "Paris"),
    # changed (strategies): an A: that opens the reasoning is not the answer; was the whole
    # first sentence
    ("Q: How many clips?\nA: Natalia sold 48/2 = 24 clips in May.\n"
     "She sold 48 + 24 = 72 clips altogether.", "72"),
    # changed (strategies): a computation on the A: line; was "24", its first number
    ("A: 24 clips in May, then 48 + 24 = 72", "72"),
]


@pytest.mark.parametrize(("text", "expected"), ONE_EXTRACTOR_CASES)
def test_one_answer_extractor_for_strategies_evaluation_and_rewards(
    text: str, expected: str
) -> None:
    from prm_plugins.rewards import check_answer
    from prm_plugins.strategies import extract_final_answer

    assert extract_final_answer is extract_answer  # one function, two public names
    key = normalize_answer(extract_answer(text))
    assert key == expected
    assert check_answer(text, expected) is True  # rewards' outcome check
    assert answer_is_correct(text, f"#### {expected}")  # rollout labelling
    assert CandidateSet("q", [text], [True]).answers == [key]  # prm eval bon
    assert not check_answer(text, "13")


def test_a_colon_lines_hold_an_answer_only_when_bare() -> None:
    from prm_plugins.strategies import has_final_answer

    assert extract_a_colon("A: 18 apples.") == "18"
    assert extract_a_colon("A: 1,000 dollars") == "1,000"
    assert extract_a_colon("A: 18\nQ: next\nA: She sold 48/2 = 24 clips.") == "18"
    assert extract_a_colon("A: She sold 48/2 = 24 clips.") is None
    assert extract_a_colon("An A: inside a line does not count: 5") is None
    # has_final_answer (step search's stop rule) follows: reasoning after "A:" is not an end
    assert has_final_answer("A: 4") and not has_final_answer("A: 48/2 = 24 clips in May.")
    # explicit answers still win over an A: line
    assert extract_answer("A: 5 apples\nThe answer is 7.") == "7"


def test_old_answers_module_warns_and_forwards() -> None:
    import importlib

    import prm_plugins.answers as new

    sys.modules.pop("prm_plugins.evaluation.answers", None)
    with pytest.warns(FutureWarning, match="moved to prm_plugins.answers"):
        old = importlib.import_module("prm_plugins.evaluation.answers")
    assert old.extract_answer is new.extract_answer
    assert old.normalize_answer is new.normalize_answer
    assert set(old.__all__) == set(new.__all__)


# -- step-level ------------------------------------------------------------------------------
PRMBENCH_ROWS = [
    {"idx": "prm_test_p1_0", "classification": "redundency",
     "question": "Q0", "original_question": "Q0", "modified_question": "Q0",
     "original_process": ["0.9 a", "0.8 b"],
     "modified_process": ["0.9 a", "0.7 extra", "0.8 b"], "error_steps": [2]},
    {"idx": "prm_test_p1_1", "classification": "circular",
     "question": "Q1", "original_question": "Q1", "modified_question": "Q1 changed",
     "original_process": ["0.9 x"],
     "modified_process": ["Step 1. 0.6 x", "Step 2. 0.3 y", "0.2 z", "0.7 w"],
     "error_steps": [3, 9]},  # 9 is out of range: ignored, as the official harness does
    {"idx": "prm_test_p1_2", "classification": "multi_solutions",
     "question": "Q2", "original_question": "Q2", "modified_question": "Q2",
     "original_process": ["0.9 x"], "modified_process": ["0.9 p", "0.4 q"], "error_steps": []},
]


def test_prmbench_parsing_follows_the_official_harness(tmp_path: Path) -> None:
    rows = [*PRMBENCH_ROWS, PRMBENCH_ROWS[1]]  # a repeated (class, idx) is kept once
    path = _jsonl(tmp_path / "pb.jsonl", rows)
    items, issues, n_rows = load_step_items(path, "prmbench")
    assert issues == [] and n_rows == 4
    by = {(it.group, it.question): it for it in items}
    assert sorted(g for g, _ in by) == ["circular", "correct", "multi_solutions", "redundency"]
    red = by[("redundency", "Q0")]
    assert red.labels == [True, False, True] and red.first_error == 1
    cor = by[("correct", "Q0")]  # original_process of the redundency row: fully correct
    assert cor.steps == ["0.9 a", "0.8 b"] and cor.labels == [True, True] and cor.first_error == -1
    circ = by[("circular", "Q1 changed")]  # modified_question, not question
    assert circ.steps == ["0.6 x", "0.3 y", "0.2 z", "0.7 w"]  # "Step N." prefix removed
    assert circ.labels == [True, True, False, True] and circ.first_error == 2
    assert circ.extra["error_steps_out_of_range"] == 1
    assert by[("multi_solutions", "Q2")].labels == [True, True]

    limited, _, _ = load_step_items(path, "prmbench", limit=1)
    assert len(limited) == 4  # one per class (+ the correct sample of the redundency row)

    folder = tmp_path / "prmbench"
    folder.mkdir()
    _jsonl(folder / "a_redundency.jsonl", PRMBENCH_ROWS[:1])
    _jsonl(folder / "b_circular.jsonl", PRMBENCH_ROWS[1:2])
    (folder / "notes.txt").write_text("not data")
    from_folder, _, n = load_step_items(folder, "prmbench")
    assert n == 2 and [it.group for it in from_folder] == ["redundency", "correct", "circular"]


def test_prmbench_figures_by_hand(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "pb.jsonl", PRMBENCH_ROWS)
    report = evaluate_steps(ScriptedScorer(), path, "prmbench", threshold=0.5)
    g = report["groups"]
    # circular: scores .6 .3 .2 .7, gold T T F T -> tp 2 (.6,.7), fn 1 (.3), tn 1 (.2), fp 0
    c = g["circular"]
    assert (c["tp"], c["fn"], c["tn"], c["fp"]) == (2, 1, 1, 0)
    assert c["positive_f1"] == pytest.approx(4 / 5) and c["negative_f1"] == pytest.approx(2 / 3)
    assert c["prm_score"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert c["step_auroc"] == 1.0  # the erroneous .2 is below every correct step
    assert c["first_error_acc"] == 1.0
    # redundency: .9 .7 .8, gold T F T -> the redundant step passes the threshold (fp 1)
    # although it ranks below both correct steps (AUROC 1)
    r = g["redundency"]
    assert (r["tp"], r["fn"], r["tn"], r["fp"]) == (2, 0, 0, 1)
    assert r["negative_f1"] == 0.0 and r["step_auroc"] == 1.0
    # correct and multi_solutions have no erroneous step: PRMScore is the positive F1 alone
    assert g["correct"]["negative_f1"] is None and g["correct"]["prm_score"] == 1.0
    ms = g["multi_solutions"]  # .9 passes, .4 flagged: tp 1, fn 1
    assert ms["positive_f1"] == pytest.approx(2 / 3) and ms["prm_score"] == pytest.approx(2 / 3)
    assert ms["step_auroc"] is None
    o = report["overall"]  # pooled over every class but "correct"
    assert (o["tp"], o["fn"], o["tn"], o["fp"]) == (2 + 2 + 1, 1 + 0 + 1, 1, 1)
    assert o["n_samples"] == 3
    assert o["mean_class_prm_score"] == pytest.approx(
        (c["prm_score"] + r["prm_score"] + ms["prm_score"]) / 3)


def test_stepwise_auroc_per_perturbation_and_first_error(tmp_path: Path) -> None:
    rows = [
        {"prompt": "q", "completions": ["0.9 a", "0.8 b"], "labels": [True, True],
         "perturbation": None},
        {"prompt": "q", "completions": ["0.7 a", "0.2 b", "0.6 c"], "labels": [True, False, False],
         "perturbation": "arith"},
        {"prompt": "q", "completions": ["0.95 a", "0.85 b"], "labels": [True, False],
         "perturbation": "wrong_op"},
    ]
    path = _jsonl(tmp_path / "sw.jsonl", rows)
    report = evaluate_steps(ScriptedScorer(), path, "stepwise")
    positives = [0.9, 0.8, 0.7, 0.95]
    arith = report["groups"]["arith"]
    # negatives .2 and .6 against all positives: both below every positive -> 1.0
    assert arith["step_auroc"] == 1.0 and arith["within_rows_auroc"] == 1.0
    wrong = report["groups"]["wrong_op"]
    # negative .85 beats .8 and .7 of the 4 positives -> 2/4 pairs won by positives
    assert wrong["step_auroc"] == pytest.approx(sum(p > 0.85 for p in positives) / 4)
    assert wrong["within_rows_auroc"] == 1.0
    all_s = [0.9, 0.8, 0.7, 0.2, 0.6, 0.95, 0.85]
    all_y = [1, 1, 1, 0, 0, 1, 0]
    assert report["overall"]["step_auroc"] == pytest.approx(auroc(all_s, all_y))
    # first-error AUROC keeps only each flawed row's first bad step (.2 and .85; the
    # carried-on .6 is left out): .2 is below all 4 positives, .85 below 2 of them
    assert report["overall"]["first_error_auroc"] == pytest.approx((4 + 2) / 8)
    assert report["overall"]["step_auroc"] == pytest.approx((4 + 4 + 2) / 12)
    assert arith["first_error_auroc"] == 1.0
    assert wrong["first_error_auroc"] == pytest.approx(2 / 4)
    assert report["groups"]["none"]["first_error_auroc"] is None  # no flawed row
    assert "AUROC_1st" in format_steps_report(report)
    # predicted first errors: -1, 1, -1 ; gold: -1, 1, 1
    assert report["overall"]["first_error_acc"] == pytest.approx(2 / 3)
    assert report["groups"]["wrong_op"]["first_error_acc"] == 0.0
    assert report["overall"]["error_acc"] == 0.5 and report["overall"]["correct_acc"] == 1.0
    assert evaluate_stepwise([], [], 0.5)["overall"]["step_auroc"] is None


class FlakyScorer(ScriptedScorer):
    """Refuses (a PRMError) any batch holding a step that starts with ``boom``; a step
    starting with ``bug`` raises a TypeError, as a scorer bug would."""

    def __init__(self) -> None:
        super().__init__()
        self.single_calls = 0

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        self.single_calls += 1
        return self.score_batch([(question, steps)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        if any(st.startswith("bug") for _, s in items for st in s):
            raise TypeError("scorer bug")
        if any(st.startswith("boom") for _, s in items for st in s):
            raise InvalidInputError("chain of 9000 tokens is longer than max_length 512")
        return super().score_batch(items)


def test_a_refused_chain_is_skipped_and_the_rest_of_its_batch_still_scored(
    tmp_path: Path,
) -> None:
    rows = [{"prompt": "q", "completions": ["0.9 a", "0.2 b"], "labels": [True, False]},
            {"prompt": "q", "completions": ["boom", "0.5 c"], "labels": [True, False]},
            {"prompt": "q", "completions": ["0.8 a", "0.7 b"], "labels": [True, True]}]
    scorer = FlakyScorer()
    report = evaluate_steps(scorer, _jsonl(tmp_path / "sw.jsonl", rows), "stepwise")
    assert report["n_scored"] == 2 and scorer.single_calls == 3  # one batch, then one by one
    assert len(report["skipped"]) == 1
    assert "sw.jsonl:2: could not be scored: chain of 9000 tokens" in report["skipped"][0]
    assert report["overall"]["step_auroc"] == 1.0  # .2 below .9, .8, .7
    # prm eval bon: the same rule per candidate
    bon_rows = [{"question": "q", "answer": "5", "candidates": [
        {"solution": "0.9 a\n0.8 5", "is_correct": True},
        {"solution": "boom\n0.9 7", "is_correct": False}]}]
    rows_b, _ = load_candidates(_jsonl(tmp_path / "c.jsonl", bon_rows))
    scores, issues = score_candidates(FlakyScorer(), rows_b)
    assert scores == [[[0.9, 0.8], None]]
    assert [str(i) for i in issues] == [
        f"{tmp_path / 'c.jsonl'}:1: candidates[1] could not be scored: chain of 9000 tokens "
        "is longer than max_length 512"]
    # an error that is not a PRMError is a bug, not a bad chain: it is raised
    rows[1]["completions"] = ["bug", "0.5 c"]
    with pytest.raises(TypeError, match="scorer bug"):
        evaluate_steps(FlakyScorer(), _jsonl(tmp_path / "sw2.jsonl", rows), "stepwise")
    with pytest.raises(TypeError, match="scorer bug"):
        score_candidates(FlakyScorer(), [CandidateSet("q", ["0.9 a", "bug"], [True, False])])


def test_old_training_metrics_module_warns_and_forwards() -> None:
    import importlib

    from prm_plugins.evaluation import metrics

    sys.modules.pop("prm_plugins.training.metrics", None)
    with pytest.warns(FutureWarning, match="moved to prm_plugins.evaluation.metrics"):
        old = importlib.import_module("prm_plugins.training.metrics")
    assert old.auroc is metrics.auroc and old.step_auroc_report is metrics.step_auroc_report


def _pairwise_auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """AUROC by counting pairs (ties count 1/2): independent of the rank formula."""
    won = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return won / (len(pos) * len(neg))


def test_training_and_evaluation_give_the_same_auroc_on_the_same_data(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from prm_plugins.evaluation import metrics
    from prm_plugins.training import step_auroc_report as training_report

    # one computation: training's validation/test reports call this very function
    assert training_report is metrics.step_auroc_report

    rng = np.random.default_rng(7)
    kinds = ["arith", "wrong_op", None]
    rows, scores, labels, row_kinds = [], [], [], []
    for i in range(30):
        n = int(rng.integers(2, 6))
        first = int(rng.integers(1, n + 1))  # == n: a correct chain
        y = [k < first for k in range(n)]
        s = [round(float(v), 1) for v in rng.uniform(0.05, 0.95, n)]  # rounded: ties occur
        kind = kinds[i % 3] if first < n else None
        rows.append({"prompt": f"q{i}", "completions": [f"{v} step" for v in s],
                     "labels": y, "perturbation": kind})
        scores.append(s)
        labels.append(y)
        row_kinds.append(kind)
    report = evaluate_steps(ScriptedScorer(), _jsonl(tmp_path / "sw.jsonl", rows), "stepwise")
    trained = training_report(scores, labels, row_kinds)
    assert report["overall"]["step_auroc"] == trained["auroc"]
    assert report["overall"]["first_error_auroc"] == trained["first_error_auroc"]
    assert report["overall"]["n_error_steps"] == trained["n_neg"]
    assert set(report["groups"]) == set(trained["per_kind"])
    for kind, g in report["groups"].items():
        t = trained["per_kind"][kind]
        assert (g["step_auroc"], g["first_error_auroc"], g["within_rows_auroc"]) == (
            t["auroc"], t["first_error_auroc"], t["within_rows"])
    flat = [(v, ok, k) for s, y, k in zip(scores, labels, row_kinds, strict=True)
            for v, ok in zip(s, y, strict=True)]
    pos = [v for v, ok, _ in flat if ok]
    neg = [v for v, ok, _ in flat if not ok]
    assert trained["auroc"] == pytest.approx(_pairwise_auroc(pos, neg))
    arith = [v for v, ok, k in flat if not ok and k == "arith"]
    assert trained["per_kind"]["arith"]["auroc"] == pytest.approx(_pairwise_auroc(pos, arith))


def test_processbench_through_the_graph_model(model_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"problem": "w1 w2", "steps": ["w3", "w4 w5", "w6"], "label": 1},
            {"problem": "w1", "steps": ["w7", "w8 w9"], "label": -1},
            {"problem": "w9", "steps": ["w10", "w11", "w12"], "label": 0},
            {"problem": "w2", "steps": ["w13 w14", "w15"], "label": -1}]
    path = _jsonl(tmp_path / "gsm8k.jsonl", rows)
    assert main(["eval", "steps", str(model_dir), "--data", str(path), "--kind",
                 "processbench", "--threshold", "0.45", "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    prm = load_prm(model_dir, device="cpu")
    pred = []
    for r in rows:
        scores = prm.score(r["problem"], r["steps"]).scores
        pred.append(next((i for i, s in enumerate(scores) if s < 0.45), -1))
    expected = processbench_scores(pred, [r["label"] for r in rows])
    assert pred == [-1, 1, 0, -1]  # the graph's scores put one hit and one miss in each half
    assert expected["error_acc"] == 0.5 and expected["correct_acc"] == 0.5
    for key in ("error_acc", "correct_acc", "f1"):
        assert report["overall"][key] == expected[key]
        assert report["groups"]["gsm8k"][key] == expected[key]
    assert report["n_scored"] == 4 and report["skipped"] == []


def test_bad_lines_are_named_and_the_other_rows_still_count(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [{"prompt": "w1", "completions": ["w2", "w3"], "labels": [True, False]},
            {"prompt": "w4", "completions": ["w5"], "labels": [True]}]
    path = tmp_path / "sw.jsonl"
    path.write_bytes(json.dumps(good[0]).encode() + b"\n"
                     + b'{"prompt": "w1", "completions": ["w2"\n'            # line 2: broken
                     + b'{"prompt": "w1", "completions": ["w2"], "labels": []}\n'  # line 3
                     + b"\xff\xfe\n"                                          # line 4
                     + json.dumps(good[1]).encode() + b"\n")
    code = main(["eval", "steps", str(model_dir), "--data", str(path), "--kind", "stepwise",
                 "--json", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    report = json.loads(captured.out)
    assert report["n_scored"] == 2 and report["overall"]["n_steps"] == 3
    assert f"{path}:2: not valid JSON" in captured.err
    assert f"{path}:3: 'labels' must be a list of true/false, one per completion (1)" in (
        captured.err)
    assert f"{path}:4: not valid UTF-8" in captured.err
    assert len(report["skipped"]) == 3


def test_cli_exit_codes(model_dir: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval"]) == 2
    assert main(["eval", "steps", str(model_dir), "--data", str(tmp_path / "nope.jsonl"),
                 "--kind", "stepwise"]) == 2
    assert "does not exist" in capsys.readouterr().err
    wrong_kind = _jsonl(tmp_path / "w.jsonl", [{"problem": "w1", "steps": ["w2"], "label": -1}])
    assert main(["eval", "steps", str(model_dir), "--data", str(wrong_kind), "--kind",
                 "stepwise", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no usable stepwise row" in err and "no question" in err
    assert main(["eval", "steps", str(tmp_path), "--data", str(wrong_kind), "--kind",
                 "processbench", "--no-progress"]) == 2  # not a model directory
    assert main(["eval", "steps", str(model_dir), "--data", str(wrong_kind), "--kind",
                 "processbench", "--no-progress"]) == 0
    assert "overall" in capsys.readouterr().out
    assert main(["eval", "steps", str(model_dir), "--data", str(wrong_kind), "--kind",
                 "processbench", "--threshold", "2"]) == 2
    assert "--threshold must be a number in [0, 1], got 2.0" in capsys.readouterr().err
    assert main(["eval", "bon", str(model_dir), "--data", str(wrong_kind), "--out",
                 str(tmp_path / "o"), "--permutations", "0"]) == 2
    assert "--permutations must be a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: not a number
        main(["eval", "steps", "--data", "x", "--kind", "stepwise", "--limit", "many"])
    assert exc.value.code == 2


# -- best-of-N -------------------------------------------------------------------------------
BON_ROWS = [
    {"question": "w1 w2", "answer": "5", "candidates": [
        {"solution": "w3 w4\nw5 5", "is_correct": True},
        {"solution": "w6\nw7 7", "is_correct": False},
        {"solution": "w8 w9\nw10\n5", "is_correct": True},
        {"solution": "w20 w21\n7", "is_correct": False}]},
    {"question": "w3", "answer": "2", "candidates": [
        {"solution": "w36 w34\nw1 2", "is_correct": True},
        {"solution": "w12 w13\n3", "is_correct": False},
        {"solution": "w14\n3", "is_correct": False},
        {"solution": "w30 w31 w32\n3", "is_correct": False}]},
]


def test_bon_chain_scores_use_the_one_aggregation_and_refuse_unknown_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prm_plugins.evaluation.bon as bon
    from prm_plugins.types import AGGREGATIONS

    assert set(bon.AGGREGATION_METHODS) <= set(AGGREGATIONS)
    assert set(bon.WEIGHTED_METHODS.values()) <= set(AGGREGATIONS)
    rows = [CandidateSet("q", ["a\nb", "c\nd"], [True, False])]
    scores = [[[0.9, 0.2], [0.5, 0.7]]]  # min .2 < .5, mean .55 < .6: both pick the wrong one
    perms = [np.array([[0, 1]])]
    curves = best_of_n_curves(rows, scores, perms)
    assert curves["accuracy"]["min"] == [1.0, 0.0] and curves["accuracy"]["mean"] == [1.0, 0.0]
    # an aggregation the library does not know is refused, not silently read as "last"
    # (which would pick candidate 1 here, as the built-in "last" does)
    monkeypatch.setattr(bon, "AGGREGATION_METHODS", ("min", "median"))
    with pytest.raises(InvalidInputError, match="unknown aggregation 'median'; use one of min"):
        best_of_n_curves(rows, scores, perms)


def _hand_pick(scores: list[list[float]], correct: list[bool], how: str) -> float:
    agg = {"min": min, "prod": math.prod, "mean": lambda s: sum(s) / len(s),
           "last": lambda s: s[-1]}[how]
    chain = [agg(s) for s in scores]
    best = max(chain)
    tied = [c for c, v in zip(correct, chain, strict=True) if v == best]
    return sum(tied) / len(tied)


def test_bon_figures_match_picks_computed_by_hand(model_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = _jsonl(tmp_path / "cands.jsonl", BON_ROWS)
    out = tmp_path / "bon"
    assert main(["eval", "bon", str(model_dir), "--data", str(data), "--out", str(out),
                 "--split", "newlines", "--permutations", "3", "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    result = json.loads((out / "bon.json").read_text())
    assert printed["accuracy"] == result["accuracy"]
    assert (out / "bon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["n"] == [1, 2, 3, 4] and result["n_rows"] == [2, 2, 2, 2]
    assert result["counts"]["candidates"] == 8 and result["counts"]["permutations"] == 3
    assert result["config"]["split"] == "newlines" and result["config"]["seed"] == 0

    prm = load_prm(model_dir, device="cpu")
    per_row = [[prm.score(r["question"], split_steps(c["solution"], "newlines")).scores
                for c in r["candidates"]] for r in BON_ROWS]
    correct = [[c["is_correct"] for c in r["candidates"]] for r in BON_ROWS]
    # N = 4: every permutation holds all candidates, so the figures do not depend on them.
    # By hand from the scores: row 1's highest min is candidate 4 (wrong), row 2's is
    # candidate 1 (right).
    mins = [[min(s) for s in row] for row in per_row]
    assert [int(np.argmax(m)) for m in mins] == [3, 0]
    assert result["accuracy"]["min"][-1] == 0.5
    for how in ("min", "prod", "mean", "last"):
        expected = np.mean([_hand_pick(s, c, how) for s, c in zip(per_row, correct, strict=True)])
        assert result["accuracy"][how][-1] == pytest.approx(expected), how
    # majority: row 1 answers 5,7,5,7 -> tie, each group all-correct or all-wrong -> 0.5;
    # row 2 answers 2,3,3,3 -> "3" wins, wrong -> 0
    assert result["accuracy"]["majority"][-1] == pytest.approx((0.5 + 0.0) / 2)
    assert result["accuracy"]["random"][-1] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert result["accuracy"]["oracle"][-1] == 1.0

    # N < 4 with the very permutations the CLI drew (seed 0): first N of each order.
    perms = make_permutations([4, 4], 3, seed=0)
    for n in (1, 2, 3):
        exp_min = np.mean([
            np.mean([_hand_pick([per_row[i][int(c)] for c in order[:n]],
                                [correct[i][int(c)] for c in order[:n]], "min")
                     for order in perms[i]])
            for i in range(2)])
        exp_oracle = np.mean([np.mean([any(correct[i][int(c)] for c in order[:n])
                                       for order in perms[i]]) for i in range(2)])
        assert result["accuracy"]["min"][n - 1] == pytest.approx(exp_min)
        assert result["accuracy"]["oracle"][n - 1] == pytest.approx(exp_oracle)


def test_bon_curves_share_tied_picks_and_skip_rows_with_fewer_candidates() -> None:
    rows = [CandidateSet("q", ["#### 1", "#### 1", "#### 2"], [True, False, False]),
            CandidateSet("q", ["#### 4", "#### 5"], [False, True])]
    scores = [[[0.8], [0.8], [0.3]], [None, [0.1]]]  # row 2's first was not scored
    perms = [np.array([[0, 1, 2]]), np.array([[0, 1]])]
    r = best_of_n_curves(rows, scores, perms)
    assert r["n_rows"] == [2, 2, 1]
    # N=1: row 1 picks cand 0 (correct), row 2 picks the unscored cand 0 (wrong)
    assert r["accuracy"]["min"][0] == 0.5
    # N=2: row 1 ties 0.8/0.8 -> 1/2; row 2 the scored candidate beats the unscored -> 1
    assert r["accuracy"]["min"][1] == pytest.approx((0.5 + 1.0) / 2)
    assert r["accuracy"]["min"][2] == 0.5  # only row 1 has 3 candidates
    # majority on row 1 at N=3: answer "1" twice, half of its candidates correct -> 0.5
    assert r["accuracy"]["majority"][2] == 0.5
    assert r["accuracy"]["random"][2] == pytest.approx(1 / 3)


def test_bon_per_row_figures_average_to_the_curves_and_go_to_json(
        model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [CandidateSet("q", ["#### 1", "#### 1", "#### 2"], [True, False, False]),
            CandidateSet("q", ["#### 4", "#### 5"], [False, True])]
    r = best_of_n_curves(rows, [[[0.8], [0.8], [0.3]], [[0.2], [0.1]]],
                         [np.array([[0, 1, 2]]), np.array([[0, 1]])])
    # row 1: candidates 0 and 1 tie at N=2 (half right); row 2 keeps its wrong first pick
    assert r["per_row"]["min"][0].tolist() == [1.0, 0.5, 0.5]
    assert r["per_row"]["min"][1, :2].tolist() == [0.0, 0.0]
    assert math.isnan(r["per_row"]["min"][1, 2])  # row 2 has no third candidate
    for m, arr in r["per_row"].items():
        assert np.nanmean(arr, axis=0).tolist() == pytest.approx(r["accuracy"][m])

    data = _jsonl(tmp_path / "cands.jsonl", BON_ROWS)
    out = tmp_path / "bon"
    assert main(["eval", "bon", str(model_dir), "--data", str(data), "--out", str(out),
                 "--permutations", "2", "--per-row", "--json", "--no-plot",
                 "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((out / "bon.json").read_text())
    assert printed["per_row"] == written["per_row"]
    assert len(written["per_row"]["min"]) == len(BON_ROWS)
    assert np.mean(written["per_row"]["majority"], axis=0).tolist() == pytest.approx(
        written["accuracy"]["majority"])
    # without --per-row bon.json stays small: no per-row figures
    assert main(["eval", "bon", str(model_dir), "--data", str(data), "--out", str(out),
                 "--permutations", "2", "--no-plot", "--no-progress"]) == 0
    assert "per_row" not in json.loads((out / "bon.json").read_text())


def test_paired_bootstrap_interval_brackets_the_mean_and_rejects_bad_input() -> None:
    rng = np.random.default_rng(1)
    b = rng.random(200)
    a = b + 0.1 + rng.normal(0, 0.05, 200)  # a beats b by 0.1 on every unit, give or take
    r = paired_bootstrap(a, b, resamples=4000, seed=3)
    assert r["mean"] == pytest.approx(float(np.mean(a - b)))
    assert r["low"] < r["mean"] < r["high"]
    assert 0.08 < r["low"] and r["high"] < 0.12 and r["units"] == 200
    # a noise-only difference: the interval straddles zero
    noise = paired_bootstrap(b + rng.normal(0, 0.05, 200), b, resamples=4000)
    assert noise["low"] < 0 < noise["high"]
    # paired: the width follows the spread of the differences (sd 0.05 / sqrt(200)), not
    # that of the figures themselves (sd 0.29), which would give a width near 0.1
    assert r["high"] - r["low"] < 0.03
    assert paired_bootstrap(a, b, seed=3, resamples=4000) == r  # seeded
    with pytest.raises(InvalidInputError, match="same length"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(InvalidInputError, match="finite"):
        paired_bootstrap([1.0, float("nan")], [1.0, 0.0])
    with pytest.raises(InvalidInputError, match="confidence"):
        paired_bootstrap([1.0], [0.0], confidence=1.0)
    with pytest.raises(InvalidInputError, match="at least one"):
        paired_bootstrap([], [])


def test_bon_weighted_vote_sums_chain_scores_per_answer() -> None:
    # Answer "7" has two weak candidates, "9" one strong one. Plain majority picks "7";
    # the min-weighted vote sums 0.3 + 0.25 = 0.55 for "7" against 0.9 for "9"; the
    # last-step vote sums 0.6 + 0.5 = 1.1 for "7" against 0.95 for "9".
    rows = [CandidateSet("q", ["a\n#### 7", "b\n#### 7", "c\n#### 9", "d"],
                         [False, False, True, False])]
    scores = [[[0.3, 0.6], [0.25, 0.5], [0.9, 0.95], [0.99]]]  # "d" states no answer
    r = best_of_n_curves(rows, scores, [np.array([[0, 1, 2, 3]])])
    acc = r["accuracy"]
    assert acc["majority"][2] == 0.0
    assert acc["weighted_min"][:3] == [0.0, 0.0, 1.0]
    assert acc["weighted_last"][2] == 0.0
    # a candidate with no answer does not vote, however high its score
    assert acc["weighted_min"][3] == 1.0 and acc["min"][3] == 0.0
    # N=1 and N=2 vote only over "7": wrong
    assert acc["weighted_last"][:2] == [0.0, 0.0]


def test_bon_without_matplotlib_writes_json_then_names_the_extra(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _jsonl(tmp_path / "cands.jsonl", BON_ROWS[:1])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "prm-plugins\[eval\]"'):
        evaluate_best_of_n(load_prm(model_dir, device="cpu"), data, tmp_path / "o")
    assert json.loads((tmp_path / "o" / "bon.json").read_text())["counts"]["rows"] == 1
    assert not (tmp_path / "o" / "bon.png").exists()


def test_bon_bad_rows_are_reported_and_is_correct_can_come_from_the_answer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(
        json.dumps({"question": "q", "answer": "10", "candidates": [
            {"solution": "0.9 a\n0.8 #### 10"}, {"solution": "0.95 b\n0.9 #### 1,0"}]}).encode()
        + b"\n" + b'{"question": "q", "candidates": []}\n' + b"not json\n")
    scorer = ScriptedScorer()
    r = evaluate_best_of_n(scorer, path, tmp_path / "o", split="newlines", plot=False)
    assert r["counts"]["rows"] == 1 and r["counts"]["correct_candidates"] == 1
    assert any(":2: 'candidates' must be a non-empty list" in s for s in r["skipped"])
    assert any(":3: not valid JSON" in s for s in r["skipped"])
    # "1,0" is not the number 10, so candidate 2 is wrong, though the PRM (min .9 vs .8)
    # prefers it: min picks the wrong one at N=2, the oracle does not.
    assert r["accuracy"]["min"][1] == 0.0 and r["accuracy"]["oracle"][1] == 1.0
    assert r["accuracy"]["majority"][1] == 0.5  # answers 10 and 1,0 tie


def test_make_permutations_is_seeded() -> None:
    a = make_permutations([3, 5], 4, seed=1)
    b = make_permutations([3, 5], 4, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[1].shape == (4, 5) and sorted(a[1][0].tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(InvalidInputError):
        make_permutations([3], 0)
