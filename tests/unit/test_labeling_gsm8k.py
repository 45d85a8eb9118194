"""The GSM8K automatic-verifier labelling pipeline: parsing, exact checks, perturbations, JSONL.

Every row here is written in the test (GSM8K style); nothing is read from ../shared.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from prm_plugins.arithmetic import find_equations
from prm_plugins.cli import label as label_cli
from prm_plugins.errors import InvalidInputError
from prm_plugins.labeling import (
    PERTURBATION_KINDS,
    LabelingStats,
    StepwiseFormatError,
    arithmetic_slip,
    build_verifier_dataset,
    dataset_stats,
    dropped_step,
    duplicated_step,
    evaluate_expression,
    format_number,
    parse_expression,
    parse_gsm8k_answer,
    parse_gsm8k_row,
    perturb,
    read_stepwise_jsonl,
    unit_slip,
    validate_stepwise_row,
    write_stepwise_jsonl,
    wrong_operation,
    wrong_quantity,
)

CLIPS = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
    "many clips in May. How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}
APPLES = {
    "question": "A farmer has 5 crates with 12 apples each. He sells 18 apples and gives away "
    "7. How many apples are left?",
    "answer": "The farmer has 5 * 12 = <<5*12=60>>60 apples.\n"
    "After selling, he has 60 - 18 = <<60-18=42>>42 apples.\n"
    "After giving some away, he has 42 - 7 = <<42-7=35>>35 apples left.\n#### 35",
}
WENG = {
    "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
    "babysitting. How much did she earn?",
    "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
    "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
}
PIANO = {
    "question": "Tom practices piano for 90 minutes every day. How many hours does he practice "
    "in 6 days?",
    "answer": "Each day he practices 90 / 60 = <<90/60=1.5>>1.5 hours.\n"
    "In 6 days he practices 1.5 * 6 = <<1.5*6=9>>9 hours.\n#### 9",
}
SHIRT = {
    "question": "A shirt costs $40. It is on sale for 25% off. How much is the discount?",
    "answer": "The discount is 0.25 * 40 = $<<0.25*40=10>>10.\n#### 10",
}
TOPS = {
    "question": "Ann bought 4 tops for $20 and 3 scarves that cost as much as a top. How much "
    "did the scarves cost?",
    "answer": "Each top costs 20/4 = $5\nThe scarves cost 5*3 = $<<5*3=15>>15\n#### 15",
}
UNUSED = {
    "question": "Sam has 3 red pens and 4 blue pens, and 2 boxes of 5 pencils. How many "
    "pencils does he have?",
    "answer": "He has 3 + 4 = <<3+4=7>>7 pens.\nHe has 2 * 5 = <<2*5=10>>10 pencils.\n#### 10",
}
ROWS = [CLIPS, APPLES, WENG, PIANO, SHIRT, TOPS, UNUSED]


def _solution(row: dict[str, str]):  # noqa: ANN202 - test helper
    return parse_gsm8k_row(row)


# -- parsing and exact checks ------------------------------------------------------------------
def test_parse_visible_steps_and_final_answer() -> None:
    sol = _solution(CLIPS)
    assert sol.completions == [
        "Natalia sold 48/2 = 24 clips in May.",
        "Natalia sold 48+24 = 72 clips altogether in April and May.",
        "The answer is 72.",
    ]
    assert sol.answer == 72 and sol.answer_text == "72"
    assert sol.is_checked
    first, second = (s.calculations[0] for s in sol.steps[:2])
    assert (first.expr, first.claimed, first.ok, first.sources) == ("48/2", 24, True, (None, None))
    # 48 comes from the question, 24 is the result of the first calculation (qid 0).
    assert (second.expr, second.claimed, second.sources) == ("48+24", 72, (None, 0))
    text = sol.steps[1].text
    spans = sol.steps[1].spans
    assert [spans[k].text for k in second.operand_spans if k is not None] == ["48", "24"]
    assert second.result_span is not None and spans[second.result_span].text == "72"
    op_start, op_end = second.operator_spans[0] or (0, 0)
    assert text[op_start:op_end] == "+"
    final_span = sol.steps[-1].spans[0]
    assert (final_span.role, final_span.qid) == ("restated", 1)
    assert sol.answer_qid == 1


def test_operands_bound_in_the_written_order() -> None:
    sol = parse_gsm8k_answer(
        "Jo has 2 kids and 5 changes each: 5*2=<<2*5=10>>10 changes.\n#### 10",
        "Jo has 2 kids. Each needs 5 changes.",
    )
    step = sol.steps[0]
    calc = step.calculations[0]
    # Annotation 2*5, text 5*2: each operand is bound to its own number inside "5*2".
    starts = [step.spans[k].start for k in calc.operand_spans if k is not None]
    assert starts == [step.text.index("*2") + 1, step.text.index("5*2")]


def test_money_spans_and_text_calculation_in_unannotated_line() -> None:
    weng = _solution(WENG)
    assert weng.completions[0] == "Weng earns 12/60 = $0.2 per minute."
    result = weng.steps[0].spans[weng.steps[0].calculations[0].result_span or 0]
    assert (result.text, result.money, result.value) == ("0.2", True, Fraction(1, 5))
    tops = _solution(TOPS)
    calc = tops.steps[0].calculations[0]
    assert (calc.origin, calc.expr, calc.claimed) == ("text", "20/4", 5)
    # The annotated step reuses the plain-text result 5 (qid 0), not a constant.
    assert tops.steps[1].calculations[0].sources == (0, None)


def test_annotations_checked_exactly_with_fractions() -> None:
    sol = parse_gsm8k_answer("a = 0.1+0.2 = <<0.1+0.2=0.3>>0.3\n#### 0.3")
    assert sol.is_checked  # 0.1 + 0.2 != 0.3 in floats, == in exact arithmetic
    bad = parse_gsm8k_answer("Half is 48/2 = <<48/2=25>>25.\n#### 25")
    assert not bad.is_checked
    assert [c.expr for c in bad.failed_annotations] == ["48/2"]
    third = parse_gsm8k_answer("x = <<10/3=3.33>>3.33\n#### 3.33")
    assert [c.computed for c in third.failed_annotations] == [Fraction(10, 3)]
    fraction = parse_gsm8k_answer("The share is <<3/4=3/4>>3/4\n#### 0.75")
    assert fraction.is_checked and fraction.calculations[0].claimed == Fraction(3, 4)
    assert evaluate_expression("(2+3)*.5") == Fraction(5, 2)
    assert evaluate_expression("560//10") == 56
    assert evaluate_expression("-3+10") == 7


@pytest.mark.parametrize(
    "expr", ["__import__('os').system('ls')", "2**10", "a+1", "max(1,2)", "1 if 1 else 2", ""]
)
def test_expression_parser_rejects_anything_but_arithmetic(expr: str) -> None:
    with pytest.raises(InvalidInputError, match="arithmetic expression|expected"):
        parse_expression(expr)


def test_unparseable_annotation_is_a_problem_not_a_crash() -> None:
    sol = parse_gsm8k_answer("x = <<__import__('os')=1>>1\n#### 1")
    assert not sol.is_checked and len(sol.problems) == 1
    assert "unsupported syntax" in sol.problems[0]


def test_malformed_answers_raise_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="no final '#### N' line"):
        parse_gsm8k_answer("48/2 = <<48/2=24>>24")
    with pytest.raises(InvalidInputError, match="must be a number"):
        parse_gsm8k_answer("a\n#### twelve")
    with pytest.raises(InvalidInputError, match="'question' must be a string"):
        parse_gsm8k_row({"answer": "#### 1"})


def test_visible_equations_and_number_formatting() -> None:
    [eq] = find_equations("she earned 0.2 x 50 = $10.")
    assert (eq.expr, eq.result, eq.holds) == ("0.2*50", 10, True)
    assert find_equations("Let x be the price. So 4x = 20") == []
    [words] = find_equations("3 times 60 equals 180")
    assert (words.expr, words.holds) == ("3*60", True)
    assert find_equations("10/3 = 3.33")[0].holds  # rounded as written
    assert not find_equations("10/3 = 3")[0].holds
    assert format_number(Fraction(24)) == "24"
    assert format_number(Fraction(25, 2), money=True) == "12.50"
    assert format_number(Fraction(1234567), commas=True) == "1,234,567"
    assert format_number(Fraction(10, 3)) == "3.33"


# -- perturbations, hand-checked ---------------------------------------------------------------
def test_arithmetic_slip_carries_on_consistently() -> None:
    p = arithmetic_slip(_solution(CLIPS), step=0, value=25)
    assert p is not None
    assert p.completions == [
        "Natalia sold 48/2 = 25 clips in May.",
        "Natalia sold 48+25 = 73 clips altogether in April and May.",
        "The answer is 73.",
    ]
    assert (p.first_error, p.labels, p.answer) == (0, [False, False, False], 73)
    later = arithmetic_slip(_solution(CLIPS), step=1, value=70)
    assert later is not None and later.labels == [True, False, False]
    assert later.completions[-1] == "The answer is 70."


def test_arithmetic_slip_variants_are_plausible_and_money_is_formatted() -> None:
    p = arithmetic_slip(_solution(CLIPS), random.Random(1), step=1)
    assert p is not None and p.first_error == 1
    # 48+24: forgotten carry 62, swapped digits 27, times-table n/a, off by 1/2/10.
    assert p.answer in {62, 27, 71, 73, 70, 74, 82}
    [eq] = find_equations(p.completions[1])
    assert not eq.holds
    weng = arithmetic_slip(_solution(WENG), step=0, value=Fraction(1, 4))
    assert weng is not None
    assert weng.completions == [
        "Weng earns 12/60 = $0.25 per minute.",
        "Working 50 minutes, she earned 0.25 x 50 = $12.50.",
        "The answer is 12.5.",
    ]


def test_wrong_quantity_uses_a_question_number_with_correct_arithmetic() -> None:
    p = wrong_quantity(_solution(APPLES), step=1, operand=1, replacement=7)
    assert p is not None
    assert p.completions == [
        "The farmer has 5 * 12 = 60 apples.",
        "After selling, he has 60 - 7 = 53 apples.",
        "After giving some away, he has 53 - 7 = 46 apples left.",
        "The answer is 46.",
    ]
    assert p.labels == [True, False, False, False]
    sol = _solution(APPLES)
    for seed in range(5):
        q = wrong_quantity(sol, random.Random(seed))
        assert q is not None
        bad = q.completions[q.first_error]
        assert all(eq.holds for eq in find_equations(bad)), bad  # reasoning error, not arithmetic


def test_wrong_operation_swaps_the_written_operator() -> None:
    p = wrong_operation(_solution(APPLES), step=1)
    assert p is not None
    assert p.completions == [
        "The farmer has 5 * 12 = 60 apples.",
        "After selling, he has 60 + 18 = 78 apples.",
        "After giving some away, he has 78 - 7 = 71 apples left.",
        "The answer is 71.",
    ]
    assert p.first_error == 1
    weng = wrong_operation(_solution(WENG), step=0)
    assert weng is not None  # unspaced "/" becomes "*" ("12x60" would not read as a product)
    assert weng.completions[:2] == [
        "Weng earns 12*60 = $720 per minute.",
        "Working 50 minutes, she earned 720 x 50 = $36000.",
    ]
    spaced = {"question": "Ann splits 36 marbles into 3 bags, then buys 5 more bags like "
                          "these. How many marbles are in the new bags?",
              "answer": "36 / 3 = <<36/3=12>>12\nThat is 12 x 5 = <<12*5=60>>60 marbles.\n"
                        "#### 60"}
    p = wrong_operation(_solution(spaced), step=0)
    assert p is not None
    assert p.completions == ["36 x 3 = 108", "That is 108 x 5 = 540 marbles.", "The answer is 540."]


def test_wrong_operation_skips_negative_results() -> None:
    skipped: Counter[str] = Counter()
    # 5 / 12 = 0.42, then 0.42 - 18 < 0: a count turning negative is skipped.
    assert wrong_operation(_solution(APPLES), step=0, skipped=skipped) is None
    assert skipped["negative_value"] == 1


def test_dropped_step_first_dependent_step_is_first_error() -> None:
    p = dropped_step(_solution(APPLES), step=1)
    assert p is not None
    assert p.completions == [
        "The farmer has 5 * 12 = 60 apples.",
        "After giving some away, he has 60 - 7 = 53 apples left.",
        "The answer is 53.",
    ]
    assert (p.first_error, p.labels) == (1, [True, False, False])


def test_dropped_step_keeps_independent_steps_good() -> None:
    row = {
        "question": "Jo has 10 apples and eats half. She has 3 pears and buys 4 more. How many "
        "fruits does she have?",
        "answer": "Apples left: 10/2 = <<10/2=5>>5.\nPears: 3+4 = <<3+4=7>>7.\n"
        "Fruits: 5+7 = <<5+7=12>>12.\n#### 12",
    }
    p = dropped_step(_solution(row), step=0)
    assert p is not None
    # The pears step does not need the dropped value: it stays good.
    assert p.completions == ["Pears: 3+4 = 7.", "Fruits: 10+7 = 17.", "The answer is 17."]
    assert p.labels == [True, False, False]


def test_duplicated_step_is_applied_twice() -> None:
    p = duplicated_step(_solution(APPLES), step=1)
    assert p is not None
    assert p.completions == [
        "The farmer has 5 * 12 = 60 apples.",
        "After selling, he has 60 - 18 = 42 apples.",
        "After selling, he has 42 - 18 = 24 apples.",
        "After giving some away, he has 24 - 7 = 17 apples left.",
        "The answer is 17.",
    ]
    assert (p.first_error, p.labels) == (2, [True, True, False, False, False])


def test_unit_slip_prefers_whole_numbers_and_handles_percentages() -> None:
    p = unit_slip(_solution(PIANO), step=0)
    assert p is not None
    # 60 -> 100 would give 5.4 hours; the conversion the wrong way round keeps whole numbers.
    assert p.completions == [
        "Each day he practices 90 * 60 = 5400 hours.",
        "In 6 days he practices 5400 * 6 = 32400 hours.",
        "The answer is 32400.",
    ]
    assert p.first_error == 0 and not p.fractional
    shirt = unit_slip(_solution(SHIRT))
    assert shirt is not None
    assert shirt.completions == ["The discount is 25 * 40 = $1000.", "The answer is 1000."]
    assert "percentage" in shirt.detail


def test_restated_result_before_the_calculation_is_rewritten() -> None:
    row = {
        "question": "Jo has 20 iron nickels worth $3 each and $4 in other coins. How much "
        "money does she have?",
        "answer": "The iron nickels are worth $60 because 20 x 3 = <<20*3=60>>60\n"
        "Her money is worth $64 because 60 + 4 = <<60+4=64>>64\n#### 64",
    }
    p = arithmetic_slip(_solution(row), step=0, value=61)
    assert p is not None
    assert p.completions == [
        "The iron nickels are worth $61 because 20 x 3 = 61",
        "Her money is worth $65 because 61 + 4 = 65",
        "The answer is 65.",
    ]


def test_ambiguous_link_is_skipped() -> None:
    # The second step's 12s may be the question's "12 eggs" or the first result: unknown, so a
    # perturbation that changes the first result is not made.
    row = {"question": "A box holds 12 eggs. How many eggs are in 36 boxes?",
           "answer": "36 / 3 = <<36/3=12>>12\nThat is 12 x 12 = <<12*12=144>>144 eggs.\n"
                     "#### 144"}
    skipped: Counter[str] = Counter()
    assert wrong_operation(_solution(row), step=0, skipped=skipped) is None
    assert skipped == Counter({"ambiguous_reference": 1})


def test_perturbation_skipped_when_final_answer_unchanged() -> None:
    skipped: Counter[str] = Counter()
    assert arithmetic_slip(_solution(UNUSED), step=0, skipped=skipped) is None
    assert skipped["final_answer_unchanged"] >= 1
    assert unit_slip(_solution(CLIPS)) is None  # no conversion factor at all


@pytest.mark.parametrize("kind", PERTURBATION_KINDS)
def test_every_kind_keeps_labels_and_text_consistent(kind: str) -> None:
    made = 0
    for row in ROWS:
        sol = _solution(row)
        for seed in range(3):
            p = perturb(sol, kind, random.Random(seed))
            if p is None:
                continue
            made += 1
            n = len(p.completions)
            assert p.labels == [k < p.first_error for k in range(n)]
            assert p.completions[-1] == f"The answer is {format_number(p.answer)}."
            assert p.answer != sol.answer
            if kind not in ("dropped_step", "duplicated_step"):
                assert n == len(sol.completions)
                assert p.completions[: p.first_error] == sol.completions[: p.first_error]
            for k in range(p.first_error, n):
                if kind == "arithmetic_slip" and k == p.first_error:
                    continue
                assert all(eq.holds for eq in find_equations(p.completions[k])), p.completions
    assert made > 0


def test_perturbing_an_unchecked_reference_is_refused() -> None:
    bad = parse_gsm8k_answer("48/2 = <<48/2=25>>25\n#### 25")
    with pytest.raises(InvalidInputError, match="annotations all check"):
        arithmetic_slip(bad)
    with pytest.raises(InvalidInputError, match="unknown perturbation kind"):
        perturb(_solution(CLIPS), "typo")
    with pytest.raises(InvalidInputError, match="not a reasoning step"):
        arithmetic_slip(_solution(CLIPS), step=2)


# -- data set ----------------------------------------------------------------------------------
def test_build_verifier_dataset_is_balanced_deterministic_and_drops_failed_references() -> None:
    failing = {"question": "q 48", "answer": "48/2 = <<48/2=25>>25\n#### 25"}
    rows = [*ROWS, failing]
    stats = LabelingStats()
    first = build_verifier_dataset(rows, seed=7, n_perturbed_per_problem=2, stats=stats)
    again = build_verifier_dataset(rows, seed=7, n_perturbed_per_problem=2)
    assert first == again
    other = build_verifier_dataset(rows, seed=8, n_perturbed_per_problem=2)
    assert [r["completions"] for r in other] != [r["completions"] for r in first]
    assert stats.references == len(ROWS) and stats.references_dropped == 1
    assert stats.failed_annotations == 1
    refs = [r for r in first if r["perturbation"] is None]
    assert len(refs) == len(ROWS) and all(all(r["labels"]) for r in refs)
    perturbed = [r for r in first if r["perturbation"] is not None]
    assert sum(stats.perturbed.values()) == len(perturbed)
    for row in perturbed:
        validate_stepwise_row(row)
        assert row["labels"][row["first_error"]] is False
        assert row["answer"] != row["gold_answer"]
    # Two perturbed chains of one problem are of different kinds.
    by_problem: dict[str, list[str]] = {}
    for row in perturbed:
        by_problem.setdefault(row["id"].split("/")[0], []).append(row["perturbation"])
    assert all(len(set(kinds)) == len(kinds) for kinds in by_problem.values())
    summary = dataset_stats(first)
    assert summary["by_kind"]["reference"] == len(ROWS)
    assert summary["chains"] == len(first)
    assert summary["good_steps"] + summary["bad_steps"] == summary["steps"]


def test_build_verifier_dataset_kinds_and_arguments() -> None:
    out = build_verifier_dataset([APPLES], seed=0, kinds=["dropped_step"])
    assert [r["perturbation"] for r in out] == [None, "dropped_step"]
    with pytest.raises(InvalidInputError, match="unknown perturbation kind"):
        build_verifier_dataset([APPLES], seed=0, kinds=["nope"])
    with pytest.raises(InvalidInputError, match="list of perturbation names"):
        build_verifier_dataset([APPLES], seed=0, kinds="dropped_step")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="n_perturbed_per_problem"):
        build_verifier_dataset([APPLES], seed=0, n_perturbed_per_problem=-1)


# -- stepwise JSONL ----------------------------------------------------------------------------
def test_stepwise_roundtrip(tmp_path: Path) -> None:
    rows = build_verifier_dataset([CLIPS, APPLES], seed=0)
    path = tmp_path / "sub" / "out.jsonl"
    assert write_stepwise_jsonl(rows, path) == len(rows)
    assert read_stepwise_jsonl(path) == rows


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_stepwise_reader_reports_line_numbers(tmp_path: Path) -> None:
    good = json.dumps({"prompt": "q", "completions": ["a", "b"], "labels": [True, False]})
    cases = {
        "{not json": "not valid JSON",
        json.dumps({"prompt": "q", "completions": ["a", "b"], "labels": [True]}):
            "2 completions but 1 labels",
        json.dumps({"prompt": "q", "completions": ["a"], "labels": [1]}):
            r"labels\[0\] must be true or false, got int 1",
        json.dumps({"prompt": 3, "completions": ["a"], "labels": [True]}):
            "'prompt' must be a string, got int",
        json.dumps({"completions": ["a"], "labels": [True]}): r"missing key\(s\) \['prompt'\]",
        json.dumps({"prompt": "q", "completions": [], "labels": []}): "non-empty list",
        json.dumps({"prompt": "q", "completions": ["a", "b"], "labels": [True, True],
                    "first_error": 0}): "do not match first_error=0",
        "[1, 2]": "expected a JSON object",
    }
    for bad, message in cases.items():
        path = tmp_path / "data.jsonl"
        _write_lines(path, [good, "", bad, good])
        with pytest.raises(StepwiseFormatError, match=message) as info:
            read_stepwise_jsonl(path)
        assert info.value.line == 3
        assert f"{path}:3:" in str(info.value)


def test_stepwise_reader_non_strict_keeps_good_rows(tmp_path: Path) -> None:
    good = json.dumps({"prompt": "q", "completions": ["a"], "labels": [True]})
    path = tmp_path / "data.jsonl"
    _write_lines(path, [good, "{oops", good, json.dumps({"prompt": "q"})])
    errors: list[StepwiseFormatError] = []
    rows = read_stepwise_jsonl(path, strict=False, errors=errors)
    assert len(rows) == 2
    assert [e.line for e in errors] == [2, 4]


def test_writer_refuses_invalid_rows_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    rows = [{"prompt": "q", "completions": ["a"], "labels": [True]},
            {"prompt": "q", "completions": ["a"], "labels": ["yes"]}]
    with pytest.raises(StepwiseFormatError, match=r"line 2: labels\[0\]"):
        write_stepwise_jsonl(rows, path)
    assert not path.exists() and not list(tmp_path.iterdir())


# -- CLI ---------------------------------------------------------------------------------------
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prm")
    sub = parser.add_subparsers(dest="verb")
    label_cli.add_parser(sub)
    return parser.parse_args(argv)


def test_cli_label_gsm8k(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = _parse(["label", "gsm8k", "--input", str(src), "--out", str(out), "--seed", "3",
                   "--per-problem", "2", "--limit", "4", "--json", "--no-progress"])
    assert label_cli.run(args) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = read_stepwise_jsonl(out)
    assert summary["rows_written"] == len(rows)
    assert summary["problems"] == 4 and summary["references"] == 4
    assert summary["perturbed_total"] == len(rows) - 4
    text_args = _parse(["label", "gsm8k", "-i", str(src), "-o", str(out), "--no-progress"])
    assert label_cli.run(text_args) == 0
    assert capsys.readouterr().out.startswith(f"wrote {2 * len(ROWS)} chains")


def test_cli_label_never_writes_over_its_input(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "train.jsonl"
    body = "".join(json.dumps(r) + "\n" for r in ROWS)
    src.write_text(body, encoding="utf-8")
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)
    for out in (src, link):
        args = _parse(["label", "gsm8k", "--input", str(src), "--out", str(out),
                       "--no-progress"])
        assert label_cli.run(args) == 2
        assert "is the input file" in capsys.readouterr().err
        assert src.read_text(encoding="utf-8") == body
    merge = _parse(["label", "merge", "--human", str(src), "--graded", str(tmp_path / "g"),
                    "--out", str(src)])
    (tmp_path / "g").write_text("", encoding="utf-8")
    assert label_cli.run(merge) == 2
    assert src.read_text(encoding="utf-8") == body


def test_cli_label_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = _parse(["label", "gsm8k", "--input", str(tmp_path / "nope.jsonl"),
                      "--out", str(tmp_path / "o.jsonl")])
    assert label_cli.run(missing) == 2
    assert "not found" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(CLIPS) + "\n{broken\n", encoding="utf-8")
    args = _parse(["label", "gsm8k", "--input", str(broken), "--out", str(tmp_path / "o.jsonl"),
                   "--no-progress"])
    assert label_cli.run(args) == 2
    assert ":2: not valid JSON" in capsys.readouterr().err
