"""dspy.BestOfN with the PRM as its reward: keep the answer whose every step checks out.

Run: python examples/dspy/best_of_n.py

DummyLM stands in for your LM here: DSPy's own test LM (``dspy.utils.DummyLM``) replays three
scripted ``ChainOfThought`` answers in turn, so the example runs offline and shows what the
PRM does. To use a real LM, change one line, ``REAL_LM`` below, e.g. to
``dspy.LM("openai/gpt-4o-mini")`` or a local server's model. (DSPy reaches LMs through
LiteLLM: a local model works once it is served, e.g. by Ollama or vLLM. The 135M-parameter
SmolLM2 this project uses for offline demos cannot drive DSPy: given ChainOfThought's prompt,
none of 4 samples wrote DSPy's ``[[ ## reasoning ## ]]`` field format.)

The problem and the correct solution are GSM8K test item 2 (MIT licence, (c) 2021 OpenAI),
without the calculator annotations. Two of the scripted answers slip in their arithmetic
(``2/2=2``, ``2+1=4``); the shipped default PRM catches written arithmetic slips for
certain (such a step scores 0.05), so ``PRMReward`` gives those answers 0.05 and the
correct one about 0.87, and ``BestOfN`` returns the correct one. Steps are numbered from 1.
"""

from __future__ import annotations

import dspy
from dspy.utils import DummyLM

from prm_plugins import load_prm
from prm_plugins.adapters.dspy import PRMReward
from prm_plugins.wording import SHIPPED_PRM_NOTE

QUESTION = (
    "A robe takes 2 bolts of blue fiber and half that much white fiber. "
    "How many bolts in total does it take?"
)
#: What DummyLM replays, one answer per BestOfN attempt.
SCRIPTED = [
    {"reasoning": "It takes 2/2=2 bolts of white fiber\n"
                  "So the total amount of fabric is 2+2=4 bolts of fabric", "answer": "4"},
    {"reasoning": "It takes 2/2=1 bolt of white fiber\n"
                  "So the total amount of fabric is 2+1=4 bolts of fabric", "answer": "4"},
    {"reasoning": "It takes 2/2=1 bolt of white fiber\n"
                  "So the total amount of fabric is 2+1=3 bolts of fabric", "answer": "3"},
]
#: The one line to change for a real LM, e.g. dspy.LM("openai/gpt-4o-mini"). None: DummyLM.
REAL_LM = None
#: BestOfN stops at the first answer whose reward reaches this. The shipped PRM scores
#: correct steps from about 0.5 to 0.9, and a step with an arithmetic slip 0.05.
THRESHOLD = 0.5
#: A step under this is reported as the reason an answer lost.
STEP_PASS_MARK = 0.3



def main() -> None:
    lm = REAL_LM or DummyLM(SCRIPTED)
    if REAL_LM is None:
        print("DummyLM stands in for your LM: it replays 3 scripted answers. "
              "Set REAL_LM to use yours.")
    dspy.configure(lm=lm)

    prm = load_prm()  # the shipped default PRM, CPU
    reward = PRMReward(prm, question_field="question", steps_field="reasoning")
    best_of_3 = dspy.BestOfN(dspy.ChainOfThought("question -> answer"), N=3,
                             reward_fn=reward, threshold=THRESHOLD)
    pred = best_of_3(question=QUESTION)

    records = list(reward.history)
    if pred is None or not records:
        print("No attempt gave a prediction (DSPy printed why above).")
        return
    picked = max(range(len(records)), key=lambda i: records[i].reward)
    for i, record in enumerate(records, start=1):
        mark = "*" if i - 1 == picked else " "
        print(f"{mark} candidate {i}: reward {record.reward:.3f} (min over steps)")
        scores = record.step_scores.scores if record.step_scores else []
        for n, (step, p) in enumerate(zip(record.steps, scores, strict=True), start=1):
            print(f"      step {n}: {p:.3f}  {step}")
    print(f"\nPicked candidate {picked + 1}: answer {pred.answer}, reward "
          f"{records[picked].reward:.3f}, at or above the threshold {THRESHOLD}.")
    for i, record in enumerate(records, start=1):
        if i - 1 != picked and record.step_scores is not None:
            first = record.step_scores.first_error(STEP_PASS_MARK)
            why = "no step under the pass mark" if first is None else (
                f"step {first + 1} scores {record.step_scores.scores[first]:.3f}, under "
                f"{STEP_PASS_MARK}: \"{record.steps[first]}\"")
            print(f"Candidate {i} lost: {why}.")
    print()
    print(SHIPPED_PRM_NOTE)


if __name__ == "__main__":
    main()
