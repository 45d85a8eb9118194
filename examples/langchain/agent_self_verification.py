"""An agent that checks its own reasoning with a PRM and revises it on feedback.

Run: python examples/langchain/agent_self_verification.py

``create_agent`` with ``PRMVerificationMiddleware``: after each model answer the PRM scores
its steps; when the chain score is under the pass mark, the middleware appends feedback
naming the weak step and sends the agent back to the model (at most ``max_retries`` times).
The verdict is attached to each answer as ``response_metadata["prm_verification"]``. Swap in
``PRMBestOfNMiddleware(prm=prm, n=4)`` to choose among 4 answers per model call instead.

The scripted model first answers with an arithmetic slip in step 2 (2+1=4), which the
shipped PRM catches: the answer fails, the feedback names step 2, and the model's revision
(the correct answer, 3) passes. One retry, one revision. The shipped PRM would not catch a
reasoning error with correct arithmetic (the output says so, with the one line that plugs
in a stronger PRM). The pass mark is 0.3 (the shipped PRM scores correct late steps near
0.5; see its model card).

The model is a scripted fake chat model unless ``REAL_MODEL`` in ``_problem.py`` names a
real one (one line; see there). Needs ``pip install ".[langchain]"`` from a checkout.
"""

from __future__ import annotations

from _problem import (
    CORRECT,
    QUESTION,
    SLIP_STEP_2,
    THRESHOLD,
    chat_model,
    final_answer,
)
from langchain.agents import create_agent

from prm_plugins import load_prm
from prm_plugins.adapters.langchain import PRMVerificationMiddleware
from prm_plugins.wording import SHIPPED_PRM_NOTE


def main() -> None:
    prm = load_prm()  # the shipped default PRM, on CPU
    agent = create_agent(
        chat_model([SLIP_STEP_2, CORRECT]),
        tools=[],
        system_prompt="Solve the problem step by step, one step per line. "
                      "End with 'The answer is N.'",
        middleware=[PRMVerificationMiddleware(prm=prm, threshold=THRESHOLD, max_retries=2)],
    )
    state = agent.invoke({"messages": [("user", QUESTION)]})
    answers = 0
    for message in state["messages"]:
        verdict = message.response_metadata.get("prm_verification")
        if verdict is None:
            print(f"[{message.type}]")
        else:
            answers += 1
            print(f"[{message.type}] answer {answers}: chain score {verdict['score']:.3f}, "
                  f"{'passed' if verdict['passed'] else 'failed'} (pass mark "
                  f"{verdict['threshold']}, retries before it: {verdict['retries']})")
        print("  " + message.text.replace("\n", "\n  "))
    final = state["messages"][-1]
    revisions = answers - 1
    print(f"\nFinal answer: {final_answer(final.text)}, after {revisions} "
          f"{'revision' if revisions == 1 else 'revisions'}")
    print(SHIPPED_PRM_NOTE)


if __name__ == "__main__":
    main()
