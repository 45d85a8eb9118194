"""The ONNX scorer as a Ray Serve deployment, with dynamic batching and an HTTP JSON API.

Each replica loads the model once with :func:`prm_plugins.load_prm` (no scoring maths here)
and coalesces concurrent requests with ``@serve.batch`` into one ``score_batch`` call (run in
a worker thread, so the replica's event loop keeps answering health checks). A bad request in
a coalesced batch fails only itself: the batch is re-scored request by request to find it.

Routes (under the application's route prefix, e.g. ``/prm``):

* ``POST /score``: ``{"question", "steps"}`` -> ``{"step_scores", "meta"}``;
  ``{"items": [{"question", "steps"} | [question, steps], ...]}`` (or a bare JSON list of
  items) -> ``{"results": [{"step_scores", "meta"}, ...]}`` in input order.
* ``GET /health``: ``{"status": "ok", "model": {...}}``.
* ``POST /pooling``: vLLM's Pooling API (``{"model", "input": [[token ids], ...], "task":
  "token_classify"}`` -> ``{"data": [{"index", "data": [[p_wrong, p_right], ...]}], ...}``),
  answered by :func:`prm_plugins.adapters.ray.pooling.answer_pooling`, so
  :class:`~prm_plugins.backends.vllm.VLLMPRM` scores against this deployment as against
  ``vllm serve``.

Validation errors of the scorer answer HTTP 422 with ``{"error": {"type", "message"}}``;
a body that cannot be read as JSON (not UTF-8, not JSON, nested deeper than
:data:`prm_plugins.jsonl.MAX_DEPTH`, an integer longer than Python converts) answers 400 with
the reason. An unexpected error of the scorer on one request answers 500 for that request
alone (``{"error": {"type", "message", "item"}}``, ``item`` being the index of the chain
that failed): a coalesced batch is re-scored request by request, and a failing request chain
by chain, to find it, and it is not worth a retry (the same chain fails the same way).
:class:`~prm_plugins.adapters.ray.RemotePRM` turns these answers back into the local
exception class and retries only 429, 502, 503, 504, timeouts and connection errors. Python
callers inside the cluster can skip HTTP: ``handle.score_items.remote(items)`` on the
deployment handle returns plain dicts.

The request handling (:func:`handle_request`, :func:`score_requests`) is plain asyncio over
any :class:`~prm_plugins.StepScorer`; :class:`PRMServer` only binds it to Serve.

Examples:
    >>> from prm_plugins.adapters.ray import RemotePRM, serve_prm
    >>> url = serve_prm(num_replicas=2, num_cpus=1, max_batch_size=32)  # doctest: +SKIP
    >>> RemotePRM(url).score("2 + 3 = ?", ["2 + 3 = 5"])  # doctest: +SKIP

    From the shell, on a cluster (see the README)::

        serve run prm_plugins.adapters.ray.serve:app_builder num_replicas=4 num_gpus=0.5
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prm_plugins.adapters.ray.pooling import answer_pooling
from prm_plugins.errors import ChainTooLongError, InvalidInputError, PRMError, missing_extra
from prm_plugins.jsonl import JSONLineError, loads_line
from prm_plugins.scoring import ascore_isolated, score_isolated
from prm_plugins.validation import check_count

try:
    from ray import serve
    from ray.serve import Application
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("ray", "ray") from exc

__all__ = ["PRMServer", "app_builder", "build_app", "handle_request", "score_items",
           "score_requests", "serve_prm"]

logger = logging.getLogger(__name__)

#: HTTP status of a scorer validation error.
VALIDATION_STATUS = 422
#: HTTP status of a request body that cannot be read as JSON.
BAD_BODY_STATUS = 400
#: HTTP status of an unexpected scorer error (not retried by the client).
SERVER_ERROR_STATUS = 500


def _dumps(payload: Any) -> str:
    """Strict JSON (no NaN), with whatever ``meta`` holds written as text."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, default=str)


