"""An LLM judge as a PRM: a chat model scores every step of a chain, behind the
:class:`~prm_plugins.types.StepScorer` contract.

:class:`JudgePRM` sends the question and the numbered steps to a chat model in one request
and reads one verdict per step from one answer, with the labelling grader's prompt and strict
reader (:mod:`prm_plugins.labeling.verdicts`)::

    Step 1: correct (confidence: high)
    Step 2: incorrect (confidence: medium)

Each step's score is the probability of the verdict "correct" read from the answer's token
log-probabilities when the model returns them, else the verdict and its stated confidence
through a documented table or your calibration (:mod:`prm_plugins.backends.judge_scores`);
``StepScores.meta["score_source"]`` says which (``"logprobs"`` or ``"verdict"``).

- **One call per chain**, all steps judged in one answer. An answer that cannot be read (a
  missing step, a step twice, garbage, no confidence) is refused with the reason, and the
  model is asked again with that reason, at most ``max_retries`` times; then the chain fails
  with a :class:`~prm_plugins.errors.JudgeError`. Transient model errors (timeouts,
  connection errors, or what ``retry`` says) are retried with tenacity
  (:class:`~prm_plugins.plans.RetryPolicy`).
- **One bad chain fails alone.** :meth:`JudgePRM.judge_batch` gives each chain its scores or
  its error. :meth:`JudgePRM.score_batch` (the contract: a list of ``StepScores``) raises a
  ``JudgeError`` naming the failed chains; every caller in the project then scores the
  chains one by one (:func:`prm_plugins.scoring.score_isolated`), and those calls are
  answered from the failed batch itself for a minute, so no model is called twice for it.
- **Cache**: judged chains are kept in a bounded LRU keyed by (model identity, the prompts,
  the chain); a hit costs nothing and says so (``meta["cache_hit"]``).
- **Concurrency**: at most ``max_concurrency`` model calls at once per judge, across threads
  (sync) and per event loop (async).
- **Cost**: each result's meta has ``calls``, ``attempts``, ``input_tokens`` and
  ``output_tokens``; :attr:`JudgePRM.usage` adds them up for the judge's lifetime.

Framework-free: the model is reached through a :class:`JudgeClient`. The LangChain binding
is :class:`prm_plugins.adapters.langchain.LLMJudgePRM`, the LlamaIndex one
:class:`prm_plugins.adapters.llamaindex.LLMJudgePRM`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from prm_plugins.backends.judge_scores import (
    VERDICT_SCORES,
    Calibration,
    JudgeReply,
    TokenLogprob,
    check_calibration,
    logprob_scores,
    verdict_scores,
)
from prm_plugins.errors import GraderAnswerError, InvalidInputError, JudgeError
from prm_plugins.labeling.grader import as_chain
from prm_plugins.labeling.verdicts import (
    GRADER_SYSTEM_PROMPT,
    build_grading_prompt,
    build_regrade_prompt,
    parse_step_judgements,
)
from prm_plugins.plans import CallOutcome, RetryPolicy, describe_error
from prm_plugins.types import StepScores
from prm_plugins.validation import check_count, check_max_concurrency

__all__ = [
    "VERDICT_SCORES",
    "JudgeClient",
    "JudgePRM",
    "JudgeReply",
    "JudgeUsage",
    "ScoreSource",
    "TokenLogprob",
]

logger = logging.getLogger(__name__)

#: Where step scores come from: log-probabilities when present (``"auto"``), only those
#: (``"logprobs"``: a reply without them fails the chain), or only the verdicts.
ScoreSource = Literal["auto", "logprobs", "verdict"]
_SOURCES = ("auto", "logprobs", "verdict")

#: Seconds during which the chains of a failed batch are answered from that batch.
HANDOFF_SECONDS = 60.0

Conversation = list[tuple[str, str]]


@runtime_checkable
class JudgeClient(Protocol):
    """How :class:`JudgePRM` reaches a chat model (the framework bindings implement it).

    ``model_id`` names the model and every setting that changes its answers (it keys the
    cache). ``reply`` and ``areply`` take a conversation of ``(role, text)`` pairs, roles
    ``"system"``, ``"human"`` and ``"ai"``, and return a :class:`JudgeReply`.
    """

    model_id: str

    def reply(self, conversation: Conversation) -> JudgeReply:
        """Send the conversation; the model's answer."""
        ...

    async def areply(self, conversation: Conversation) -> JudgeReply:
        """Async :meth:`reply`."""
        ...


