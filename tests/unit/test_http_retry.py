"""The HTTP scorers' one retry policy (:class:`prm_plugins.backends.http.HTTPRetry`).

The policy is checked on real ``httpx.Response`` objects handed to it by a request callable
(what each client's request is), and ``RemotePRM`` is checked end to end against a stdlib HTTP
server on loopback that answers 503 with a ``Retry-After`` header, then 200. Waits are
measured by recording what the policy's ``sleep`` is asked for, never by wall-clock timing.
(:class:`~prm_plugins.VLLMPRM` runs the same policy; tests/integration/test_backend_vllm.py
checks its Retry-After against a fake vLLM server.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from prm_plugins.adapters.ray import RemotePRM, RemotePRMError
from prm_plugins.backends.http import RETRY_STATUSES, HTTPRetry, parse_retry_after
from prm_plugins.errors import InvalidInputError

httpx = pytest.importorskip("httpx", reason="the HTTP scorers need the remote extra")


class _GaveUp(Exception):
    """The error a client builds after the last attempt (here: carries the reason)."""


def _responses(*answers: Any) -> tuple[list[Any], Any]:
    """A request callable answering ``answers`` in order (an exception is raised)."""
    sent: list[Any] = []

    def request() -> Any:
        answer = answers[len(sent)]
        sent.append(answer)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return sent, request


def _policy(waits: list[float], **options: Any) -> HTTPRetry:
    return HTTPRetry(sleep=waits.append, **{"backoff_initial": 0.5, **options})


# -- the policy -------------------------------------------------------------------------------
def test_backoff_doubles_up_to_its_cap_and_retry_after_up_to_its_own() -> None:
    policy = HTTPRetry(backoff_initial=0.5, backoff_max=3.0, max_retry_after=20.0)
    assert [policy.wait(k) for k in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.wait(4, retry_after=0.0) == 0.0  # the server's wish wins over the backoff
    assert policy.wait(1, retry_after=7.0) == 7.0
    assert policy.wait(1, retry_after=3600.0) == 20.0


def test_transient_statuses_and_transport_errors_are_retried_then_answered() -> None:
    waits: list[float] = []
    ok = httpx.Response(200, json={"ok": True})
    sent, request = _responses(httpx.Response(503, text="loading"), httpx.ConnectError("refused"),
                               httpx.Response(429), httpx.Response(502), ok)
    got = _policy(waits, max_attempts=5).send(request, give_up=_GaveUp)
    assert got is ok and len(sent) == 5
    assert waits == [0.5, 1.0, 2.0, 4.0]  # no Retry-After: the backoff
    assert RETRY_STATUSES == {429, 502, 503, 504}


@pytest.mark.parametrize("status", [400, 404, 422, 500, 501])
def test_other_answers_are_handed_back_at_once(status: int) -> None:
    waits: list[float] = []
    answer = httpx.Response(status, json={"error": "no"})
    sent, request = _responses(answer)
    assert _policy(waits).send(request, give_up=_GaveUp) is answer
    assert len(sent) == 1 and waits == []


def test_after_the_last_attempt_the_clients_error_says_why() -> None:
    waits: list[float] = []
    sent, request = _responses(*[httpx.Response(503, text="warming up")] * 3)
    with pytest.raises(_GaveUp, match="^HTTP 503: warming up$"):
        _policy(waits, max_attempts=3).send(request, give_up=_GaveUp)
    assert len(sent) == 3 and waits == [0.5, 1.0]
    cause = httpx.ReadTimeout("timed out")
    _, request = _responses(cause, cause)
    with pytest.raises(_GaveUp, match="^ReadTimeout: timed out$") as exc:
        _policy(waits, max_attempts=2).send(request, give_up=_GaveUp)
    assert exc.value.__cause__ is cause  # the transport error stays in the traceback


def test_retry_after_is_waited_for_in_seconds_or_as_a_date_up_to_the_cap() -> None:
    waits: list[float] = []
    ok = httpx.Response(200)
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    _, request = _responses(httpx.Response(503, headers={"Retry-After": "7"}),
                            httpx.Response(429, headers={"Retry-After": when}),
                            httpx.Response(503, headers={"Retry-After": "3600"}),
                            httpx.Response(503, headers={"Retry-After": "soon"}), ok)
    assert _policy(waits, max_attempts=5, max_retry_after=60.0).send(
        request, give_up=_GaveUp) is ok
    assert waits[0] == 7.0 and 25.0 < waits[1] <= 30.0
    assert waits[2:] == [60.0, 4.0]  # an hour cut to the cap; an unreadable header: backoff


def test_the_async_loop_is_the_same_policy() -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    answers = iter([httpx.Response(503, headers={"Retry-After": "2"}),
                    httpx.ConnectError("refused"), httpx.Response(200)])

    async def request() -> Any:
        answer = next(answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    policy = HTTPRetry(backoff_initial=0.25, async_sleep=record)
    got = asyncio.run(policy.asend(request, give_up=_GaveUp))
    assert got.status_code == 200 and waits == [2.0, 0.5]


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120") == 120.0 and parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now=now) == 20.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:12:00 GMT", now=now) == 0.0
    assert parse_retry_after("-5") == 0.0 and parse_retry_after("inf") is None
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


@pytest.mark.parametrize(("option", "value", "message"), [
    ("max_attempts", 0, "max_attempts must be an int >= 1, got 0"),
    ("backoff_initial", -1, "backoff_initial must be a finite number of seconds >= 0"),
    ("max_retry_after", float("nan"), "max_retry_after must be a finite number"),
])
def test_bad_options_are_refused(option: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        HTTPRetry(**{option: value})


# -- RemotePRM honours Retry-After ------------------------------------------------------------
class _Server:
    """A stdlib HTTP server on loopback answering scripted (status, headers, body), then the
    last one again; it counts requests."""

    def __init__(self, *answers: tuple[int, dict[str, str], Any]) -> None:
        self.answers = list(answers)
        self.requests = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with lock:
                    status, headers, body = server.answers[min(server.requests,
                                                               len(server.answers) - 1)]
                    server.requests += 1
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"content-type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/prm"


@pytest.fixture
def busy_then_ok() -> Iterator[_Server]:
    ok = {"results": [{"step_scores": [0.25], "meta": {}}]}
    server = _Server((503, {"Retry-After": "7"}, {"error": "busy"}), (200, {}, ok))
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_remote_prm_waits_what_retry_after_asks(busy_then_ok: _Server) -> None:
    waits: list[float] = []
    with RemotePRM(busy_then_ok.url, max_attempts=3, backoff_initial=0.01) as prm:
        prm.retry = dataclasses.replace(prm.retry, sleep=waits.append)
        assert prm.score("w1", ["w2"]).scores == [0.25]
    assert busy_then_ok.requests == 2
    assert waits == [7.0]  # the server's 7 s, not the 0.01 s backoff


def test_remote_prm_async_waits_what_retry_after_asks(busy_then_ok: _Server) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    with RemotePRM(busy_then_ok.url, max_attempts=3, backoff_initial=0.01) as prm:
        prm.retry = dataclasses.replace(prm.retry, async_sleep=record)
        assert asyncio.run(prm.ascore("w1", ["w2"])).scores == [0.25]
    assert busy_then_ok.requests == 2 and waits == [7.0]


def test_remote_prm_caps_retry_after_and_reports_the_last_failure() -> None:
    server = _Server((503, {"Retry-After": "3600"}, {"error": "down for maintenance"}))
    waits: list[float] = []
    try:
        with RemotePRM(server.url, max_attempts=3, max_retry_after=5.0) as prm:
            assert prm.max_retry_after == 5.0 and prm.max_attempts == 3
            prm.retry = dataclasses.replace(prm.retry, sleep=waits.append)
            with pytest.raises(RemotePRMError, match=r"after 3 attempt\(s\): HTTP 503: .*"
                                                     "down for maintenance") as exc:
                prm.score("w1", ["w2"])
        assert exc.value.attempts == 3 and exc.value.url == server.url + "/score"
        assert server.requests == 3 and waits == [5.0, 5.0]
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