def _json_response(payload: Any, status: int = 200) -> Any:
    from starlette.responses import Response

    return Response(_dumps(payload), status_code=status, media_type="application/json")


class _FailedChain(Exception):
    """An unexpected scorer error on chain ``item`` of a request (``cause`` is the error)."""

    def __init__(self, cause: BaseException, item: int | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.item = item


def _error_payload(exc: BaseException) -> dict[str, Any]:
    item = exc.item if isinstance(exc, _FailedChain) else None
    if isinstance(exc, _FailedChain):
        exc = exc.cause
    err: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc) or repr(exc)}
    if isinstance(exc, ChainTooLongError):
        err.update(n_tokens=exc.n_tokens, max_length=exc.max_length)
    if item is not None:
        err["item"] = item
        err["message"] = f"item {item}: {err['message']}"
    return {"error": err}


def _result(scores: Any) -> dict[str, Any]:
    """The wire form of one chain's scores; a score that is not a finite probability in
    [0, 1] (a model emitting NaN) is a :class:`PRMError`, never a bare ``NaN`` on the wire."""
    values = [float(s) for s in scores.scores]
    for i, v in enumerate(values):
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise PRMError(f"the served model returned {v!r} for step {i + 1}; step scores "
                           "must be finite probabilities in [0, 1]")
    meta = dict(scores.meta)
    try:
        _dumps(meta)
    except ValueError:  # NaN/inf inside meta: written as text rather than invalid JSON
        meta = json.loads(json.dumps(meta, default=str), parse_constant=str)
    return {"step_scores": values, "meta": meta}


def _parse_body(body: Any) -> tuple[list[Any], bool]:
    """(items for ``score_batch``, whether the request was a single chain)."""
    if isinstance(body, dict) and "items" not in body:
        return [(body.get("question"), body.get("steps"))], True
    raw = body.get("items") if isinstance(body, dict) else body
    if not isinstance(raw, list):
        raise InvalidInputError(
            "the body must be {\"question\": str, \"steps\": [str]} or {\"items\": [...]} "
            f"(a list of such objects or [question, steps] pairs); got {type(raw).__name__}")
    items = [(it.get("question"), it.get("steps")) if isinstance(it, dict) else it
             for it in raw]
    return items, False


def _score_items_sync(prm: Any, items: list[Any]) -> list[Any]:
    """``prm.score_batch(items)``; on an unexpected error, find the chain that fails.

    Returns the scores, or raises :class:`_FailedChain` naming the first failing chain (the
    project's own validation errors are raised as they are, for the whole request, as the
    local scorer raises them).
    """
    if not items:
        return list(prm.score_batch(items))

    def log(exc: BaseException, n: int) -> None:
        logger.error("the scorer failed on a request of %d chain(s): %s: %s", n,
                     type(exc).__name__, exc, exc_info=exc)

    scored = score_isolated(prm.score_batch, items, score_one=lambda item: prm.score_batch([item]),
                            propagate=(PRMError,), stop_on=(Exception,), on_batch_error=log)
    if scored.batch_error is None:
        return scored.results
    if len(items) > 1:
        for k, one in enumerate(scored.results):
            if isinstance(one, Exception):
                raise _FailedChain(one, k) from None
    raise _FailedChain(scored.batch_error, 0 if len(items) == 1 else None) from None


