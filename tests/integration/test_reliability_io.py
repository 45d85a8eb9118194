"""Reliability of the JSONL paths: no input is ever overwritten, an interrupted run keeps its
rows, and a hostile line costs only itself.

``prm score`` runs on the hand-built contract graph of ``graph_models`` (real ONNX Runtime),
in process through :func:`prm_plugins.cli.main`, and as a real subprocess where a signal is
sent to it. The readers of ``prm train``/``prm calibrate``/``prm eval`` get the same hostile
lines.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from prm_plugins import InvalidInputError
from prm_plugins.cli import main
from prm_plugins.jsonl import JSONLineError, atomic_output, dumps_line, loads_line

from support.graph_models import make_model_dir
from support.paths import ROOT

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "1" * 5000


def _strict(text: str) -> Any:
    """``json.loads`` that refuses NaN/Infinity, as strict JSON readers do."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _good(k: int) -> dict[str, Any]:
    return {"question": f"w{k % 40}", "steps": ["w1 w2", f"w{(k * 7) % 40} 3 + 4 = 7"],
            "id": k}


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _score(model_dir: Path, *args: str) -> int:
    return main(["score", str(model_dir), "--no-progress", "--device", "cpu", *args])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("reliability-io") / "m", max_length=64)


# -- the shared line reader/writer --------------------------------------------------------------
@pytest.mark.parametrize("line, message", [
    (DEEP, "nested deeper than"),
    ('{"a": ' + HUGE_INT + "}", "more than 4300 digits"),
    ('{"a": NaN}', "NaN"),
    ('{"a": -Infinity}', "Infinity"),
    ('{"a": 1e400}', "too large"),
    (b'{"a": "\xff"}', "not valid UTF-8"),
    ('{"a": 1', "not valid JSON"),
])
def test_a_hostile_line_is_a_line_error(line: str | bytes, message: str) -> None:
    with pytest.raises(JSONLineError, match=message):
        loads_line(line)


def test_a_bom_is_dropped_and_output_lines_are_strict() -> None:
    assert loads_line('\ufeff{"a": [1, "x"]}') == {"a": [1, "x"]}
    assert loads_line(b'\xef\xbb\xbf{"a": 1}\n') == {"a": 1}
    line = dumps_line({"s": "a\u2028b\u2029c", "lone": "\ud800"})
    assert line.count("\n") == 1 and "\u2028" not in line and "\u2029" not in line
    assert len(line.splitlines()) == 1  # str.splitlines splits on U+2028 too
    assert _strict(line) == {"s": "a\u2028b\u2029c", "lone": "\ud800"}
    with pytest.raises(ValueError):
        dumps_line({"x": math.nan})


