"""Best-of-N with a PRM over a LangChain chain, with the custom events it dispatches.

Run: python examples/langchain/best_of_n.py

Samples 3 answers from ``prompt | llm``, scores every step of each with the default PRM,
and keeps the answer with the highest chain score (the lowest step score). The LLM is a
scripted fake chat model unless ``REAL_MODEL`` in ``_problem.py`` names a real one (one
line; see there). Needs ``pip install "prm-plugins[langchain]"``.
"""

from __future__ import annotations

import asyncio

from _problem import QUESTION, chat_model
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField

from prm_plugins import load_prm
from prm_plugins.adapters.langchain import PRMBestOfN


async def main() -> None:
    prm = load_prm()  # the shipped default PRM, on CPU
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Solve the problem step by step, one step per line. "
                   "End with 'The answer is N.'"),
        ("human", "{question}"),
    ])
    bon = PRMBestOfN(generator=prompt | chat_model(temperature=0.8), prm=prm, n=3)
    # n is configurable per call, e.g. .with_config(configurable={"n": 8})
    bon = bon.configurable_fields(n=ConfigurableField(id="n", name="candidates"))

    result = None
    async for event in bon.astream_events({"question": QUESTION}, version="v2"):
        if event["event"] == "on_custom_event" and event["name"] == "prm.step_scored":
            scores = ", ".join(f"{s:.3f}" for s in event["data"]["scores"])
            print(f"scored a candidate: steps [{scores}] -> chain score "
                  f"{event['data']['score']:.3f}")
        elif event["event"] == "on_custom_event" and event["name"] == "prm.candidate_selected":
            print(f"selected candidate {event['data']['index']} "
                  f"(score {event['data']['score']:.3f})")
        elif event["event"] == "on_chain_end" and not event["parent_ids"]:
            result = event["data"]["output"]  # the top-level run's output: a BestOfNResult
    assert result is not None

    print("\nQuestion:", QUESTION)
    for c in result.candidates:
        mark = "*" if c is result.best else " "
        print(f"{mark} candidate {c.index}: score {c.score:.3f}  "
              f"final line: {c.steps[-1] if c.steps else c.error}")
    print("\nChosen answer:\n" + result.text)


if __name__ == "__main__":
    asyncio.run(main())
