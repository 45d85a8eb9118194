""":class:`VLLMPRM`: a process reward model served by vLLM, behind the scorer contract.

The chain is rendered on the client by the project's own format class (the one
:class:`~prm_plugins.OnnxPRM` uses: same step tags, chat template and neutralising, see
:mod:`prm_plugins.backends.local_format`), sent as token ids to vLLM's Pooling API
(``POST /pooling`` with ``"task": "token_classify"``), and each step's probability is read at
the position the format chose (``ALL`` pooling) or from the row of its step tag (``STEP``
pooling). The wire protocol, with the vLLM v0.18 sources it follows, is in
:mod:`prm_plugins.backends.pooling`. The project's Ray Serve deployment answers the same
``/pooling`` route, so this client works against either server.

Serving, e.g. Qwen2.5-Math-PRM-7B (``Qwen2ForProcessRewardModel``: STEP pooling on
``<extra_0>`` is vLLM's default for it)::

    vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling
    prm = load_prm("vllm://gpu-host:8000/Qwen/Qwen2.5-Math-PRM-7B", format="qwen-prm",
                   tokenizer="/models/Qwen2.5-Math-PRM-7B")

Math-Shepherd (a causal LM; tell vLLM which step tag and which two tokens)::

    vllm serve peiyi9979/math-shepherd-mistral-7b-prm --runner pooling \\
        --pooler-config '{"pooling_type": "STEP", "step_tag_id": 12902,
                          "returned_token_ids": [648, 387]}'

HTTP: ``httpx`` (the ``[remote]`` extra), retried by :class:`~prm_plugins.backends.http.HTTPRetry`
(tenacity). Connection errors, timeouts and HTTP 429, 502, 503, 504 are retried with
exponential backoff, waiting what a ``Retry-After`` header asks when there is one (up to
``max_retry_after``); any other error
answer is final and raised at once as :class:`~prm_plugins.errors.RemoteRequestError` (4xx)
or :class:`~prm_plugins.errors.RemoteServerError` (5xx) with the server's message; a server
still unreachable after the last attempt raises :class:`~prm_plugins.errors.RemotePRMError`;
an answer that breaks the protocol raises :class:`~prm_plugins.errors.RemoteResponseError`
naming the chain. When a request of several chains is refused, each is sent alone
(:func:`prm_plugins.scoring.score_isolated`) so the error names the chain at fault.
"""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from prm_plugins.backends.http import (
    RETRY_STATUSES,
    HTTPRetry,
    RetryingClient,
    parse_retry_after,
)
from prm_plugins.backends.local_format import Rendering, load_rendering
from prm_plugins.backends.pooling import (
    POOLING_MODES,
    error_from_answer,
    pooling_request,
    read_items,
    read_step_values,
)
from prm_plugins.backends.pooling import correct_column as format_column
from prm_plugins.errors import (
    ChainTooLongError,
    InvalidInputError,
    RemotePRMError,
    RemoteRequestError,
    RemoteResponseError,
    RemoteServerError,
    require,
)
from prm_plugins.jsonl import JSONLineError, loads_line
from prm_plugins.scoring import ascore_isolated, score_isolated
from prm_plugins.steps import validate_chain
from prm_plugins.types import StepScores
from prm_plugins.validation import check_count, check_seconds

__all__ = ["RETRY_STATUSES", "VLLMPRM", "parse_retry_after"]

logger = logging.getLogger(__name__)

#: URL schemes :meth:`VLLMPRM.from_url` (and ``load_prm``) take, and the HTTP scheme of each.
SCHEMES = {"vllm": "http", "vllm+http": "http", "vllm+https": "https"}


#: Refusals about the whole request (who asks, where, for which model): never worth sending
#: each chain alone. Other 4xx and 5xx answers may be one chain's fault.
_WHOLE_REQUEST = frozenset({401, 403, 404, 405})


def _per_chain(exc: BaseException) -> bool:
    """Whether a failed request may be one chain's fault (so each is sent alone)."""
    return (isinstance(exc, (RemoteRequestError, RemoteServerError))
            and exc.status not in _WHOLE_REQUEST)