def test_atomic_output_keeps_an_interrupted_write_and_never_clobbers_a_partial(
        tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    for attempt in (1, 2):
        with pytest.raises(KeyboardInterrupt), atomic_output(out) as fh:
            fh.write(f"row of attempt {attempt}\n")
            assert out.read_text() == "old\n"  # nothing replaces the old file before the end
            raise KeyboardInterrupt
    assert out.read_text() == "old\n"
    partials = sorted(p.name for p in tmp_path.iterdir() if p.name != "out.jsonl")
    assert partials == ["out.jsonl.partial", "out.jsonl.partial.2"]
    assert (tmp_path / "out.jsonl.partial").read_text() == "row of attempt 1\n"
    assert (tmp_path / "out.jsonl.partial.2").read_text() == "row of attempt 2\n"
    with atomic_output(out) as fh:
        fh.write("new\n")
    assert out.read_text() == "new\n"
    assert len(list(tmp_path.iterdir())) == 3  # no temporary file left behind
    with pytest.raises(InvalidInputError, match="does not exist"):
        atomic_output(tmp_path / "missing" / "x.jsonl").__enter__()


# -- prm score: never over its input ------------------------------------------------------------
def test_output_onto_the_input_is_refused_and_the_input_kept(
        model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl"
    _write(src, [_good(k) for k in range(3)])
    before = src.read_bytes()
    (tmp_path / "sym.jsonl").symlink_to(src)
    os.link(src, tmp_path / "hard.jsonl")
    for out in (src, tmp_path / "sym.jsonl", tmp_path / "hard.jsonl",
                tmp_path / "." / "in.jsonl"):
        for extra in ([], ["--ray"]):
            assert _score(model_dir, "--input", str(src), "--output", str(out), *extra) == 2
            err = capsys.readouterr().err
            assert "would destroy the input" in err and "Traceback" not in err
            assert src.read_bytes() == before


def test_bad_paths_are_one_line_errors(model_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl"
    _write(src, [_good(0)])
    cases = [
        (["--input", str(src), "--output", str(tmp_path / "nope" / "o.jsonl")],
         "does not exist"),
        (["--input", str(src), "--output", str(tmp_path)], "is a folder"),
        (["--input", str(tmp_path), "--output", str(tmp_path / "o.jsonl")], "is a folder"),
        (["--input", str(tmp_path / "missing.jsonl")], "not found"),
    ]
    for args, message in cases:
        assert _score(model_dir, *args) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


# -- prm score: hostile lines -------------------------------------------------------------------
def test_hostile_lines_cost_only_themselves(model_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    good = [json.dumps(_good(k)) for k in range(6)]
    hostile = {
        2: DEEP,
        4: '{"question": "w1", "steps": ["w2"], "n": ' + HUGE_INT + "}",
        6: '{"question": "w1", "steps": ["w2"], "x": NaN}',
        8: '{"question": "w1", "steps": ["w2"], "x": 1e999}',
        10: '{"question": "w1", "steps": [["w2"], {"a": 1}]}',
    }
    lines = ["\ufeff" + good[0]]  # a BOM on the first line is accepted
    for k in range(1, 6):
        lines += [hostile[2 * k], good[k]]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _score(model_dir, "--input", str(src), "--output", str(out)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "prm score: scored 6 chains, 5 bad rows" in err
    text = out.read_text(encoding="utf-8")
    rows = [_strict(x) for x in text.splitlines()]
    assert len(rows) == 11
    assert [r["id"] for r in rows if "step_scores" in r] == list(range(6))
    errors = {r["line"]: r["error"] for r in rows if "error" in r}
    assert sorted(errors) == sorted(hostile)
    assert "nested deeper" in errors[2] and "NaN" in errors[6] and "too large" in errors[8]
    assert "digits" in errors[4] and "must be a str" in errors[10]
    assert all(len(r.get("raw", "")) < 1000 for r in rows)  # a hostile line is not echoed whole


def test_output_rows_are_strict_and_carry_no_stale_keys(model_dir: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [
        {"question": "w1", "steps": ["w2 \u2028 w3", "w4\u2029"], "error": "old", "line": 9},
        {"question": "w1", "steps": [], "step_scores": [0.5]},
    ])
    assert _score(model_dir, "--input", str(src), "--output", str(out)) == 1
    text = out.read_text(encoding="utf-8")
    assert "\u2028" not in text and "\u2029" not in text
    first, second = (_strict(x) for x in text.splitlines())
    assert "error" not in first and "line" not in first and len(first["step_scores"]) == 2
    assert first["steps"] == ["w2 \u2028 w3", "w4\u2029"]
    assert "step_scores" not in second and second["line"] == 2 and second["error"]


def test_a_non_finite_score_becomes_that_rows_error(model_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import prm_plugins.runtime as runtime
    from prm_plugins.types import StepScores

    real_load = runtime.load_prm

    class NaNForW9:
        """The real scorer, except that question "w9" gets a NaN (a broken model)."""

        def __init__(self, prm: Any) -> None:
            self.prm = prm

        def __getattr__(self, name: str) -> Any:
            return getattr(self.prm, name)

        def _fix(self, q: str, s: StepScores) -> StepScores:
            if q != "w9":
                return s
            return StepScores(steps=s.steps, scores=[math.nan] * len(s.scores))

        def score(self, q: str, steps: list[str]) -> StepScores:
            return self._fix(q, self.prm.score(q, steps))

        def score_batch(self, items: list[tuple[str, list[str]]]) -> list[StepScores]:
            return [self._fix(q, s) for (q, _), s in zip(items, self.prm.score_batch(items),
                                                         strict=True)]

    monkeypatch.setattr(runtime, "load_prm", lambda *a, **k: NaNForW9(real_load(*a, **k)))
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [_good(1), {"question": "w9", "steps": ["w1"]}, _good(2)])
    assert _score(model_dir, "--input", str(src), "--output", str(out)) == 1
    rows = [_strict(x) for x in out.read_text().splitlines()]
    assert [("step_scores" in r) for r in rows] == [True, False, True]
    assert rows[1]["line"] == 2 and "non-finite" in rows[1]["error"]
    assert "line 2:" in capsys.readouterr().err


def test_skip_continues_where_a_run_stopped(model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    lines = [json.dumps(_good(k)) for k in range(10)]
    lines.insert(3, "")  # blank lines are not counted
    lines.insert(6, "{broken")
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    full, rest = tmp_path / "full.jsonl", tmp_path / "rest.jsonl"
    assert _score(model_dir, "--input", str(src), "--output", str(full)) == 1
    assert _score(model_dir, "--input", str(src), "--output", str(rest), "--skip", "4") == 1
    assert rest.read_text().splitlines() == full.read_text().splitlines()[4:]
    assert json.loads(rest.read_text().splitlines()[1])["line"] == 7  # real line numbers
    assert _score(model_dir, "--input", str(src), "--output", str(rest), "--skip", "99") == 0
    assert rest.read_text() == ""
    assert _score(model_dir, "--input", str(src), "--skip", "-1") == 2


# -- prm score: interrupted by a signal ---------------------------------------------------------
def _start(model_dir: Path, args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "prm_plugins.cli", "score", str(model_dir), "--device", "cpu",
         "--no-progress", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        **kw)


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen[bytes],
                    seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {n} lines")


def test_sigint_keeps_the_written_rows_and_says_how_to_continue(model_dir: Path,
                                                                 tmp_path: Path) -> None:
    rows = [_good(k) for k in range(300)]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, rows)
    proc = _start(model_dir, ["--input", "-", "--output", str(out)], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(src.read_bytes())  # 300 rows, and stdin stays open: 256 get scored
    proc.stdin.flush()
    partial = tmp_path / "out.jsonl.partial"
    _wait_for_lines(partial, 256, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    text = err.decode()
    assert proc.returncode == 130, text
    assert "Traceback" not in text
    assert "256 rows written" in text and "--skip 256" in text and str(partial) in text
    assert not out.exists()
    kept = partial.read_text().splitlines()
    assert [_strict(x)["id"] for x in kept] == list(range(256))
    # continuing with --skip gives, joined, exactly what one uninterrupted run gives
    rest, full = tmp_path / "rest.jsonl", tmp_path / "full.jsonl"
    assert _score(model_dir, "--input", str(src), "--output", str(rest), "--skip", "256") == 0
    assert _score(model_dir, "--input", str(src), "--output", str(full)) == 0
    assert kept + rest.read_text().splitlines() == full.read_text().splitlines()


def test_sigterm_takes_the_same_clean_path(model_dir: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [_good(k) for k in range(40_000)])
    proc = _start(model_dir, ["--input", str(src), "--output", str(out)])
    partial = tmp_path / "out.jsonl.partial"
    _wait_for_lines(partial, 256, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    text = err.decode()
    assert proc.returncode == 143, text
    assert "Traceback" not in text and "SIGTERM" in text
    kept = partial.read_text().splitlines()
    assert 256 <= len(kept) < 40_000
    assert f"{len(kept)} rows written" in text and f"--skip {len(kept)}" in text
    assert [_strict(x)["id"] for x in kept] == list(range(len(kept)))  # a clean prefix
    assert not out.exists()


def test_score_help_documents_interruption(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--skip" in text and ".partial" in text and "SIGTERM" in text


# -- the other readers --------------------------------------------------------------------------
def _stepwise(**kw: Any) -> str:
    return json.dumps({"prompt": "q", "completions": ["a", "b"], "labels": [True, False], **kw})


@pytest.mark.parametrize("hostile, message", [
    ('{"prompt": ' + DEEP + "}", "nested deeper"),
    ('{"prompt": "q", "completions": ["a"], "labels": [true], "n": ' + HUGE_INT + "}",
     "digits"),
])
def test_stepwise_reader_reports_the_hostile_line(tmp_path: Path, hostile: str,
                                                  message: str) -> None:
    from prm_plugins.labeling.stepwise import StepwiseFormatError, read_stepwise_jsonl
    from prm_plugins.training import load_stepwise

    path = tmp_path / "d.jsonl"
    path.write_text("\ufeff" + _stepwise() + "\n" + hostile + "\n" + _stepwise() + "\n",
                    encoding="utf-8")
    with pytest.raises(StepwiseFormatError, match=rf"d.jsonl:2: .*{message}"):
        read_stepwise_jsonl(path)
    with pytest.raises(InvalidInputError, match=rf"d.jsonl:2: .*{message}"):
        load_stepwise(path)  # what prm train reads with
    errors: list[Any] = []
    assert len(read_stepwise_jsonl(path, strict=False, errors=errors)) == 2  # BOM row too
    assert [e.line for e in errors] == [2]


def test_eval_and_gsm8k_readers_report_the_hostile_line(tmp_path: Path) -> None:
    from prm_plugins.evaluation.steps import RowIssue, iter_jsonl
    from prm_plugins.labeling.gsm8k import read_gsm8k_jsonl

    path = tmp_path / "e.jsonl"
    path.write_text("\ufeff{\"a\": 1}\n" + DEEP + "\n{\"n\": " + HUGE_INT + "}\n{\"b\": 2}\n",
                    encoding="utf-8")
    issues: list[RowIssue] = []
    assert [n for n, _ in iter_jsonl(path, issues)] == [1, 4]
    assert [i.where for i in issues] == [f"{path}:2", f"{path}:3"]
    assert "nested deeper" in issues[0].error and "digits" in issues[1].error

    gsm = tmp_path / "g.jsonl"
    gsm.write_text('\ufeff{"question": "a", "answer": "#### 1"}\n' + DEEP + "\n",
                   encoding="utf-8")
    rows = read_gsm8k_jsonl(gsm)
    assert next(rows)["question"] == "a"
    with pytest.raises(InvalidInputError, match=r"g.jsonl:2: nested deeper"):
        next(rows)


def test_prm_calibrate_with_hostile_or_missing_data_is_a_clear_error(
        model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    model = tmp_path / "m"
    shutil.copytree(model_dir, model)
    manifest = (model / "prm.json").read_bytes()
    data = tmp_path / "val.jsonl"
    data.write_text(_stepwise() + "\n" + '{"prompt": ' + HUGE_INT + "}\n", encoding="utf-8")
    for bad, message in ((data, "val.jsonl:2"), (tmp_path / "none.jsonl", "not found"),
                         (tmp_path, "is a folder")):
        assert main(["calibrate", str(model), "--data", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("prm calibrate: error: ") and message in err
        assert "Traceback" not in err
    assert (model / "prm.json").read_bytes() == manifest  # untouched


# -- Ray ----------------------------------------------------------------------------------------
def test_ray_score_pairs_fails_a_bad_chain_alone() -> None:
    pytest.importorskip("ray")
    from prm_plugins.adapters.ray.data import score_pairs
    from prm_plugins.types import StepScores

    class Scorer:
        def score_batch(self, pairs: list[Any]) -> list[StepScores]:
            return [self.score(q, s) for q, s in pairs]

        def score(self, q: str, steps: list[str]) -> StepScores:
            if q == "boom":
                raise RecursionError("maximum recursion depth exceeded")
            return StepScores(steps=steps, scores=[math.nan if q == "nan" else 0.5] * len(steps))

    got = score_pairs(Scorer(), [("a", ["x"]), ("boom", ["x"]), ("nan", ["x"]), ("b", ["y"])])
    assert got[0] == [0.5] and got[3] == [0.5]
    assert isinstance(got[1], str) and "RecursionError" in got[1]
    assert isinstance(got[2], str) and "non-finite" in got[2]


@pytest.mark.slow
def test_ray_cli_fails_hostile_rows_alone_and_writes_atomically(
        model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    src, out, local = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "local.jsonl"
    lines = [json.dumps(_good(k)) for k in range(8)]
    lines[0] = "\ufeff" + lines[0]
    lines.insert(2, DEEP)
    lines.insert(4, '{"question": "w1", "steps": [1, 2]}')
    lines.insert(6, '{"question": "w1", "steps": ["w2"], "n": ' + HUGE_INT + "}")
    lines.insert(8, json.dumps({"question": "w1", "steps": ["w2"], "error": "stale"}))
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _score(model_dir, "--input", str(src), "--output", str(local)) == 1
    capsys.readouterr()
    code = _score(model_dir, "--input", str(src), "--output", str(out), "--ray",
                  "--num-actors", "1", "--batch-size", "4")
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert out.read_text() == local.read_text()
    rows = [_strict(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in rows if "error" in r] == [3, 5, 7]
    assert "error" not in rows[8]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "local.jsonl",
                                                          "out.jsonl"]
