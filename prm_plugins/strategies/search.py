"""PRM-guided step-level search: :class:`StepBeamSearch` and :class:`DVTS`.

The PRM is the value function over partial chains. Each iteration asks the generator for
next steps (``generator.propose_next_steps(question, prefix, k)``), scores every new
partial chain in one ``score_batch`` call, and keeps the best ones:

* **Beam search** keeps the ``n // beam_width`` best prefixes over all beams; each kept
  prefix proposes ``beam_width`` next steps, so every iteration scores up to ``n`` chains.
  A kept prefix whose last step is complete is finished and frees its beam; the search
  ends when every beam has finished, nothing is left to expand, or after ``max_steps``.
* **DVTS** (diverse verifier tree search) splits the ``n`` candidates into
  ``n // beam_width`` independent subtrees; each one keeps only its own best child per
  iteration (greedy), which keeps the final chains diverse.

The first step comes from one call for ``n`` proposals (split into the subtrees'
``beam_width`` first-step candidates for DVTS). Identical prefixes are expanded once. A
chain that cannot be scored (the scorer raises on it, or answers NaN or a value outside
[0, 1]) is dropped and listed in :attr:`SearchResult.errors`; the others go on.

With a :class:`~prm_plugins.budget.Budget`, each iteration issues only the calls that fit
(the best prefixes first) and scores only the chains that fit; when nothing fits the search
stops and returns its best chain so far (``result.budget.exhausted`` names the limit), or
raises :class:`~prm_plugins.errors.BudgetExhaustedError` when not even a first step was
scored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from prm_plugins.answers import extract_answer as extract_final_answer
from prm_plugins.budget import Budget, BudgetMeter, BudgetSpent
from prm_plugins.errors import AllCandidatesFailedError, EmptyGenerationsError, InvalidInputError
from prm_plugins.generators import StepGenerator
from prm_plugins.plans import (
    AsyncRunner,
    CallOutcome,
    GenerateCalls,
    Plan,
    RetryPolicy,
    ScoreChains,
    SyncRunner,
    describe_error,
    summarize_failures,
)
from prm_plugins.strategies.options import SearchOptions
from prm_plugins.strategies.verify import chain_score
from prm_plugins.types import Aggregation, StepScorer, StepScores
from prm_plugins.validation import (
    check_generator,
    check_question,
    check_scorer,
)

__all__ = ["DVTS", "SearchChain", "SearchResult", "StepBeamSearch", "build_next_step_prompt",
           "has_final_answer", "scored_tokens"]

logger = logging.getLogger(__name__)


def build_next_step_prompt(question: str, prefix: Sequence[str]) -> str:
    """A prompt asking a chat model for exactly one next step after ``prefix``.

    Adapters send it from ``propose_next_steps`` when their model has no step-level API.

    Examples:
        >>> print(build_next_step_prompt("What is 2 + 3 * 4?", ["3 * 4 = 12"]))
        What is 2 + 3 * 4?
        <BLANKLINE>
        Steps so far:
        Step 1: 3 * 4 = 12
        <BLANKLINE>
        Write only step 2, on one line. If it gives the final answer, write "The answer is ...".
        If the solution is already complete, write nothing.
    """
    parts = [question.strip(), ""]
    if prefix:
        parts.append("Steps so far:")
        parts.extend(f"Step {i + 1}: {s}" for i, s in enumerate(prefix))
        parts.append("")
    parts.append(f"Write only step {len(prefix) + 1}, on one line. If it gives the final "
                 'answer, write "The answer is ...".\nIf the solution is already complete, '
                 "write nothing.")
    return "\n".join(parts)


def has_final_answer(step: str) -> bool:
    """Default completion test: the step states a final answer.

    True for ``\\boxed{...}``, ``#### N``, "The answer is ..." / "Final answer: ...", or an
    ``A: ...`` line.

    Examples:
        >>> has_final_answer("So the answer is 12."), has_final_answer("3 * 4 = 12")
        (True, False)
    """
    return extract_final_answer(step, fallback_last_number=False) is not None


def scored_tokens(prm: StepScorer, question: str, steps: Sequence[str]) -> int:
    """How many tokens ``prm`` reads for the chain: the length its format renders, or the
    number of steps for a scorer without a format (a remote or judge scorer).

    The searches report it as the tokens they sent to the PRM.
    """
    render = getattr(getattr(prm, "format", None), "render", None)
    if callable(render):
        try:
            return len(render(question, list(steps)))
        except Exception:  # a scorer-specific render quirk must not break the search
            logger.debug("format.render failed; counting steps instead", exc_info=True)
    return len(steps)


@dataclass(frozen=True)
class SearchChain:
    """A chain reached by the search.

    Attributes:
        steps: the steps.
        step_scores: the PRM's per-step scores for the whole chain.
        score: its value (``aggregate`` of the step scores).
        complete: whether its last step passed ``is_complete``.
    """

    steps: list[str]
    step_scores: StepScores
    score: float
    complete: bool

    @property
    def text(self) -> str:
        """The chain as text, one step per line."""
        return "\n".join(self.steps)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"steps": list(self.steps), "step_scores": list(self.step_scores.scores),
                "score": self.score, "complete": self.complete}


@dataclass
class SearchResult:
    """What a step-level search found.

    Attributes:
        best: the highest-valued finished chain, or, when none finished, the
            highest-valued open one (``best.complete`` is then ``False``).
        finished: complete chains, best first (identical chains listed once).
        unfinished: chains still open when the search stopped (``max_steps`` reached or
            generator calls failing), best first.
        generator_calls: ``propose_next_steps`` calls made (retries not counted).
        attempts: generator attempts, retries included.
        tokens_scored: tokens of every chain scored, summed (rendered lengths when the
            scorer exposes ``format.render``, else the number of steps).
        iterations: search iterations run (each adds one step).
        errors: failed generator calls and scorings, as text.
        method: ``"beam"`` or ``"dvts"``.
        budget: what the run spent and the limit that stopped it, if any (``None``
            when run without a budget).
    """

    best: SearchChain
    finished: list[SearchChain]
    unfinished: list[SearchChain]
    generator_calls: int
    attempts: int
    tokens_scored: int
    iterations: int
    errors: list[str] = field(default_factory=list)
    method: Literal["beam", "dvts"] = "beam"
    budget: BudgetSpent | None = None

    @property
    def text(self) -> str:
        """The best chain as text."""
        return self.best.text

    @property
    def steps(self) -> list[str]:
        """The best chain's steps."""
        return self.best.steps

    @property
    def score(self) -> float:
        """The best chain's value."""
        return self.best.score

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "method": self.method,
            "best": self.best.to_dict(),
            "finished": [c.to_dict() for c in self.finished],
            "unfinished": [c.to_dict() for c in self.unfinished],
            "generator_calls": self.generator_calls,
            "attempts": self.attempts,
            "tokens_scored": self.tokens_scored,
            "iterations": self.iterations,
            "errors": list(self.errors),
            "budget": None if self.budget is None else self.budget.to_dict(),
        }


