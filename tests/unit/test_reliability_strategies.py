"""One hostile output must not kill a run (issue 23): the calculator check, the labelling
parser, the strategies and the Ray Serve request path.

The scorer is a real :class:`OnnxPRM` over the hand-built contract graph of ``graph_models``,
with a max length large enough that deeply nested steps reach the calculator check.
:class:`Faulty` wraps it and misbehaves on cue for chains holding a marker word: it raises
``RecursionError`` (what the old recursive calculator raised on ``"-" * 5000 + "5"``) or
answers NaN, inf or a value outside [0, 1] for that step. Expected scores of the other
chains always come from the real scorer, so a strategy that drops or mixes up a good chain
fails. Generators are small in-test classes; hung calls wait on an event each test releases.
The Ray Serve tests drive the deployment's own request handling (``handle_request``,
``score_requests``) behind a stdlib HTTP server on loopback, with the real
:class:`RemotePRM` client, so no Ray cluster is started.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import math
import random
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from prm_plugins import InvalidInputError, StepScores, load_prm
from prm_plugins.checks import HybridPRM, check_arithmetic
from prm_plugins.errors import PRMError
from prm_plugins.labeling.gsm8k import (
    MAX_LINE_CHARS,
    evaluate,
    evaluate_expression,
    find_equations,
    operands_of,
    operators_of,
    parse_expression,
    parse_gsm8k_answer,
)
from prm_plugins.runtime import OnnxPRM
from prm_plugins.strategies import (
    DEFAULT_GENERATOR_TIMEOUT,
    DVTS,
    AllCandidatesFailedError,
    BestOfN,
    GeneratorTimeoutError,
    RetryPolicy,
    SelfCritique,
    StepBeamSearch,
    abest_of_n,
    averify,
    best_of_n,
    verify,
)

from support.fake_generators import FakeGenerator
from support.graph_models import make_model_dir

FAST = RetryPolicy.no_wait()
Q = "w1 w2 + w3 = ?"


@pytest.fixture(scope="module")
def prm(tmp_path_factory: pytest.TempPathFactory) -> OnnxPRM:
    model_dir: Path = make_model_dir(tmp_path_factory.mktemp("hostile") / "m", max_length=8192)
    return load_prm(model_dir, device="cpu")


class Faulty:
    """The real scorer, misbehaving on chains that hold a marker (see the module docs)."""

    BAD_VALUES = {"POISONNAN": math.nan, "POISONINF": math.inf, "POISONBIG": 1.5,
                  "POISONNEG": -0.25}

    def __init__(self, prm: OnnxPRM) -> None:
        self.prm = prm
        self.format = prm.format
        self.batches: list[int] = []

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        self.batches.append(len(items))
        if any("POISONRAISE" in s for _, steps in items for s in steps):
            raise RecursionError("maximum recursion depth exceeded")
        out = []
        for got in self.prm.score_batch(items):
            scores = list(got.scores)
            for i, step in enumerate(got.steps):
                for marker, value in self.BAD_VALUES.items():
                    if marker in step:
                        scores[i] = value
            out.append(StepScores(got.steps, scores, got.question, dict(got.meta)))
        return out

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score_batch([(question, steps)])[0]

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score(question, steps)


# -- the calculator check ------------------------------------------------------------------

HOSTILE_STEPS = {
    "5000 unary minus": "-" * 5000 + "5 + 1 = 4",
    "unary minus after an operator": "1 + " + "-" * 5000 + "5 = 4",
    "5000 nested brackets": "(" * 5000 + "5" + ")" * 5000 + " + 1 = 6",
    "5000 unclosed brackets": "1 + " + "(" * 5000 + "5 = 3",
    "nested negated groups": "2 * " + "-(" * 3000 + "3" + ")" * 3000 + " = 6",
    "a 100000-digit operand": "9" * 100_000 + " + 1 = 2",
    "a 100000-digit result": "1 + 1 = " + "9" * 100_000,
    "a product past the value bound": " * ".join(["9" * 60] * 3000) + " = 1",
    "a quotient past the value bound": " / ".join(["7"] * 20_000) + " = 1",
    "caret towers": "9^9^9^9 = 5",
    "python power": "10**100000 = 1",
    "spaced power towers": "9 ** 9 ** 9 ** 9 = 1",
}


@pytest.mark.parametrize("step", HOSTILE_STEPS.values(), ids=HOSTILE_STEPS.keys())
def test_a_hostile_step_gets_no_verdict_quickly(step: str) -> None:
    start = time.perf_counter()
    assert check_arithmetic(step) == ("none", [])
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    ("step", "verdict"),
    [
        ("((((3 + 4)))) * 2 = 14", "ok"),
        ("- - 3 + 5 = 8", "ok"),
        ("2 * -(3 + 4) = -14", "ok"),
        ("-(2 + 3) * 4 = -20", "ok"),
        ("10 - -2 = 12", "ok"),
        ("2 * -(3 + 4) = 14", "wrong"),
        ("(" * 60 + "3 + 4" + ")" * 60 + " = 7", "ok"),  # within the nesting bound
        ("(" * 70 + "3 + 4" + ")" * 70 + " = 7", "none"),  # past it: no verdict
        ("(3 + 4 = 7", "none"),  # malformed: no verdict, as before
        ("3 + 4) = 7", "none"),
        ("3 + * 4 = 7", "none"),
        ("3 4 + 1 = 5", "none"),
    ],
)
def test_nested_and_signed_arithmetic_is_still_checked(step: str, verdict: str) -> None:
    assert check_arithmetic(step)[0] == verdict


def _random_expression(rng: random.Random, depth: int) -> tuple[str, str]:
    """(text for the check, the same with Fraction literals for Python's eval)."""
    if depth == 0 or rng.random() < 0.25:
        n = (str(rng.randint(0, 99)) if rng.random() < 0.8
             else f"{rng.randint(0, 9)}.{rng.randint(1, 99)}")
        return n, f"Fraction('{n}')"
    kind = rng.random()
    if kind < 0.15:
        text, src = _random_expression(rng, depth - 1)
        return f"-{text}", f"-{src}"  # unary minus binds as in Python: "-2 + 1" is (-2) + 1
    if kind < 0.3:
        text, src = _random_expression(rng, depth - 1)
        return f"({text})", f"({src})"
    op = rng.choice("+-*/")
    (lt, ls), (rt, rs) = _random_expression(rng, depth - 1), _random_expression(rng, depth - 1)
    return f"{lt} {op} {rt}", f"{ls} {op} {rs}"


def test_the_iterative_check_evaluates_like_python() -> None:
    rng = random.Random(23)
    checked = 0
    for _ in range(400):
        text, src = _random_expression(rng, 5)
        try:
            expected = eval(src, {"Fraction": Fraction})  # noqa: S307 - test-built literals only
        except ZeroDivisionError:
            assert check_arithmetic(f"{text} + 0 = 1")[0] == "none"
            continue
        verdict, checks = check_arithmetic(f"{text} + 0 = 1")
        assert len(checks) == 1, text
        assert checks[0].lhs_value == expected, text
        checked += 1
    assert checked > 300


def test_a_hybrid_prm_scores_a_chain_with_hostile_steps(prm: OnnxPRM) -> None:
    steps = ["w2", "-" * 3000 + "5 + 1 = 4", "(" * 1500 + "1+1" + ")" * 1500 + " = 3",
             "3 + 4 = 8"]
    raw = prm.score("w1", steps)
    got = HybridPRM(prm).score("w1", steps)
    assert got.meta["arithmetic"] == ["none", "none", "none", "wrong"]
    assert got.scores[:3] == raw.scores[:3]  # no verdict: the model's score stands
    assert got.scores[3] == min(raw.scores[3], 0.05)


def test_best_of_n_and_dvts_run_over_a_candidate_with_hostile_steps(prm: OnnxPRM) -> None:
    hybrid = HybridPRM(prm)
    hostile = "-" * 3000 + "5 = 5"
    solutions = ["3 + 4 = 7\nThe answer is 7.", hostile + "\nThe answer is 7.",
                 "3 + 4 = 8\nThe answer is 8."]
    r = best_of_n(Q, FakeGenerator(solutions), hybrid, n=3, max_concurrency=1, retry=FAST)
    assert all(c.ok for c in r.candidates)
    expected = [prm.score(Q, s.split("\n")).min for s in solutions]
    expected[2] = min(expected[2], 0.05)  # its arithmetic is wrong
    assert [c.score for c in r.candidates] == pytest.approx(expected, abs=1e-6)
    gen = FakeGenerator(tree={(): ["3 + 4 = 7", hostile, "w5 w6", "3 + 4 = 8"]},
                        default_steps=["The answer is 7."])
    s = DVTS(gen, hybrid, n=4, beam_width=2, max_steps=3, retry=FAST).run(Q)
    assert s.errors == [] and s.best.complete


# -- the labelling parser ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "n_equations"),
    [
        ("1 + " + "(" * 50_000 + "5 = 3", 0),  # was quadratic: 20 s for 20000 brackets
        ("divided " * 20_000 + "4 divided by 2 = 2", 1),
        ("9" * 5000 + " + 1 = 2", 0),  # a number past MAX_NUMBER_CHARS is text
        (" + ".join(["9" * 90] * 2000) + " = 5", 0),  # over MAX_EXPRESSION_CHARS
    ],
)
def test_find_equations_on_hostile_text_is_linear(text: str, n_equations: int) -> None:
    start = time.perf_counter()
    assert len(find_equations(text)) == n_equations
    assert time.perf_counter() - start < 2.0


