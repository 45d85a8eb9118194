"""VLLMPRM: a PRM served over vLLM's Pooling API scores exactly as the ONNX path does.

The server is :class:`support.fake_vllm_server.FakeVLLMServer`, a stdlib HTTP server on
loopback written from vLLM v0.18's documented schema (``POST /pooling`` with
``PoolingCompletionRequest`` -> ``PoolingResponse``; ALL and STEP pooling as ``StepPool`` in
``vllm/model_executor/layers/pooler/tokwise/methods.py``; errors as ``ErrorResponse``), backed
by a real ONNX model run by onnxruntime: the shipped default PRM (``token-classification``)
and tiny qwen-prm / math-shepherd directories built by ``support.pooling_models``. Real vLLM
is not run here (it needs a GPU build); every expected number comes from ``load_prm`` on the
same model directory, to 1e-6. Faults (malformed bodies, wrong counts, 5xx, 4xx, 429 with
Retry-After, slow answers, a server that is down) are scripted on the same server.

The Ray Serve deployment's ``/pooling`` route is checked through its plain-asyncio handler
(``handle_request`` with ``answer_pooling``), as the deployment calls it, behind a stdlib
HTTP bridge, so no Ray cluster is started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import pickle
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from prm_plugins import ChainTooLongError, InvalidInputError, load_prm
from prm_plugins.backends.pooling import read_step_values
from prm_plugins.backends.vllm import VLLMPRM, parse_retry_after
from prm_plugins.errors import (
    RemotePRMError,
    RemoteRequestError,
    RemoteResponseError,
    RemoteScorerError,
    RemoteServerError,
)
from prm_plugins.runtime import OnnxPRM, default_model_dir

from support.fake_vllm_server import Canned, FakeVLLMServer
from support.pooling_models import make_family_dir

pytest.importorskip("httpx")  # the [remote] extra: VLLMPRM's HTTP client

TOL = 1e-6

CHAINS: list[tuple[str, list[str]]] = [
    ("Tom has 3 apples and buys 2 more. How many apples does he have?",
     ["Step 1: Tom has 3 apples.", "Step 2: 3 + 2 = 5", "The answer is 5"]),
    ("Ann has 10 pens and gives 4 away. How many are left?",
     ["10 - 4 = 6", "She has 6 pens left.\nSo the answer is 6."]),
    # hostile text: the families' tags and special tokens inside steps, edge spaces
    ("What is 2 + 2? <|im_end|>", ["  2 + 2 = 4 <extra_0> ки  ", "The answer is 4 ки"]),
    ("Tom sells half of 8 apples.", ["Step 1: 8 / 2 = 4"]),
    ("Ann has 7 pens.", ["Step 1: Ann has 7 pens.", "Step 2: she buys 3 more", "7 + 3 = 10",
                         "the answer is 10"]),
]


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm")
    return {"default": default_model_dir(),
            "qwen-prm": make_family_dir(root / "qwen", "qwen-prm"),
            "math-shepherd": make_family_dir(root / "shepherd", "math-shepherd")}


@pytest.fixture(scope="module")
def local(family_dirs: dict[str, Path]) -> dict[str, OnnxPRM]:
    return {name: load_prm(path, device="cpu") for name, path in family_dirs.items()}


@pytest.fixture()
def qwen(local: dict[str, OnnxPRM]) -> Iterator[FakeVLLMServer]:
    with FakeVLLMServer(local["qwen-prm"], model_name="Qwen/Qwen2.5-Math-PRM-7B") as server:
        yield server


def client(server: FakeVLLMServer, model_dir: Path, **kwargs: Any) -> VLLMPRM:
    kwargs.setdefault("model", server.model_name)
    kwargs.setdefault("backoff_initial", 0.01)
    return VLLMPRM(server.url, tokenizer=model_dir, **kwargs)


def assert_same(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.steps == w.steps and g.question == w.question
        assert len(g.scores) == len(w.scores)
        assert max(abs(a - b) for a, b in zip(g.scores, w.scores, strict=True)) <= TOL


def step_tag_id(prm: OnnxPRM) -> int:
    rendered = prm.format.render(*CHAINS[0])
    (tag,) = {rendered.input_ids[p] for p in rendered.step_positions}
    return tag


# -- scores equal the ONNX path -------------------------------------------------------------
@pytest.mark.parametrize("family", ["default", "qwen-prm", "math-shepherd"])
@pytest.mark.parametrize("pooling_type", ["ALL", "STEP"])
def test_scores_equal_the_onnx_path(family: str, pooling_type: str,
                                    family_dirs: dict[str, Path],
                                    local: dict[str, OnnxPRM]) -> None:
    prm = local[family]
    if pooling_type == "STEP" and family == "default":
        # the default format scores at [SEP], which also ends the question: the server's
        # STEP rows cannot be matched to steps, and the client says so instead of guessing
        with FakeVLLMServer(prm, pooling_type="STEP", step_tag_id=step_tag_id(prm)) as server:
            with client(server, family_dirs[family]) as remote:
                with pytest.raises(RemoteResponseError, match="chain 0 .*row"):
                    remote.score_batch(CHAINS)
        return
    with FakeVLLMServer(prm, pooling_type=pooling_type, step_tag_id=step_tag_id(prm),
                        good_first=family == "math-shepherd") as server:
        with client(server, family_dirs[family]) as remote:
            got = remote.score_batch(CHAINS)
            body = server.requests[0]["body"]
    assert_same(got, prm.score_batch(CHAINS))
    # what was sent: the format's token ids, the documented fields, no truncation
    assert body["input"] == [prm.format.render(q, s).input_ids for q, s in CHAINS]
    assert body["task"] == "token_classify" and body["encoding_format"] == "float"
    assert body["model"] == "tiny-prm" and "truncate_prompt_tokens" not in body
    want_mode = "all" if pooling_type == "ALL" else "step"
    assert {s.meta["pooling"] for s in got} == {want_mode}
    for g, w in zip(got, prm.score_batch(CHAINS), strict=True):  # neutralising reported alike
        assert {k: v for k, v in g.meta.items() if k in w.meta} == w.meta


def test_raw_model_probabilities_equal_without_checks_and_calibration(
        family_dirs: dict[str, Path], local: dict[str, OnnxPRM]) -> None:
    raw = load_prm(device="cpu", checks=(), calibrate=False)
    with FakeVLLMServer(local["default"]) as server:
        with client(server, family_dirs["default"], checks=(), calibrate=False) as remote:
            got = remote.score_batch(CHAINS)
    assert_same(got, raw.score_batch(CHAINS))
    # the manifest's calibration and checks do change the shipped model's scores
    assert got[1].scores != local["default"].score_batch(CHAINS)[1].scores


def test_load_prm_takes_a_vllm_url_and_a_plain_tokenizer_path(
        qwen: FakeVLLMServer, family_dirs: dict[str, Path], local: dict[str, OnnxPRM]) -> None:
    port = qwen.url.rsplit(":", 1)[1]
    # a checkpoint-style tokenizer.json path (no prm.json): the format is named
    prm = load_prm(f"vllm://127.0.0.1:{port}/Qwen/Qwen2.5-Math-PRM-7B", format="qwen-prm",
                   tokenizer=family_dirs["qwen-prm"] / "tokenizer.json", backoff_initial=0.01)
    assert isinstance(prm, VLLMPRM) and prm.model == "Qwen/Qwen2.5-Math-PRM-7B"
    assert_same(prm.score_batch(CHAINS), local["qwen-prm"].score_batch(CHAINS))
    assert qwen.requests[-1]["body"]["model"] == "Qwen/Qwen2.5-Math-PRM-7B"
    with pytest.raises(InvalidInputError, match="device='cuda' does not apply"):
        load_prm(f"vllm://127.0.0.1:{port}/m", device="cuda", tokenizer=family_dirs["qwen-prm"])
    with pytest.raises(InvalidInputError, match="name the PRM's format"):
        load_prm(f"vllm://127.0.0.1:{port}/m",
                 tokenizer=family_dirs["qwen-prm"] / "tokenizer.json")
    with pytest.raises(InvalidInputError, match="manifest|says the model's format"):
        load_prm(f"vllm://127.0.0.1:{port}/m", format="math-shepherd",
                 tokenizer=family_dirs["qwen-prm"])
    with pytest.raises(InvalidInputError, match="vllm://host:port/model"):
        VLLMPRM.from_url("grpc://127.0.0.1:1/m", tokenizer=family_dirs["qwen-prm"])
    with pytest.raises(InvalidInputError, match="write vllm://.*RemotePRM"):
        load_prm(f"http://127.0.0.1:{port}/m", tokenizer=family_dirs["qwen-prm"])
    with pytest.raises(InvalidInputError, match="needs tokenizer=.*nothing is downloaded"):
        load_prm(f"vllm://127.0.0.1:{port}/m", format="qwen-prm")


def test_a_checkpoint_tokenizer_gives_the_options_prm_export_writes(
        tmp_path: Path, family_dirs: dict[str, Path]) -> None:
    # a Mistral-like Math-Shepherd checkpoint: its tokenizer puts BOS first, so prm export
    # writes bos_token_id into prm.json; the served path derives the same from the files
    from tokenizers import Tokenizer

    bos = Tokenizer.from_file(str(family_dirs["math-shepherd"] / "tokenizer.json")).token_to_id(
        "<s>")
    exported = make_family_dir(tmp_path / "exported", "math-shepherd",
                               format_options={"bos_token_id": bos})
    onnx = load_prm(exported, device="cpu")
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "tokenizer.json").write_bytes((exported / "tokenizer.json").read_bytes())
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": {"content": "<s>"}, "add_bos_token": True}))
    with FakeVLLMServer(onnx, good_first=True) as server:
        with client(server, checkpoint, format="math-shepherd") as remote:
            mine, theirs = remote.format, onnx.format
            assert (mine.good_token_id, mine.bad_token_id, mine.options["bos_token_id"]) == (
                theirs.good_token_id, theirs.bad_token_id, bos)
            got = remote.score_batch(CHAINS)
        assert all(ids[0] == bos for ids in server.requests[0]["body"]["input"])
    assert_same(got, onnx.score_batch(CHAINS))


def test_batches_of_batch_size_in_order(qwen: FakeVLLMServer, family_dirs: dict[str, Path],
                                        local: dict[str, OnnxPRM]) -> None:
    with client(qwen, family_dirs["qwen-prm"], batch_size=2) as remote:
        got = remote.score_batch(CHAINS)
    assert [len(r["body"]["input"]) for r in qwen.requests] == [2, 2, 1]
    assert_same(got, local["qwen-prm"].score_batch(CHAINS))
    assert remote.score_batch([]) == []


def test_async_equals_sync_with_requests_in_flight(qwen: FakeVLLMServer,
                                                   family_dirs: dict[str, Path],
                                                   local: dict[str, OnnxPRM]) -> None:
    with client(qwen, family_dirs["qwen-prm"], batch_size=1, max_concurrency=3) as remote:

        async def run() -> tuple[list[Any], Any]:
            return await remote.ascore_batch(CHAINS), await remote.ascore(*CHAINS[0])

        many, one = asyncio.run(run())
    want = local["qwen-prm"].score_batch(CHAINS)
    assert_same(many, want)
    assert_same([one], want[:1])
    assert len(qwen.requests) == len(CHAINS) + 1


def test_strategies_run_unchanged(qwen: FakeVLLMServer, family_dirs: dict[str, Path],
                                  local: dict[str, OnnxPRM]) -> None:
    from prm_plugins.strategies import verify

    with client(qwen, family_dirs["qwen-prm"]) as remote:
        served = verify(*CHAINS[4], remote, threshold=0.5)
        again = pickle.loads(pickle.dumps(remote))  # into a worker process, as RemotePRM
        assert again.score(*CHAINS[4]).scores == remote.score(*CHAINS[4]).scores
        again.close()
    here = verify(*CHAINS[4], local["qwen-prm"], threshold=0.5)
    assert (served.passed, served.first_failing_step) == (here.passed, here.first_failing_step)
    assert abs(served.score - here.score) <= TOL


# -- malformed answers: clear errors, never retried -----------------------------------------
def _ok(n: int, rows: list[list[float]]) -> dict[str, Any]:
    return {"id": "pool-x", "object": "list", "created": 0, "model": "m",
            "data": [{"index": i, "object": "pooling", "data": rows} for i in range(n)],
            "usage": {"prompt_tokens": 0, "total_tokens": 0, "completion_tokens": 0}}


@pytest.mark.parametrize("answer, message", [
    (Canned(200, b"<html>proxy error</html>"), "cannot be read as JSON"),
    (Canned(200, b'{"data": [{"index": 0, "data": [[NaN, NaN]]}]}'), "cannot be read as JSON"),
    (Canned(200, b"[" * 5000 + b"]" * 5000), "cannot be read as JSON.*nested deeper"),
    (Canned(200, {"object": "error"}), "without a 'data' list"),
    (Canned(200, _ok(2, [[0.5, 0.5]])), r"answered 2 result\(s\) for 1 input\(s\)"),
    (Canned(200, _ok(1, [[0.5, 0.5]] * 4)), r"chain 0 \(question 'Tom has.*answered 4 row"),
    (Canned(200, {"data": [{"index": 5, "data": []}]}), "malformed result 0"),
    (Canned(200, {"data": [{"index": 0}]}), "malformed result 0"),
])
def test_a_malformed_answer_is_a_clear_error_and_not_retried(
        answer: Canned, message: str, qwen: FakeVLLMServer,
        family_dirs: dict[str, Path]) -> None:
    qwen.script(answer)
    with client(qwen, family_dirs["qwen-prm"], max_attempts=3) as remote:
        with pytest.raises(RemoteResponseError, match=message):
            remote.score(*CHAINS[0])
    assert len(qwen.requests) == 1


@pytest.mark.parametrize("row, message", [
    ([0.2, 1.5], "1.5 is not a probability"),
    ([0.2, -0.1], "-0.1 is not a probability"),
    ([0.7], "has 1 column"),
    (["a", "b"], "b is not a probability"),
])
def test_bad_rows_name_the_chain(row: list[Any], message: str, qwen: FakeVLLMServer,
                                 family_dirs: dict[str, Path],
                                 local: dict[str, OnnxPRM]) -> None:
    prm = local["qwen-prm"]
    good = [prm.format.render(*c) for c in CHAINS[:2]]
    body = _ok(2, [])
    body["data"][0]["data"] = [[0.5, 0.5]] * len(good[0])
    body["data"][1]["data"] = [row] * len(good[1])
    qwen.script(Canned(200, body))
    with client(qwen, family_dirs["qwen-prm"]) as remote:
        with pytest.raises(RemoteResponseError, match=message) as exc:
            remote.score_batch(CHAINS[:2])
    assert exc.value.item == 1 and "chain 1 (question 'Ann has 10" in str(exc.value)


def test_step_rows_that_cannot_be_matched_are_refused(local: dict[str, OnnxPRM],
                                                      family_dirs: dict[str, Path]) -> None:
    prm = local["qwen-prm"]
    wrong_tag = prm.format.render(*CHAINS[0]).input_ids[1]  # a token of the chat template
    with FakeVLLMServer(prm, pooling_type="STEP", step_tag_id=wrong_tag) as server:
        with client(server, family_dirs["qwen-prm"]) as remote:
            with pytest.raises(RemoteResponseError, match="row"):
                remote.score(*CHAINS[0])
    with FakeVLLMServer(prm) as server:  # ALL pooling, but the client insists on STEP
        with client(server, family_dirs["qwen-prm"], pooling="step") as remote:
            with pytest.raises(RemoteResponseError, match=r"expected 3 \(one per step\)"):
                remote.score(*CHAINS[0])
    # STEP rows whose tag also occurs elsewhere in the chain cannot be mapped exactly
    with pytest.raises(RemoteResponseError, match="ALL pooling"):
        read_step_values([[0.1, 0.9]] * 2, [7, 3, 7, 7], [2, 3], column=1, url="u", item=0,
                         pooling="step")


# -- HTTP errors, retries, timeouts ---------------------------------------------------------
def test_5xx_then_success_is_retried(qwen: FakeVLLMServer, family_dirs: dict[str, Path],
                                     local: dict[str, OnnxPRM]) -> None:
    qwen.script(Canned(503, {"error": {"message": "loading", "type": "x", "code": 503}}),
                Canned(502, b"bad gateway"), Canned(504, {}))
    with client(qwen, family_dirs["qwen-prm"], max_attempts=4) as remote:
        got = remote.score(*CHAINS[1])
    assert len(qwen.requests) == 4
    assert_same([got], local["qwen-prm"].score_batch(CHAINS[1:2]))


def test_retries_run_out_with_a_clear_error(qwen: FakeVLLMServer,
                                            family_dirs: dict[str, Path]) -> None:
    qwen.script(*[Canned(503, {})] * 3)
    with client(qwen, family_dirs["qwen-prm"], max_attempts=3) as remote:
        with pytest.raises(RemotePRMError, match=r"after 3 attempt\(s\): HTTP 503") as exc:
            remote.score(*CHAINS[1])
    assert not isinstance(exc.value, RemoteScorerError) and exc.value.attempts == 3


def test_retry_after_is_honoured_and_capped(qwen: FakeVLLMServer,
                                            family_dirs: dict[str, Path]) -> None:
    waits: list[float] = []  # the retry loop's waits, recorded instead of slept
    qwen.script(Canned(429, {}, {"Retry-After": "7"}))
    with client(qwen, family_dirs["qwen-prm"], backoff_initial=0.01) as remote:
        remote.retry = dataclasses.replace(remote.retry, sleep=waits.append)
        remote.score(*CHAINS[0])
    assert waits == [7.0]  # what the server asked, not the 0.01 s backoff
    assert len(qwen.requests) == 2
    waits.clear()
    qwen.script(Canned(503, {}, {"Retry-After": "3600"}))
    with client(qwen, family_dirs["qwen-prm"], max_retry_after=5.0) as remote:
        remote.retry = dataclasses.replace(remote.retry, sleep=waits.append)
        remote.score(*CHAINS[0])
    assert waits == [5.0]  # an hour asked, capped at max_retry_after


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now=now) == 20.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:12:00 GMT", now=now) == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("nan") is None and parse_retry_after("") is None


def test_a_4xx_is_not_retried_and_carries_the_servers_message(
        qwen: FakeVLLMServer, family_dirs: dict[str, Path]) -> None:
    with client(qwen, family_dirs["qwen-prm"], model="no-such-model", max_attempts=4) as remote:
        with pytest.raises(RemoteRequestError, match="`no-such-model` does not exist.*model "
                                                     "name") as exc:
            remote.score_batch(CHAINS[:3])
    # about the whole request: not retried, and not sent again chain by chain
    assert exc.value.status == 404 and exc.value.item is None and len(qwen.requests) == 1
    qwen.script(Canned(500, {"object": "error", "message": "CUDA error", "type": "Internal",
                             "param": None, "code": 500}))  # the older, flat error shape
    with client(qwen, family_dirs["qwen-prm"], max_attempts=4) as remote:
        with pytest.raises(RemoteServerError, match=r"HTTP 500 \(Internal\): CUDA error"):
            remote.score(*CHAINS[0])
    assert len(qwen.requests) == 2


def test_a_refused_chain_fails_alone_and_is_named(local: dict[str, OnnxPRM],
                                                  family_dirs: dict[str, Path]) -> None:
    prm = local["qwen-prm"]
    lengths = [len(prm.format.render(*c)) for c in CHAINS[:3]]
    limit = max(lengths[0], lengths[2])
    assert lengths[1] > limit  # the server refuses chain 1 only (too long for it)
    chains = [CHAINS[0], CHAINS[1], CHAINS[2]]
    with FakeVLLMServer(prm, max_model_len=limit) as server:
        with client(server, family_dirs["qwen-prm"]) as remote:
            with pytest.raises(RemoteRequestError, match="chain 1 .*maximum context") as exc:
                remote.score_batch(chains)
            assert exc.value.item == 1
            # the batch, then each chain alone: only chain 1 was refused
            assert [len(r["body"]["input"]) for r in server.requests] == [3, 1, 1, 1]
            assert_same(remote.score_batch([chains[0], chains[2]]),
                        prm.score_batch([chains[0], chains[2]]))
            with pytest.raises(RemoteRequestError, match="chain 0 .*maximum context"):
                asyncio.run(remote.ascore_batch([chains[1], chains[0]]))


def test_a_server_lost_while_chains_are_sent_alone_stops_at_once(
        qwen: FakeVLLMServer, family_dirs: dict[str, Path]) -> None:
    qwen.script(Canned(400, {"error": {"message": "bad input", "type": "BadRequestError",
                                       "param": None, "code": 400}}),
                Canned(503, {}), Canned(503, {}))
    with client(qwen, family_dirs["qwen-prm"], max_attempts=2) as remote:
        with pytest.raises(RemotePRMError, match="did not answer after 2") as exc:
            remote.score_batch(CHAINS[:3])
    assert not isinstance(exc.value, RemoteScorerError)
    assert [len(r["body"]["input"]) for r in qwen.requests] == [3, 1, 1]  # no chain 1, 2


def test_timeouts_are_retried_then_reported(qwen: FakeVLLMServer,
                                            family_dirs: dict[str, Path],
                                            local: dict[str, OnnxPRM]) -> None:
    qwen.script(Canned(delay=0.6, real=True))  # one slow answer, then a quick one
    with client(qwen, family_dirs["qwen-prm"], timeout=0.2, max_attempts=2) as remote:
        assert_same([remote.score(*CHAINS[0])], local["qwen-prm"].score_batch(CHAINS[:1]))
    qwen.script(Canned(delay=0.6, real=True), Canned(delay=0.6, real=True))
    with client(qwen, family_dirs["qwen-prm"], timeout=0.2, max_attempts=2) as remote:
        with pytest.raises(RemotePRMError, match=r"after 2 attempt\(s\): ReadTimeout"):
            remote.score(*CHAINS[0])

        async def run() -> Any:
            qwen.script(Canned(delay=0.6, real=True), Canned(delay=0.6, real=True))
            return await remote.ascore(*CHAINS[0])

        with pytest.raises(RemotePRMError, match="ReadTimeout"):
            asyncio.run(run())


def test_a_server_that_is_down(family_dirs: dict[str, Path]) -> None:
    with FakeVLLMServer(load_prm(family_dirs["qwen-prm"], device="cpu")) as server:
        url = server.url  # the port is free again once the server is gone
    with VLLMPRM(url, tokenizer=family_dirs["qwen-prm"], max_attempts=2,
                 backoff_initial=0.01) as remote:
        with pytest.raises(RemotePRMError, match=r"after 2 attempt\(s\): ConnectError"):
            remote.score(*CHAINS[0])


def test_bad_input_is_refused_before_anything_is_sent(qwen: FakeVLLMServer,
                                                      family_dirs: dict[str, Path]) -> None:
    with client(qwen, family_dirs["qwen-prm"], max_length=20) as remote:
        with pytest.raises(ChainTooLongError, match="item 0: the chain renders to") as exc:
            remote.score(*CHAINS[0])
        assert exc.value.max_length == 20
    with client(qwen, family_dirs["qwen-prm"]) as remote:
        with pytest.raises(InvalidInputError, match="item 1: steps must hold"):
            remote.score_batch([CHAINS[3], ("q", [])])
        with pytest.raises(InvalidInputError, match="list of .question, steps. pairs"):
            remote.score_batch("not a list")  # type: ignore[arg-type]
    assert qwen.requests == []
    for bad, match in [({"pooling": "mean"}, "pooling must be one of"),
                       ({"batch_size": 0}, "batch_size must be an int >= 1"),
                       ({"timeout": 0}, "timeout must be a finite number"),
                       ({"correct_column": -1}, "correct_column must be an int >= 0")]:
        with pytest.raises(InvalidInputError, match=match):
            VLLMPRM(qwen.url, tokenizer=family_dirs["qwen-prm"], **bad)
    with pytest.raises(InvalidInputError, match="http"):
        VLLMPRM("127.0.0.1:8000", tokenizer=family_dirs["qwen-prm"])
    with pytest.raises(Exception, match="no tokenizer at"):
        VLLMPRM(qwen.url, tokenizer=family_dirs["qwen-prm"] / "nope", format="qwen-prm")


# -- the Ray Serve deployment answers the same /pooling protocol ----------------------------
def _handle(prm: OnnxPRM) -> Any:
    from prm_plugins.adapters.ray.pooling import answer_pooling
    from prm_plugins.adapters.ray.serve import handle_request

    async def no_score(items: Any) -> Any:
        raise AssertionError("the /pooling route must not reach /score")

    def handle(method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        return asyncio.run(handle_request(method, path, body, score=no_score,
                                          model_info=lambda: {},
                                          pooling=functools.partial(answer_pooling, prm)))
    return handle


@pytest.fixture()
def serve_bridge(local: dict[str, OnnxPRM]) -> Iterator[dict[str, str]]:
    """The deployment's request handler behind a stdlib HTTP server, one per family."""
    pytest.importorskip("ray")
    servers, urls = [], {}
    for family in ("qwen-prm", "math-shepherd"):
        handle = _handle(local[family])

        class Bridge(BaseHTTPRequestHandler):
            def do_POST(self, handle: Any = handle) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, payload = handle("POST", self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Bridge)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        servers.append(server)
        urls[family] = f"http://127.0.0.1:{server.server_address[1]}/prm"
    yield urls
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("family", ["qwen-prm", "math-shepherd"])
def test_the_client_scores_against_the_serve_deployment(
        family: str, serve_bridge: dict[str, str], family_dirs: dict[str, Path],
        local: dict[str, OnnxPRM]) -> None:
    with VLLMPRM(serve_bridge[family], tokenizer=family_dirs[family], batch_size=2) as remote:
        got = remote.score_batch(CHAINS)
        agot = asyncio.run(remote.ascore_batch(CHAINS))
    want = local[family].score_batch(CHAINS)
    assert_same(got, want)
    assert_same(agot, want)


