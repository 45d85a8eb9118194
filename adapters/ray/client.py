""":class:`RemotePRM`: the scorer contract over HTTP, for a PRM served by Ray Serve.

Needs only ``httpx`` and ``tenacity`` (no Ray), so a client machine installs
``pip install "prm-plugins[remote]"``. It implements :class:`prm_plugins.StepScorer`
(``score``, ``score_batch``, ``ascore``, ``ascore_batch``), so every strategy and adapter runs
unchanged against a cluster.

Wire protocol (served by :mod:`prm_plugins.adapters.ray.serve`):

* ``POST {url}/score`` with ``{"question": str, "steps": [str]}`` answers
  ``{"step_scores": [float], "meta": {...}}``; with ``{"items": [item, ...]}`` (each item a
  ``{"question", "steps"}`` object or a ``[question, steps]`` pair) it answers
  ``{"results": [{"step_scores": [...], "meta": {...}}, ...]}`` in input order.
* ``GET {url}/health`` answers ``{"status": "ok", "model": {...}}``.
* A scorer validation error answers 422 (400 for a body that cannot be read as JSON) with
  ``{"error": {"type": "InvalidInputError", "message": "..."}}``; an unexpected scorer
  error answers 500 with the same shape (and ``"item"``, the failing chain's index).

Errors: a 4xx answer raises the same error class as the local scorer (``InvalidInputError``,
``ChainTooLongError``) with the server's message and is never retried; neither is a 500 or
any other 5xx than the ones below: the same chain fails the same way again, so a retry only
multiplies the load (it raises :class:`RemotePRMError` with the server's message at once).
What is retried, with exponential backoff, is what a second attempt can cure: connection
errors, timeouts, and HTTP 429 (rate limited), 502, 503 and 504 (a proxy or an overloaded or
restarting replica); a ``Retry-After`` header on such an answer (seconds or an HTTP date) is
waited for, up to ``max_retry_after``; after the last attempt :class:`RemotePRMError` says
what failed, how often, and where. The loop is the core's
:class:`~prm_plugins.backends.http.HTTPRetry`, the one :class:`~prm_plugins.VLLMPRM` uses.
An answer that is not what the protocol promises (unreadable JSON, scores that are not
finite probabilities, the wrong number of them) is a :class:`RemotePRMError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from prm_plugins.backends.http import HTTPRetry, RetryingClient
from prm_plugins.errors import ChainTooLongError, InvalidInputError, PRMError, RemotePRMError
from prm_plugins.jsonl import JSONLineError, loads_line
from prm_plugins.types import StepScores

__all__ = ["RemotePRM", "RemotePRMError"]



def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        from prm_plugins.errors import MissingExtraError

        raise MissingExtraError(
            "RemotePRM needs httpx; install it with: pip install \".[remote]\" in a "
            "prm-plugins checkout (once published: pip install \"prm-plugins[remote]\"; "
            "or the [ray] extra, which includes it)"
        ) from exc
    return httpx


def _error_from_body(status: int, body: Any, url: str) -> PRMError:
    """The local error class for a 4xx answer, carrying the server's message."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return InvalidInputError(f"the PRM server at {url} rejected the request with HTTP "
                                 f"{status}: {str(body)[:300]}")
    kind, message = err.get("type"), str(err.get("message", ""))[:2000]
    if kind == "ChainTooLongError" and status < 500:
        def as_int(value: Any) -> int:
            return value if isinstance(value, int) and abs(value) < 10**12 else -1

        return ChainTooLongError(message, n_tokens=as_int(err.get("n_tokens")),
                                 max_length=as_int(err.get("max_length")))
    if status < 500 and (kind == "InvalidInputError" or status in (400, 422)):
        return InvalidInputError(message)
    return RemotePRMError(f"the PRM server at {url} answered HTTP {status} ({kind}): {message}",
                          url=url, attempts=1)