@dataclass
class JudgeUsage:
    """What a judge has spent (cumulative on :attr:`JudgePRM.usage`).

    Attributes:
        chains: chains asked for (cache hits included).
        failed_chains: chains that could not be judged.
        calls: model requests (re-asks after an unreadable answer included).
        attempts: model calls including transient retries.
        input_tokens: prompt tokens reported by the model.
        output_tokens: answer tokens reported by the model.
        calls_without_usage: replies that reported no token counts.
        cache_hits: chains answered from the cache (or from a failed batch) with no call.
    """

    chains: int = 0
    failed_chains: int = 0
    calls: int = 0
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    calls_without_usage: int = 0
    cache_hits: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a dict."""
        return asdict(self)


@dataclass
class _Spent:
    """One chain's spending while it is judged."""

    calls: int = 0
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    calls_without_usage: int = 0
    answers: list[str] = field(default_factory=list)
    parse_errors: list[str] = field(default_factory=list)

    def add(self, outcome: CallOutcome) -> None:
        self.calls += 1
        self.attempts += outcome.attempts
        reply = outcome.value
        if isinstance(reply, JudgeReply):
            if reply.input_tokens is None and reply.output_tokens is None:
                self.calls_without_usage += 1
            self.input_tokens += reply.input_tokens or 0
            self.output_tokens += reply.output_tokens or 0


# A judging conversation is a plan: it yields the messages to send and receives the outcome.
JudgePlan = Generator[Conversation, CallOutcome, StepScores]