def test_expression_trees_are_walked_without_recursion() -> None:
    deep = parse_expression("-" * 399 + "5")
    long_sum = parse_expression("+".join(["1"] * 199))
    mixed = parse_expression("(1+2)*3-4/5")
    limit = sys.getrecursionlimit()
    results: dict[str, Any] = {}
    sys.setrecursionlimit(len(_stack()) + 40)  # far less headroom than the trees are deep
    try:
        results["deep"] = evaluate(deep)
        results["sum"] = evaluate(long_sum)
        results["operands"] = len(operands_of(long_sum))
        results["operators"] = operators_of(long_sum)
        try:
            results["parsed"] = evaluate_expression("-" * 399 + "5")
        except InvalidInputError as exc:  # ast.parse itself may need the stack: clear error
            results["parsed"] = exc
    finally:
        sys.setrecursionlimit(limit)
    assert results["deep"] == -5 and results["sum"] == 199
    assert results["operands"] == 199 and results["operators"] == ["+"] * 198
    assert results["parsed"] == -5 or isinstance(results["parsed"], InvalidInputError)
    # operands and operators are numbered left to right, as the recursive walk did
    assert [o.text for o in operands_of(mixed)] == ["1", "2", "3", "4", "5"]
    assert operators_of(mixed) == ["+", "*", "-", "/"]
    assert evaluate(mixed) == Fraction(41, 5)
    assert evaluate(mixed, operators=["-", "*", "+", "*"]) == Fraction(-1 * 3 + 4 * 5)


