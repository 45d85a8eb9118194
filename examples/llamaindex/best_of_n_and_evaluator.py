"""Best-of-N answers, a RAG query engine and step-by-step evaluation in LlamaIndex.

Run: python examples/llamaindex/best_of_n_and_evaluator.py

1. ``PRMBestOfNLLM`` wraps an LLM: every ``complete``/``chat`` call samples 4 answers and
   returns the one the PRM prefers (the report comes back in ``additional_kwargs["prm"]``).
   Its default selection is the PRM-weighted vote: each final answer collects the chain
   scores of the answers that state it, and the heaviest wins.
2. The same wrapped LLM in a standard RAG query engine (``VectorStoreIndex`` over a few
   documents, the default QA template, ``as_query_engine(llm=...)``): the answers are
   scored against the user's query, not against the whole prompt with its retrieved
   context.
3. ``PRMStepEvaluator`` is a LlamaIndex evaluator: ``BatchEvalRunner`` checks all four
   answers and the feedback names the step to fix.

The LLM is scripted (``scripted_llm.py``; a fake on purpose, so that this runs offline): two
correct solutions (6 muffins), one with an arithmetic slip in step 2 (24 + 12 = 38), which
the shipped PRM catches (chain score 0.05), and one with the wrong operation for "half as
many" (24 * 2 = 48; arithmetic right), which it does not catch: it scores it like a correct
one and the evaluator passes it. The weighted vote still picks 6, by a wide margin, because
two correct answers agree. The output says what the shipped PRM cannot see and the one
line that plugs in a stronger one. To use a real LLM, change the line marked SWITCH, e.g.
to ``OpenAI(model="gpt-4o-mini", temperature=0.8)`` (``pip install
llama-index-llms-openai``). The question is written for this example; the pass mark is 0.3
(the shipped PRM scores correct late steps near 0.5; see its model card).
"""

from __future__ import annotations

from typing import Any

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.evaluation import BatchEvalRunner
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from scripted_llm import SHIPPED_PRM_NOTE, ScriptedLLM

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
    # correct, in other words
    "Half of 24 is 24 / 2 = 12, made in the afternoon.\n"
    "He bakes 24 + 12 = 36 muffins that day.\n"
    "He has 36 - 30 = 6 left after the sale.\nThe answer is 6.",
]
KINDS = ["wrong operation", "correct", "arithmetic slip", "correct, reworded"]
DOCUMENTS = [
    "The bakery on Main Street bakes 24 muffins every morning.",
    "In the afternoon the bakery bakes half as many muffins as in the morning.",
    "On Saturday the bakery sold 30 muffins. It also sells coffee and bread.",
]
THRESHOLD = 0.3


class PrintSelections(BaseEventHandler):
    """Prints the PRM's choice whenever PRMBestOfNLLM makes one."""

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, PRMCandidateSelectedEvent):
            scores = ", ".join("failed" if s is None else f"{s:.3f}"
                               for s in event.candidate_scores)
            print(f"[event] chose candidate {event.index + 1} of {event.n}; chain scores: "
                  f"{scores}; scored against: {event.question!r}")


def main() -> None:
    prm = load_prm()  # the shipped default PRM, on CPU
    llm = ScriptedLLM(ANSWERS)  # SWITCH: a real LLM here, e.g. OpenAI(model="gpt-4o-mini")
    best_llm = PRMBestOfNLLM(llm, prm, n=4, max_concurrency=1)  # in order, for the script

    handler = PrintSelections()
    get_dispatcher().add_event_handler(handler)
    try:
        print("1. PRMBestOfNLLM.complete:")
        response = best_llm.complete(QUESTION)
        report = response.additional_kwargs["prm"]
        votes = sorted(report["votes"].items(), key=lambda kv: -kv[1]) or [("none", 0.0)]
        margin = votes[0][1] - (votes[1][1] if len(votes) > 1 else 0.0)
        print("PRM-weighted votes: " + ", ".join(f"{a}: {w:.3f}" for a, w in votes))
        print(f"Chosen answer: {report['answer']} (candidate {report['index'] + 1}, selection "
              f"{report['selection']}, ahead by {margin:.3f})")
        for step, score in zip(report["steps"], report["step_scores"], strict=True):
            print(f"  {score:.3f}  {step}")

        print("\n2. The same LLM in a RAG query engine (VectorStoreIndex, default QA template):")
        index = VectorStoreIndex.from_documents(
            [Document(text=t) for t in DOCUMENTS], embed_model=MockEmbedding(embed_dim=8))
        engine = index.as_query_engine(llm=PRMBestOfNLLM(ScriptedLLM(ANSWERS), prm, n=4,
                                                         max_concurrency=1))
        answer = str(engine.query(QUESTION))
        print(f"Query engine answer: {answer.splitlines()[-1]}")
    finally:
        get_dispatcher().event_handlers.remove(handler)

    evaluator = PRMStepEvaluator(prm, threshold=THRESHOLD)
    runner = BatchEvalRunner({"prm": evaluator}, workers=2)
    results = runner.evaluate_response_strs(
        queries=[QUESTION] * len(ANSWERS), response_strs=ANSWERS
    )["prm"]
    print(f"\n3. BatchEvalRunner with PRMStepEvaluator (pass mark {THRESHOLD}):")
    for i, (kind, result) in enumerate(zip(KINDS, results, strict=True), start=1):
        verdict = "pass" if result.passing else "FAIL"
        print(f"  answer {i} ({kind}): {verdict} (chain score {result.score:.3f}) "
              f"{result.feedback}")
    print("\nThe wrong-operation answer passes: the shipped PRM does not see reasoning errors.")
    print(SHIPPED_PRM_NOTE)


if __name__ == "__main__":
    main()