class JudgePRM:
    """A chat model as a PRM: one structured verdict per step, one call per chain.

    Args:
        client: the model, as a :class:`JudgeClient` (use the LangChain or LlamaIndex
            ``LLMJudgePRM``, which build it).
        scores_from: ``"auto"`` (log-probabilities when the reply has them, else verdicts),
            ``"logprobs"`` (a reply without them fails the chain) or ``"verdict"``.
        confidence: ask for a confidence (high, medium, low) on each verdict line; with
            ``False`` the answer is the grader's plain ``Step k: correct`` lines.
        calibration: verdict-to-probability table or callable ``(correct, confidence) ->
            probability``; default
            :data:`~prm_plugins.backends.judge_scores.VERDICT_SCORES`.
        max_retries: re-asks after an unreadable answer (>= 0).
        retry: retry policy for transient model errors (tenacity); default
            :class:`~prm_plugins.plans.RetryPolicy` (3 attempts, 120 s each). A local model
            on a CPU can take longer than that to judge a long chain: pass
            ``RetryPolicy(timeout=None)`` (or a longer timeout) there.
        max_concurrency: most model calls at once (>= 1).
        cache_size: most judged chains kept (0 turns the cache off).
        system_prompt: the system message; default the grader's.

    Raises:
        InvalidInputError: for a bad option.

    Examples:
        >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
        >>> from prm_plugins.adapters.langchain.judge import LLMJudgePRM
        >>> judge = LLMJudgePRM(FakeListChatModel(responses=[
        ...     "Step 1: correct (confidence: high)\\nStep 2: incorrect (confidence: high)"]))
        >>> s = judge.score("What is 2 + 3 * 4?", ["3 * 4 = 12", "2 + 12 = 15"])
        >>> s.scores, s.meta["score_source"], judge.usage.calls
        ([0.95, 0.05], 'verdict', 1)
    """

    def __init__(
        self,
        client: JudgeClient,
        *,
        scores_from: ScoreSource = "auto",
        confidence: bool = True,
        calibration: Calibration | None = None,
        max_retries: int = 2,
        retry: RetryPolicy | None = None,
        max_concurrency: int = 4,
        cache_size: int = 1024,
        system_prompt: str = GRADER_SYSTEM_PROMPT,
    ) -> None:
        if not isinstance(getattr(client, "model_id", None), str) or not callable(
                getattr(client, "reply", None)):
            raise InvalidInputError(
                f"client must be a JudgeClient (model_id, reply, areply); received "
                f"{type(client).__name__}. Build the judge with "
                "prm_plugins.adapters.langchain.LLMJudgePRM(chat_model) or the LlamaIndex one.")
        if scores_from not in _SOURCES:
            raise InvalidInputError(f"scores_from must be one of {', '.join(_SOURCES)}; got "
                                    f"{scores_from!r}")
        if not isinstance(system_prompt, str):
            raise InvalidInputError(
                f"system_prompt must be a str, got {type(system_prompt).__name__}")
        check_count(max_retries, "max_retries", minimum=0)
        check_count(cache_size, "cache_size", minimum=0)
        self.client = client
        self.scores_from = scores_from
        self.confidence = bool(confidence)
        self.calibration = check_calibration(calibration)
        self.max_retries = max_retries
        self.retry = RetryPolicy.check(retry) or RetryPolicy()
        self.max_concurrency = check_max_concurrency(max_concurrency)
        self.cache_size = cache_size
        self.system_prompt = system_prompt
        self.usage = JudgeUsage()
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, StepScores] = OrderedDict()
        self._handoff: dict[str, tuple[float, StepScores | BaseException]] = {}
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._aslots: weakref.WeakKeyDictionary[Any, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={self.model_id!r}, scores_from="
                f"{self.scores_from!r}, max_concurrency={self.max_concurrency})")

    @property
    def model_id(self) -> str:
        """The model's identity, as the client gives it."""
        return self.client.model_id

    # -- one chain: the plan -----------------------------------------------------------------
    def _key(self, question: str, steps: list[str], prompt: str) -> str:
        blob = json.dumps([self.model_id, self.system_prompt, prompt, question, steps,
                           self.scores_from, self.confidence], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _conversation(self, prompt: str) -> Conversation:
        conversation: Conversation = [("human", prompt)]
        if self.system_prompt:
            conversation.insert(0, ("system", self.system_prompt))
        return conversation

    def _plan(self, question: str, steps: list[str], prompt: str) -> JudgePlan:
        """Ask, read, re-ask; returns the scores or raises :class:`JudgeError`."""
        n = len(steps)
        spent = _Spent()
        conversation = self._conversation(prompt)
        try:
            for _ in range(self.max_retries + 1):
                outcome = yield list(conversation)
                spent.add(outcome)
                if outcome.error is not None:
                    raise JudgeError(f"the chat model call failed: "
                                     f"{describe_error(outcome.error)}", answers=spent.answers)
                reply = outcome.value
                if not isinstance(reply, JudgeReply):
                    raise JudgeError(f"the judge client returned {type(reply).__name__}, not "
                                     "a JudgeReply", answers=spent.answers)
                spent.answers.append(reply.text)
                try:
                    judged = parse_step_judgements(reply.text, n, confidence=self.confidence)
                except GraderAnswerError as exc:
                    spent.parse_errors.append(str(exc))
                    conversation += [("ai", reply.text), (
                        "human", build_regrade_prompt(str(exc), n, confidence=self.confidence))]
                    continue
                return self._scored(question, steps, reply, judged, spent)
            raise JudgeError(
                f"no readable answer after {spent.calls} tries; last error: "
                f"{spent.parse_errors[-1]}", answers=spent.answers)
        finally:
            self._count(spent)

    def _scored(self, question: str, steps: list[str], reply: JudgeReply,
                judged: list[Any], spent: _Spent) -> StepScores:
        source, why = "verdict", None
        scores: list[float] | None = None
        if self.scores_from != "verdict" and reply.logprobs:
            scores, why = logprob_scores(reply.text, reply.logprobs, judged)
            source = "logprobs" if scores is not None else "verdict"
        elif self.scores_from != "verdict":
            why = "the reply has no token log-probabilities"
        if scores is None and self.scores_from == "logprobs":
            raise JudgeError(
                f"scores_from='logprobs' but {why}; ask the model for them (e.g. "
                "ChatOpenAI(..., logprobs=True, top_logprobs=5)) or use scores_from='auto'",
                answers=spent.answers)
        if scores is None:
            scores = verdict_scores(judged, self.calibration)
        meta: dict[str, Any] = {
            "judge": type(self).__name__, "model": self.model_id, "score_source": source,
            "verdicts": [j.correct for j in judged],
            "confidences": [j.confidence for j in judged],
            "cache_hit": False, "calls": spent.calls, "attempts": spent.attempts,
            "input_tokens": spent.input_tokens, "output_tokens": spent.output_tokens,
            "parse_errors": list(spent.parse_errors), "answer": reply.text,
        }
        if why is not None and self.scores_from != "verdict":
            meta["logprobs_unused"] = why
        return StepScores(steps=list(steps), scores=scores, question=question, meta=meta)

    def _count(self, spent: _Spent) -> None:
        with self._lock:
            u = self.usage
            u.calls += spent.calls
            u.attempts += spent.attempts
            u.input_tokens += spent.input_tokens
            u.output_tokens += spent.output_tokens
            u.calls_without_usage += spent.calls_without_usage

    # -- cache and hand-off --------------------------------------------------------------------
    def _prepare(self, question: str, steps: Sequence[str]) -> tuple[str, list[str], str, str]:
        if isinstance(steps, str):
            raise InvalidInputError("steps must be a list of str, not one str; split the text "
                                    "first (prm_plugins.split_steps)")
        q, s, _ = as_chain((question, list(steps)))
        prompt = build_grading_prompt(q, s, confidence=self.confidence)
        return q, s, prompt, self._key(q, s, prompt)

    def _known(self, key: str) -> StepScores | None:
        """A cached or handed-off result (raises a handed-off error), else ``None``."""
        with self._lock:
            self.usage.chains += 1
            handed = self._handoff.pop(key, None)
            if handed is not None and time.monotonic() - handed[0] <= HANDOFF_SECONDS:
                result = handed[1]
                if isinstance(result, BaseException):
                    self.usage.failed_chains += 1
                    raise result
                self.usage.cache_hits += 1
                return _as_hit(result)
            hit = self._cache.get(key)
            if hit is None:
                return None
            self._cache.move_to_end(key)
            self.usage.cache_hits += 1
            return _as_hit(hit)

    def _remember(self, key: str, result: StepScores | BaseException) -> None:
        with self._lock:
            if isinstance(result, BaseException):
                self.usage.failed_chains += 1
                return
            if self.cache_size:
                self._cache[key] = result
                self._cache.move_to_end(key)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)

    def _hand_off(self, keys: Sequence[str], results: Sequence[Any]) -> None:
        now = time.monotonic()
        with self._lock:
            self._handoff = {k: (now, r) for k, r in zip(keys, results, strict=True)}

    def clear_cache(self) -> None:
        """Forget every judged chain."""
        with self._lock:
            self._cache.clear()
            self._handoff.clear()

    # -- drivers ------------------------------------------------------------------------------
    def _call(self, conversation: Conversation) -> JudgeReply:
        with self._slots:
            return self.client.reply(conversation)

    async def _acall(self, conversation: Conversation) -> JudgeReply:
        loop = asyncio.get_running_loop()
        with self._lock:
            slots = self._aslots.get(loop)
            if slots is None:
                slots = self._aslots[loop] = asyncio.Semaphore(self.max_concurrency)
        async with slots:
            return await self.client.areply(conversation)

    def _run(self, plan: JudgePlan) -> StepScores:
        try:
            conversation = next(plan)
            while True:
                outcome = self.retry.call(self._call, conversation, what="judge model call")
                conversation = plan.send(outcome)
        except StopIteration as stop:
            return stop.value
        finally:
            plan.close()

    async def _arun(self, plan: JudgePlan) -> StepScores:
        try:
            conversation = next(plan)
            while True:
                outcome = await self.retry.acall(self._acall, conversation,
                                                 what="judge model call")
                conversation = plan.send(outcome)
        except StopIteration as stop:
            return stop.value
        finally:
            plan.close()

    def _judge_one(self, question: str, steps: list[str], prompt: str, key: str) -> StepScores:
        known = self._known(key)
        if known is not None:
            return known
        try:
            result = self._run(self._plan(question, steps, prompt))
        except JudgeError as exc:
            self._remember(key, exc)
            raise
        self._remember(key, result)
        return result

    async def _ajudge_one(self, question: str, steps: list[str], prompt: str,
                          key: str) -> StepScores:
        known = self._known(key)
        if known is not None:
            return known
        try:
            result = await self._arun(self._plan(question, steps, prompt))
        except JudgeError as exc:
            self._remember(key, exc)
            raise
        self._remember(key, result)
        return result

    # -- the scorer contract ------------------------------------------------------------------
    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        """Judge one chain: one model call (plus re-asks), or none on a cache hit.

        Args:
            question: the problem.
            steps: the chain's steps (non-empty text each).

        Returns:
            :class:`StepScores` with one probability per step; ``meta`` says where the
            scores came from (``score_source``) and what the call cost.

        Raises:
            InvalidInputError: for an empty question or step, or no steps.
            JudgeError: when the model call failed or no answer could be read.
        """
        return self._judge_one(*self._prepare(question, steps))

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        """Async :meth:`score` (the client's ``areply``)."""
        return await self._ajudge_one(*self._prepare(question, steps))

    def judge_batch(
        self, items: Sequence[tuple[str, Sequence[str]]]
    ) -> list[StepScores | JudgeError]:
        """Judge many chains, ``max_concurrency`` at once; each gets its scores or its error.

        Raises:
            InvalidInputError: before any call, when an item is not a chain.
        """
        prepared = [self._prepare(q, s) for q, s in _pairs(items)]
        if not prepared:
            return []
        workers = min(self.max_concurrency, len(prepared))
        with concurrent.futures.ThreadPoolExecutor(workers, "prm-judge") as pool:
            futures = [pool.submit(self._judge_one, *p) for p in prepared]
            return [_result_or_error(f) for f in futures]

    async def ajudge_batch(
        self, items: Sequence[tuple[str, Sequence[str]]]
    ) -> list[StepScores | JudgeError]:
        """Async :meth:`judge_batch`."""
        prepared = [self._prepare(q, s) for q, s in _pairs(items)]

        async def one(p: tuple[str, list[str], str, str]) -> StepScores | JudgeError:
            try:
                return await self._ajudge_one(*p)
            except JudgeError as exc:
                return exc

        return list(await asyncio.gather(*(one(p) for p in prepared)))

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """Judge many chains; one :class:`StepScores` per chain, in order.

        Raises:
            InvalidInputError: when an item is not a chain.
            JudgeError: when any chain failed; ``failed`` maps their positions to their
                errors. The chains of this batch are then answered from it for a minute
                (no new model call), so scoring them one by one (as every caller in the
                project does after a failed batch) costs nothing.
        """
        return self._all_or_raise(items, self.judge_batch(items))

    async def ascore_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """Async :meth:`score_batch`."""
        return self._all_or_raise(items, await self.ajudge_batch(items))

    def _all_or_raise(self, items: Sequence[tuple[str, Sequence[str]]],
                      results: list[StepScores | JudgeError]) -> list[StepScores]:
        failed = {i: r for i, r in enumerate(results) if isinstance(r, JudgeError)}
        if not failed:
            return [r for r in results if isinstance(r, StepScores)]
        self._hand_off([self._prepare(q, s)[3] for q, s in _pairs(items)], results)
        first = min(failed)
        raise JudgeError(
            f"{len(failed)} of {len(results)} chains could not be judged (chain {first}: "
            f"{failed[first]}); the others were: use judge_batch() for per-chain results, or "
            "score the chains one by one (answered from this batch, no new model call)",
            failed=dict(failed))


def _as_hit(result: StepScores) -> StepScores:
    meta = {**result.meta, "cache_hit": True, "calls": 0, "attempts": 0, "input_tokens": 0,
            "output_tokens": 0}
    return StepScores(steps=list(result.steps), scores=list(result.scores),
                      question=result.question, meta=meta)


def _pairs(items: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[str, Sequence[str]]]:
    out = []
    for k, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InvalidInputError(f"chain {k}: expected a (question, steps) pair; received "
                                    f"{type(item).__name__}")
        out.append((item[0], item[1]))
    return out


def _result_or_error(future: concurrent.futures.Future[StepScores]) -> StepScores | JudgeError:
    try:
        return future.result()
    except JudgeError as exc:
        return exc