def _stack() -> list[Any]:
    import inspect

    return inspect.stack(0)


def test_gsm8k_rows_with_hostile_lines_are_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match=f"more than the {MAX_LINE_CHARS}"):
        parse_gsm8k_answer("1+1=2<<1+1=2>> " * 3000 + "\n#### 2")
    with pytest.raises(InvalidInputError, match="final answer must be a number"):
        parse_gsm8k_answer("1+1=2\n#### " + "9" * 5000)
    sol = parse_gsm8k_answer("He has " + "9" * 500 + " and 2+3=<<2+3=5>>5 apples.\n#### 5")
    assert [s.text for s in sol.steps[0].spans] == ["2", "3", "5"]  # the long run is text
    assert sol.is_checked


# -- strategies: a chain that cannot be scored fails alone -----------------------------------

SOLUTIONS = ["w4 + 5 = w6\nw7 = 8", "w9 w10 = 3\nw11 .", "w12 + w13 = 4",
             "w14 = w15\nw16 w17 = 9"]


def _expected_min(prm: OnnxPRM, texts: Sequence[str]) -> list[float]:
    return [s.min for s in prm.score_batch([(Q, t.split("\n")) for t in texts])]


@pytest.mark.parametrize("marker", ["POISONRAISE", "POISONNAN", "POISONINF", "POISONBIG",
                                    "POISONNEG"])
def test_best_of_n_fails_an_unscorable_candidate_alone(prm: OnnxPRM, marker: str) -> None:
    solutions = [SOLUTIONS[0], f"w9 {marker}\nw11 .", SOLUTIONS[2], SOLUTIONS[3]]
    scorer = Faulty(prm)
    r = best_of_n(Q, FakeGenerator(solutions), scorer, n=4, max_concurrency=2, retry=FAST)
    bad = r.candidates[1]
    assert not bad.ok and bad.failed_at == "scoring" and bad.score is None
    if marker == "POISONRAISE":
        assert "RecursionError" in (bad.error or "")
        assert scorer.batches[0] == 4 and scorer.batches[1:] == [1, 1, 1, 1]  # then one by one
    else:
        assert "finite probabilities in [0, 1]" in (bad.error or "")
        assert "step 1 of 2" in (bad.error or "")
    good = [0, 2, 3]
    expected = _expected_min(prm, [solutions[i] for i in good])
    assert [r.candidates[i].score for i in good] == pytest.approx(expected, abs=1e-7)
    assert math.isfinite(r.score) and r.score == pytest.approx(max(expected), abs=1e-7)
    assert r.best.index == good[expected.index(max(expected))]
    assert r.failed == [bad]


