"""vLLM's ``POST /pooling`` answered by the project's ONNX scorer (used by the Serve deployment).

So that :class:`~prm_plugins.backends.vllm.VLLMPRM` does not care whether vLLM or this
project's Ray Serve deployment serves the PRM, the deployment answers the same request and
response bodies (the protocol, with the vLLM v0.18 sources it follows, is in
:mod:`prm_plugins.backends.pooling`):

* request: ``{"model", "input", "task", "encoding_format", ...}`` with ``input`` token ids
  (``list[int]`` or ``list[list[int]]``) or text (``str`` or ``list[str]``, tokenised with
  the model's tokenizer; ``add_special_tokens`` as vLLM reads it); ``task`` absent or
  ``"token_classify"``; ``encoding_format`` absent or ``"float"``;
  ``truncate_prompt_tokens`` is refused (chains are never truncated silently);
* answer: ``ALL`` pooling, one row per token, ``[P(wrong), P(right)]`` (``[P(right),
  P(wrong)]`` for Math-Shepherd models, as vLLM answers with ``returned_token_ids`` =
  ``[+, -]``: :func:`prm_plugins.backends.pooling.correct_column`), from the graph's
  per-token ``step_probs``; calibration and step checks are the client's (as in the ONNX
  path, they are applied after the model);
* errors: vLLM's ``{"error": {"message", "type", "param", "code"}}``: 400 for a request it
  cannot take (including an input longer than the model's ``max_length``), 500 for a graph
  that fails. Any ``model`` name is accepted; the answer names the model directory.

No Ray here: :func:`answer_pooling` is plain asyncio over a loaded
:class:`~prm_plugins.OnnxPRM`, and :class:`~prm_plugins.adapters.ray.serve.PRMServer`
routes ``POST <prefix>/pooling`` to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import numpy as np

from prm_plugins.backends.pooling import correct_column, token_rows
from prm_plugins.jsonl import JSONLineError, loads_line

__all__ = ["answer_pooling"]

logger = logging.getLogger(__name__)


class _Refused(Exception):
    """A request the server does not take: answered 400 with vLLM's error shape."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _error(status: int, message: str, kind: str, param: str | None = None
           ) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": kind, "param": param,
                              "code": status}}


def _is_ids(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in value))


def _inputs(prm: Any, body: dict[str, Any]) -> list[list[int]]:
    """The request's inputs as token-id lists, checked against the model."""
    raw = body.get("input")
    if isinstance(raw, str) or _is_ids(raw):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise _Refused("'input' must be a string, a list of strings, a list of token ids or a "
                       "list of token-id lists, and not empty", "input")
    special = body.get("add_special_tokens", True)
    vocab = int(prm.tokenizer.get_vocab_size(with_added_tokens=True))
    seqs = []
    for k, x in enumerate(raw):
        if isinstance(x, str):
            ids = list(prm.tokenizer.encode(x, add_special_tokens=bool(special)).ids)
        elif _is_ids(x):
            ids = list(x)
        else:
            raise _Refused(f"input {k} is neither text nor a non-empty list of token ids",
                           "input")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise _Refused(f"input {k} holds token id(s) {bad[:5]} outside the vocabulary "
                           f"(0..{vocab - 1})", "input")
        if len(ids) > prm.max_length:
            raise _Refused(f"This model's maximum context length is {prm.max_length} tokens. "
                           f"However, you requested {len(ids)} tokens in input {k}. Please "
                           "reduce the length of the input.", "input")
        seqs.append(ids)
    return seqs


def _check_options(body: Any) -> None:
    if not isinstance(body, dict):
        raise _Refused("the body must be a JSON object (vLLM's PoolingCompletionRequest)")
    if body.get("task") not in (None, "token_classify"):
        raise _Refused(f"task {body.get('task')!r} is not served here; use 'token_classify'",
                       "task")
    if body.get("encoding_format") not in (None, "float"):
        raise _Refused("only encoding_format 'float' is served here", "encoding_format")
    if body.get("truncate_prompt_tokens") not in (None, -1):
        raise _Refused("truncate_prompt_tokens is not served here: a chain is never truncated "
                       "silently; send chains that fit", "truncate_prompt_tokens")
    if body.get("model") is not None and not isinstance(body.get("model"), str):
        raise _Refused("'model' must be a string", "model")


def _per_token(prm: Any, seqs: list[list[int]]) -> list[np.ndarray]:
    """The graph's per-token P(right) for each sequence, in token-budget batches."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out: list[np.ndarray | None] = [None] * len(seqs)
    budget = max(int(getattr(prm, "token_budget", 8192)), prm.max_length)
    cap = int(getattr(prm, "max_batch_size", 64))
    start = 0
    while start < len(order):
        end = start + 1
        while (end < len(order) and end - start < cap
               and (end - start + 1) * len(seqs[order[end]]) <= budget):
            end += 1
        rows = order[start:end]
        length = len(seqs[rows[-1]])
        ids = np.zeros((len(rows), length), dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, i in enumerate(rows):
            ids[r, :len(seqs[i])] = seqs[i]
            mask[r, :len(seqs[i])] = 1
        probs = prm.run_graph(ids, mask)
        for r, i in enumerate(rows):
            out[i] = np.asarray(probs[r, :len(seqs[i])], dtype=np.float64)
        start = end
    return out  # type: ignore[return-value]


async def answer_pooling(prm: Any, body: bytes, *, model_name: str | None = None
                         ) -> tuple[int, dict[str, Any]]:
    """Answer one ``POST /pooling`` request as vLLM would: ``(status, JSON)``; never raises.

    Args:
        prm: a loaded :class:`~prm_plugins.OnnxPRM` (its graph, tokenizer, format).
        body: the raw request body.
        model_name: the name the answer gives (default: the model directory's name).
    """
    try:
        parsed = loads_line(body)
    except JSONLineError as exc:
        return _error(400, f"the request body cannot be read as JSON: {exc}", "BadRequestError")
    try:
        _check_options(parsed)
        seqs = _inputs(prm, parsed)
        probs = await asyncio.to_thread(_per_token, prm, seqs)
    except _Refused as exc:
        return _error(400, str(exc), "BadRequestError", exc.param)
    except Exception as exc:  # noqa: BLE001 - the graph failed: a 500 for this request
        logger.exception("pooling failed")
        return _error(500, f"{type(exc).__name__}: {exc}", "InternalServerError")
    column = correct_column(prm.manifest.format)
    n_tokens = sum(len(s) for s in seqs)
    name = parsed.get("model") or model_name or prm.model_dir.name
    return 200, {
        "id": f"pool-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
        "model": name,
        "data": [{"index": i, "object": "pooling", "data": token_rows(p.tolist(), column)}
                 for i, p in enumerate(probs)],
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens, "completion_tokens": 0},
    }
