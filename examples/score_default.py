"""Score a correct and a flawed solution of a real GSM8K problem with the default PRM.

Run: python examples/score_default.py

The problem and the correct solution are GSM8K test item 2 (MIT licence, (c) 2021 OpenAI),
with the calculator annotations removed and the final line written as a step. Two flawed
solutions follow: one takes the wrong quantity in step 2 (a reasoning error: every equation in
it is computed correctly), one slips in its arithmetic in step 2. The default PRM's
arithmetic check catches the slip for certain; the small model itself catches reasoning
errors only some of the time (see prm_plugins/models/default/MODEL_CARD.md).
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


def main() -> None:
    prm = load_prm()  # the shipped default PRM, CPU; pass a directory for another model
    for name, steps in (("correct", CORRECT), ("wrong quantity", WRONG_QUANTITY),
                        ("arithmetic slip", ARITHMETIC_SLIP)):
        s = prm.score(QUESTION, steps)
        print(f"{name} solution: min {s.min:.3f}, first step under 0.5: {s.first_error(0.5)}")
        for i, (step, p) in enumerate(zip(s.steps, s.scores, strict=True), start=1):
            print(f"  step {i}: {p:.3f}  {step}")


if __name__ == "__main__":
    main()