def test_async_best_of_n_fails_an_unscorable_candidate_alone(prm: OnnxPRM) -> None:
    solutions = [SOLUTIONS[0], "w9 POISONRAISE", "w12 POISONNAN", SOLUTIONS[3]]
    r = asyncio.run(abest_of_n(Q, FakeGenerator(solutions), Faulty(prm), n=4, retry=FAST))
    assert [c.failed_at for c in r.candidates] == [None, "scoring", "scoring", None]
    expected = _expected_min(prm, [solutions[0], solutions[3]])
    assert r.score == pytest.approx(max(expected), abs=1e-7)


def test_every_candidate_nan_is_a_clear_error_not_a_nan_pick(prm: OnnxPRM) -> None:
    gen = FakeGenerator(["w1 POISONNAN", "w2 POISONINF"])
    with pytest.raises(AllCandidatesFailedError, match=r"finite probabilities") as info:
        best_of_n(Q, gen, Faulty(prm), n=2, retry=FAST)
    assert len(info.value.causes) == 2
    assert all(isinstance(c, PRMError) for c in info.value.causes)


def test_an_aggregate_that_gives_nan_fails_the_candidate(prm: OnnxPRM) -> None:
    def shaky(scores: Sequence[float]) -> float:
        return math.nan if len(scores) == 1 else min(scores)

    r = best_of_n(Q, FakeGenerator(SOLUTIONS), prm, n=4, aggregate=shaky, retry=FAST)
    assert r.candidates[2].failed_at == "scoring"
    assert "aggregate 'shaky' gave nan" in (r.candidates[2].error or "")
    assert math.isfinite(r.score) and r.best.index != 2


@pytest.mark.parametrize("search", [DVTS, StepBeamSearch])
def test_search_drops_an_unscorable_branch_and_goes_on(prm: OnnxPRM, search: Any) -> None:
    tree = {(): ["w3 = 3", "w4 POISONRAISE", "w5 = 5", "w6 POISONNAN"]}
    gen = FakeGenerator(tree=tree, default_steps=["The answer is 5."])
    r = search(gen, Faulty(prm), n=4, beam_width=2, max_steps=3, retry=FAST).run(Q)
    assert r.best.complete and not any("POISON" in s for s in r.best.steps)
    assert len(r.errors) == 2
    assert any("RecursionError" in e for e in r.errors)
    assert any("finite probabilities" in e for e in r.errors)
    kept = {c.steps[0] for c in [*r.finished, *r.unfinished]}
    assert kept <= {"w3 = 3", "w5 = 5"}


def test_verify_refuses_nan_scores_clearly(prm: OnnxPRM) -> None:
    steps = ["w3 = 3", "w4 POISONNAN"]
    with pytest.raises(PRMError, match=r"returned nan for step 2 of 2"):
        verify(Q, steps, Faulty(prm))
    with pytest.raises(PRMError, match=r"returned 1.5 for step 1 of 1"):
        asyncio.run(averify(Q, ["w4 POISONBIG"], Faulty(prm)))
    assert verify(Q, steps[:1], Faulty(prm)).score == prm.score(Q, steps[:1]).min


def test_self_critique_survives_a_revision_scored_nan(prm: OnnxPRM) -> None:
    gen = FakeGenerator(["w14 = w15\nw16 w17 = 9"], revisions=["w2 POISONNAN"])
    r = SelfCritique(gen, Faulty(prm), threshold=0.99, max_rounds=1, retry=FAST).run(Q)
    assert r.steps == ["w14 = w15", "w16 w17 = 9"]
    assert "finite probabilities" in (r.history[1].error or "")
    assert math.isfinite(r.verdict.score)


# -- strategies: generator deadlines -------------------------------------------------------


