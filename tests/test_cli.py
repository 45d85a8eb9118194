"""The ``prm`` command line on a hand-built contract graph (see graph_models.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from graph_models import make_model_dir

from prm_plugins import load_prm
from prm_plugins.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("cli") / "m", max_length=40)


def test_score_file_keeps_good_rows_and_reports_bad_ones(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    long_steps = ["w1 w2 w3 w4 w5"] * 10
    src.write_bytes(
        b'{"question": "w1 w2", "steps": ["w3", "w4 w5"]}\n'
        b'{"question": "w1", "steps": ["w3"\n'  # broken JSON
        b"\n"  # blank lines are skipped
        b'{"question": 7, "steps": ["w3"]}\n'
        + json.dumps({"question": "w1", "steps": long_steps}).encode() + b"\n"
        b'{"question": "w6", "steps": ["w7", "w8"], "id": "keep-me"}\n'
        b'["not", "an", "object"]\n'
        b'{"question": "w9", "steps": []}\n'
    )
    out = tmp_path / "out.jsonl"
    code = main(["score", str(model_dir), "--input", str(src), "--output", str(out),
                 "--no-progress"])
    assert code == 1  # some rows were bad
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 7  # one output row per input row, nothing lost
    prm = load_prm(model_dir, device="cpu")
    np.testing.assert_allclose(rows[0]["step_scores"], prm.score("w1 w2", ["w3", "w4 w5"]).scores,
                               atol=1e-5)
    assert rows[4]["id"] == "keep-me" and len(rows[4]["step_scores"]) == 2
    bad = {r["line"]: r["error"] for r in rows if "error" in r}
    assert set(bad) == {2, 4, 5, 7, 8}
    assert "not valid JSON" in bad[2]
    assert "'question' must be a string" in bad[4]
    assert "max_length" in bad[5]
    assert "expected a JSON object" in bad[7]
    assert "empty" in bad[8]
    err = capsys.readouterr().err
    assert "line 2:" in err and "scored 2 chain(s), 5 bad row(s)" in err


def test_score_file_with_invalid_utf8_loses_only_that_line(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"question": "w1", "steps": ["w2"]}\n' + b"\xff\xfe broken\n"
                    + b'{"question": "w3", "steps": ["w4", "w5"]}\n')
    out = tmp_path / "out.jsonl"
    assert main(["score", str(model_dir), "-i", str(src), "-o", str(out), "--no-progress"]) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    assert len(rows[0]["step_scores"]) == 1 and len(rows[2]["step_scores"]) == 2
    assert rows[1]["line"] == 2 and "not valid UTF-8" in rows[1]["error"]
    assert "line 2: not valid UTF-8" in capsys.readouterr().err


def test_score_one_chain_json(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(model_dir), "--question", "w1 w2", "--solution", "w3\nw4 w5",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["steps"] == ["w3", "w4 w5"] and len(res["step_scores"]) == 2
    assert res["min"] == min(res["step_scores"])


def test_score_one_chain_table(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(model_dir), "-q", "w1", "--steps", "w2", "w3",
                 "--threshold", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "step 1" in out and "step 2" in out and "below threshold" in out


def test_score_usage_errors(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(model_dir)]) == 2
    assert "nothing to score" in capsys.readouterr().err
    assert main(["score", str(model_dir), "-q", "w1"]) == 2
    assert "exactly one of --steps or --solution" in capsys.readouterr().err
    assert main(["score", str(model_dir / "nope"), "-q", "w1", "--steps", "w2"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_info_verifies_files(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(model_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "token-classification" and info["files_verified"] is True
    assert set(info["files"]) == {"model.onnx", "tokenizer.json"}


def test_info_refuses_tampered_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_model_dir(tmp_path / "m")
    (d / "tokenizer.json").write_text("{}")
    assert main(["info", str(d)]) == 2
    assert "does not match its sha256" in capsys.readouterr().err
