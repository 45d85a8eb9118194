"""Verify an LLM answer step by step, retry while it fails, and record every score.

Run: python examples/langchain/verify_and_retry.py

* ``PRMOutputParser(raise_on_fail=True)`` turns a failed verification into an
  ``OutputParserException`` that carries the PRM's feedback, so ``.with_retry()`` samples
  again (``.with_fallbacks()`` works the same way);
* ``PRMCallbackHandler`` records the PRM's verdict on every LLM output (observe only);
* ``PRMStepVerifier`` is the same check as a Runnable, here on two given answers.

The scripted model's first answer has an arithmetic slip in step 2 (2+1=4): it fails (the
shipped PRM caps a step with wrong written arithmetic at 0.05), the parser raises, and the
retry gets the correct answer, which passes: accepted after 2 LLM calls (1 retry). Then the
verifier fails the slip at step 2, and passes an answer with a reasoning error and correct
arithmetic (a wrong quantity): the shipped PRM cannot see that kind of error, as the output
says, with the one line that plugs in a stronger PRM. The pass mark is 0.3 (the shipped
PRM scores correct late steps near 0.5; see its model card).

The LLM is a scripted fake chat model unless ``REAL_MODEL`` in ``_problem.py`` names a real
one (one line; see there). Needs ``pip install ".[langchain]"`` from a checkout.
"""

from __future__ import annotations

from _problem import (
    CORRECT,
    QUESTION,
    SLIP_STEP_2,
    THRESHOLD,
    WRONG_QUANTITY,
    chat_model,
)
from langchain_core.exceptions import OutputParserException
from langchain_core.prompts import ChatPromptTemplate

from prm_plugins import load_prm
from prm_plugins.adapters.langchain import PRMCallbackHandler, PRMOutputParser, PRMStepVerifier
from prm_plugins.wording import SHIPPED_PRM_NOTE


def main() -> None:
    prm = load_prm()  # the shipped default PRM, on CPU
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Solve the problem step by step, one step per line. "
                   "End with 'The answer is N.'"),
        ("human", "{question}"),
    ])
    parser = PRMOutputParser(prm=prm, question=QUESTION, threshold=THRESHOLD,
                             raise_on_fail=True)
    recorder = PRMCallbackHandler(prm, threshold=THRESHOLD)
    llm = chat_model([SLIP_STEP_2, CORRECT], temperature=0.8)
    chain = (prompt | llm | parser).with_retry(
        retry_if_exception_type=(OutputParserException,), stop_after_attempt=3,
        wait_exponential_jitter=False,
    )
    print(f"Question: {QUESTION}\nPass mark: {THRESHOLD}")
    try:
        verdict = chain.invoke({"question": QUESTION}, {"callbacks": [recorder]})
        calls = len(recorder.records)
        retries = f"{calls - 1} {'retry' if calls == 2 else 'retries'}"
        print(f"\nAccepted after {calls} LLM call(s) ({retries}): chain score "
              f"{verdict.score:.3f}, {verdict.score - THRESHOLD:.3f} above the pass mark")
        print(verdict.feedback)
    except OutputParserException as exc:
        print(f"\nNo answer passed in 3 tries; last feedback: {exc.observation}")

    print("\nWhat the callback handler recorded:")
    for i, record in enumerate(recorder.records, start=1):
        if record.verdict is None:
            print(f"  call {i}: not scored ({record.error})")
            continue
        print(f"  call {i}: {'passed' if record.passed else 'failed'}, chain score "
              f"{record.verdict.score:.3f}, final line: {record.text.splitlines()[-1]}")

    verifier = PRMStepVerifier(prm=prm, threshold=THRESHOLD)
    for name, answer in (("an arithmetic slip (2+1=4)", SLIP_STEP_2),
                         ("a wrong quantity (2+2=4, arithmetic right)", WRONG_QUANTITY)):
        v = verifier.invoke({"question": QUESTION, "answer": answer})
        print(f"\nPRMStepVerifier, given an answer with {name}: "
              f"{'passed' if v.passed else 'failed'}, chain score {v.score:.3f}")
        print("  step scores:", ", ".join(f"{s:.3f}" for s in v.step_scores.scores))
        print("  feedback:", v.feedback)
    print("\nThe wrong-quantity answer passes: the shipped PRM does not see reasoning errors.")
    print(SHIPPED_PRM_NOTE)


if __name__ == "__main__":
    main()