async def score_requests(prm: Any, requests: Sequence[list[Any]]) -> list[Any]:
    """Score many requests' items in one ``score_batch`` call (in a worker thread).

    Each request's answer is its list of :class:`~prm_plugins.StepScores` or the exception
    that request alone raises: when the coalesced batch fails, the requests are scored one
    by one, so a hostile request never fails its neighbours.
    """
    flat = [item for req in requests for item in req]

    async def score_all(reqs: list[list[Any]]) -> list[Any]:
        return await asyncio.to_thread(_score_items_sync, prm, flat)

    async def score_one(req: list[Any]) -> list[Any]:
        return await asyncio.to_thread(_score_items_sync, prm, list(req))

    result = await ascore_isolated(score_all, list(requests), score_one=score_one)
    if result.isolated:  # each request's own scores or error
        return result.results
    scored = result.results
    if len(scored) != len(flat):
        err = PRMError(f"the scorer returned {len(scored)} results for {len(flat)} chains")
        return [err for _ in requests]
    out: list[Any] = []
    start = 0
    for req in requests:
        out.append(scored[start:start + len(req)])
        start += len(req)
    return out


async def score_items(prm: Any, items: Sequence[Any]) -> list[dict[str, Any]]:
    """Score one request's items without Serve's batcher (the wire form of each result).

    Raises:
        Exception: the request's own error (see :func:`score_requests`).
    """
    (result,) = await score_requests(prm, [list(items)])
    if isinstance(result, BaseException):
        raise result
    return [_result(s) for s in result]


async def handle_request(
    method: str, path: str, body: bytes, *, score: Any, model_info: Any, pooling: Any = None
) -> tuple[int, dict[str, Any]]:
    """Answer one HTTP request: ``(status, JSON payload)``; never raises.

    Args:
        method: ``"GET"`` or ``"POST"``.
        path: the URL path (the route prefix included).
        body: the raw request body.
        score: ``async items -> list of {"step_scores", "meta"}`` that raises the error of a
            request that fails, e.g. ``functools.partial(score_items, prm)``.
        model_info: ``() -> dict`` for the health answer.
        pooling: ``async body -> (status, JSON)`` answering vLLM's ``POST /pooling``, e.g.
            ``functools.partial(answer_pooling, prm)``; ``None``: no such route.
    """
    path = path.rstrip("/")
    if method == "GET" and path.endswith("/health"):
        return 200, {"status": "ok", "model": model_info()}
    if method == "POST" and path.endswith("/pooling") and pooling is not None:
        status, payload = await pooling(body)
        return status, payload
    if method != "POST" or not path.endswith("/score"):
        pool = ", POST <prefix>/pooling" if pooling is not None else ""
        return 404, {"error": {
            "type": "NotFound",
            "message": f"no route {method} {path}; use POST <prefix>/score{pool} or GET "
                       "<prefix>/health"}}
    try:
        parsed = loads_line(body)
    except JSONLineError as exc:
        return BAD_BODY_STATUS, _error_payload(InvalidInputError(
            f"the request body cannot be read: {exc}; send "
            "{\"question\": str, \"steps\": [str]} or {\"items\": [...]}"))
    try:
        items, single = _parse_body(parsed)
        results = await score(items)
        payload = results[0] if single else {"results": results}
        _dumps(payload)  # anything not strict JSON fails here, as this request's error
    except (InvalidInputError, ChainTooLongError) as exc:
        return VALIDATION_STATUS, _error_payload(exc)
    except Exception as exc:  # noqa: BLE001 - reported to the client as a 500
        logger.exception("scoring failed")
        return SERVER_ERROR_STATUS, _error_payload(exc)
    return 200, payload


