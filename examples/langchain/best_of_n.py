"""Best-of-N with a PRM as a drop-in LangChain chat model: ``prompt | PRMBestOfN | parser``.

Run: python examples/langchain/best_of_n.py

``PRMBestOfN`` samples 5 answers from the chat model, scores every step of each with the
default PRM, and returns the chosen answer as the model's own ``AIMessage`` (the PRM's
report in ``response_metadata["prm"]``), so it replaces the model in any chain. Its default
selection is the PRM-weighted vote: each final answer collects the chain scores (lowest step
score) of the answers that state it, and the heaviest wins; with the shipped PRM that beats
majority voting (``benchmarks/results/bon_curve.md``).

The scripted model answers 3 twice (correct) and 4 three times: two arithmetic slips, which
the shipped PRM catches (chain score 0.05), and one reasoning error with correct arithmetic
(a wrong quantity), which it scores like a correct answer. Majority voting picks 4; the
PRM-weighted vote picks 3 by a wide margin. The output says what the shipped PRM cannot see
and the one line that plugs in a stronger one.

The LLM is a scripted fake chat model unless ``REAL_MODEL`` in ``_problem.py`` names a real
one (one line; see there). Needs ``pip install ".[langchain]"`` from a checkout.
"""

from __future__ import annotations

from collections import Counter

from _problem import (
    CORRECT,
    CORRECT_REWORDED,
    QUESTION,
    SLIP_STEP_1,
    SLIP_STEP_2,
    WRONG_QUANTITY,
    chat_model,
    final_answer,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from prm_plugins import load_prm
from prm_plugins.adapters.langchain import PRMBestOfN
from prm_plugins.wording import SHIPPED_PRM_NOTE

ANSWERS = [SLIP_STEP_2, CORRECT, WRONG_QUANTITY, CORRECT_REWORDED, SLIP_STEP_1]


def main() -> None:
    prm = load_prm()  # the shipped default PRM, on CPU
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Solve the problem step by step, one step per line. "
                   "End with 'The answer is N.'"),
        ("human", "{question}"),
    ])
    llm = chat_model(ANSWERS, temperature=0.8)
    # max_concurrency=1: one call at a time, so the scripted answers arrive in order
    best_llm = PRMBestOfN(generator=llm, prm=prm, n=5, max_concurrency=1)

    message = (prompt | best_llm).invoke({"question": QUESTION})  # an AIMessage, as from llm
    report = message.response_metadata["prm"]
    print("Question:", QUESTION)
    for c in report["result"]["candidates"]:
        mark = "*" if c["index"] == report["index"] else " "
        print(f"{mark} candidate {c['index'] + 1}: chain score {c['score']:.3f}, "
              f"answer {c['answer']}")

    votes = sorted(report["votes"].items(), key=lambda kv: -kv[1]) or [("none", 0.0)]
    margin = votes[0][1] - (votes[1][1] if len(votes) > 1 else 0.0)
    print("\nPRM-weighted votes (sum of chain scores): "
          + ", ".join(f"{answer}: {weight:.3f}" for answer, weight in votes))
    print(f"Chosen answer: {report['answer']} (selection {report['selection']}, "
          f"ahead by {margin:.3f})")
    counts = Counter(c["answer"] for c in report["result"]["candidates"])
    majority, count = counts.most_common(1)[0]
    print(f"Majority vote would choose: {majority} ({count} of {len(ANSWERS)} answers)")

    # The same component in a text chain: prompt | model | parser, streamed
    text_chain = prompt | best_llm | StrOutputParser()
    print("\nprompt | PRMBestOfN | StrOutputParser() streams the chosen answer:")
    for chunk in text_chain.stream({"question": QUESTION}):
        print("  " + chunk.replace("\n", "\n  "))

    candidates = report["result"]["candidates"]
    if [c["text"] for c in candidates] == ANSWERS:  # the scripted model's answers
        slips = [c["score"] for c in candidates if c["text"] in (SLIP_STEP_1, SLIP_STEP_2)]
        right = [c["score"] for c in candidates if final_answer(c["text"]) == "3"]
        wrong_quantity = next(c["score"] for c in candidates if c["text"] == WRONG_QUANTITY)
        print(f"\nThe two arithmetic slips scored {max(slips):.3f}: caught. The wrong-quantity "
              f"answer (2+2=4, arithmetic right)\nscored {wrong_quantity:.3f}, like the correct "
              f"ones ({', '.join(f'{s:.3f}' for s in right)}): not caught.")
    print(SHIPPED_PRM_NOTE)


if __name__ == "__main__":
    main()