@dataclass
class _Node:
    steps: tuple[str, ...]
    group: int
    step_scores: StepScores | None = None
    value: float = 0.0
    complete: bool = False

    def chain(self) -> SearchChain:
        assert self.step_scores is not None
        return SearchChain(list(self.steps), self.step_scores, self.value, self.complete)


@dataclass
class _State:
    """Per-call search state."""

    slots: int
    finished: list[_Node] = field(default_factory=list)


_SearchT = TypeVar("_SearchT", bound="_StepSearch")


class _StepSearch:
    """Shared machinery of :class:`StepBeamSearch` and :class:`DVTS`."""

    method: ClassVar[Literal["beam", "dvts"]] = "beam"

    def __init__(
        self,
        generator: StepGenerator,
        prm: StepScorer,
        *,
        n: int = 8,
        beam_width: int = 2,
        max_steps: int = 10,
        aggregate: Aggregation = "last",
        is_complete: Callable[[str], bool] | None = None,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
    ) -> None:
        options = SearchOptions(n=n, beam_width=beam_width, max_steps=max_steps,
                                aggregate=aggregate, is_complete=is_complete,
                                max_concurrency=max_concurrency, retry=retry, budget=budget)
        check_scorer(prm)
        self.generator = generator
        self.prm = prm
        self.options = options
        self.n = options.n
        self.beam_width = options.beam_width
        self.max_steps = options.max_steps
        self.aggregate = options.aggregate
        self.is_complete: Callable[[str], bool] = options.is_complete or has_final_answer
        self.max_concurrency = options.max_concurrency
        self.retry = options.retry_policy
        self.budget = options.budget

    @classmethod
    def from_options(
        cls: type[_SearchT], generator: StepGenerator, prm: StepScorer, options: SearchOptions
    ) -> _SearchT:
        """A search with already validated options (what adapters hold)."""
        return cls(generator, prm, n=options.n, beam_width=options.beam_width,
                   max_steps=options.max_steps, aggregate=options.aggregate,
                   is_complete=options.is_complete, max_concurrency=options.max_concurrency,
                   retry=options.retry, budget=options.budget)

    @property
    def n_beams(self) -> int:
        """Beams (beam search) or subtrees (DVTS): ``n // beam_width``."""
        return self.n // self.beam_width

    def run(self, question: str) -> SearchResult:
        """Search, blocking (generator calls of one iteration run in threads)."""
        check_question(question)
        check_generator(self.generator, ["propose_next_steps"], use_async=False)
        meter = BudgetMeter(self.budget)
        runner = SyncRunner(self.generator, self.prm, retry=self.retry,
                            max_concurrency=self.max_concurrency, meter=meter)
        return runner.run(self._plan(question, meter))

    __call__ = run

    async def arun(self, question: str) -> SearchResult:
        """Async :meth:`run`."""
        check_question(question)
        check_generator(self.generator, ["propose_next_steps"], use_async=True)
        meter = BudgetMeter(self.budget)
        runner = AsyncRunner(self.generator, self.prm, retry=self.retry,
                             max_concurrency=self.max_concurrency, meter=meter)
        return await runner.run(self._plan(question, meter))

    # -- the plan (shared by run and arun) ------------------------------------------------
    def _plan(self, question: str, meter: BudgetMeter) -> Plan[SearchResult]:
        state = _State(slots=self.n_beams)
        active: list[_Node] = []
        errors: list[str] = []
        calls = attempts = tokens = iterations = 0
        while iterations < self.max_steps:
            if iterations == 0:
                parents: list[_Node] = [_Node((), 0)]
                requests: list[tuple[Any, ...]] = [(question, [], self.n)]
            else:
                parents = active
                requests = [(question, list(p.steps), self.beam_width) for p in parents]
            fit = meter.can_generate(len(requests))  # the best prefixes first
            if not fit:
                if iterations == 0:
                    raise meter.refusal(f"{self.method}: the first step was not proposed")
                break
            parents, requests = parents[:fit], requests[:fit]
            iterations += 1
            outcomes = yield GenerateCalls("propose_next_steps", requests)
            calls += len(requests)
            attempts += sum(o.attempts for o in outcomes)
            candidates, failures = self._expand(parents, outcomes, first=iterations == 1)
            errors.extend(describe_error(e) for e in failures)
            if not candidates:
                if iterations == 1:
                    raise self._nothing_proposed(failures)
                logger.warning("%s: iteration %d proposed no usable step; stopping",
                               self.method, iterations)
                break
            candidates = candidates[:meter.can_score(len(candidates))]
            if not candidates:
                if iterations == 1:
                    raise meter.refusal(f"{self.method}: no first step was scored")
                break
            scored = yield from self._score(question, candidates, errors)
            tokens += sum(scored_tokens(self.prm, question, c.steps) for c in scored)
            if not scored:
                if iterations == 1:
                    raise AllCandidatesFailedError(
                        f"{self.method}: no first-step chain could be scored: "
                        f"{summarize_failures(errors)}"
                    )
                break
            active = self._select(scored, state)
            logger.debug("%s iteration %d: %d scored, %d open, %d finished", self.method,
                         iterations, len(scored), len(active), len(state.finished))
            if not active:
                break
        if meter.exhausted() is not None and active:
            logger.info("%s: the budget's %s limit stopped the search after %d iterations",
                        self.method, meter.exhausted(), iterations)
        finished = _ranked_unique(state.finished)
        unfinished = _ranked_unique(active)
        best = (finished or unfinished)[0]
        if not best.complete:
            logger.warning("%s: no chain finished within max_steps=%d; returning the best open "
                           "chain", self.method, self.max_steps)
        return SearchResult(
            best=best, finished=finished, unfinished=unfinished, generator_calls=calls,
            attempts=attempts, tokens_scored=tokens, iterations=iterations, errors=errors,
            method=self.method, budget=meter.report(),
        )

    def _score(
        self, question: str, candidates: list[_Node], errors: list[str]
    ) -> Plan[list[_Node]]:
        """Score ``candidates``; the scored ones (value, completeness set), errors noted."""
        results = yield ScoreChains([(question, list(c.steps)) for c in candidates])
        scored: list[_Node] = []
        for c, r in zip(candidates, results, strict=True):
            if isinstance(r, StepScores):
                try:
                    c.value = chain_score(r, self.aggregate)
                    c.complete = bool(self.is_complete(c.steps[-1]))
                except Exception as exc:  # noqa: BLE001 - fails this chain alone
                    r = exc
            if not isinstance(r, StepScores):
                errors.append(f"scoring: {describe_error(r)}")
                continue
            c.step_scores = r
            scored.append(c)
        return scored

    def _expand(
        self, parents: list[_Node], outcomes: list[CallOutcome], *, first: bool
    ) -> tuple[list[_Node], list[Exception]]:
        """New candidate nodes (deduplicated) and the failures of the calls."""
        candidates: list[_Node] = []
        failures: list[Exception] = []
        seen: set[tuple[Any, ...]] = set()
        for parent, outcome in zip(parents, outcomes, strict=True):
            if outcome.error is not None:
                failures.append(outcome.error)
                continue
            value = outcome.value
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                failures.append(InvalidInputError(
                    f"generator.propose_next_steps() must return a list of str; received "
                    f"{type(value).__name__} {str(value)[:80]!r}"))
                continue
            for j, step in enumerate(value):
                text = step.strip()
                if not text:
                    continue
                group = j // self.beam_width if first else parent.group
                steps = (*parent.steps, text)
                key = (group, steps) if self.method == "dvts" else (steps,)
                if key in seen:
                    continue
                seen.add(key)
                candidates.append(_Node(steps, group))
        return candidates, failures

    def _select(self, scored: list[_Node], state: _State) -> list[_Node]:
        raise NotImplementedError

    def _nothing_proposed(self, failures: list[Exception]) -> AllCandidatesFailedError:
        if not failures:
            return EmptyGenerationsError(
                f"{self.method}: generator.propose_next_steps() returned only empty steps for "
                "the first step. Check the generator's prompt, stop sequences and max tokens."
            )
        err = AllCandidatesFailedError(
            f"{self.method}: the first generator call failed: "
            f"{summarize_failures([describe_error(e) for e in failures])}. Transient errors "
            "were retried per the RetryPolicy; see .causes.",
            causes=failures,
        )
        err.__cause__ = failures[-1]
        return err



