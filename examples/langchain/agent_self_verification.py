"""An agent that checks its own reasoning with a PRM and revises it on feedback.

Run: python examples/langchain/agent_self_verification.py

``create_agent`` with ``PRMVerificationMiddleware``: after each model answer the PRM scores
its steps; when the chain score is under the threshold, the middleware appends feedback
naming the weak step and sends the agent back to the model (at most ``max_retries`` times).
The verdict is attached to each answer as ``response_metadata["prm_verification"]``. Swap in
``PRMBestOfNMiddleware(prm=prm, n=4)`` to choose among 4 answers per model call instead.

The model is a scripted fake chat model (a flawed answer first, then a corrected one)
unless ``REAL_MODEL`` in ``_problem.py`` names a real one (one line; see there). Needs
``pip install "prm-plugins[langchain]"``.
"""

from __future__ import annotations

from _problem import CORRECT, FLAWED_2, QUESTION, chat_model
from langchain.agents import create_agent

from prm_plugins import load_prm
from prm_plugins.adapters.langchain import PRMVerificationMiddleware


def main() -> None:
    prm = load_prm()  # the shipped default PRM, on CPU
    agent = create_agent(
        chat_model([FLAWED_2, CORRECT, CORRECT]),
        tools=[],
        system_prompt="Solve the problem step by step, one step per line. "
                      "End with 'The answer is N.'",
        middleware=[PRMVerificationMiddleware(prm=prm, threshold=0.5, max_retries=2)],
    )
    state = agent.invoke({"messages": [("user", QUESTION)]})
    for message in state["messages"]:
        verdict = message.response_metadata.get("prm_verification")
        if verdict is not None:
            print(f"[{message.type}] score {verdict['score']:.3f} "
                  f"({'passed' if verdict['passed'] else 'failed'}):")
        else:
            print(f"[{message.type}]")
        print("  " + message.text.replace("\n", "\n  "))


if __name__ == "__main__":
    main()
