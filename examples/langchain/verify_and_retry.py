"""Verify an LLM answer step by step, retry while it fails, and record every score.

Run: python examples/langchain/verify_and_retry.py

* ``PRMOutputParser(raise_on_fail=True)`` turns a failed verification into an
  ``OutputParserException`` that carries the PRM's feedback, so ``.with_retry()`` samples
  again (``.with_fallbacks()`` works the same way);
* ``PRMCallbackHandler`` records the PRM's verdict on every LLM output (observe only);
* ``PRMStepVerifier`` is the same check as a Runnable, here on a given answer.

The LLM is a scripted fake chat model unless ``REAL_MODEL`` in ``_problem.py`` names a real
one (one line; see there). Needs ``pip install "prm-plugins[langchain]"``.
"""

from __future__ import annotations

from _problem import FLAWED_2, QUESTION, chat_model
from langchain_core.exceptions import OutputParserException
from langchain_core.prompts import ChatPromptTemplate

from prm_plugins import load_prm
from prm_plugins.adapters.langchain import PRMCallbackHandler, PRMOutputParser, PRMStepVerifier


def main() -> None:
    prm = load_prm()  # the shipped default PRM, on CPU
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Solve the problem step by step, one step per line. "
                   "End with 'The answer is N.'"),
        ("human", "{question}"),
    ])
    parser = PRMOutputParser(prm=prm, question=QUESTION, threshold=0.5, raise_on_fail=True)
    recorder = PRMCallbackHandler(prm, threshold=0.5)
    chain = (prompt | chat_model(temperature=0.8) | parser).with_retry(
        retry_if_exception_type=(OutputParserException,), stop_after_attempt=3,
        wait_exponential_jitter=False,
    )
    try:
        verdict = chain.invoke({"question": QUESTION}, {"callbacks": [recorder]})
        print(f"accepted after {len(recorder.records)} LLM call(s): score {verdict.score:.3f}")
        print(verdict.feedback)
    except OutputParserException as exc:
        print(f"no answer passed in 3 tries; last feedback: {exc.observation}")

    print("\nWhat the callback handler recorded:")
    for i, record in enumerate(recorder.records, start=1):
        if record.verdict is None:
            print(f"  call {i}: not scored ({record.error})")
            continue
        print(f"  call {i}: {'passed' if record.passed else 'failed'}, score "
              f"{record.verdict.score:.3f}, final line: {record.text.splitlines()[-1]}")

    verdict = PRMStepVerifier(prm=prm).invoke({"question": QUESTION, "answer": FLAWED_2})
    print("\nA given flawed answer:", "passed" if verdict.passed else "failed")
    print("  step scores:", ", ".join(f"{s:.3f}" for s in verdict.step_scores.scores))
    print("  feedback:", verdict.feedback)


if __name__ == "__main__":
    main()
