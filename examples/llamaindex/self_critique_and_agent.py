"""Self-critique as a LlamaIndex Workflow, and an agent that checks its answer, with the
default PRM.

Run: python examples/llamaindex/self_critique_and_agent.py

1. ``PRMSelfCritiqueWorkflow`` (steps: generate -> verify -> revise): the PRM scores each
   step of the answer; when one falls under the threshold, the LLM is asked to redo the
   solution from that step, keeping the steps before it, for up to 2 rounds.
2. ``PRMVerifiedAgentRunner`` runs a ``ReActAgent`` that calls a tool, scores its final
   answer, and when the answer fails, sends the PRM's feedback back to the agent in the
   same ``Context`` (so it sees its earlier answer and tool calls), up to 2 times.

The LLMs are scripted (``scripted_llm.py``; fakes on purpose, so that this runs offline):
the first answer has an arithmetic slip in step 2 (24 + 12 = 38), which the shipped PRM
catches (it caps that step and every later one at 0.05); the workflow asks for a revision
from step 2 and the scripted reviser writes the correct steps from there: 1 revision, final
answer 6. The agent answers with the same slip, gets the PRM's feedback in the same
``Context`` and answers correctly: 1 feedback round, final answer 6. The shipped PRM would
not catch a reasoning error with correct arithmetic (say, 24 * 2 for "half as many"): the
output says so, with the one line that plugs in a stronger PRM. The pass mark is 0.3 (the
shipped PRM scores correct late steps near 0.5; see its model card).

To use a real LLM, change the line marked SWITCH, e.g. to ``OpenAI(model="gpt-4o-mini")``
(``pip install llama-index-llms-openai``); the agent then needs a model that follows the
ReAct format (or use ``FunctionAgent`` with a function-calling model). The question is
written for this example.
"""

from __future__ import annotations

import asyncio
import re

from llama_index.core.agent.workflow import ReActAgent
from llama_index.core.llms import LLM
from scripted_llm import SHIPPED_PRM_NOTE, ScriptedLLM

from prm_plugins import load_prm
from prm_plugins.adapters.llamaindex import (
    CritiqueRoundEvent,
    PRMSelfCritiqueWorkflow,
    PRMVerifiedAgentRunner,
)

QUESTION = (
    "A baker makes 24 muffins in the morning and half as many in the afternoon. "
    "He sells 30 of them. How many muffins are left?"
)
CORRECT = [
    "In the afternoon he makes 24 / 2 = 12 muffins.",
    "In total he makes 24 + 12 = 36 muffins.",
    "After selling 30, 36 - 30 = 6 muffins are left.",
    "The answer is 6.",
]
#: An arithmetic slip in step 2 (24 + 12 is not 38), carried on to a wrong answer.
SLIP = [
    "In the afternoon he makes 24 / 2 = 12 muffins.",
    "In total he makes 24 + 12 = 38 muffins.",
    "After selling 30, 38 - 30 = 8 muffins are left.",
    "The answer is 8.",
]
THRESHOLD = 0.3
REACT_TOOL_CALL = (
    "Thought: I need to know how many muffins he makes in the afternoon.\n"
    'Action: divide\nAction Input: {"a": 24, "b": 2}'
)
REACT_ANSWER = "Thought: I can answer without using any more tools.\nAnswer: "


def revise_from_requested_step(prompt: str) -> str | None:
    """Scripted reviser: for a revision prompt, the correct steps from the one it asks for."""
    match = re.search(r"Write the rest of the solution, starting with step (\d+)", prompt)
    return "\n".join(CORRECT[int(match.group(1)) - 1:]) if match else None


def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


async def self_critique(llm: LLM) -> None:
    workflow = PRMSelfCritiqueWorkflow(llm, load_prm(), threshold=THRESHOLD, max_rounds=2)
    handler = workflow.run(question=QUESTION)
    async for event in handler.stream_events():
        if isinstance(event, CritiqueRoundEvent):
            score = "n/a" if event.score is None else f"{event.score:.3f}"
            print(f"  attempt {event.round + 1}: score {score}, passed {event.passed}")
            if event.feedback:
                print(f"    feedback: {event.feedback}")
    result = await handler
    revisions = f"{result.revisions} {'revision' if result.revisions == 1 else 'revisions'}"
    answer = result.steps[-1].removeprefix("The answer is ").rstrip(".")
    print(f"Final answer: {answer} ({revisions}, chain score "
          f"{result.verdict.score:.3f}, passed {result.passed}):")
    for step, score in zip(result.steps, result.verdict.step_scores.scores, strict=True):
        print(f"  {score:.3f}  {step}")


async def verified_agent(llm: LLM) -> None:
    agent = ReActAgent(tools=[divide], llm=llm)
    runner = PRMVerifiedAgentRunner(agent, load_prm(), threshold=THRESHOLD,
                                    max_feedback_rounds=2)
    result = await runner.run(QUESTION)
    for r in result.rounds:
        score = "no steps" if r.verdict is None else f"{r.verdict.score:.3f}"
        print(f"  attempt {r.round + 1}: score {score}")
        if r.feedback:
            print(f"    sent back: {r.feedback}")
    rounds = sum(1 for r in result.rounds if r.feedback)
    print(f"Agent's answer after {rounds} feedback {'round' if rounds == 1 else 'rounds'} "
          f"(passed {result.passed}, chain score {result.score:.3f}):")
    print("  " + result.response.replace("\n", "\n  "))


def main() -> None:
    real_llm: LLM | None = None  # SWITCH: a real LLM here, e.g. OpenAI(model="gpt-4o-mini")
    critique_llm = real_llm or ScriptedLLM(["\n".join(SLIP)],
                                           respond=revise_from_requested_step)
    agent_llm = real_llm or ScriptedLLM([REACT_TOOL_CALL, REACT_ANSWER + "\n".join(SLIP),
                                         REACT_ANSWER + "\n".join(CORRECT)], chat_model=True)

    print("PRMSelfCritiqueWorkflow:")
    asyncio.run(self_critique(critique_llm))
    print("\nPRMVerifiedAgentRunner with a ReActAgent:")
    asyncio.run(verified_agent(agent_llm))
    print()
    print(SHIPPED_PRM_NOTE)


if __name__ == "__main__":
    main()
