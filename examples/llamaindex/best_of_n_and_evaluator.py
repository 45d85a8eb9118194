"""Best-of-N answers and step-by-step evaluation in LlamaIndex, with the default PRM.

Run: python examples/llamaindex/best_of_n_and_evaluator.py

1. ``PRMBestOfNLLM`` wraps an LLM: every ``complete``/``chat`` call samples 4 answers and
   returns the one the PRM scores highest (the scores come back in
   ``additional_kwargs["prm"]``). It goes wherever a LlamaIndex LLM goes.
2. ``PRMStepEvaluator`` is a LlamaIndex evaluator: here ``BatchEvalRunner`` checks all four
   answers and the feedback names the step to fix.
3. An instrumentation handler on the root dispatcher prints the PRM's events.

The LLM is scripted (``scripted_llm.py``; a fake on purpose, so that this runs offline): it
returns one correct solution and three flawed ones, which a real model might write. To use a
real LLM, change the one line marked SWITCH, e.g. to
``OpenAI(model="gpt-4o-mini", temperature=0.8)`` (``pip install llama-index-llms-openai``).
The question is written for this example.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.evaluation import BatchEvalRunner
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from scripted_llm import ScriptedLLM

from prm_plugins import load_prm
from prm_plugins.adapters.llamaindex import (
    PRMBestOfNLLM,
    PRMCandidateSelectedEvent,
    PRMStepEvaluator,
)

QUESTION = (
    "A baker makes 24 muffins in the morning and half as many in the afternoon. "
    "He sells 30 of them. How many muffins are left?"
)
ANSWERS = [
    # wrong operation for "half as many" (a reasoning error; the arithmetic is right)
    "In the afternoon he makes 24 * 2 = 48 muffins.\n"
    "In total he makes 24 + 48 = 72 muffins.\n"
    "After selling 30, 72 - 30 = 42 muffins are left.\nThe answer is 42.",
    # correct
    "In the afternoon he makes 24 / 2 = 12 muffins.\n"
    "In total he makes 24 + 12 = 36 muffins.\n"
    "After selling 30, 36 - 30 = 6 muffins are left.\nThe answer is 6.",
    # arithmetic slip in step 2
    "In the afternoon he makes 24 / 2 = 12 muffins.\n"
    "In total he makes 24 + 12 = 38 muffins.\n"
    "After selling 30, 38 - 30 = 8 muffins are left.\nThe answer is 8.",
    # a missing step: forgets the afternoon batch
    "He makes 24 muffins.\nAfter selling 30, he cannot have any left.\nThe answer is 0.",
]


class PrintSelections(BaseEventHandler):
    """Prints the PRM's choice whenever PRMBestOfNLLM makes one."""

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, PRMCandidateSelectedEvent):
            scores = ", ".join("failed" if s is None else f"{s:.3f}"
                               for s in event.candidate_scores)
            print(f"[event] chose candidate {event.index + 1} of {event.n}; scores: {scores}")


def main() -> None:
    prm = load_prm()  # the shipped default PRM, on CPU
    llm = ScriptedLLM(ANSWERS)  # SWITCH: a real LLM here, e.g. OpenAI(model="gpt-4o-mini")

    handler = PrintSelections()
    get_dispatcher().add_event_handler(handler)
    try:
        best_llm = PRMBestOfNLLM(llm, prm, n=4, aggregate="min")
        response = best_llm.complete(QUESTION)
    finally:
        get_dispatcher().event_handlers.remove(handler)
    report = response.additional_kwargs["prm"]
    print(f"\nBest of {report['n']} (chain score {report['score']:.3f}):")
    for step, score in zip(report["steps"], report["step_scores"], strict=True):
        print(f"  {score:.3f}  {step}")

    evaluator = PRMStepEvaluator(prm, threshold=0.5)
    runner = BatchEvalRunner({"prm": evaluator}, workers=2)
    results = runner.evaluate_response_strs(
        queries=[QUESTION] * len(ANSWERS), response_strs=ANSWERS
    )["prm"]
    print("\nBatchEvalRunner with PRMStepEvaluator:")
    for i, result in enumerate(results, start=1):
        verdict = "pass" if result.passing else "FAIL"
        print(f"  answer {i}: {verdict} (score {result.score:.3f}) {result.feedback}")


if __name__ == "__main__":
    main()