class HangingGenerator:
    """``sample`` hangs (until ``release``) on the calls numbered in ``hang_on``."""

    def __init__(self, hang_on: set[int]) -> None:
        self.hang_on = hang_on
        self.release = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def sample(self, prompt: str, n: int) -> list[str]:
        with self._lock:
            k = self.calls
            self.calls += 1
        if k in self.hang_on:
            self.release.wait(timeout=30)
        return [f"w{k + 1} = {k + 1}"] * n

    async def asample(self, prompt: str, n: int) -> list[str]:
        with self._lock:
            k = self.calls
            self.calls += 1
        if k in self.hang_on:
            await asyncio.Event().wait()  # only a cancel ends it
        return [f"w{k + 1} = {k + 1}"] * n


def test_the_default_policy_has_a_deadline(prm: OnnxPRM) -> None:
    assert DEFAULT_GENERATOR_TIMEOUT == 120.0
    assert RetryPolicy().timeout == DEFAULT_GENERATOR_TIMEOUT
    assert RetryPolicy.no_wait().timeout == DEFAULT_GENERATOR_TIMEOUT
    gen = FakeGenerator(SOLUTIONS)
    assert BestOfN(gen, prm).retry.timeout == DEFAULT_GENERATOR_TIMEOUT
    assert DVTS(gen, prm, n=2, beam_width=1).retry.timeout == DEFAULT_GENERATOR_TIMEOUT
    assert SelfCritique(gen, prm).retry.timeout == DEFAULT_GENERATOR_TIMEOUT
    assert RetryPolicy(timeout=None).timeout is None  # still allowed, on purpose


def test_a_hanging_generator_fails_its_candidate_alone(prm: OnnxPRM) -> None:
    gen = HangingGenerator(hang_on={1})
    policy = replace(FAST, max_attempts=1, timeout=0.3)
    start = time.perf_counter()
    try:
        r = best_of_n(Q, gen, prm, n=3, max_concurrency=3, retry=policy)
    finally:
        gen.release.set()
    assert time.perf_counter() - start < 5.0
    assert [c.failed_at for c in r.candidates] == [None, "generation", None]
    assert isinstance(r.candidates[1].exception, GeneratorTimeoutError)
    assert "did not answer within 0.3 s" in (r.candidates[1].error or "")
    assert r.score == pytest.approx(max(prm.score(Q, ["w1 = 1"]).min,
                                        prm.score(Q, ["w3 = 3"]).min), abs=1e-7)


def test_an_async_hanging_generator_fails_its_candidate_alone(prm: OnnxPRM) -> None:
    gen = HangingGenerator(hang_on={0})
    policy = replace(FAST, max_attempts=1, timeout=0.3)
    r = asyncio.run(abest_of_n(Q, gen, prm, n=2, max_concurrency=2, retry=policy))
    assert [c.failed_at for c in r.candidates] == ["generation", None]
    assert isinstance(r.candidates[0].exception, GeneratorTimeoutError)
    assert r.text == "w2 = 2"


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def test_sync_calls_run_with_the_callers_context_and_in_order(prm: OnnxPRM) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.seen: list[str] = []
            self.calls = 0
            self._lock = threading.Lock()

        def sample(self, prompt: str, n: int) -> list[str]:
            with self._lock:
                k = self.calls
                self.calls += 1
                self.seen.append(REQUEST_ID.get())
            return [f"w{k % 30 + 1} = {k}"] * n

    token = REQUEST_ID.set("req-7")
    try:
        for _ in range(5):
            gen = Recorder()
            r = best_of_n(Q, gen, prm, n=8, max_concurrency=4, retry=FAST)
            # the k-th call made is candidate k, every run (no thread-timing shuffle)
            assert [c.text for c in r.candidates] == [f"w{k + 1} = {k}" for k in range(8)]
            assert gen.seen == ["req-7"] * 8
        gen = Recorder()  # sync methods under the async form run in worker threads
        asyncio.run(abest_of_n(Q, gen, prm, n=4, max_concurrency=2, retry=FAST))
        assert gen.seen == ["req-7"] * 4
    finally:
        REQUEST_ID.reset(token)


# -- Ray Serve: the request path and the client ---------------------------------------------


@pytest.fixture(scope="module")
def serve_mod() -> Any:
    pytest.importorskip("ray")
    pytest.importorskip("httpx")
    from prm_plugins.adapters.ray import serve

    return serve


class _Counter:
    def __init__(self) -> None:
        self.requests = 0
        self.lock = threading.Lock()


