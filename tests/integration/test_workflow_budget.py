"""PRMSelfCritiqueWorkflow under a Budget: the same semantics as core SelfCritique.

The PRM is a real :class:`~prm_plugins.runtime.OnnxPRM` on the hand-built contract graph of
``graph_models`` (milliseconds per call). The LLM is :class:`ScriptedLLM`, a small
LlamaIndex ``CustomLLM`` answering from a fixed list: ``MockLLM`` only echoes its prompt,
and these tests need chosen solutions in a known order, failures (exceptions) and a count
of every call the LLM received, to check that a call past the budget is never made.

Each budgeted run is also run through core :class:`SelfCritique` over
:class:`LlamaIndexGenerator` with the same script and budget, and the two results must be
equal (wall time aside): the workflow re-implements the strategy as workflow steps, so this
is what "the same semantics" means. The expected call counts, token counts and limits are
written out from the script, never read back from either implementation.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

try:
    from llama_index.core.base.llms.types import (
        CompletionResponse,
        CompletionResponseGen,
        LLMMetadata,
    )
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events import BaseEvent
    from llama_index.core.llms import CustomLLM
    from llama_index.core.llms.callbacks import llm_completion_callback
except ImportError:
    pytest.skip("the LlamaIndex adapter tests need the llamaindex extra: "
                "pip install 'prm-plugins[llamaindex]'", allow_module_level=True)

import prm_plugins.budget as budget_module
from prm_plugins import InvalidInputError, load_prm
from prm_plugins.adapters.llamaindex import (
    CritiqueRoundEvent,
    LlamaIndexGenerator,
    PRMSelfCritiqueWorkflow,
    PRMStepsScoredEvent,
    PRMVerificationFailedEvent,
)
from prm_plugins.budget import Budget, estimate_tokens
from prm_plugins.errors import AllCandidatesFailedError, BudgetExhaustedError
from prm_plugins.runtime import OnnxPRM
from prm_plugins.strategies import RetryPolicy, SelfCritique

from support.graph_models import make_model_dir

Q = "w1 w2 + w3 = ?"
#: Step 1 about 0.64, step 2 about 0.46: fails at 0.5 and at 0.62, redone from step 2.
BAD = "w14 = w15\nw7 w7 w9 = 6"
#: After BAD's step 1: min about 0.60 (passes 0.5, fails 0.62).
FIX = "w16 w17 = 9"
#: After BAD's step 1: min about 0.50 (fails 0.62).
WORSE = "w7 w9 = 6"
FAST = RetryPolicy.no_wait()

_LOCK = threading.Lock()


class ScriptedLLM(CustomLLM):
    """A completion LLM answering from ``script`` in order (cycling); an exception entry is
    raised instead. ``calls`` counts every call received (retries included)."""

    script: list[Any] = Field(default_factory=list)
    _count: int = PrivateAttr(default=0)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=False, model_name="scripted-llm")

    @property
    def calls(self) -> int:
        return self._count

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        with _LOCK:
            k = self._count
            self._count += 1
        entry = self.script[k % len(self.script)]
        if isinstance(entry, BaseException):
            raise entry
        return CompletionResponse(text=entry)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        response = self.complete(prompt, formatted=formatted, **kwargs)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=response.text, delta=response.text)

        return gen()


class EventCollector(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)

    def of(self, cls: type[BaseEvent]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


@pytest.fixture(scope="module")
def prm(tmp_path_factory: pytest.TempPathFactory) -> OnnxPRM:
    return load_prm(make_model_dir(tmp_path_factory.mktemp("wfb") / "graph"), device="cpu")


@pytest.fixture()
def events() -> Any:
    root = get_dispatcher()
    handler = EventCollector()
    root.add_event_handler(handler)
    try:
        yield handler
    finally:
        root.event_handlers.remove(handler)


def run_workflow(wf: PRMSelfCritiqueWorkflow, **kwargs: Any) -> tuple[Any, list[Any]]:
    async def main() -> tuple[Any, list[Any]]:
        handler = wf.run(**kwargs)
        streamed = [ev async for ev in handler.stream_events()
                    if isinstance(ev, CritiqueRoundEvent)]
        return await handler, streamed

    return asyncio.run(main())


def without_time(result: Any) -> dict[str, Any]:
    """``result.to_dict()`` with the wall time left out (it differs between two runs)."""
    d = result.to_dict()
    if d["budget"] is not None:
        d["budget"] = {k: v for k, v in d["budget"].items() if k != "seconds"}
    return d


def core_run(script: list[Any], prm: OnnxPRM, solution: str | None = None,
             **kwargs: Any) -> Any:
    """The same run through core SelfCritique (a fresh LLM with the same script)."""
    generator = LlamaIndexGenerator(ScriptedLLM(script=script))
    return SelfCritique(generator, prm, **kwargs).run(Q, solution)


def test_generator_call_limit_is_exact_and_the_best_round_so_far_is_returned(
    prm: OnnxPRM,
) -> None:
    script = [BAD, FIX, WORSE]
    options: dict[str, Any] = {"threshold": 0.62, "max_rounds": 5, "retry": FAST}
    budget = Budget(generator_calls=3, count_tokens=len)
    llm = ScriptedLLM(script=script)
    result, streamed = run_workflow(PRMSelfCritiqueWorkflow(llm, prm, budget=budget,
                                                            **options), question=Q)

    assert llm.calls == 3  # a 4th call was wanted (round 3) and not made
    assert [r.round for r in result.history] == [0, 1, 2]
    assert not any(r.passed for r in (h.verdict for h in result.history))
    scores = [r.verdict.score for r in result.history]
    assert scores.index(max(scores)) == 1  # round 1 (FIX) is best, not the last round
    assert result.steps == ["w14 = w15", FIX] and result.verdict.score == max(scores)
    spent = result.budget
    assert (spent.generator_calls, spent.prm_calls, spent.exhausted) == (3, 3,
                                                                        "generator_calls")
    assert spent.generated_tokens == len(BAD) + len(FIX) + len(WORSE)
    assert spent.limits["generator_calls"] == 3 and spent.token_overshoot == 0
    assert result.to_dict()["budget"]["generator_calls"] == 3

    # The stream: spend after each round; the limit that stopped the revisions on the last.
    assert [e.budget["generator_calls"] for e in streamed] == [1, 2, 3]
    assert [e.budget["exhausted"] for e in streamed] == [None, None, "generator_calls"]
    assert streamed[-1].feedback is None  # no revision follows the last round

    assert without_time(result) == without_time(core_run(script, prm, budget=budget,
                                                          **options))
    # The same run without a budget goes on to max_rounds: the budget is what stopped it.
    free = ScriptedLLM(script=script)
    unbudgeted, _ = run_workflow(PRMSelfCritiqueWorkflow(free, prm, **options), question=Q)
    assert free.calls == 6 and unbudgeted.revisions == 5


def test_prm_call_limit_is_exact(prm: OnnxPRM, events: EventCollector) -> None:
    script = [FIX, WORSE]
    options: dict[str, Any] = {"threshold": 0.62, "max_rounds": 4, "retry": FAST}
    budget = Budget(prm_calls=2)
    llm = ScriptedLLM(script=script)
    result, streamed = run_workflow(PRMSelfCritiqueWorkflow(llm, prm, budget=budget,
                                                            **options),
                                    question=Q, solution=BAD)

    scored = events.of(PRMStepsScoredEvent)
    assert len(scored) == 2  # round 0 (the given solution) and round 1: no third scoring
    assert llm.calls == 1  # no LLM call for round 0; round 2 was not started
    spent = result.budget
    assert (spent.generator_calls, spent.prm_calls, spent.exhausted) == (1, 2, "prm_calls")
    assert spent.generated_tokens == 6  # estimate_tokens: w 16 w 17 = 9
    assert result.steps == ["w14 = w15", FIX] and not result.passed
    (last_failed,) = [e for e in events.of(PRMVerificationFailedEvent) if e.round == 1]
    assert last_failed.will_retry is False
    assert [e.budget["prm_calls"] for e in streamed] == [1, 2]
    assert without_time(result) == without_time(core_run(script, prm, solution=BAD,
                                                          budget=budget, **options))


def test_token_limit_stops_after_the_round_that_reached_it(prm: OnnxPRM) -> None:
    llm = ScriptedLLM(script=[BAD, FIX])
    budget = Budget(generated_tokens=5)
    wf = PRMSelfCritiqueWorkflow(llm, prm, max_rounds=2, budget=budget, retry=FAST)
    result, streamed = run_workflow(wf, question=Q)

    # BAD is 13 tokens to estimate_tokens (w 14 = w 15 w 7 w 7 w 9 = 6): over 5 after
    # round 0, so no revision (without the budget FIX would have passed in round 1).
    assert llm.calls == 1 and result.revisions == 0 and not result.passed
    spent = result.budget
    assert (spent.generated_tokens, spent.token_overshoot, spent.exhausted) == (
        13, 8, "generated_tokens")
    assert [(e.round, e.feedback, e.budget["exhausted"]) for e in streamed] == [
        (0, None, "generated_tokens")]
    assert without_time(result) == without_time(core_run([BAD, FIX], prm, max_rounds=2,
                                                          budget=budget, retry=FAST))


def test_time_limit_is_checked_before_each_call(
    prm: OnnxPRM, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = ScriptedLLM(script=[BAD, WORSE])
    # The clock reads 10 s per LLM call made: after two calls 20 s have passed, over 15.
    monkeypatch.setattr(budget_module, "monotonic", lambda: 10.0 * llm.calls)
    wf = PRMSelfCritiqueWorkflow(llm, prm, threshold=0.62, max_rounds=5,
                                 budget=Budget(seconds=15), retry=FAST)
    result, _ = run_workflow(wf, question=Q)
    assert llm.calls == 2 and len(result.history) == 2
    assert result.budget.exhausted == "seconds" and result.budget.seconds == 20.0


def test_nothing_produced_raises_budget_exhausted(
    prm: OnnxPRM, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = iter(range(0, 10_000, 10))  # every clock reading 10 s after the last
    monkeypatch.setattr(budget_module, "monotonic", lambda: float(next(ticks)))
    llm = ScriptedLLM(script=[BAD])
    wf = PRMSelfCritiqueWorkflow(llm, prm, budget=Budget(seconds=5), retry=FAST)
    with pytest.raises(BudgetExhaustedError, match="first solution was not generated") as info:
        run_workflow(wf, question=Q)
    assert llm.calls == 0  # the call that did not fit was not made
    assert isinstance(info.value, AllCandidatesFailedError)
    assert info.value.limit == "seconds"
    assert (info.value.spent.generator_calls, info.value.spent.prm_calls) == (0, 0)


def test_a_retried_call_counts_once_and_a_failed_call_counts(prm: OnnxPRM) -> None:
    down = ConnectionError("down")
    script: list[Any] = [down, WORSE, down, down]
    options: dict[str, Any] = {"threshold": 0.62, "max_rounds": 5,
                               "retry": RetryPolicy.no_wait(max_attempts=2)}
    budget = Budget(generator_calls=2)
    llm = ScriptedLLM(script=script)
    result, streamed = run_workflow(PRMSelfCritiqueWorkflow(llm, prm, budget=budget,
                                                            **options),
                                    question=Q, solution=BAD)

    # Round 1: one call, two attempts (the second answers); round 2: one call, both attempts
    # fail; round 3 would be a third call.
    assert llm.calls == 4 and result.attempts == 4
    assert [r.error for r in result.history] == [None, None, "ConnectionError: down"]
    spent = result.budget
    assert (spent.generator_calls, spent.prm_calls, spent.exhausted) == (2, 2,
                                                                        "generator_calls")
    assert spent.generated_tokens == 6  # w 7 w 9 = 6; a failed call generated nothing
    assert [(e.error is not None, e.budget["exhausted"]) for e in streamed] == [
        (False, None), (False, None), (True, "generator_calls")]
    core = core_run([down, WORSE, down, down], prm, solution=BAD, budget=budget, **options)
    assert without_time(result) == without_time(core)


def test_without_a_budget_the_result_is_unchanged(prm: OnnxPRM) -> None:
    script = [BAD, WORSE, FIX]
    options: dict[str, Any] = {"threshold": 0.62, "max_rounds": 3, "retry": FAST}
    result, streamed = run_workflow(
        PRMSelfCritiqueWorkflow(ScriptedLLM(script=script), prm, **options), question=Q)
    assert result.budget is None and result.to_dict()["budget"] is None
    assert all(e.budget is None for e in streamed)
    assert result.to_dict() == core_run(script, prm, **options).to_dict()

    # Budget() measures without limiting: the same rounds, and the spend reported.
    measured, streamed = run_workflow(
        PRMSelfCritiqueWorkflow(ScriptedLLM(script=script), prm, budget=Budget(), **options),
        question=Q)
    assert {**measured.to_dict(), "budget": None} == result.to_dict()
    assert (measured.budget.generator_calls, measured.budget.prm_calls) == (4, 4)
    assert measured.budget.exhausted is None
    assert measured.budget.generated_tokens == sum(
        estimate_tokens(t) for t in [BAD, WORSE, FIX, BAD])
    assert [e.budget["generator_calls"] for e in streamed] == [1, 2, 3, 4]


def test_concurrent_runs_of_one_workflow_have_their_own_budget(prm: OnnxPRM) -> None:
    llm = ScriptedLLM(script=[BAD, WORSE])
    wf = PRMSelfCritiqueWorkflow(llm, prm, threshold=0.62, max_rounds=5,
                                 budget=Budget(generator_calls=2), retry=FAST)

    async def main() -> list[Any]:
        return list(await asyncio.gather(wf.run(question=Q), wf.run(question=Q)))

    results = asyncio.run(main())
    assert llm.calls == 4
    assert [r.budget.generator_calls for r in results] == [2, 2]
    assert [r.budget.exhausted for r in results] == ["generator_calls"] * 2


def test_a_bad_budget_is_refused(prm: OnnxPRM) -> None:
    with pytest.raises(InvalidInputError, match="budget must be a prm_plugins.budget.Budget"):
        PRMSelfCritiqueWorkflow(ScriptedLLM(script=[BAD]), prm, budget=5)  # type: ignore[arg-type]
    wf = PRMSelfCritiqueWorkflow(ScriptedLLM(script=[BAD]), prm, retry=FAST,
                                 budget=Budget(count_tokens=lambda text: -1))
    with pytest.raises(InvalidInputError, match="count_tokens must return an int >= 0"):
        run_workflow(wf, question=Q)
