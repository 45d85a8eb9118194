"""DSPy adapter: PRMReward as the reward_fn of real ``dspy.BestOfN`` and ``dspy.Refine``.

The LM is DSPy's own test LM, ``dspy.utils.DummyLM``, which replays scripted field values
in turn (one dict per LM call); the PRM is the shipped default PRM (``load_prm()``), whose
arithmetic check scores a step with a written arithmetic slip 0.05, while it scores the
correct chain of the same GSM8K problem above 0.8. So which answer BestOfN and Refine return
is decided by the PRM's reward, and the tests check that it is: the same modules with a
constant reward return the first (wrong) answer instead.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest

try:
    import dspy
    from dspy.clients.base_lm import GLOBAL_HISTORY
    from dspy.utils import DummyLM
except ImportError:
    pytest.skip("the DSPy adapter tests need the dspy extra: pip install 'prm-plugins[dspy]'",
                allow_module_level=True)

from prm_plugins import StepScores, load_prm
from prm_plugins.adapters.dspy import (
    UNSCORABLE_REWARD,
    PRMReward,
    RewardRecord,
    prm_reward_fn,
)
from prm_plugins.errors import InvalidInputError, PRMError

QUESTION = ("A robe takes 2 bolts of blue fiber and half that much white fiber. "
            "How many bolts in total does it take?")
CORRECT = ("It takes 2/2=1 bolt of white fiber\n"
           "So the total amount of fabric is 2+1=3 bolts of fabric")
SLIP = ("It takes 2/2=1 bolt of white fiber\n"
        "So the total amount of fabric is 2+1=4 bolts of fabric")
CORRECT_ANSWER = {"reasoning": CORRECT, "answer": "3"}
SLIP_ANSWER = {"reasoning": SLIP, "answer": "4"}
#: The shipped PRM's arithmetic check caps a slipped step at this.
CAPPED = 0.05


@pytest.fixture(scope="module")
def prm() -> Any:
    return load_prm()


def cot() -> Any:
    return dspy.ChainOfThought("question -> answer")


def best_of_n(lm: DummyLM, reward_fn: Any, n: int, threshold: float) -> Any:
    with dspy.context(lm=lm):
        return dspy.BestOfN(cot(), N=n, reward_fn=reward_fn, threshold=threshold)(
            question=QUESTION)


# -- BestOfN and Refine choose by the PRM's reward ---------------------------------------


@pytest.mark.parametrize("script", [[SLIP_ANSWER, CORRECT_ANSWER], [CORRECT_ANSWER, SLIP_ANSWER]],
                         ids=["slip-first", "correct-first"])
def test_best_of_n_keeps_the_correct_answer_over_the_arithmetic_slip(
    prm: Any, script: list[dict[str, str]]
) -> None:
    reward = PRMReward(prm)
    pred = best_of_n(DummyLM(script), reward, n=2, threshold=1.0)  # 1.0: both are tried
    assert pred.answer == "3" and pred.reasoning == CORRECT
    rewards = {r.steps[-1]: r.reward for r in reward.history}
    assert len(reward.history) == 2
    assert rewards["So the total amount of fabric is 2+1=4 bolts of fabric"] == pytest.approx(
        CAPPED)
    assert rewards["So the total amount of fabric is 2+1=3 bolts of fabric"] > 0.5
    # the reward is the min of the PRM's own step scores for that chain
    direct = prm.score(QUESTION, CORRECT.split("\n"))
    assert max(r.reward for r in reward.history) == pytest.approx(direct.min)


def test_without_the_prm_reward_best_of_n_keeps_the_first_answer() -> None:
    # the control: a constant reward leaves BestOfN with the first answer, the slip
    pred = best_of_n(DummyLM([SLIP_ANSWER, CORRECT_ANSWER]), lambda args, pred: 0.0, n=2,
                     threshold=1.0)
    assert pred.answer == "4"


def test_threshold_stops_at_the_first_answer_that_reaches_it(prm: Any) -> None:
    script = [SLIP_ANSWER, CORRECT_ANSWER, SLIP_ANSWER]
    reward = PRMReward(prm)
    pred = best_of_n(DummyLM(script), reward, n=3, threshold=0.5)
    assert pred.answer == "3"
    assert len(reward.history) == 2  # the third answer was never asked for
    # a threshold no chain reaches: all three are tried, the best is kept
    reward = PRMReward(prm)
    pred = best_of_n(DummyLM(script), reward, n=3, threshold=0.99)
    assert pred.answer == "3" and len(reward.history) == 3
    # a threshold the slip's 0.05 already reaches: BestOfN stops at the slip
    reward = PRMReward(prm)
    pred = best_of_n(DummyLM(script), reward, n=3, threshold=0.01)
    assert pred.answer == "4" and len(reward.history) == 1


def test_refine_retries_with_advice_after_the_slip_and_keeps_the_correct_answer(
    prm: Any,
) -> None:
    advice = {"discussion": "Step 2 adds 2 and 1 wrongly.",
              "advice": {"predict": "Recompute every sum before writing it."}}
    lm = DummyLM([SLIP_ANSWER, advice, CORRECT_ANSWER])
    reward = PRMReward(prm)
    GLOBAL_HISTORY.clear()
    with dspy.context(lm=lm):
        refine = dspy.Refine(cot(), N=3, reward_fn=reward, threshold=0.5)
        pred = refine(question=QUESTION)
    assert pred.answer == "3"
    assert [round(r.reward, 2) for r in reward.history][0] == CAPPED
    assert len(reward.history) == 2 and reward.history[1].reward > 0.5
    # Refine asked for advice after the slip's low reward and sent it as a hint
    prompts = [str(entry["messages"]) for entry in GLOBAL_HISTORY]
    assert len(prompts) == 3 and "0.05" in prompts[1]
    assert "Recompute every sum before writing it." in prompts[2]
    # Refine hands the reward's source to its advice LM: our class's source is readable
    assert "class PRMReward" in refine.reward_fn_code


def test_refine_with_one_attempt_returns_the_slip(prm: Any) -> None:
    reward = PRMReward(prm)
    with dspy.context(lm=DummyLM([SLIP_ANSWER])):
        pred = dspy.Refine(cot(), N=1, reward_fn=reward, threshold=0.5)(question=QUESTION)
    assert pred.answer == "4" and reward.history[0].reward == pytest.approx(CAPPED)


# -- configuration -----------------------------------------------------------------------


class Solve(dspy.Signature):
    """Solve the problem step by step."""

    problem: str = dspy.InputField()
    steps: list[str] = dspy.OutputField()
    answer: str = dspy.OutputField()


def test_question_and_list_steps_fields_are_configurable(prm: Any) -> None:
    script = [{"steps": SLIP.split("\n"), "answer": "4"},
              {"steps": CORRECT.split("\n"), "answer": "3"}]
    reward = prm_reward_fn(prm, question_field="problem", steps_field="steps")
    with dspy.context(lm=DummyLM(script)):
        pred = dspy.BestOfN(dspy.Predict(Solve), N=2, reward_fn=reward, threshold=1.0)(
            problem=QUESTION)
    assert pred.answer == "3"
    assert [r.steps for r in reward.history] == [tuple(SLIP.split("\n")),
                                                 tuple(CORRECT.split("\n"))]
    assert all(r.question == QUESTION for r in reward.history)


def test_answer_field_is_scored_as_the_last_step(prm: Any) -> None:
    reward = PRMReward(prm, answer_field="answer")
    value = reward({"question": QUESTION}, dspy.Prediction(reasoning=CORRECT,
                                                           answer="The answer is 3."))
    steps = [*CORRECT.split("\n"), "The answer is 3."]
    assert reward.history[-1].steps == tuple(steps)
    assert value == pytest.approx(prm.score(QUESTION, steps).min)


def test_aggregate_and_split_are_used(prm: Any) -> None:
    pred = dspy.Prediction(reasoning=SLIP)
    scores = prm.score(QUESTION, SLIP.split("\n")).scores
    mean = PRMReward(prm, aggregate="mean")({"question": QUESTION}, pred)
    assert mean == pytest.approx(sum(scores) / len(scores))
    # one step per sentence-ending period, by a callable splitter
    reward = PRMReward(prm, split=lambda text: text.replace("\n", ". ").split(". "))
    reward({"question": QUESTION}, dspy.Prediction(reasoning=CORRECT))
    assert reward.history[-1].steps == tuple(CORRECT.split("\n"))


def test_missing_fields_are_named_with_the_fields_there_are(prm: Any) -> None:
    reward = PRMReward(prm, steps_field="rationale")
    with pytest.raises(InvalidInputError,
                       match=r"no field 'rationale' in the prediction; fields available: "
                             r"\['answer', 'reasoning'\]"):
        reward({"question": QUESTION}, dspy.Prediction(reasoning=CORRECT, answer="3"))
    with pytest.raises(InvalidInputError, match=r"no field 'question' in the module's inputs; "
                                                r"fields available: \['problem'\]"):
        PRMReward(prm)({"problem": QUESTION}, dspy.Prediction(reasoning=CORRECT))
    with pytest.raises(InvalidInputError, match="no field 'verdict' in the prediction"):
        PRMReward(prm, answer_field="verdict")({"question": QUESTION},
                                               dspy.Prediction(reasoning=CORRECT))
    with pytest.raises(InvalidInputError, match="question must be a non-empty str"):
        PRMReward(prm)({"question": "  "}, dspy.Prediction(reasoning=CORRECT))


def test_best_of_n_reports_a_missing_field_on_every_attempt(
    prm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # DSPy catches reward_fn errors as failed attempts and prints them (best_of_n.py:75-79)
    pred = best_of_n(DummyLM([CORRECT_ANSWER, CORRECT_ANSWER]),
                     PRMReward(prm, steps_field="rationale"), n=2, threshold=0.5)
    assert pred is None
    assert capsys.readouterr().out.count("no field 'rationale' in the prediction") == 2


@pytest.mark.parametrize("options, message", [
    ({"steps_field": ""}, "steps_field must be a non-empty field name"),
    ({"question_field": None}, "question_field must be a non-empty field name"),
    ({"unscorable_reward": 1.5}, r"unscorable_reward must be a number in \[0, 1\]"),
    ({"aggregate": "median"}, "unknown aggregate 'median'"),
    ({"split": "sentences"}, "unknown split 'sentences'"),
    ({"max_chars": 0}, "max_chars"),
    ({"keep": -1}, "keep"),
])
def test_bad_options_are_refused(prm: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        PRMReward(prm, **options)


def test_a_prm_that_is_not_a_scorer_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="StepScorer"):
        PRMReward(object())  # type: ignore[arg-type]


def test_default_prm_is_the_shipped_one() -> None:
    reward = prm_reward_fn()
    assert type(reward.prm).__name__ == "OnnxPRM"
    assert reward({"question": QUESTION}, dspy.Prediction(reasoning=SLIP)) == pytest.approx(
        CAPPED)


# -- untrusted LLM output ----------------------------------------------------------------

HOSTILE = {
    "empty": "",
    "blank": " \n\n \t ",
    "over max_chars": "1 + 1 = 2\n" * 12_000,
    "over the PRM's max_length": "1 + 1 = 2 and so on and on\n" * 400,
    "lone surrogate": "It takes 2/2=1 bolt\ud800 of white fiber",
    "None": None,
    "a number": 42,
    "a list with a non-string": ["It takes 2/2=1 bolt", 3],
    "an empty list": [],
    "a dict": {"step": "2+1=3"},
}


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_unscorable_output_gets_zero_and_a_warning(
    prm: Any, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    reward = PRMReward(prm)
    with caplog.at_level(logging.WARNING, logger="prm_plugins.adapters.dspy.reward"):
        got = reward({"question": QUESTION}, dspy.Prediction(reasoning=value, answer="3"))
    assert got == UNSCORABLE_REWARD == 0.0
    record = reward.history[-1]
    assert isinstance(record, RewardRecord) and not record.scored and record.problem
    assert "prediction not scored, reward 0.0" in caplog.text


def test_an_unscorable_candidate_does_not_stop_best_of_n(prm: Any) -> None:
    script = [{"reasoning": "x\ud800", "answer": "?"}, {"reasoning": "", "answer": "?"},
              CORRECT_ANSWER]
    reward = PRMReward(prm, unscorable_reward=0.01)
    pred = best_of_n(DummyLM(script), reward, n=3, threshold=1.0)
    assert pred.answer == "3"
    assert [r.reward for r in reward.history][:2] == [0.01, 0.01]


def test_step_tags_in_the_output_neither_merge_nor_split_steps(prm: Any) -> None:
    steps = ["<extra_0> ки [[ ## answer ## ]] 3", "It takes 2/2=1 bolt of white fiber"]
    reward = PRMReward(prm)
    value = reward({"question": QUESTION}, dspy.Prediction(reasoning=steps))
    assert reward.history[-1].step_scores is not None
    assert len(reward.history[-1].step_scores.scores) == 2
    assert 0.0 <= value <= 1.0


class NaNScorer:
    """A scorer that breaks the contract (NaN scores): not the LLM's fault, so it raises."""

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        return StepScores(list(steps), [math.nan] * len(steps))

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        return [self.score(q, s) for q, s in items]


def test_a_scorer_that_breaks_its_contract_raises() -> None:
    with pytest.raises(PRMError, match="returned nan for step 1 of 2"):
        PRMReward(NaNScorer())({"question": QUESTION}, dspy.Prediction(reasoning=CORRECT))


def test_history_keeps_the_last_records(prm: Any) -> None:
    reward = PRMReward(prm, keep=1)
    for text in (SLIP, CORRECT):
        reward({"question": QUESTION}, dspy.Prediction(reasoning=text))
    assert len(reward.history) == 1 and reward.history[0].steps[-1].endswith("3 bolts of fabric")


def test_importing_the_adapter_does_not_import_dspy() -> None:
    code = "import sys, prm_plugins.adapters.dspy; print('dspy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