class RemotePRM(RetryingClient):
    """A PRM served over HTTP (Ray Serve), with the local scorer's contract.

    Args:
        url: base URL of the deployment, e.g. ``"http://head-node:8000/prm"``.
        timeout: seconds per HTTP attempt (connect, read, write).
        max_attempts: attempts per call for retryable failures (connection errors,
            timeouts, HTTP 429, 502, 503, 504); ``1`` disables retries. A 500 or a 4xx
            answer is never retried.
        backoff_initial: first wait between attempts, in seconds; it doubles each time.
        backoff_max: longest wait between attempts without a ``Retry-After``, in seconds.
        max_retry_after: longest wait a ``Retry-After`` header (on a 429, 502, 503 or 504)
            is honoured for, in seconds; a longer wish is cut to this.
        headers: extra HTTP headers (e.g. an ``Authorization`` header for a gateway).

    Attributes:
        retry: the :class:`~prm_plugins.backends.http.HTTPRetry` policy built from
            ``max_attempts``, ``backoff_initial``, ``backoff_max`` and ``max_retry_after``.

    Examples:
        >>> from prm_plugins.adapters.ray import RemotePRM
        >>> prm = RemotePRM("http://127.0.0.1:8000/prm")  # doctest: +SKIP
        >>> prm.score("2 + 3 = ?", ["2 + 3 = 5"]).scores  # doctest: +SKIP
        [0.97]
        >>> from prm_plugins.strategies import verify
        >>> verify("2 + 3 = ?", ["2 + 3 = 5"], prm).passed  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        max_attempts: int = 4,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        max_retry_after: float = 60.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInputError(
                f"url must be an http(s) URL such as 'http://127.0.0.1:8000/prm', got {url!r}")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidInputError(f"timeout must be a positive number of seconds, got "
                                    f"{timeout!r}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.retry = HTTPRetry(max_attempts=max_attempts, backoff_initial=backoff_initial,
                               backoff_max=backoff_max, max_retry_after=max_retry_after)
        self.headers = dict(headers or {})
        httpx = _httpx()
        self._client = httpx.Client(timeout=self.timeout, headers=self.headers)

    def __repr__(self) -> str:
        return f"RemotePRM(url={self.url!r}, timeout={self.timeout}, " \
               f"max_attempts={self.max_attempts})"

    # -- lifecycle -------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Picklable (e.g. into Ray tasks or worker processes): the pool is not sent."""
        state = dict(self.__dict__)
        state.pop("_client", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client = _httpx().Client(timeout=self.timeout, headers=self.headers)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> RemotePRM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------
    def _read(self, response: Any, url: str) -> Any:
        status = response.status_code
        try:
            body = loads_line(response.content)
        except JSONLineError as exc:
            if status < 400:
                raise RemotePRMError(
                    f"the PRM server at {url} answered HTTP {status} with a body that cannot "
                    f"be read as JSON ({exc}): {response.text[:200]!r}", url=url,
                    attempts=1) from None
            body = response.text
        if status >= 400:
            raise _error_from_body(status, body, url)
        return body

    def _give_up(self, url: str) -> Any:
        def error(reason: str) -> RemotePRMError:
            return RemotePRMError(
                f"the PRM server at {url} did not answer after {self.max_attempts} "
                f"attempt(s): {reason}. Check that the deployment is running (GET "
                f"{self.url}/health) and that the URL, including its route prefix, is right",
                url=url, attempts=self.max_attempts)

        return error

    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        url = self.url + path
        response = self.retry.send(lambda: self._client.request(method, url, json=payload),
                                   self._give_up(url))
        return self._read(response, url)

    async def _arequest(self, method: str, path: str, payload: Any = None) -> Any:
        httpx = _httpx()
        url = self.url + path
        async with httpx.AsyncClient(timeout=self.timeout, headers=self.headers) as client:
            response = await self.retry.asend(
                lambda: client.request(method, url, json=payload), self._give_up(url))
        return self._read(response, url)

    # -- payloads --------------------------------------------------------------------------
    @staticmethod
    def _batch_payload(items: Sequence[Any]) -> dict[str, Any]:
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise InvalidInputError(
                "score_batch takes a list of (question, steps) pairs, got "
                f"{type(items).__name__}")
        wire: list[Any] = []
        for i, item in enumerate(items):
            if isinstance(item, dict):  # the local scorer takes pairs only; so does this
                raise InvalidInputError(
                    f"item {i} must be a (question, steps) pair, got dict")
            if isinstance(item, tuple):
                item = list(item)
            try:
                json.dumps(item)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f"item {i} cannot be sent to the PRM server as JSON ({exc}); give "
                    "(question: str, steps: list[str]) pairs") from None
            wire.append(item)
        return {"items": wire}

    def _to_scores(self, result: Any, item: Any) -> StepScores:
        question, steps = item
        url = self.url + "/score"
        if not isinstance(result, dict) or not isinstance(result.get("step_scores"), list):
            raise RemotePRMError(f"the PRM server answered an unexpected body: "
                                 f"{str(result)[:300]}", url=url, attempts=1)
        raw = result["step_scores"]
        if len(raw) != len(steps):
            raise RemotePRMError(
                f"the PRM server answered {len(raw)} step scores for a chain of {len(steps)} "
                "steps", url=url, attempts=1)
        for i, s in enumerate(raw):
            if (isinstance(s, bool) or not isinstance(s, (int, float))
                    or not math.isfinite(s) or not 0.0 <= s <= 1.0):
                raise RemotePRMError(
                    f"the PRM server answered {str(s)[:40]} for step {i + 1}; step scores "
                    "must be finite probabilities in [0, 1]", url=url, attempts=1)
        meta = result.get("meta")
        return StepScores(steps=list(steps), scores=[float(s) for s in raw],
                          question=str(question), meta=dict(meta) if isinstance(meta, dict) else {})

    def _unpack_batch(self, body: Any, items: Sequence[Any]) -> list[StepScores]:
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list) or len(results) != len(items):
            raise RemotePRMError(
                f"the PRM server answered {0 if not isinstance(results, list) else len(results)} "
                f"result(s) for {len(items)} item(s): {str(body)[:300]}",
                url=self.url + "/score", attempts=1)
        return [self._to_scores(r, it) for r, it in zip(results, items, strict=True)]

    # -- the scorer contract ---------------------------------------------------------------
    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        """Score each step of one chain on the server.

        Args:
            question: the problem the chain answers.
            steps: the chain's steps.

        Returns:
            :class:`StepScores` with one probability per step, equal to the local scorer's.

        Raises:
            InvalidInputError: the server rejected the input (its message says why).
            ChainTooLongError: the chain is longer than the served model's max length.
            RemotePRMError: the server could not be reached after every retry.
        """
        return self.score_batch([(question, steps)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """Score many chains in one request; one :class:`StepScores` per item, in order."""
        payload = self._batch_payload(items)
        if not payload["items"]:
            return []
        body = self._request("POST", "/score", payload)
        return self._unpack_batch(body, payload["items"])

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        """Async :meth:`score` (non-blocking HTTP)."""
        return (await self.ascore_batch([(question, steps)]))[0]

    async def ascore_batch(
        self, items: Sequence[tuple[str, Sequence[str]]]
    ) -> list[StepScores]:
        """Async :meth:`score_batch` (non-blocking HTTP)."""
        payload = self._batch_payload(items)
        if not payload["items"]:
            return []
        body = await self._arequest("POST", "/score", payload)
        return self._unpack_batch(body, payload["items"])

    def health(self) -> dict[str, Any]:
        """The server's health answer (``{"status": "ok", "model": {...}}``).

        Raises:
            RemotePRMError: the server could not be reached after every retry.
        """
        body = self._request("GET", "/health")
        return dict(body) if isinstance(body, dict) else {"status": str(body)}
