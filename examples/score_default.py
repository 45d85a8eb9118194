"""Score a correct and a flawed solution of a real GSM8K problem with the default PRM.

Run: python examples/score_default.py

The problem and the correct solution are GSM8K test item 2 (MIT licence, (c) 2021 OpenAI),
with the calculator annotations removed and the final line written as a step. Two flawed
solutions follow: one takes the wrong quantity in step 2 (a reasoning error: every equation in
it is computed correctly), one slips in its arithmetic in step 2. The default PRM's
arithmetic check catches the slip for certain (step 2 and every later step score 0.05); the
small model itself does not see the wrong quantity: it scores that solution like the correct
one (their chain scores differ by about 0.001, well inside the model's noise), as the output
shows. See prm_plugins/models/default/MODEL_CARD.md.

Steps are numbered from 1 here, as in every message the package prints; the Python API
(``StepScores.first_error``, ``weakest_step``) counts from 0. The pass mark is 0.3: the
shipped PRM scores correct late steps near 0.5, so 0.5 would flag correct solutions.
"""

from __future__ import annotations

from prm_plugins import load_prm

QUESTION = (
    "A robe takes 2 bolts of blue fiber and half that much white fiber. "
    "How many bolts in total does it take?"
)
CORRECT = [
    "It takes 2/2=1 bolt of white fiber",
    "So the total amount of fabric is 2+1=3 bolts of fabric",
    "The answer is 3.",
]
WRONG_QUANTITY = [
    "It takes 2/2=1 bolt of white fiber",
    "So the total amount of fabric is 2+2=4 bolts of fabric",
    "The answer is 4.",
]
ARITHMETIC_SLIP = [
    "It takes 2/2=1 bolt of white fiber",
    "So the total amount of fabric is 2+1=4 bolts of fabric",
    "The answer is 4.",
]


THRESHOLD = 0.3


def main() -> None:
    prm = load_prm()  # the shipped default PRM, CPU; pass a directory for another model
    print(f"Steps are numbered from 1; pass mark {THRESHOLD}.")
    mins: dict[str, float] = {}
    for name, steps in (("correct", CORRECT), ("wrong quantity", WRONG_QUANTITY),
                        ("arithmetic slip", ARITHMETIC_SLIP)):
        s = prm.score(QUESTION, steps)
        mins[name] = s.min
        first = s.first_error(THRESHOLD)  # 0-based index, or None
        flagged = "none" if first is None else f"step {first + 1}"
        print(f"{name} solution: chain score (min) {s.min:.3f}, first step under "
              f"{THRESHOLD}: {flagged}")
        for i, (step, p) in enumerate(zip(s.steps, s.scores, strict=True), start=1):
            print(f"  step {i}: {p:.3f}  {step}")
    gap = abs(mins["correct"] - mins["wrong quantity"])
    caught = mins["correct"] - mins["arithmetic slip"]
    print(f"\nThe correct and the wrong-quantity solutions differ by {gap:.3f}: the model "
          f"cannot tell them apart.\nThe arithmetic slip scores {caught:.3f} below the "
          "correct solution: the arithmetic check caught it.")


if __name__ == "__main__":
    main()