@serve.deployment(name="PRMServer")
class PRMServer:
    """One replica: a loaded :class:`~prm_plugins.OnnxPRM` behind ``@serve.batch``.

    Args:
        model_dir: model directory (``None``: the shipped default PRM). It must exist on
            every node that runs a replica.
        load_kwargs: keyword arguments for :func:`prm_plugins.load_prm` (``device``,
            ``long_chains``, ``intra_op_num_threads``, ``checks``, ...).
        max_batch_size: most requests coalesced into one ``score_batch`` call.
        batch_wait_timeout_s: longest a request waits for others to join its batch.
    """

    def __init__(self, model_dir: str | None, load_kwargs: Mapping[str, Any] | None = None,
                 max_batch_size: int = 16, batch_wait_timeout_s: float = 0.005) -> None:
        from prm_plugins.runtime import OnnxPRM, load_prm

        prm = load_prm(model_dir, **dict(load_kwargs or {}))
        if not isinstance(prm, OnnxPRM):
            raise InvalidInputError(f"a Serve replica runs a model directory, not the served "
                                    f"PRM at {model_dir!r}; call that one directly")
        self.prm = prm
        batched: Any = self._score_requests  # a serve.batch wrapper
        batched.set_max_batch_size(int(max_batch_size))
        batched.set_batch_wait_timeout_s(float(batch_wait_timeout_s))
        logger.info("PRM replica ready (pid %d): %r", os.getpid(), self.prm)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _score_requests(self, requests: list[list[Any]]) -> list[Any]:
        """Score many requests' items in one call; each answer is its list or its error."""
        return await score_requests(self.prm, requests)

    async def score_items(self, items: list[Any]) -> list[dict[str, Any]]:
        """Score ``(question, steps)`` items through the batcher (for deployment handles).

        Returns:
            One ``{"step_scores", "meta"}`` dict per item, in order.

        Raises:
            PRMError: the scorer's own error for invalid input.
        """
        if not items:
            return []
        result = await self._score_requests(list(items))
        if isinstance(result, _FailedChain):
            raise result.cause
        if isinstance(result, BaseException):
            raise result
        return [_result(s) for s in result]

    async def _score_http(self, items: list[Any]) -> list[dict[str, Any]]:
        result = await self._score_requests(list(items))
        if isinstance(result, BaseException):
            raise result  # a _FailedChain keeps the failing chain's index for the answer
        return [_result(s) for s in result]

    async def _pool(self, body: bytes) -> tuple[int, dict[str, Any]]:
        return await answer_pooling(self.prm, body)

    def _model_info(self) -> dict[str, Any]:
        prm = self.prm
        return {"model_dir": str(prm.model_dir), "format": prm.manifest.format,
                "provider": prm.provider, "max_length": prm.max_length,
                "checks": list(prm.checks), "pid": os.getpid()}

    async def __call__(self, request: Any) -> Any:
        body = await request.body() if request.method == "POST" else b""
        status, payload = await handle_request(
            request.method, request.url.path, body, score=self._score_http,
            model_info=self._model_info, pooling=self._pool)
        return _json_response(payload, status)

    def check_health(self) -> None:
        """Serve's replica health check: the model session must be loaded."""
        if getattr(self.prm, "_session", None) is None:
            raise RuntimeError("the PRM replica has no ONNX Runtime session")


def build_app(
    model_dir: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    num_replicas: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    max_batch_size: int = 16,
    batch_wait_timeout_s: float = 0.005,
    max_ongoing_requests: int | None = None,
    intra_op_num_threads: int | None = None,
    health_check_period_s: float = 10.0,
    health_check_timeout_s: float = 30.0,
    load_kwargs: Mapping[str, Any] | None = None,
) -> Application:
    """The PRM deployment, bound and ready for ``serve.run``.

    Args:
        model_dir: model directory (``None``: the shipped default PRM). On a cluster it must
            be readable at the same path on every node that runs a replica.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` for :func:`load_prm`.
        num_replicas: replicas (each loads the model once).
        num_cpus: CPUs reserved per replica.
        num_gpus: GPUs per replica (fractions share one GPU, e.g. ``0.5``).
        max_batch_size: most requests coalesced into one ``score_batch`` call.
        batch_wait_timeout_s: longest a request waits for others to join its batch.
        max_ongoing_requests: requests a replica accepts at once (default
            ``max(2 * max_batch_size, 8)``).
        intra_op_num_threads: ONNX Runtime threads per replica (default: ``num_cpus``
            rounded, at least 1, so replicas on one node do not oversubscribe it).
        health_check_period_s: seconds between Serve's replica health checks.
        health_check_timeout_s: seconds a health check may take.
        load_kwargs: more :func:`load_prm` keyword arguments (``long_chains``, ``checks``...).

    Returns:
        A Ray Serve :class:`~ray.serve.Application`.

    Raises:
        InvalidInputError: for a non-positive replica count or batch size.
    """
    check_count(num_replicas, "num_replicas")
    check_count(max_batch_size, "max_batch_size")
    if num_cpus < 0 or num_gpus < 0:
        raise InvalidInputError(
            f"num_cpus and num_gpus must be >= 0, got {num_cpus!r} and {num_gpus!r}")
    kwargs: dict[str, Any] = {"device": device, **dict(load_kwargs or {})}
    if intra_op_num_threads is None:
        intra_op_num_threads = max(1, round(num_cpus))
    kwargs.setdefault("intra_op_num_threads", intra_op_num_threads)
    path = None if model_dir is None else str(Path(model_dir).resolve())
    deployment: Any = PRMServer  # a serve.Deployment
    return deployment.options(
        num_replicas=num_replicas,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
        max_ongoing_requests=max_ongoing_requests or max(2 * max_batch_size, 8),
        health_check_period_s=health_check_period_s,
        health_check_timeout_s=health_check_timeout_s,
    ).bind(path, kwargs, max_batch_size, batch_wait_timeout_s)