class _Fatal(Exception):
    """Wraps an error that concerns a whole request, so chain isolation does not retry it."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _label(question: str) -> str:
    short = question if len(question) <= 40 else question[:37] + "..."
    return f" (question {short!r})"


class VLLMPRM(RetryingClient):
    """A PRM served by vLLM's Pooling API (or the project's Ray Serve ``/pooling`` route).

    Args:
        url: the server's base URL, e.g. ``"http://gpu-host:8000"`` (vLLM) or
            ``"http://head:8000/prm"`` (the Ray Serve deployment's route prefix);
            ``/pooling`` is appended.
        tokenizer: a local model directory (an exported prm-plugins model, whose
            ``prm.json`` gives the format, options, max length, checks and calibration; or
            a checkpoint directory with ``tokenizer.json``) or a ``tokenizer.json`` path.
        model: the served model name (vLLM's ``--served-model-name``; ``None``: the
            server's only model).
        format: the PRM format (``"qwen-prm"``, ``"math-shepherd"``, ...); required unless
            ``tokenizer`` is an exported model directory.
        format_options: options for the format (e.g. Math-Shepherd's ``bos_token_id``).
        pooling: what the server returns per chain: ``"all"`` (a row per token),
            ``"step"`` (a row per step tag), or ``"auto"`` (told apart by the row count).
        correct_column: the row column holding P(right); ``None``: the format's convention
            (:func:`~prm_plugins.backends.pooling.correct_column`).
        task: the request's pooling task; ``None`` leaves the field out (old servers).
        batch_size: most chains per HTTP request.
        max_concurrency: most requests in flight at once in the async methods.
        timeout: seconds per HTTP attempt (connect, read, write).
        max_attempts: attempts per request for retryable failures; ``1`` disables retries.
        backoff_initial: first wait between attempts, in seconds (doubles each time).
        backoff_max: longest wait between attempts without a ``Retry-After``.
        max_retry_after: longest wait a ``Retry-After`` header is honoured for.
        headers: extra HTTP headers (e.g. ``{"Authorization": "Bearer ..."}`` for
            ``vllm serve --api-key``).
        max_length: longest chain in tokens, checked before sending
            (:class:`~prm_plugins.errors.ChainTooLongError`); ``None``: the manifest's, or
            the server decides.
        checks: step checks after the model; ``None``: the manifest's recommended ones.
        calibrate: apply the manifest's Platt calibration, if it has one.

    Attributes:
        retry: the :class:`~prm_plugins.backends.http.HTTPRetry` policy built from
            ``max_attempts``, ``backoff_initial``, ``backoff_max`` and ``max_retry_after``
            (the same policy as ``RemotePRM``'s).

    Examples:
        >>> from prm_plugins import load_prm
        >>> prm = load_prm("vllm://127.0.0.1:8000/Qwen/Qwen2.5-Math-PRM-7B",
        ...                format="qwen-prm", tokenizer="/models/qwen-prm")  # doctest: +SKIP
        >>> prm.score("2 + 3 = ?", ["2 + 3 = 5.", "The answer is 5."]).scores  # doctest: +SKIP
        [0.98, 0.97]
    """

    def __init__(
        self,
        url: str,
        *,
        tokenizer: str | os.PathLike[str],
        model: str | None = None,
        format: str | None = None,
        format_options: Mapping[str, Any] | None = None,
        pooling: str = "auto",
        correct_column: int | None = None,
        task: str | None = "token_classify",
        batch_size: int = 16,
        max_concurrency: int = 4,
        timeout: float = 60.0,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        max_retry_after: float = 60.0,
        headers: Mapping[str, str] | None = None,
        max_length: int | None = None,
        checks: Sequence[str] | None = None,
        calibrate: bool = True,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInputError(
                f"url must be an http(s) base URL such as 'http://127.0.0.1:8000', got {url!r} "
                "(load_prm takes 'vllm://host:port/model')")
        if pooling not in POOLING_MODES:
            raise InvalidInputError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        if model is not None and not isinstance(model, str):
            raise InvalidInputError(f"model must be a str or None, got {model!r}")
        check_count(batch_size, "batch_size")
        check_count(max_concurrency, "max_concurrency")
        check_count(max_attempts, "max_attempts")
        check_count(correct_column, "correct_column", minimum=0, optional=True)
        for name, value in (("timeout", timeout), ("backoff_initial", backoff_initial),
                            ("backoff_max", backoff_max), ("max_retry_after", max_retry_after)):
            check_seconds(value, name)
        self.url = url.rstrip("/")
        self.endpoint = self.url + "/pooling"
        self.rendering: Rendering = load_rendering(
            tokenizer, format=format, format_options=format_options, max_length=max_length,
            checks=checks, calibrate=calibrate)
        self.format = self.rendering.format
        self.max_length = self.rendering.max_length
        self.model, self.pooling, self.task = model, pooling, task
        self.correct_column = (correct_column if correct_column is not None
                               else format_column(self.format.name))
        self.batch_size, self.max_concurrency = batch_size, max_concurrency
        self.timeout = float(timeout)
        self.retry = HTTPRetry(max_attempts=max_attempts, backoff_initial=backoff_initial,
                               backoff_max=backoff_max, max_retry_after=max_retry_after)
        self.headers = dict(headers or {})
        self._client = require("httpx", "remote").Client(timeout=self.timeout,
                                                          headers=self.headers)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> VLLMPRM:
        """A client for ``vllm://host:port/model`` (``vllm+https://`` for TLS).

        The path after the port is the served model name (it may hold slashes, as in
        ``vllm://h:8000/Qwen/Qwen2.5-Math-PRM-7B``); no path means the server's only model.

        Raises:
            InvalidInputError: another scheme, no host, or no ``tokenizer``.
        """
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in SCHEMES or not parts.hostname:
            raise InvalidInputError(
                f"a served PRM's URL is 'vllm://host:port/model' (or 'vllm+https://...'), got "
                f"{url!r}")
        if kwargs.get("tokenizer") is None:
            raise InvalidInputError(
                f"a served PRM needs tokenizer=: chains are rendered here, so pass the model's "
                f"local directory (from prm export, or the checkpoint's folder with "
                f"tokenizer.json) or a tokenizer.json path, e.g. load_prm({url!r}, "
                f"format='qwen-prm', tokenizer='Qwen2.5-Math-PRM-7B/'); nothing is downloaded")
        model = urllib.parse.unquote(parts.path.lstrip("/")) or None
        kwargs.setdefault("model", model)
        return cls(f"{SCHEMES[parts.scheme]}://{parts.netloc}", **kwargs)

    def __repr__(self) -> str:
        return (f"VLLMPRM(url={self.url!r}, model={self.model!r}, "
                f"format={self.format.name!r}, pooling={self.pooling!r})")

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> VLLMPRM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (Ray tasks, worker processes): the connection pool is not sent."""
        state = dict(self.__dict__)
        state.pop("_client", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client = require("httpx", "remote").Client(timeout=self.timeout,
                                                          headers=self.headers)

    # -- HTTP ------------------------------------------------------------------------------
    def _read(self, response: Any) -> Any:
        status = response.status_code
        try:
            body = loads_line(response.content)
        except JSONLineError as exc:
            if status < 400:
                raise RemoteResponseError(
                    f"the PRM server at {self.endpoint} answered HTTP {status} with a body that "
                    f"cannot be read as JSON ({exc}): {response.text[:200]!r}",
                    url=self.endpoint, status=status) from None
            body = response.text
        if status >= 400:
            raise error_from_answer(status, body, self.endpoint)
        return body

    def _give_up(self, reason: str) -> RemotePRMError:
        return RemotePRMError(
            f"the PRM server at {self.endpoint} did not answer after {self.max_attempts} "
            f"attempt(s): {reason}. Check that it is running and serves a pooling model, and "
            "that the URL is right", url=self.endpoint, attempts=self.max_attempts)

    def _post(self, payload: dict[str, Any]) -> Any:
        response = self.retry.send(lambda: self._client.post(self.endpoint, json=payload),
                                   self._give_up)
        return self._read(response)

    async def _apost(self, client: Any, payload: dict[str, Any]) -> Any:
        response = await self.retry.asend(lambda: client.post(self.endpoint, json=payload),
                                          self._give_up)
        return self._read(response)

    # -- chains ----------------------------------------------------------------------------
    def _prepare(self, items: Sequence[Any]) -> list[tuple[int, str, list[str], Any]]:
        """``(index, question, steps, rendered)`` per item, checked as the ONNX scorer does."""
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise InvalidInputError("score_batch takes a list of (question, steps) pairs, got "
                                    f"{type(items).__name__}")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise InvalidInputError(
                    f"item {i} must be a (question, steps) pair, got {type(item).__name__}")
            try:
                question, steps = validate_chain(*item)
            except InvalidInputError as exc:
                raise InvalidInputError(f"item {i}: {exc}") from None
            rendered = self.format.render(question, steps)
            if self.max_length is not None and len(rendered) > self.max_length:
                raise ChainTooLongError(
                    f"item {i}: the chain renders to {len(rendered)} tokens, over the max_length "
                    f"of {self.max_length}; shorten it", n_tokens=len(rendered),
                    max_length=self.max_length)
            out.append((i, question, steps, rendered))
        return out

    def _scores(self, job: tuple[int, str, list[str], Any], rows: Any) -> StepScores:
        index, question, steps, rendered = job
        values, mode = read_step_values(
            rows, rendered.input_ids, rendered.step_positions, column=self.correct_column,
            url=self.endpoint, item=index, pooling=self.pooling, label=_label(question))
        if self.rendering.calibration is not None:
            values = self.rendering.calibration.apply(values)
        meta = {"scorer": "vllm", "url": self.url, "model": self.model, "pooling": mode,
                "n_tokens": len(rendered), **self.format.step_notes(question, steps)}
        scored = StepScores(steps=list(steps), scores=values, question=question, meta=meta)
        if self.rendering.checks:
            from prm_plugins.checks import apply_checks

            scored = apply_checks(scored, self.rendering.checks)
        return scored

    def _payload(self, jobs: Sequence[Any]) -> dict[str, Any]:
        return pooling_request([job[3].input_ids for job in jobs], model=self.model,
                               task=self.task)

    def _chunks(self, jobs: list[Any]) -> list[list[Any]]:
        return [jobs[k:k + self.batch_size] for k in range(0, len(jobs), self.batch_size)]

    @staticmethod
    def _answers(isolated: Any, chunk: list[Any]) -> list[StepScores]:
        """The chunk's scores, or the first failing chain's error (naming the chain)."""
        for job, result in zip(chunk, isolated.results, strict=True):
            if isinstance(result, _Fatal):
                raise result.cause from None
            if isinstance(result, BaseException):
                if isinstance(result, (RemoteRequestError, RemoteServerError)):
                    result.item = job[0]
                    result.args = (f"chain {job[0]}{_label(job[1])}: {result}",)
                raise result
        return list(isolated.results)

    def _unpack(self, chunk: list[Any], body: Any) -> list[StepScores]:
        """Each chain's scores from an answer; a broken answer concerns the whole request."""
        try:
            rows = read_items(body, len(chunk), self.endpoint)
            return [self._scores(job, r) for job, r in zip(chunk, rows, strict=True)]
        except Exception as exc:
            raise _Fatal(exc) from exc

    def _send(self, chunk: list[Any]) -> list[StepScores]:
        try:
            body = self._post(self._payload(chunk))
        except Exception as exc:
            if _per_chain(exc):
                raise
            raise _Fatal(exc) from exc
        return self._unpack(chunk, body)

    def _score_chunk(self, chunk: list[Any]) -> list[StepScores]:
        """One request; if it is refused, each chain alone, to name the one at fault."""
        try:
            isolated = score_isolated(self._send, chunk, score_one=lambda job: self._send([job])[0],
                                      propagate=(_Fatal,), stop_on=(_Fatal,))
        except _Fatal as exc:
            raise exc.cause from None
        if not isolated.isolated:
            return list(isolated.results)
        return self._answers(isolated, chunk)

    # -- the scorer contract ---------------------------------------------------------------
    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        """Score each step of one chain on the server.

        Returns:
            :class:`StepScores` with one probability per step.

        Raises:
            InvalidInputError: a malformed chain (checked before sending).
            ChainTooLongError: longer than ``max_length`` tokens.
            RemotePRMError: the server unreachable after every retry; its subclasses
                :class:`~prm_plugins.errors.RemoteRequestError`,
                :class:`~prm_plugins.errors.RemoteServerError` and
                :class:`~prm_plugins.errors.RemoteResponseError` for a refused request, a
                server failure and an answer that breaks the protocol.
        """
        return self.score_batch([(question, steps)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """Score many chains, ``batch_size`` per request; one result per item, in order.

        Raises:
            The errors of :meth:`score`; a refused chain's error names it (its ``item``).
        """
        jobs = self._prepare(items)
        out: list[StepScores] = []
        for chunk in self._chunks(jobs):
            out.extend(self._score_chunk(chunk))
        return out

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        """Async :meth:`score` (non-blocking HTTP)."""
        return (await self.ascore_batch([(question, steps)]))[0]

    async def ascore_batch(self, items: Sequence[tuple[str, Sequence[str]]]
                           ) -> list[StepScores]:
        """Async :meth:`score_batch`: up to ``max_concurrency`` requests in flight."""
        jobs = self._prepare(items)
        if not jobs:
            return []
        httpx = require("httpx", "remote")
        gate = asyncio.Semaphore(self.max_concurrency)
        async with httpx.AsyncClient(timeout=self.timeout, headers=self.headers) as client:

            async def send(chunk: list[Any]) -> list[StepScores]:
                try:
                    async with gate:
                        body = await self._apost(client, self._payload(chunk))
                except Exception as exc:
                    if _per_chain(exc):
                        raise
                    raise _Fatal(exc) from exc
                return self._unpack(chunk, body)

            async def send_one(job: Any) -> StepScores:
                return (await send([job]))[0]

            async def one_chunk(chunk: list[Any]) -> list[StepScores]:
                try:
                    isolated = await ascore_isolated(send, chunk, score_one=send_one,
                                                     propagate=(_Fatal,), stop_on=(_Fatal,))
                except _Fatal as exc:
                    raise exc.cause from None
                if not isolated.isolated:
                    return list(isolated.results)
                return self._answers(isolated, chunk)

            parts = await asyncio.gather(*(one_chunk(c) for c in self._chunks(jobs)),
                                         return_exceptions=True)
        out: list[StepScores] = []
        for part in parts:  # every request has finished; the first failure is raised
            if isinstance(part, BaseException):
                raise part
            out.extend(part)
        return out