def test_the_serve_answer_matches_the_documented_schema(local: dict[str, OnnxPRM]) -> None:
    pytest.importorskip("ray")
    prm = local["math-shepherd"]
    handle = _handle(prm)
    ids = [prm.format.render(q, s).input_ids for q, s in CHAINS[:2]]
    body = json.dumps({"model": "tiny-prm", "input": ids, "task": "token_classify"}).encode()
    status, served = handle("POST", "/prm/pooling", body)
    with FakeVLLMServer(prm, good_first=True) as fake:
        request = urllib.request.Request(fake.url + "/pooling", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as answer:
            documented = json.loads(answer.read())
    assert status == 200
    assert set(served) == set(documented) == {"id", "object", "created", "model", "data",
                                              "usage"}
    assert served["data"] == documented["data"] and served["usage"] == documented["usage"]
    assert served["object"] == "list" and served["data"][0]["object"] == "pooling"
    # text input is tokenised with the model's tokenizer, as vLLM does
    text = json.dumps({"input": "Tom has 3 apples", "add_special_tokens": False}).encode()
    status, answer_text = handle("POST", "/prm/pooling", text)
    n = len(prm.tokenizer.encode("Tom has 3 apples", add_special_tokens=False).ids)
    assert status == 200 and len(answer_text["data"][0]["data"]) == n


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "cannot be read as JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (json.dumps({"input": [[1, 2]], "task": "embed"}).encode(), 400, "task 'embed'"),
    (json.dumps({"input": [[1, 2]], "encoding_format": "base64"}).encode(), 400, "float"),
    (json.dumps({"input": [[1, 2]], "truncate_prompt_tokens": 5}).encode(), 400, "truncated"),
    (json.dumps({"input": [[1, 10**6]]}).encode(), 400, "outside the vocabulary"),
    (json.dumps({"input": [[]]}).encode(), 400, "neither text nor"),
    (json.dumps({"input": [[1] * 600]}).encode(), 400, "maximum context length is 512"),
])
def test_the_serve_pooling_route_refuses_what_vllm_refuses(
        body: bytes, status: int, message: str, local: dict[str, OnnxPRM]) -> None:
    pytest.importorskip("ray")
    got_status, payload = _handle(local["qwen-prm"])("POST", "/prm/pooling", body)
    assert got_status == status
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert message in payload["error"]["message"] and payload["error"]["code"] == status


