"""The core strategies as LangChain ``RunnableSerializable`` components.

Each component runs one core strategy per call (:func:`~prm_plugins.strategies.verify`,
:class:`~prm_plugins.strategies.BestOfN`, :class:`~prm_plugins.strategies.SelfCritique`,
:class:`~prm_plugins.strategies.StepBeamSearch` / :class:`~prm_plugins.strategies.DVTS`).
What the adapter adds: reading the question from LangChain inputs, a
:class:`RunnableGenerator` over the ``generator`` runnable whose calls carry the run's child
callbacks (so generator runs nest under the component's run), the ``max_concurrency`` of the
call's config, and the custom events of :mod:`prm_plugins.adapters.langchain.events`.

The selecting components (:class:`PRMBestOfN`, :class:`PRMSelfCritique`,
:class:`PRMBeamSearch`) are drop-in replacements for the model they wrap: they return what
the generator returns, so ``prompt | llm | StrOutputParser()`` becomes
``prompt | PRMBestOfN(generator=llm, prm=prm) | StrOutputParser()``:

* a chat model (or a chain ending in one) gives an ``AIMessage`` whose
  ``response_metadata["prm"]`` holds the PRM's report (:data:`METADATA_KEY`): the chosen
  answer's chain and step scores, every candidate's score, and the whole core result as a
  JSON-ready dict under ``"result"``;
* a string generator (``prompt | llm | StrOutputParser()``) gives the chosen text (the
  report is then in the ``prm.candidate_selected`` event, or ask for the result);
* ``return_result=True`` gives the core result object instead
  (:class:`~prm_plugins.strategies.BestOfNResult`, ...).

Their input and output schemas are the generator's, and ``stream``/``astream`` yield the
chosen message as one ``AIMessageChunk`` (the text for a string generator) once the
candidates are scored, so ``StrOutputParser`` streams it on.

All of them support ``invoke``/``ainvoke``/``batch``/``abatch``, ``stream``/``astream``,
``|``, ``.with_retry()`` and ``configurable_fields`` (e.g. ``n`` and ``threshold``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.messages import (
    BaseMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import ChatPromptValue
from langchain_core.runnables import RunnableConfig

from prm_plugins.adapters.langchain.base import (
    DEFAULT_MAX_CONCURRENCY,
    METADATA_KEY,
    PRMRunnableBase,
    SelectingRunnableBase,
)
from prm_plugins.adapters.langchain.generators import (
    answer_from_messages,
    build_next_step_prompt,
    message_text,
    question_from_input,
)
from prm_plugins.errors import InvalidInputError
from prm_plugins.strategies import (
    DVTS,
    BestOfN,
    BestOfNResult,
    CritiqueResult,
    RetryPolicy,
    SearchResult,
    SelfCritique,
    StepBeamSearch,
    Verdict,
    averify,
    verify,
)
from prm_plugins.strategies.options import (
    BestOfNOptions,
    SearchOptions,
    Selection,
    SelfCritiqueOptions,
)
from prm_plugins.validation import (
    check_count,
    check_threshold,
)

__all__ = ["METADATA_KEY", "PRMBeamSearch", "PRMBestOfN", "PRMSelfCritique", "PRMStepVerifier"]

class PRMStepVerifier(PRMRunnableBase):
    """Verify a solution step by step: a Runnable that returns the core :class:`Verdict`.

    Input, any of:

    * ``{"question": ..., "answer": ...}``; the answer is text, a message, or a list of
      steps (keys set by ``question_key`` / ``answer_key``);
    * a conversation (list of messages): the last AI message is the answer, the human
      message before it the question;
    * an answer alone (a str or an ``AIMessage``, e.g. the output of ``prompt | llm``); the
      question is then the ``question`` field.

    Dispatches ``prm.step_scored``. Configurable fields: e.g. ``threshold``.

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> verifier = PRMStepVerifier(prm=load_prm(), threshold=0.5)  # doctest: +SKIP
        >>> v = verifier.invoke({"question": "2 + 3 * 4 = ?",
        ...                      "answer": "3 * 4 = 12\\n2 + 12 = 15"})  # doctest: +SKIP
        >>> v.passed, v.flagged_step, v.feedback  # doctest: +SKIP
        (False, 1, 'Step 2 of 2 looks wrong: "2 + 12 = 15" scores 0.03, ...')
    """

    threshold: float = 0.5
    """Pass mark in [0, 1] for the chain score and for single steps."""
    answer_key: str = "answer"
    """The key of the answer in dict inputs."""
    question: str = ""
    """The question used when the input is an answer alone."""

    def _check_options(self) -> None:
        check_threshold(self.threshold)

    def _split_input(self, input: Any) -> tuple[str, str | list[str]]:
        name = self.get_name()
        if isinstance(input, ChatPromptValue):
            input = list(input.messages)
        if isinstance(input, dict):
            question = question_from_input(input, self.question_key, who=name)
            answer = input.get(self.answer_key)
            if isinstance(answer, BaseMessage):
                answer = message_text(answer)
            if isinstance(answer, (list, tuple)) and all(isinstance(s, str) for s in answer):
                return question, list(answer)
            if not isinstance(answer, str):
                raise InvalidInputError(
                    f"{name}: the input dict must hold the answer (text, a message or a list "
                    f"of steps) under {self.answer_key!r}; received keys "
                    f"{sorted(map(str, input))} and {self.answer_key}={answer!r:.80}"
                )
            return question, answer
        if isinstance(input, str):
            return self.question, input
        if isinstance(input, BaseMessage):
            return self.question, message_text(input)
        if isinstance(input, (list, tuple)) and input and not all(
            isinstance(x, str) for x in input
        ):
            question, answer = answer_from_messages(convert_to_messages(input))
            if answer is None:
                raise InvalidInputError(
                    f"{name}: the conversation has no AI message to verify; received "
                    f"{len(input)} message(s)"
                )
            return question or self.question, answer
        raise InvalidInputError(
            f"{name}: expected a dict with {self.question_key!r} and {self.answer_key!r}, "
            f"a list of messages, an AIMessage or a str; received {type(input).__name__} "
            f"{input!r:.80}"
        )

    def _invoke(
        self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Verdict:
        question, answer = self._split_input(input)
        prm = self._dispatcher(config, use_async=False).observe(self.prm, self.aggregate)
        return verify(question, answer, prm, self.threshold, self.aggregate, self.split)

    async def _ainvoke(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> Verdict:
        question, answer = self._split_input(input)
        prm = self._dispatcher(config, use_async=True).observe(self.prm, self.aggregate)
        return await averify(question, answer, prm, self.threshold, self.aggregate, self.split)


class PRMBestOfN(SelectingRunnableBase):
    """Best-of-N over any runnable: sample ``n`` answers, return the one the PRM prefers.

    A drop-in for the model it wraps: ``prompt | llm | StrOutputParser()`` becomes
    ``prompt | PRMBestOfN(generator=llm, prm=prm) | StrOutputParser()``. The input is the
    generator's own input (e.g. ``{"question": ...}`` for ``prompt | llm``, a str or
    messages for a chat model, a prompt value after ``prompt |``); the question the
    candidates are scored against is read from it: the ``question_key`` of a dict, else the
    last human message (so after ``prompt |``, keep instructions in the system message and
    the question alone in the human one, or wrap the prompt: ``generator=prompt | llm``).
    The output is the generator's own output for the chosen candidate: its ``AIMessage``,
    with the PRM's report in ``response_metadata["prm"]`` (``score``, ``index``,
    ``selection``, ``answer``, ``votes``, ``scores``, ``step_scores``, ... and the full
    result as a dict under ``"result"``), or the text for a string generator. With
    ``return_result=True`` it is the core :class:`~prm_plugins.strategies.BestOfNResult`.

    ``selection`` defaults to ``"auto"``: the PRM-weighted vote over final answers when most
    candidates state one, else the single highest chain score; with the shipped PRM the
    vote beats majority voting at every N >= 2 while single picks fall below random from
    N = 8 (:mod:`prm_plugins.strategies.best_of_n`, ``benchmarks/results/bon_curve.md``).

    Dispatches ``prm.step_scored`` per candidate and ``prm.candidate_selected`` once.
    Configurable fields: e.g. ``n`` and ``threshold``.

    Examples:
        >>> from langchain_core.output_parsers import StrOutputParser  # doctest: +SKIP
        >>> from langchain_core.prompts import ChatPromptTemplate  # doctest: +SKIP
        >>> prompt = ChatPromptTemplate.from_template("Solve step by step: {question}")
        >>> chain = prompt | PRMBestOfN(generator=llm, prm=load_prm(), n=4) | StrOutputParser()
        >>> chain.invoke({"question": "What is 17 * 3?"})  # doctest: +SKIP
        '17 * 3 = 51\nThe answer is 51.'
        >>> msg = (prompt | PRMBestOfN(generator=llm, prm=load_prm())).invoke(
        ...     {"question": "What is 17 * 3?"})  # doctest: +SKIP
        >>> msg.response_metadata["prm"]["score"]  # doctest: +SKIP
    """

    n: int = 4
    """Candidates to sample."""
    threshold: float | None = None
    """Stop sampling once a candidate's chain score reaches it (candidates are then drawn in
    rounds of ``max_concurrency``)."""
    max_concurrency: int | None = None
    """Most generator calls in flight per call; ``None`` takes the call's config
    ``max_concurrency``, else 4."""
    retry: RetryPolicy | None = None
    """Retry policy for generator calls (default: the core's ``RetryPolicy()``)."""
    selection: Selection = "auto"
    """``"auto"``, ``"weighted_vote"`` or ``"top_score"`` (core ``BestOfN``)."""
    budget: Any = None
    """A :class:`~prm_plugins.budget.Budget` for each call (``None``: no limit); what a call
    spent is ``result.budget`` (in the report's ``"result"``)."""

    _result_type: ClassVar[type] = BestOfNResult

    def _check_options(self) -> None:
        check_count(self.max_concurrency, "max_concurrency", optional=True)
        self._options(DEFAULT_MAX_CONCURRENCY)  # validates n, threshold, retry, selection

    def _options(self, max_concurrency: int) -> BestOfNOptions:
        return BestOfNOptions(n=self.n, aggregate=self.aggregate, threshold=self.threshold,
                              max_concurrency=max_concurrency, split=self.split,
                              retry=self.retry, selection=self.selection, budget=self.budget)

    def _core(self, generator: Any, prm: Any, max_concurrency: int) -> BestOfN:
        return BestOfN.from_options(generator, prm, self._options(max_concurrency))

    @staticmethod
    def _template(result: BestOfNResult) -> Any:
        return getattr(result.best.text, "output", None)

    @staticmethod
    def _selected(result: BestOfNResult) -> dict[str, Any]:
        best = result.best
        return {
            "index": best.index,
            "text": result.text,
            "score": result.score,
            "selection": result.selection,
            "answer": result.answer,
            "votes": dict(result.votes),
            "steps": list(best.steps),
            "step_scores": None if best.step_scores is None else list(best.step_scores.scores),
            "scores": [c.score for c in result.candidates],
            "generator_calls": result.generator_calls,
            "failed": len(result.failed),
            "stopped_early": result.stopped_early,
        }


class PRMSelfCritique(SelectingRunnableBase):
    """Generate, verify with the PRM, and redo from the flagged step (core ``SelfCritique``).

    The input is the generator's input, as for :class:`PRMBestOfN`. When a dict input also
    holds an answer under ``answer_key``, critique starts from that answer instead of
    generating one. Revision prompts (the core's
    :func:`~prm_plugins.strategies.build_revision_prompt`, which quotes the question, the
    kept steps and the feedback) are sent in the question's place, so a ``prompt | llm``
    generator receives them through its own template. The output is the final solution as
    the generator's output type: an ``AIMessage`` (the model's own message when the chosen
    round is a first answer, else a new one holding the kept and revised steps) with the
    report in ``response_metadata["prm"]`` (``passed``, ``score``, ``round``, ``rounds``,
    ``scores``, and the full result under ``"result"``), or the text for a string
    generator; ``return_result=True`` gives the core
    :class:`~prm_plugins.strategies.CritiqueResult`.

    Dispatches ``prm.step_scored`` per round and ``prm.candidate_selected`` once.

    Examples:
        >>> critic = PRMSelfCritique(generator=prompt | llm, prm=load_prm(),
        ...                          max_rounds=2, return_result=True)  # doctest: +SKIP
        >>> r = critic.invoke({"question": "A pen costs $3. How much do 4 pens cost?"})
        >>> r.passed, r.solution, [h.feedback for h in r.history]  # doctest: +SKIP
    """

    threshold: float = 0.5
    """Pass mark in [0, 1]."""
    max_rounds: int = 2
    """Most revision rounds after the first answer."""
    redo_from: Literal["first_failing", "weakest"] = "first_failing"
    """Redo from the first failing step, or from the weakest step."""
    return_best: bool = True
    """Return the best-scored round (else the last successful one)."""
    answer_key: str = "answer"
    """The key of a starting answer in dict inputs."""
    retry: RetryPolicy | None = None
    """Retry policy for generator calls."""
    budget: Any = None
    """A :class:`~prm_plugins.budget.Budget` for each call (``None``: no limit); what a call
    spent is ``result.budget`` (in the report's ``"result"``)."""

    _result_type: ClassVar[type] = CritiqueResult

    def _check_options(self) -> None:
        self._options()

    def _options(self) -> SelfCritiqueOptions:
        return SelfCritiqueOptions(threshold=self.threshold, max_rounds=self.max_rounds,
                                   aggregate=self.aggregate, split=self.split,
                                   redo_from=self.redo_from, return_best=self.return_best,
                                   retry=self.retry, budget=self.budget)

    def _core(self, generator: Any, prm: Any, max_concurrency: int = 1) -> SelfCritique:
        return SelfCritique.from_options(generator, prm, self._options())

    def _prepare(self, input: Any) -> tuple[Any, str, Any]:
        question = self._question(input)
        solution = None
        if isinstance(input, dict) and input.get(self.answer_key) is not None:
            solution = input[self.answer_key]
            if isinstance(solution, BaseMessage):
                solution = message_text(solution)
            input = {k: v for k, v in input.items() if k != self.answer_key}
        return input, question, solution

    def _run(self, core: SelfCritique, question: str, solution: Any) -> CritiqueResult:
        return core.run(question, solution)

    async def _arun(self, core: SelfCritique, question: str, solution: Any) -> CritiqueResult:
        return await core.arun(question, solution)

    @staticmethod
    def _text(result: CritiqueResult) -> str:
        return result.solution

    @staticmethod
    def _template(result: CritiqueResult) -> Any:
        chosen = [r for r in result.history if r.verdict is result.verdict]
        for r in [*chosen, *reversed(result.history)]:
            output = getattr(r.generated, "output", None)
            if output is not None:
                return output
        return None

    @staticmethod
    def _selected(result: CritiqueResult) -> dict[str, Any]:
        chosen = next((r.round for r in result.history
                       if r.verdict is result.verdict), len(result.history) - 1)
        return {
            "round": chosen,
            "text": result.solution,
            "score": result.verdict.score,
            "passed": result.passed,
            "rounds": len(result.history),
            "scores": [None if r.verdict is None else r.verdict.score for r in result.history],
        }


class PRMBeamSearch(SelectingRunnableBase):
    """Step-level search with the PRM as value function: beam search or DVTS.

    Each proposal sends ``step_prompt(question, prefix)`` (default
    :func:`~prm_plugins.adapters.langchain.build_next_step_prompt`) to the generator in the
    question's place and keeps the first step of each completion. The input is the
    generator's input (a question str, or e.g. ``{"question": ...}`` for ``prompt | llm``).
    The output is the best chain as the generator's output type: a new ``AIMessage`` of its
    steps with the report in ``response_metadata["prm"]``, or the text for a string
    generator; ``return_result=True`` gives the core
    :class:`~prm_plugins.strategies.SearchResult`.

    Dispatches ``prm.step_scored`` per scored chain and ``prm.candidate_selected`` once.

    Examples:
        >>> search = PRMBeamSearch(generator=llm, prm=load_prm(), n=8,
        ...                        beam_width=2)  # doctest: +SKIP
        >>> msg = search.invoke("A pen costs $3. How much do 4 pens cost?")  # doctest: +SKIP
        >>> msg.text, msg.response_metadata["prm"]["score"]  # doctest: +SKIP
    """

    method: Literal["beam", "dvts"] = "beam"
    """``"beam"`` (:class:`~prm_plugins.strategies.StepBeamSearch`) or ``"dvts"``."""
    n: int = 8
    """Candidates scored per iteration; ``n // beam_width`` beams (or subtrees) are kept."""
    beam_width: int = 2
    """Next steps proposed per beam; must divide ``n``."""
    max_steps: int = 10
    """Most steps in a chain."""
    aggregate: Any = "last"
    """Value of a partial chain: ``"last"`` (the newest step's score) by default."""
    is_complete: Callable[[str], bool] | None = None
    """``step -> bool``: whether a step ends the solution (default: it states an answer)."""
    step_prompt: Callable[[str, Sequence[str]], str] = build_next_step_prompt
    """``(question, prefix) -> prompt`` asking for one next step."""
    max_concurrency: int | None = None
    """Most generator calls in flight; ``None`` takes the call's config, else 4."""
    retry: RetryPolicy | None = None
    """Retry policy for generator calls."""
    budget: Any = None
    """A :class:`~prm_plugins.budget.Budget` for each call (``None``: no limit); what a call
    spent is ``result.budget`` (in the report's ``"result"``)."""

    _result_type: ClassVar[type] = SearchResult

    def _check_options(self) -> None:
        check_count(self.max_concurrency, "max_concurrency", optional=True)
        self._options(DEFAULT_MAX_CONCURRENCY)

    def _options(self, max_concurrency: int) -> SearchOptions:
        return SearchOptions(n=self.n, beam_width=self.beam_width, max_steps=self.max_steps,
                             aggregate=self.aggregate, is_complete=self.is_complete,
                             max_concurrency=max_concurrency, retry=self.retry,
                             budget=self.budget)

    @staticmethod
    def _template(result: SearchResult) -> Any:
        chains = [result.best, *result.finished, *result.unfinished]
        outputs = (getattr(s, "output", None) for c in chains for s in c.steps)
        return next((o for o in outputs if o is not None), None)

    def _core(self, generator: Any, prm: Any, max_concurrency: int) -> StepBeamSearch | DVTS:
        cls = DVTS if self.method == "dvts" else StepBeamSearch
        return cls.from_options(generator, prm, self._options(max_concurrency))

    @staticmethod
    def _selected(result: SearchResult) -> dict[str, Any]:
        return {
            "text": result.text,
            "steps": list(result.steps),
            "score": result.score,
            "complete": result.best.complete,
            "finished": len(result.finished),
            "iterations": result.iterations,
            "method": result.method,
        }

