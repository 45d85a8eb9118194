"""How an LLM judge's answer becomes step probabilities (prm_plugins.backends.judge_scores)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from prm_plugins.backends.judge_scores import (
    VERDICT_SCORES,
    TokenLogprob,
    aligned_logprobs,
    check_calibration,
    logprob_scores,
    openai_logprobs,
    verdict_scores,
)
from prm_plugins.errors import GraderAnswerError, InvalidInputError
from prm_plugins.labeling.verdicts import (
    build_grading_prompt,
    build_regrade_prompt,
    parse_step_judgements,
    parse_step_verdicts,
)

TEXT = "Step 1: correct\nStep 2: incorrect"


def tok(text: str, p: float = 1.0, *alts: tuple[str, float]) -> TokenLogprob:
    return TokenLogprob(text, math.log(p), tuple((t, math.log(q)) for t, q in alts))


def test_judgements_carry_offsets_and_confidence() -> None:
    answer = "\n  Step 1: Correct (confidence: HIGH)\nstep 2 : incorrect, confidence: low.\n"
    js = parse_step_judgements(answer, 2, confidence=True)
    assert [(j.correct, j.confidence) for j in js] == [(True, "high"), (False, "low")]
    assert [answer[j.offset:j.offset + 9].lower() for j in js] == ["correct (", "incorrect"]
    assert parse_step_verdicts("Step 1: correct\nStep 2: incorrect", 2) == [True, False]


@pytest.mark.parametrize(("answer", "message"), [
    ("Step 1: correct\nStep 2: correct (confidence: high)", r"line 1: 'correct' for step 1 is "
     r"not a verdict with a confidence"),
    ("Step 1: correct (confidence: sure)\nStep 2: correct (confidence: high)",
     r"line 1: unknown confidence 'sure' for step 1"),
    ("Step 1: right (confidence: high)\nStep 2: correct (confidence: high)",
     r"line 1: unknown verdict 'right' for step 1"),
    ("Step 1: correct (confidence: high)", r"step 2 has no verdict"),
])
def test_confidence_lines_are_read_strictly(answer: str, message: str) -> None:
    with pytest.raises(GraderAnswerError, match=message):
        parse_step_judgements(answer, 2, confidence=True)


def test_the_grader_reader_still_refuses_a_confidence_suffix() -> None:
    with pytest.raises(GraderAnswerError, match="unknown verdict 'correct \\(confidence: high\\)'"):
        parse_step_verdicts("Step 1: correct (confidence: high)", 1)


def test_prompts_ask_for_the_confidence_only_when_told() -> None:
    plain = build_grading_prompt("q", ["a", "b"])
    asked = build_grading_prompt("q", ["a", "b"], confidence=True)
    assert "confidence" not in plain and "(confidence: C)" in asked
    assert "high, medium or low" in build_regrade_prompt("bad", 2, confidence=True)


def test_logprob_scores_normalise_over_the_two_verdicts() -> None:
    js = parse_step_judgements(TEXT, 2)
    tokens = [tok("Step 1:"), tok(" correct", 0.6, (" correct", 0.6), (" incorrect", 0.2),
                                  (" wrong", 0.2)),
              tok("\nStep 2:"), tok(" in", 0.5, (" in", 0.5), (" c", 0.25), ("Step", 0.25)),
              tok("correct")]
    scores, why = logprob_scores(TEXT, tokens, js)
    assert why is None and scores == pytest.approx([0.75, 0.25 / 0.75])


def test_a_verdict_inside_a_longer_token_uses_what_follows_the_lead() -> None:
    text = "Step 1: correct"
    tokens = [tok("Step 1"), tok(": correct", 0.7, (": correct", 0.7), (": incorrect", 0.1),
                                 (" correct", 0.2))]
    scores, _ = logprob_scores(text, tokens, parse_step_judgements(text, 1))
    assert scores == pytest.approx([0.7 / 0.8])


def test_tokens_that_do_not_spell_the_answer_and_lone_verdicts() -> None:
    js = parse_step_judgements(TEXT, 2)
    assert logprob_scores(TEXT, [tok("Step")], js) == (
        None, "the log-probability tokens do not spell the answer")

    # the chosen verdict always counts: alone it gives exp(logprob) (step 1), and among
    # alternatives that hold no other verdict it takes all the verdict mass (step 2)
    tokens = [tok("Step 1:"), tok(" correct", 0.6, (" correct", 0.6)),
              tok("\nStep 2:"), tok(" incorrect", 0.9, (" wrong", 0.1), (" bad", 0.0001))]
    assert logprob_scores(TEXT, tokens, js) == (pytest.approx([0.6, 0.0]), None)


@pytest.mark.parametrize("payload", [
    None, {}, {"content": []}, {"content": [{"token": "a"}]},
    {"content": [{"token": "a", "logprob": float("nan")}]},
    {"content": [{"token": "a", "logprob": 0.5}]},       # a log-probability above 0
    {"content": [{"token": "a", "logprob": True}]}, [1, 2],
])
def test_malformed_openai_logprobs_are_none(payload: Any) -> None:
    assert openai_logprobs(payload) is None


def test_openai_logprobs_drop_bad_alternatives() -> None:
    toks = openai_logprobs({"content": [{"token": "a", "logprob": -0.1, "top_logprobs": [
        {"token": "a", "logprob": -0.1}, {"token": 3, "logprob": -1.0}, "x"]}]})
    assert toks is not None and toks[0].top == (("a", -0.1),)


def test_aligned_logprobs_need_alternatives_that_spell_the_text() -> None:
    assert aligned_logprobs("ab", [[("b", -0.1)]]) is None
    assert aligned_logprobs("ab", "garbage") is None
    assert aligned_logprobs("ab", [[("a", -0.1)], "x"]) is None
    toks = aligned_logprobs("abc", [[("a", -2.0), ("ab", -0.1)], [("c", -0.2)]])
    assert toks is not None and [t.token for t in toks] == ["ab", "c"]


def test_verdict_table_and_calibration_checks() -> None:
    assert VERDICT_SCORES[(True, "high")] > VERDICT_SCORES[(True, "low")] > 0.5
    assert VERDICT_SCORES[(False, "low")] < 0.5 and VERDICT_SCORES[(False, "high")] < 0.1
    with pytest.raises(InvalidInputError, match="mapping"):
        check_calibration(0.5)
    bad = dict(VERDICT_SCORES)
    bad[(False, None)] = float("nan")
    with pytest.raises(InvalidInputError, match="must give a probability"):
        check_calibration(bad)
    js = parse_step_judgements(TEXT, 2)
    assert verdict_scores(js, dict(VERDICT_SCORES)) == [0.9, 0.1]