def test_the_serve_routes_keep_their_other_endpoints(local: dict[str, OnnxPRM]) -> None:
    pytest.importorskip("ray")
    status, payload = _handle(local["qwen-prm"])("GET", "/prm/nothing", b"")
    assert status == 404 and "POST <prefix>/pooling" in payload["error"]["message"]
    assert "POST <prefix>/score" in payload["error"]["message"]


@pytest.mark.slow
def test_the_running_serve_deployment_answers_pooling(family_dirs: dict[str, Path],
                                                      local: dict[str, OnnxPRM]) -> None:
    """The real thing: a local Ray cluster, ``serve_prm``, HTTP through Serve's proxy."""
    pytest.importorskip("ray")
    import socket

    import ray
    from ray import serve

    from prm_plugins.adapters.ray import serve_prm

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        url = serve_prm(family_dirs["qwen-prm"], port=port, device="cpu", num_cpus=0.5)
        with VLLMPRM(url, tokenizer=family_dirs["qwen-prm"], batch_size=2) as remote:
            got = remote.score_batch(CHAINS)
            with pytest.raises(ChainTooLongError, match="over the max_length of 512"):
                remote.score("Tom " * 600, ["Step 1: 1 + 1 = 2"])  # refused before sending
        with VLLMPRM(url, tokenizer=family_dirs["qwen-prm"], max_length=10**6) as unchecked:
            with pytest.raises(RemoteRequestError, match="maximum context length is 512"):
                unchecked.score("Tom " * 600, ["Step 1: 1 + 1 = 2"])  # refused by the server
    finally:
        serve.shutdown()
        ray.shutdown()
    assert_same(got, local["qwen-prm"].score_batch(CHAINS))


def test_the_protocol_module_examples_run() -> None:
    import doctest

    import prm_plugins.backends.pooling
    import prm_plugins.backends.vllm

    for module in (prm_plugins.backends.pooling, prm_plugins.backends.vllm):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
