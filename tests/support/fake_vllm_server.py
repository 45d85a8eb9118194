"""A local HTTP server that speaks vLLM's Pooling API, backed by a real ONNX PRM.

Written from vLLM v0.18's documented schema, independently of
``prm_plugins.backends.pooling`` (so the client is checked against the documentation, not
against itself):

* ``POST /pooling`` takes ``PoolingCompletionRequest`` (``vllm/entrypoints/pooling/pooling/
  protocol.py``; fields from ``vllm/entrypoints/pooling/base/protocol.py``): ``model``,
  ``input`` (``list[int] | list[list[int]] | str | list[str]``), ``task``,
  ``encoding_format`` (``"float"``), ``truncate_prompt_tokens``, ``add_special_tokens``.
* It answers ``PoolingResponse``: ``{"id", "object": "list", "created", "model", "data":
  [{"index", "object": "pooling", "data": rows}], "usage": {"prompt_tokens",
  "total_tokens", "completion_tokens"}}``, and errors as ``ErrorResponse``: ``{"error":
  {"message", "type", "param", "code"}}`` (``vllm/entrypoints/openai/engine/protocol.py``).
* ``rows`` follow ``StepPool`` / ``AllPool`` (``vllm/model_executor/layers/pooler/tokwise/
  methods.py``): ALL pooling gives one row per token; STEP pooling keeps the columns
  ``returned_token_ids`` and the rows whose token is ``step_tag_id``. A row is the softmax
  over two labels; here it comes from the ONNX graph's per-token P(right) ``p``: ``[1 - p,
  p]`` for a two-label head (Qwen2.5-Math-PRM: ``[P(wrong), P(right)]``), ``[p, 1 - p]``
  when ``returned_token_ids`` lists the good token first (Math-Shepherd's ``[+, -]``).

Why a stand-in and not vLLM: vLLM needs a GPU build and a model it can load; the test
checks the client against the protocol and the ONNX path's numbers, on the CPU.

Faults are scripted: :meth:`FakeVLLMServer.script` queues canned answers (status, headers,
body, delay) served before real ones, and every request is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

__all__ = ["Canned", "FakeVLLMServer"]


@dataclass
class Canned:
    """One scripted answer: ``body`` is sent as it is (``bytes``/``str``) or as JSON."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: ``True``: answer the real scores after the delay (a slow server).
    real: bool = False


def _error(status: int, message: str, kind: str, param: str | None = None) -> tuple[int, Any]:
    return status, {"error": {"message": message, "type": kind, "param": param, "code": status}}


class FakeVLLMServer:
    """``vllm serve MODEL --runner pooling`` in miniature, on 127.0.0.1.

    Args:
        prm: an :class:`~prm_plugins.OnnxPRM` whose graph gives per-token P(right)
            (``run_graph``) and whose tokenizer reads text inputs.
        model_name: the served model name (requests naming another get 404).
        pooling_type: ``"ALL"`` or ``"STEP"`` (vLLM's ``--pooler-config`` pooling_type).
        step_tag_id: STEP pooling's token id.
        good_first: rows ``[P(right), P(wrong)]`` (``returned_token_ids`` good first).
        max_model_len: longest input accepted (400 beyond, as vLLM answers).
    """

    def __init__(self, prm: Any, *, model_name: str = "tiny-prm", pooling_type: str = "ALL",
                 step_tag_id: int | None = None, good_first: bool = False,
                 max_model_len: int = 4096) -> None:
        self.prm = prm
        self.model_name = model_name
        self.pooling_type = pooling_type
        self.step_tag_id = step_tag_id
        self.good_first = good_first
        self.max_model_len = max_model_len
        self.requests: list[dict[str, Any]] = []
        self._script: list[Canned] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> FakeVLLMServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                n = int(self.headers.get("Content-Length") or 0)
                server._handle(self, self.path, self.rfile.read(n))

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def script(self, *answers: Canned) -> None:
        """Serve these answers, in order, before real ones."""
        with self._lock:
            self._script.extend(answers)

    # -- the protocol ----------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, path: str, raw: bytes) -> None:
        with self._lock:
            canned = self._script.pop(0) if self._script else None
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            self.requests.append({"path": path, "body": body, "time": time.monotonic(),
                                  "headers": dict(handler.headers)})
        if canned is not None:
            time.sleep(canned.delay)
            if not canned.real:
                self._send(handler, canned.status, canned.body, canned.headers)
                return
        status, payload = self.answer(path, body)
        self._send(handler, status, payload, {})

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: Any,
              headers: dict[str, str]) -> None:
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                handler.send_header(k, v)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def _inputs(self, body: dict[str, Any]) -> list[list[int]] | tuple[int, Any]:
        raw = body.get("input")
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            return _error(400, "input must be a non-empty string, list of strings, or "
                          "list of token-id lists", "BadRequestError", "input")
        seqs = []
        for x in raw:
            if isinstance(x, str):
                seqs.append(self.prm.tokenizer.encode(
                    x, add_special_tokens=body.get("add_special_tokens", True)).ids)
            elif isinstance(x, list) and x and all(isinstance(t, int) for t in x):
                seqs.append(list(x))
            else:
                return _error(400, "each input must be a string or a list of token ids",
                              "BadRequestError", "input")
        return seqs

    def answer(self, path: str, body: Any) -> tuple[int, Any]:
        """``(status, JSON)`` for one request, as vLLM's ``create_pooling`` answers it."""
        if path != "/pooling":
            return _error(404, f"Not Found: {path}", "NotFoundError")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object", "BadRequestError")
        model = body.get("model")
        if model is not None and model != self.model_name:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        if body.get("task", "token_classify") != "token_classify":
            return _error(400, f"Unsupported task: {body.get('task')!r}", "BadRequestError",
                          "task")
        if body.get("encoding_format", "float") != "float":
            return _error(400, "only float encoding is served here", "BadRequestError")
        seqs = self._inputs(body)
        if isinstance(seqs, tuple):
            return seqs
        for s in seqs:
            if len(s) > self.max_model_len:
                return _error(400, f"This model's maximum context length is "
                              f"{self.max_model_len} tokens. However, you requested {len(s)} "
                              "tokens in the input. Please reduce the length of the input.",
                              "BadRequestError")
        data = [{"index": i, "object": "pooling", "data": self._rows(s)}
                for i, s in enumerate(seqs)]
        n = sum(len(s) for s in seqs)
        return 200, {"id": "pool-fake", "object": "list", "created": int(time.time()),
                     "model": self.model_name, "data": data,
                     "usage": {"prompt_tokens": n, "total_tokens": n, "completion_tokens": 0}}

    def _rows(self, ids: list[int]) -> list[list[float]]:
        probs = self.prm.run_graph(np.asarray([ids], dtype=np.int64),
                                   np.ones((1, len(ids)), dtype=np.int64))[0]
        rows = [[float(p), 1.0 - float(p)] if self.good_first else [1.0 - float(p), float(p)]
                for p in probs]
        if self.pooling_type == "STEP" and self.step_tag_id is not None:
            rows = [r for r, t in zip(rows, ids, strict=True) if t == self.step_tag_id]
        return rows