def app_builder(args: Mapping[str, str]) -> Application:
    """Builder for ``serve run prm_plugins.adapters.ray.serve:app_builder key=value ...``.

    Keys: ``model_dir``, ``device``, ``num_replicas``, ``num_cpus``, ``num_gpus``,
    ``max_batch_size``, ``batch_wait_timeout_s``, ``max_ongoing_requests``,
    ``intra_op_num_threads``, ``long_chains``.
    """
    casts: dict[str, Any] = {"num_replicas": int, "num_cpus": float, "num_gpus": float,
                             "max_batch_size": int, "batch_wait_timeout_s": float,
                             "max_ongoing_requests": int, "intra_op_num_threads": int,
                             "model_dir": str, "device": str}
    kwargs: dict[str, Any] = {}
    load_kwargs: dict[str, Any] = {}
    for key, value in args.items():
        if key == "long_chains":
            load_kwargs["long_chains"] = value
        elif key in casts:
            try:
                kwargs[key] = casts[key](value)
            except ValueError:
                raise InvalidInputError(f"{key}={value!r} is not a valid "
                                        f"{casts[key].__name__}") from None
        else:
            raise InvalidInputError(f"unknown argument {key!r}; known: "
                                    f"{', '.join(sorted([*casts, 'long_chains']))}")
    return build_app(**kwargs, load_kwargs=load_kwargs)


def serve_prm(
    model_dir: str | os.PathLike[str] | None = None,
    *,
    name: str = "prm",
    route_prefix: str = "/prm",
    host: str = "127.0.0.1",
    port: int = 8000,
    **build_kwargs: Any,
) -> str:
    """Start (or update) the PRM application on the connected Ray cluster.

    Calls ``ray.init`` when Ray is not initialised yet (joining ``RAY_ADDRESS`` if set,
    else a local cluster), starts Serve's HTTP proxy on ``host:port``, deploys
    :func:`build_app` and waits until every replica is healthy.

    Args:
        model_dir: model directory (``None``: the shipped default PRM).
        name: Serve application name.
        route_prefix: URL prefix of the routes.
        host: HTTP host of Serve's proxy (``"0.0.0.0"`` to serve other machines).
        port: HTTP port of Serve's proxy.
        **build_kwargs: passed to :func:`build_app` (``num_replicas``, ``num_gpus``, ...).

    Returns:
        The base URL for :class:`~prm_plugins.adapters.ray.RemotePRM`.
    """
    app = build_app(model_dir, **build_kwargs)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=name, route_prefix=route_prefix)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}{route_prefix.rstrip('/')}"
