"""Scale-out on Ray: the Serve deployment, :class:`RemotePRM`, Ray Data scoring and labelling.

Everything runs for real on this machine: one small local Ray cluster (module-scoped, 4
logical CPUs on loopback), one Serve application over the hand-built contract graph of
``graph_models`` (a real ONNX model run by ONNX Runtime), real HTTP. Expected numbers come
from the local :class:`OnnxPRM` on the same model directory, so a served or batch result that
differs from the local scorer fails. The retry tests use a tiny stdlib HTTP server on
loopback that answers what each test scripts (503s, 422s, slow answers) and counts requests.

Ray workers import this module (the killed-actor subclass and the rollout generator live
here, and they import ``support``), so the cluster is started with this directory and
``tests/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

try:
    import httpx
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
except ImportError:
    pytest.skip("the Ray adapter tests need the ray extra: pip install 'prm-plugins[ray]'",
                allow_module_level=True)

from prm_plugins import ChainTooLongError, InvalidInputError, load_prm
from prm_plugins.adapters.ray import RemotePRM, RemotePRMError
from prm_plugins.adapters.ray.data import PRMScoreActor
from prm_plugins.runtime import OnnxPRM

from support.graph_models import VOCAB, make_model_dir
from support.paths import TESTS

HERE = Path(__file__).resolve().parent
WORDS = [t for t in VOCAB if t.startswith("w")] + [str(d) for d in range(10)]


def make_chains(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """``n`` random chains of vocabulary words (1-4 steps of 1-5 words)."""
    rng = random.Random(seed)
    chains = []
    for _ in range(n):
        q = " ".join(rng.choices(WORDS, k=rng.randint(1, 4)))
        steps = [" ".join(rng.choices(WORDS, k=rng.randint(1, 5)))
                 for _ in range(rng.randint(1, 4))]
        chains.append((q, steps))
    return chains


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("ray") / "graph", max_length=64)


@pytest.fixture(scope="module")
def local_prm(model_dir: Path) -> OnnxPRM:
    return load_prm(model_dir, device="cpu")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # workers import this module; DyingScoreActor reads its trigger from the environment
    marker = tmp_path_factory.mktemp("ray-marker") / "died"
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), str(TESTS)]),
           "PRM_TEST_DIE_MARKER": str(marker), "PRM_TEST_DIE_AFTER": "9"}
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": env})
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def served_url(ray_cluster: None, model_dir: Path) -> str:
    from prm_plugins.adapters.ray import serve_prm

    return serve_prm(model_dir, port=free_port(), device="cpu", num_cpus=0.5,
                     max_batch_size=8, batch_wait_timeout_s=0.02)


@pytest.fixture()
def remote(served_url: str) -> Iterator[RemotePRM]:
    with RemotePRM(served_url, timeout=30, max_attempts=2, backoff_initial=0.05) as prm:
        yield prm


# -- the served scorer ------------------------------------------------------------------------
def test_served_scores_equal_the_local_scorer(remote: RemotePRM, local_prm: OnnxPRM) -> None:
    chains = make_chains(12, seed=1)
    expected = local_prm.score_batch(chains)
    got = remote.score_batch(chains)
    assert [g.scores for g in got] == [e.scores for e in expected]
    assert [(g.question, g.steps) for g in got] == [(e.question, e.steps) for e in expected]
    q, steps = chains[3]
    assert remote.score(q, steps).scores == local_prm.score(q, steps).scores
    assert remote.score_batch([]) == []
    # concurrent single-chain requests are coalesced by @serve.batch; each gets its own answer
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda c: remote.score(*c), chains))
    assert [a.scores for a in answers] == [e.scores for e in expected]


def test_async_scoring_equals_the_local_scorer(remote: RemotePRM, local_prm: OnnxPRM) -> None:
    chains = make_chains(6, seed=2)

    async def run() -> tuple[Any, Any]:
        one = await remote.ascore(*chains[0])
        many = await asyncio.gather(*(remote.ascore(q, s) for q, s in chains))
        return one, (many, await remote.ascore_batch(chains))

    one, (many, batch) = asyncio.run(run())
    expected = [e.scores for e in local_prm.score_batch(chains)]
    assert one.scores == expected[0]
    assert [m.scores for m in many] == expected
    assert [b.scores for b in batch] == expected


def test_http_protocol_single_and_batch(served_url: str, local_prm: OnnxPRM) -> None:
    chains = make_chains(4, seed=3)
    expected = [e.scores for e in local_prm.score_batch(chains)]
    with httpx.Client(timeout=30) as http:
        single = http.post(f"{served_url}/score",
                           json={"question": chains[0][0], "steps": chains[0][1]})
        assert single.status_code == 200
        assert single.json()["step_scores"] == expected[0]
        objects = http.post(f"{served_url}/score", json={
            "items": [{"question": q, "steps": s} for q, s in chains]})
        assert [r["step_scores"] for r in objects.json()["results"]] == expected
        bare = http.post(f"{served_url}/score", json=[[q, s] for q, s in chains])
        assert [r["step_scores"] for r in bare.json()["results"]] == expected
        health = http.get(f"{served_url}/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.json()["model"]["format"] == "token-classification"
        assert Path(health.json()["model"]["model_dir"]) == Path(local_prm.model_dir).resolve()
        missing = http.get(f"{served_url}/nope")
        assert missing.status_code == 404 and "/score" in missing.json()["error"]["message"]


def test_health_through_the_client(remote: RemotePRM) -> None:
    health = remote.health()
    assert health["status"] == "ok"
    assert health["model"]["max_length"] == 64


def test_deployment_handle_and_pickled_client(served_url: str, local_prm: OnnxPRM) -> None:
    import pickle

    from ray import serve

    chains = make_chains(3, seed=11)
    expected = [s.scores for s in local_prm.score_batch(chains)]
    handle = serve.get_app_handle("prm")
    answers = handle.score_items.remote([list(c) for c in chains]).result(timeout_s=60)
    assert [a["step_scores"] for a in answers] == expected
    clone = pickle.loads(pickle.dumps(RemotePRM(served_url)))
    assert [s.scores for s in clone.score_batch(chains)] == expected


def test_bad_input_is_4xx_and_the_client_raises_the_local_error(
    served_url: str, remote: RemotePRM, local_prm: OnnxPRM
) -> None:
    with pytest.raises(InvalidInputError) as local_exc:
        local_prm.score("w1", [])
    with httpx.Client(timeout=30) as http:
        r = http.post(f"{served_url}/score", json={"question": "w1", "steps": []})
        assert r.status_code == 422
        assert r.json()["error"] == {"type": "InvalidInputError",
                                     "message": str(local_exc.value)}
        not_json = http.post(f"{served_url}/score", content=b"{not json",
                             headers={"content-type": "application/json"})
        assert not_json.status_code == 400
        assert "not valid JSON" in not_json.json()["error"]["message"]
    with pytest.raises(InvalidInputError) as remote_exc:
        remote.score("w1", [])
    assert str(remote_exc.value) == str(local_exc.value)
    # a bad item in a batch: the same message (with its index) as the local score_batch
    batch = [("w1", ["w2"]), ("w3", [""])]
    with pytest.raises(InvalidInputError) as local_batch:
        local_prm.score_batch(batch)
    with pytest.raises(InvalidInputError) as remote_batch:
        remote.score_batch(batch)
    assert str(remote_batch.value) == str(local_batch.value)
    with pytest.raises(InvalidInputError, match="item 0 must be a .question, steps. pair"):
        remote.score_batch([{"question": "w1", "steps": ["w2"]}])  # type: ignore[list-item]
    long_steps = [" ".join(["w5"] * 20)] * 5  # over max_length=64
    with pytest.raises(ChainTooLongError) as local_long:
        local_prm.score("w1", long_steps)
    with pytest.raises(ChainTooLongError) as remote_long:
        remote.score("w1", long_steps)
    assert str(remote_long.value) == str(local_long.value)
    assert (remote_long.value.n_tokens, remote_long.value.max_length) == (
        local_long.value.n_tokens, local_long.value.max_length)
    # the server survived the bad requests and still scores the good chains of the batch
    assert remote.score(*batch[0]).scores == local_prm.score(*batch[0]).scores


def test_concurrent_bad_request_fails_only_itself(remote: RemotePRM,
                                                  local_prm: OnnxPRM) -> None:
    chains = make_chains(6, seed=4)
    requests: list[tuple[str, list[str]]] = [*chains[:3], ("w1", []), *chains[3:]]

    def call(chain: tuple[str, list[str]]) -> Any:
        try:
            return remote.score(*chain).scores
        except InvalidInputError as exc:
            return exc

    with ThreadPoolExecutor(7) as pool:
        answers = list(pool.map(call, requests))
    assert isinstance(answers[3], InvalidInputError)
    good = [a for i, a in enumerate(answers) if i != 3]
    assert good == [s.scores for s in local_prm.score_batch(chains)]


# -- the client's retries, against a scripted server on loopback -----------------------------
class _Script:
    """What the stub server answers, one entry per request: (status, body, delay_s)."""

    def __init__(self, answers: Sequence[tuple[int, Any, float]]) -> None:
        self.answers = list(answers)
        self.requests = 0
        self.lock = threading.Lock()


def _stub_server(script: _Script) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("content-length", 0)))
            with script.lock:
                k = min(script.requests, len(script.answers) - 1)
                script.requests += 1
            status, body, delay = script.answers[k]
            time.sleep(delay)
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/prm"


def test_client_retries_5xx_then_succeeds(local_prm: OnnxPRM) -> None:
    chain = make_chains(1, seed=5)[0]
    good = {"results": [{"step_scores": local_prm.score(*chain).scores, "meta": {}}]}
    script = _Script([(503, {"error": "warming up"}, 0.0), (502, {}, 0.0), (200, good, 0.0)])
    server, url = _stub_server(script)
    try:
        with RemotePRM(url, max_attempts=3, backoff_initial=0.01) as prm:
            assert prm.score(*chain).scores == local_prm.score(*chain).scores
        assert script.requests == 3
    finally:
        server.shutdown()


def test_client_does_not_retry_a_validation_error() -> None:
    body = {"error": {"type": "InvalidInputError", "message": "item 0: steps must be a list"}}
    script = _Script([(422, body, 0.0)])
    server, url = _stub_server(script)
    try:
        with RemotePRM(url, max_attempts=4, backoff_initial=0.01) as prm, \
                pytest.raises(InvalidInputError, match="^item 0: steps must be a list$"):
            prm.score("w1", ["w2"])
        assert script.requests == 1
    finally:
        server.shutdown()


def test_client_retries_timeouts_then_says_what_failed() -> None:
    script = _Script([(200, {"results": []}, 1.0)])
    server, url = _stub_server(script)
    try:
        with RemotePRM(url, timeout=0.2, max_attempts=2, backoff_initial=0.01) as prm, \
                pytest.raises(RemotePRMError, match="after 2 attempt.*Timeout"):
            prm.score("w1", ["w2"])
        assert script.requests == 2
    finally:
        server.shutdown()


def test_client_against_a_server_that_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}/prm"
    prm = RemotePRM(url, timeout=2, max_attempts=3, backoff_initial=0.01)
    start = time.perf_counter()
    with pytest.raises(RemotePRMError) as exc:
        prm.score("w1", ["w2"])
    assert exc.value.attempts == 3
    assert exc.value.url == url + "/score"
    message = str(exc.value)
    assert "did not answer after 3 attempt(s)" in message and "ConnectError" in message
    assert "/health" in message  # says how to check the deployment
    assert time.perf_counter() - start < 10

    async def arun() -> None:
        await prm.ascore("w1", ["w2"])

    with pytest.raises(RemotePRMError, match="after 3 attempt"):
        asyncio.run(arun())
    with pytest.raises(InvalidInputError, match="http"):
        RemotePRM("127.0.0.1:8000")


def test_app_builder_checks_its_arguments(ray_cluster: None) -> None:
    from prm_plugins.adapters.ray import app_builder

    with pytest.raises(InvalidInputError, match="num_replicas='two' is not a valid int"):
        app_builder({"num_replicas": "two"})
    with pytest.raises(InvalidInputError, match="unknown argument 'replicas'"):
        app_builder({"replicas": "2"})
    with pytest.raises(InvalidInputError, match="num_replicas must be an int >= 1"):
        app_builder({"num_replicas": "0"})


def test_remote_prm_needs_no_ray() -> None:
    code = ("import sys; sys.modules['ray'] = None\n"
            "from prm_plugins.adapters.ray import RemotePRM\n"
            "from prm_plugins import StepScorer\n"
            "p = RemotePRM('http://127.0.0.1:9/prm')\n"
            "assert isinstance(p, StepScorer)\n"
            "print('ray' in sys.modules and sys.modules['ray'] is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# -- strategies run unchanged against the cluster ---------------------------------------------
def test_strategies_run_unchanged_against_remote(remote: RemotePRM, local_prm: OnnxPRM) -> None:
    from prm_plugins.strategies import best_of_n, verify

    from support.fake_generators import FakeGenerator

    solutions = ["w4 + 5 = w6\nw7 = 8", "w9 w10 = 3\nw11 .", "w12 + w13 = 4",
                 "w14 = w15\nw16 w17 = 9"]
    local = best_of_n("w1 w2 + w3 = ?", FakeGenerator(solutions), local_prm, n=4)
    served = best_of_n("w1 w2 + w3 = ?", FakeGenerator(solutions), remote, n=4)
    assert served.to_dict() == local.to_dict()
    v_local = verify("w1 w2", ["w3 w4", "w5"], local_prm, threshold=0.55)
    v_remote = verify("w1 w2", ["w3 w4", "w5"], remote, threshold=0.55)
    assert (v_remote.passed, v_remote.score, v_remote.feedback) == (
        v_local.passed, v_local.score, v_local.feedback)


# -- Ray Data: prm score --ray ---------------------------------------------------------------------
def _write_jsonl(path: Path, chains: list[tuple[str, list[str]]]) -> None:
    lines = [json.dumps({"id": f"c{i}", "question": q, "steps": s})
             for i, (q, s) in enumerate(chains)]
    lines.insert(3, json.dumps({"id": "empty", "question": "w1", "steps": []}))  # scorer error
    lines.insert(5, "{not json")  # parse error
    lines.insert(7, "")  # blank line, skipped
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_cli_ray_jsonl_equals_local(ray_cluster: None, model_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from prm_plugins.cli import main

    src = tmp_path / "in.jsonl"
    _write_jsonl(src, make_chains(40, seed=6))
    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    code_local = main(["score", str(model_dir), "--input", str(src), "-o", str(local_out),
                       "--device", "cpu", "--no-progress"])
    local_err = capsys.readouterr().err
    code_ray = main(["score", str(model_dir), "--input", str(src), "-o", str(ray_out),
                     "--device", "cpu", "--no-progress", "--ray", "--num-actors", "2",
                     "--batch-size", "5"])
    ray_err = capsys.readouterr().err
    assert code_local == code_ray == 1  # two bad rows
    assert ray_out.read_text() == local_out.read_text()
    rows = [json.loads(x) for x in ray_out.read_text().splitlines()]
    assert len(rows) == 42 and sum("step_scores" in r for r in rows) == 40
    assert "scored 40 chains, 2 bad rows" in ray_err
    assert [x for x in ray_err.splitlines() if x.startswith("line ")] == [
        x for x in local_err.splitlines() if x.startswith("line ")]


def test_cli_ray_parquet_equals_local(ray_cluster: None, model_dir: Path, tmp_path: Path,
                                      local_prm: OnnxPRM) -> None:
    from prm_plugins.cli import main

    chains = make_chains(30, seed=7)
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.table({"id": [f"c{i}" for i in range(len(chains))],
                             "question": [q for q, _ in chains],
                             "steps": [s for _, s in chains]}), src)
    code = main(["score", str(model_dir), "--input", str(src), "-o", str(out), "--device",
                 "cpu", "--no-progress", "--ray", "--num-actors", "2", "--batch-size", "4"])
    assert code == 0
    table = pq.read_table(out)
    assert table.column_names == ["id", "question", "steps", "step_scores", "error"]
    assert table.column("id").to_pylist() == [f"c{i}" for i in range(len(chains))]
    expected = [s.scores for s in local_prm.score_batch(chains)]
    got = table.column("step_scores").to_pylist()
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, abs=1e-6)
    assert table.column("error").null_count == len(chains)
    # Parquet in, JSONL out: the same scores, rounded like prm score's JSONL
    jsonl = tmp_path / "out.jsonl"
    assert main(["score", str(model_dir), "--input", str(src), "-o", str(jsonl), "--device",
                 "cpu", "--no-progress", "--ray"]) == 0
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"c{i}" for i in range(len(chains))]
    assert [r["step_scores"] for r in rows] == [[round(x, 6) for x in e] for e in expected]


def test_cli_ray_flags_and_missing_ray(model_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from prm_plugins.cli import main

    src = tmp_path / "in.jsonl"
    _write_jsonl(src, make_chains(2))
    assert main(["score", "--input", str(src), "--num-actors", "3"]) == 2
    assert "--num-actors only apply with --ray" in capsys.readouterr().err
    assert main(["score", "--ray", "--question", "w1", "--steps", "w2"]) == 2
    assert "--ray scores a file" in capsys.readouterr().err
    assert main(["score", "--ray", "--input", str(src), "--num-actors", "0"]) == 2
    assert "--num-actors and --batch-size must be >= 1" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "prm_plugins.adapters.ray.data", None)
    assert main(["score", str(model_dir), "--ray", "--input", str(src)]) == 2
    assert 'pip install "prm-plugins[ray]"' in capsys.readouterr().err


def test_score_dataset_names_missing_columns(ray_cluster: None, model_dir: Path) -> None:
    from prm_plugins.adapters.ray import score_dataset

    ds = ray.data.from_items([{"prompt": "w1", "completions": ["w2"]}])
    with pytest.raises(InvalidInputError, match=r"no column\(s\) \['question', 'steps'\]"):
        score_dataset(ds, model_dir)
    with pytest.raises(InvalidInputError, match="num_actors must be an int >= 1"):
        score_dataset(ds, model_dir, num_actors=0, question_column="prompt",
                      steps_column="completions")


# -- Ray Data: a worker dies mid-run ------------------------------------------------------------
class DyingScoreActor(PRMScoreActor):
    """Scores like :class:`PRMScoreActor`, but the first actor to reach ``die_after`` rows
    kills its own process (``os._exit``), once per test (a marker file records it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows_seen = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        marker = Path(os.environ["PRM_TEST_DIE_MARKER"])
        self.rows_seen += batch.num_rows
        if self.rows_seen >= int(os.environ["PRM_TEST_DIE_AFTER"]):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os._exit(1)  # the worker process dies mid-batch
        return super().__call__(batch)


def test_rows_survive_a_killed_actor(ray_cluster: None, model_dir: Path,
                                     local_prm: OnnxPRM) -> None:
    from prm_plugins.adapters.ray import score_dataset
    from prm_plugins.adapters.ray.data import _blocks

    chains = make_chains(60, seed=8)
    marker = Path(os.environ["PRM_TEST_DIE_MARKER"])
    assert not marker.exists()
    table = pa.table({"_row": list(range(len(chains))),
                      "question": [q for q, _ in chains], "steps": [s for _, s in chains]})
    ds = ray.data.from_arrow(_blocks(table, 6))
    scored = score_dataset(ds, model_dir, num_actors=2, batch_size=3, num_cpus=0.5,
                           device="cpu", actor_cls=DyingScoreActor)
    rows = scored.take_all()
    assert marker.exists(), "no actor died: the test did not test anything"
    assert int(marker.read_text()) > 0  # the pid of the actor that died
    ids = sorted(r["_row"] for r in rows)
    assert ids == list(range(len(chains)))  # every row exactly once
    by_id = {r["_row"]: r["step_scores"] for r in rows}
    expected = [s.scores for s in local_prm.score_batch(chains)]
    for i, e in enumerate(expected):
        assert by_id[i] == pytest.approx(e, abs=1e-6)


# -- Ray Data: Monte Carlo labelling over actors ---------------------------------------------------
class PrefixGenerator:
    """A deterministic rollout generator: what it returns depends only on the prompt.

    A prefix of k steps gets k of its ``n`` completions right (capped at n), so soft labels
    differ step by step and any mix-up between chains, steps or orders changes them.
    """

    def sample(self, prompt: str, n: int) -> list[str]:
        k = prompt.count("\nStep ")
        right = min(k + len(prompt) % 2, n)
        return ["The answer is 10."] * right + ["The answer is 7."] * (n - right)


def test_label_chains_over_actors_equals_local(ray_cluster: None) -> None:
    from prm_plugins.adapters.ray import label_chains
    from prm_plugins.labeling.rollouts import MonteCarloLabeler

    rng = random.Random(9)
    chains = [{"id": f"m{i}", "question": f"Q{i}: how many?",
               "steps": [f"step {j} of {i}" for j in range(rng.randint(1, 4))]
               + [rng.choice(["The answer is 10.", "The answer is 3."])],
               "gold_answer": "10"} for i in range(24)]
    local = MonteCarloLabeler(PrefixGenerator(), n_rollouts=4).label_batch(chains)
    spread = label_chains(chains, PrefixGenerator, num_actors=2, batch_size=5, num_cpus=0.5,
                          labeler_kwargs={"n_rollouts": 4}, progress=False)
    assert [r.id for r in spread] == [f"m{i}" for i in range(24)]
    assert spread == local
    assert len({tuple(r.soft_labels) for r in spread}) > 3  # the labels are not all alike
    with pytest.raises(InvalidInputError, match="chain 1: a gold answer is needed"):
        label_chains([chains[0], {"question": "q", "steps": ["a"]}], PrefixGenerator)


# -- two replicas (slow: starts a second Serve application) ------------------------------------
@pytest.mark.slow
def test_two_replicas_share_the_load(ray_cluster: None, served_url: str, model_dir: Path,
                                     local_prm: OnnxPRM) -> None:
    from ray import serve

    from prm_plugins.adapters.ray import build_app

    serve.run(build_app(model_dir, device="cpu", num_replicas=2, num_cpus=0.5),
              name="prm2", route_prefix="/prm2")
    url = served_url.rsplit("/", 1)[0] + "/prm2"
    chains = make_chains(40, seed=10)
    with RemotePRM(url) as prm, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda c: prm.score(*c).scores, chains))
        pids = {prm.health()["model"]["pid"] for _ in range(30)}
    assert answers == [s.scores for s in local_prm.score_batch(chains)]
    assert len(pids) == 2
    serve.delete("prm2")