def _ranked_unique(nodes: list[_Node]) -> list[SearchChain]:
    """Chains by value, best first (stable), each distinct step list once."""
    out: list[SearchChain] = []
    seen: set[tuple[str, ...]] = set()
    for node in sorted(nodes, key=lambda x: -x.value):
        if node.steps in seen:
            continue
        seen.add(node.steps)
        out.append(node.chain())
    return out


class StepBeamSearch(_StepSearch):
    """Step-level beam search with the PRM as value function.

    Args:
        generator: has ``propose_next_steps(question, prefix, n)`` (or the async
            ``apropose_next_steps``); see :mod:`prm_plugins.generators`.
        prm: a :class:`~prm_plugins.StepScorer`.
        n: candidates scored per iteration; ``n // beam_width`` beams are kept.
        beam_width: next steps proposed per beam; must divide ``n``.
        max_steps: most steps in a chain (iterations).
        aggregate: value of a (partial) chain from its step scores: ``"last"`` (default,
            the score of the newest step), ``"min"``, ``"prod"``, ``"mean"``,
            ``"geomean"`` or a callable. Finished chains are ranked by it too.
        is_complete: ``step -> bool``: whether a step ends the solution; default
            :func:`has_final_answer`.
        max_concurrency: most generator calls in flight at once.
        retry: retry policy for generator calls.
        budget: a :class:`~prm_plugins.budget.Budget` for the run (module docs); ``None``
            for no limit.

    Raises:
        InvalidInputError: for ``n`` or ``beam_width`` < 1, ``beam_width > n``, or
            ``beam_width`` not dividing ``n``.

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> search = StepBeamSearch(my_generator, load_prm(), n=8, beam_width=2)  # doctest: +SKIP
        >>> r = search.run("A pen costs $3. How much do 4 pens cost?")  # doctest: +SKIP
        >>> r.text, r.score, r.generator_calls, r.tokens_scored  # doctest: +SKIP
        ('4 * 3 = 12\\nThe answer is 12.', 0.91, 5, 812)
    """

    method: ClassVar[Literal["beam", "dvts"]] = "beam"

    def _select(self, scored: list[_Node], state: _State) -> list[_Node]:
        kept = sorted(scored, key=lambda c: -c.value)[: state.slots]
        done = [c for c in kept if c.complete]
        state.finished.extend(done)
        state.slots -= len(done)
        return [c for c in kept if not c.complete]


class DVTS(_StepSearch):
    """Diverse verifier tree search: ``n // beam_width`` independent greedy subtrees.

    Each subtree starts from its own ``beam_width`` first-step candidates, and at every
    iteration its best child (by the PRM value) is kept and expanded into ``beam_width``
    next steps; a subtree ends when its best child is complete. The options are those
    of :class:`StepBeamSearch`.

    Examples:
        >>> from prm_plugins import load_prm  # doctest: +SKIP
        >>> r = DVTS(my_generator, load_prm(), n=16, beam_width=4).run(question)  # doctest: +SKIP
        >>> [c.score for c in r.finished]  # doctest: +SKIP
        [0.93, 0.88, 0.41, 0.12]
    """

    method: ClassVar[Literal["beam", "dvts"]] = "dvts"

    def _select(self, scored: list[_Node], state: _State) -> list[_Node]:
        best: dict[int, _Node] = {}
        for c in scored:
            if c.group not in best or c.value > best[c.group].value:
                best[c.group] = c
        active = []
        for group in sorted(best):
            node = best[group]
            if node.complete:
                state.finished.append(node)
            else:
                active.append(node)
        return active