def _http_server(handler_fn: Any) -> tuple[ThreadingHTTPServer, str, _Counter]:
    """A loopback server whose answers come from ``handler_fn(method, path, body)``."""
    counter = _Counter()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with counter.lock:
                counter.requests += 1
            status, data = handler_fn(self.command, self.path, body)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                     daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/prm", counter


@pytest.fixture()
def served(serve_mod: Any, prm: OnnxPRM) -> Iterator[tuple[str, _Counter]]:
    """The deployment's request handling over a :class:`Faulty` scorer, on loopback."""
    scorer = Faulty(prm)

    def handle(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        status, payload = asyncio.run(serve_mod.handle_request(
            method, path, body, score=functools.partial(serve_mod.score_items, scorer),
            model_info=lambda: {"model": "graph"}))
        return status, serve_mod._dumps(payload).encode()

    server, url, counter = _http_server(handle)
    try:
        yield url, counter
    finally:
        server.shutdown()


def test_score_requests_isolates_the_request_that_fails(serve_mod: Any, prm: OnnxPRM) -> None:
    good = [(Q, ["w3 = 3"]), ("w5", ["w6", "w7 w8"]), ("w9", ["w10"])]
    requests = [[good[0]], [("w4", ["w5", "w6 POISONRAISE"])], [good[1], good[2]]]
    out = asyncio.run(serve_mod.score_requests(Faulty(prm), requests))
    expected = prm.score_batch(good)
    assert [s.scores for s in out[0]] == [expected[0].scores]
    assert isinstance(out[1], Exception)
    assert [s.scores for s in out[2]] == [expected[1].scores, expected[2].scores]


def test_hostile_bodies_get_a_400_that_says_why(served: tuple[str, _Counter]) -> None:
    import httpx

    url, _ = served
    deep = b'{"question": "w1", "steps": ["w2"], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    digits = b'{"question": "w1", "steps": ["w2"], "x": ' + b"9" * 5000 + b"}"
    with httpx.Client(timeout=30) as http:
        r = http.post(f"{url}/score", content=deep)
        assert r.status_code == 400
        assert "nested deeper than 64 levels" in r.json()["error"]["message"]
        r = http.post(f"{url}/score", content=digits)
        assert r.status_code == 400
        assert "4300" in r.json()["error"]["message"]  # Python's digit limit, named
        r = http.post(f"{url}/score", content=b"\xff\xfe{}")
        assert r.status_code == 400 and "UTF-8" in r.json()["error"]["message"]
        r = http.post(f"{url}/score", content=b"\xef\xbb\xbf" + json.dumps(
            {"question": "w1", "steps": ["w2"]}).encode())
        assert r.status_code == 200  # a byte-order mark is fine


def test_a_chain_that_breaks_the_scorer_is_a_500_naming_it_and_not_retried(
    served: tuple[str, _Counter], prm: OnnxPRM
) -> None:
    import httpx

    from prm_plugins.adapters.ray import RemotePRM, RemotePRMError

    url, counter = served
    items = [["w1", ["w2"]], ["w4", ["w5 POISONRAISE"]], ["w6", ["w7"]]]
    with httpx.Client(timeout=30) as http:
        r = http.post(f"{url}/score", json={"items": items})
        assert r.status_code == 500
        assert r.json()["error"] == {"type": "RecursionError", "item": 1,
                                     "message": "item 1: maximum recursion depth exceeded"}
        r = http.post(f"{url}/score", json={"question": "w1", "steps": ["w2 POISONNAN"]})
        assert r.status_code == 500 and "finite probabilities" in r.json()["error"]["message"]
        r = http.post(f"{url}/score", json={"items": [items[0], items[2]]})
        assert r.status_code == 200  # the server is fine for everything else
        assert [x["step_scores"] for x in r.json()["results"]] == [
            s.scores for s in prm.score_batch([("w1", ["w2"]), ("w6", ["w7"])])]
    before = counter.requests
    with RemotePRM(url, max_attempts=6, backoff_initial=0.01) as remote:
        with pytest.raises(RemotePRMError, match=r"HTTP 500 \(RecursionError\): item 1"):
            remote.score_batch([tuple(i) for i in items])  # type: ignore[misc]
        assert counter.requests == before + 1  # a deterministic failure is not retried
        assert remote.score("w1", ["w2"]).scores == prm.score("w1", ["w2"]).scores


def _scripted(answers: list[tuple[int, bytes]]) -> tuple[ThreadingHTTPServer, str, _Counter]:
    state = {"k": 0}

    def handle(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        k = min(state["k"], len(answers) - 1)
        state["k"] += 1
        return answers[k]

    return _http_server(handle)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_the_client_retries_only_what_a_retry_can_cure(serve_mod: Any, status: int) -> None:
    from prm_plugins.adapters.ray import RemotePRM

    ok = json.dumps({"results": [{"step_scores": [0.25], "meta": {}}]}).encode()
    server, url, counter = _scripted([(status, b'{"error": "busy"}'), (200, ok)])
    try:
        with RemotePRM(url, max_attempts=3, backoff_initial=0.01) as remote:
            assert remote.score("w1", ["w2"]).scores == [0.25]
        assert counter.requests == 2
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("status", "body", "error", "match"),
    [
        (500, {"error": {"type": "ValueError", "message": "boom"}}, "RemotePRMError",
         r"HTTP 500 \(ValueError\): boom"),
        (501, {"error": {"type": "NotImplemented", "message": "no"}}, "RemotePRMError",
         "HTTP 501"),
        (422, {"error": {"type": "InvalidInputError", "message": "bad steps"}},
         "InvalidInputError", "^bad steps$"),
        (404, {"error": {"type": "NotFound", "message": "no route"}}, "RemotePRMError",
         "HTTP 404"),
        (200, {"results": [{"step_scores": [math.nan]}]}, "RemotePRMError",
         "NaN|finite probabilities"),
        (200, {"results": [{"step_scores": ["abc"]}]}, "RemotePRMError",
         "finite probabilities"),
        (200, {"results": [{"step_scores": [0.5, 0.5]}]}, "RemotePRMError",
         "2 step scores for a chain of 1"),
        (200, {"results": [{"step_scores": [1.5]}]}, "RemotePRMError", "finite probabilities"),
    ],
)
def test_the_client_does_not_retry_a_deterministic_answer(
    serve_mod: Any, status: int, body: Any, error: str, match: str
) -> None:
    from prm_plugins.adapters.ray import RemotePRM, RemotePRMError

    cls = {"RemotePRMError": RemotePRMError, "InvalidInputError": InvalidInputError}[error]
    server, url, counter = _scripted([(status, json.dumps(body).encode())])
    try:
        with RemotePRM(url, max_attempts=4, backoff_initial=0.01) as remote, \
                pytest.raises(cls, match=match):
            remote.score("w1", ["w2"])
        assert counter.requests == 1
    finally:
        server.shutdown()


def test_the_client_reads_a_hostile_answer_as_a_clear_error(serve_mod: Any) -> None:
    from prm_plugins.adapters.ray import RemotePRM, RemotePRMError

    deep = b'{"results": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    server, url, _ = _scripted([(200, deep)])
    try:
        with RemotePRM(url, max_attempts=2, backoff_initial=0.01) as remote, \
                pytest.raises(RemotePRMError, match="cannot be read as JSON.*nested deeper"):
            remote.score("w1", ["w2"])
    finally:
        server.shutdown()


class _RefusesEveryChain:
    """A scorer that refuses every chain as too long (what a short-context PRM does to long
    answers); a test double because the point is the message, not the model."""

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score_batch([(question, steps)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        from prm_plugins.errors import ChainTooLongError

        raise ChainTooLongError("the chain renders to 900 tokens, over max_length 512",
                                n_tokens=900, max_length=512)


def test_all_failed_says_what_happened_not_that_scoring_was_retried() -> None:
    from prm_plugins.strategies import AllCandidatesFailedError, RetryPolicy, best_of_n

    with pytest.raises(AllCandidatesFailedError) as info:
        best_of_n("q", FakeGenerator(["3 + 4 = 7\nThe answer is 7."]), _RefusesEveryChain(),
                  n=2, retry=RetryPolicy.no_wait())
    text = str(info.value)
    assert "ChainTooLongError" in text and "are not retried" in text
    assert "were retried" not in text
    gen = FakeGenerator(fail_always=ConnectionError("reset"))
    with pytest.raises(AllCandidatesFailedError) as info:
        best_of_n("q", gen, _RefusesEveryChain(), n=2, retry=RetryPolicy.no_wait(max_attempts=2))
    assert "transient error were retried" in str(info.value)
    assert "Scoring failures" not in str(info.value)
