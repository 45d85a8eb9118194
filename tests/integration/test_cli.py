"""The ``prm`` command line on a hand-built contract graph (see graph_models.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prm_plugins import load_prm
from prm_plugins.cli import main

from support.graph_models import make_model_dir


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
    assert "prm score: line 2:" in err and "prm score: scored 2 chains, 5 bad rows" in err


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


# -- one error style, no tracebacks, messages that name the flag (issue 19, item 5) ----------
def _one_error(capsys: pytest.CaptureFixture[str], verb: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(f"prm {verb}: error: "), err
    return lines[0]


def test_score_path_problems_are_one_line_errors(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"question": "w1", "steps": ["w2"]}\n')
    base = ["score", str(model_dir), "--no-progress"]
    missing_folder = tmp_path / "no" / "such" / "out.jsonl"
    assert main([*base, "-i", str(src), "-o", str(missing_folder)]) == 2
    assert "does not exist; create it first" in _one_error(capsys, "score")
    assert main([*base, "-i", str(src), "-o", str(tmp_path)]) == 2
    assert "is a folder; give a file path" in _one_error(capsys, "score")
    assert main([*base, "-i", str(tmp_path), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "--input" in (line := _one_error(capsys, "score")) and "is a folder" in line
    assert main([*base, "-i", str(tmp_path / "none.jsonl")]) == 2
    assert "not found" in _one_error(capsys, "score")
    assert not missing_folder.parent.exists() and not (tmp_path / "o.jsonl").exists()


def test_long_chain_error_names_the_cli_flag(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = ["w1 w2 w3 w4 w5"] * 10  # over max_length 40
    assert main(["score", str(model_dir), "-q", "w1", "--steps", *steps]) == 2
    line = _one_error(capsys, "score")
    assert "--long-chains window" in line and "load_prm" not in line and "max_length" in line
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"question": "w1", "steps": steps}) + "\n")
    assert main(["score", str(model_dir), "-i", str(src), "-o", str(out), "--no-progress"]) == 1
    row = json.loads(out.read_text())
    assert "--long-chains window" in row["error"] and "load_prm" not in row["error"]
    capsys.readouterr()
    # and the flag works as the message says
    assert main(["score", str(model_dir), "-q", "w1", "--steps", *steps, "--long-chains",
                 "window", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["step_scores"]) == 10


def test_a_missing_key_is_named(model_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"question": "w1"}\n{"steps": ["w2"]}\n{"question": "w1", "steps": "w2"}\n')
    assert main(["score", str(model_dir), "-i", str(src), "-o", str(out), "--no-progress"]) == 1
    errors = [json.loads(line)["error"] for line in out.read_text().splitlines()]
    assert errors[0].startswith("missing key 'steps'") and "NoneType" not in errors[0]
    assert errors[1].startswith("missing key 'question'")
    assert errors[2] == "'steps' must be a list of strings, got str"
    assert "prm score: line 1: missing key 'steps'" in capsys.readouterr().err


def test_split_regex_takes_a_pattern_flag(model_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    chain = ["score", str(model_dir), "-q", "w1", "--solution", "w2 ;; w3 w4 ;; w5", "--json"]
    assert main([*chain, "--split", "regex", "--split-pattern", r"\s*;;\s*"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == ["w2", "w3 w4", "w5"]
    assert main([*chain, "--split", "regex"]) == 2
    assert "--split regex needs --split-pattern" in _one_error(capsys, "score")
    assert main([*chain, "--split-pattern", ";;"]) == 2
    assert "--split-pattern only applies with --split regex" in _one_error(capsys, "score")


@pytest.mark.parametrize("argv, verb, message", [
    (["info", "{tmp}/none"], "info", "prm.json not found"),
    (["calibrate", "{model}"], "calibrate", "needs --data"),
    (["calibrate", "{model}", "--data", "{tmp}"], "calibrate", "is a folder"),
    (["label", "gsm8k", "-i", "{tmp}/none.jsonl", "-o", "{tmp}/o.jsonl"], "label", "not found"),
    (["label", "agreement", "--human", "{tmp}", "--graded", "{tmp}"], "label agreement",
     "is a folder"),
    (["eval", "steps", "{model}", "--data", "{tmp}/none.jsonl", "--kind", "stepwise"],
     "eval steps", "none.jsonl"),
    (["eval", "steps", "{model}", "--data", "x", "--kind", "stepwise", "--threshold", "2"],
     "eval steps", "--threshold must be a number in [0, 1]"),
    (["eval", "steps", "{model}", "--data", "x", "--kind", "stepwise", "--output",
      "{tmp}/no/r.json"], "eval steps", "does not exist; create it first"),
    (["eval", "steps", "{model}", "--data", "x", "--kind", "stepwise", "--output", "{tmp}"],
     "eval steps", "is a folder; give a file path"),
    (["label", "gsm8k", "-i", "{model}/prm.json", "-o", "{tmp}"], "label",
     "is a folder; give a file path"),
    (["label", "merge", "--human", "{model}/prm.json", "--graded", "{model}/prm.json", "-o",
      "{tmp}"], "label merge", "is a folder; give a file path"),
])
def test_every_verb_reports_errors_one_way(
    argv: list[str], verb: str, message: str, model_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [a.format(tmp=tmp_path, model=model_dir) for a in argv]
    assert main(args) == 2
    assert message in _one_error(capsys, verb)


def test_calibrate_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["calibrate", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "Platt calibration" in text and "extra.calibration" in text
    for markup in (":func:", ":class:", "``", ":mod:"):
        assert markup not in text


def test_file_progress_bar_has_a_total(model_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"question": "w1", "steps": [f"w{k}"]}) + "\n\n"
                           for k in range(5)))
    assert main(["score", str(model_dir), "-i", str(src), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "5/5" in err  # tqdm's "n/total": the non-blank lines were counted first
    assert main(["score", str(model_dir), "-i", str(src), "-o", str(out), "--skip", "2"]) == 0
    assert "3/3" in capsys.readouterr().err


def test_device_cuda_shows_no_onnxruntime_log_lines(model_dir: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "prm_plugins.cli", "score", str(model_dir), "--device", "cuda",
         "-q", "w1", "--steps", "w2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 2), proc.stderr  # 2 where no GPU: one clear error
    assert "\x1b[" not in proc.stderr and ":onnxruntime:" not in proc.stderr, proc.stderr
    if proc.returncode == 2:
        assert proc.stderr.startswith("prm score: error: ") and proc.stderr.count("\n") == 1


# -- numbers in text (issue 19, item 6) -------------------------------------------------------
def test_score_help_says_steps_count_from_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    assert "numbered from 1" in " ".join(capsys.readouterr().out.split())


def test_a_score_below_the_threshold_never_prints_equal_to_it(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    score = load_prm(model_dir, device="cpu").score("w1", ["w2", "w3"]).scores
    threshold = score[0] + 1e-6  # equal to 3 decimals, and just above the score
    assert f"{score[0]:.3f}" == f"{threshold:.3f}"
    assert main(["score", str(model_dir), "-q", "w1", "--steps", "w2", "w3", "--threshold",
                 repr(threshold)]) == 0
    lines = capsys.readouterr().out.splitlines()
    step1 = next(ln for ln in lines if ln.strip().startswith("step 1 "))
    shown, flagged = step1.split()[2], step1.split("below threshold ")[1].split()[0]
    assert float(shown) < float(flagged) and shown != flagged
    verdict = lines[-1]
    assert "first weak step: 1" in verdict and f"threshold {flagged}" in verdict
    assert "steps numbered from 1" in verdict


def test_counts_have_their_plural_right(model_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"question": "w1", "steps": ["w2"]}\n')
    assert main(["score", str(model_dir), "-i", str(src), "-o", str(out), "--no-progress"]) == 0
    assert "prm score: scored 1 chain, 0 bad rows" in capsys.readouterr().err


def test_output_helpers() -> None:
    from prm_plugins.cli.output import comparison_digits, plural, score_and_threshold

    assert [plural(n, "step") for n in (0, 1, 2)] == ["0 steps", "1 step", "2 steps"]
    assert plural(1, "retry", "retries") == "1 retry" and plural(3, "retry", "retries") == \
        "3 retries"
    assert score_and_threshold(0.4996, 0.5) == ("0.4996", "0.5000")
    assert score_and_threshold(0.5, 0.5) == ("0.500", "0.500")
    assert comparison_digits([0.5000004], 0.5) == 7


# -- the package: verbs, entry points, shims ------------------------------------------------------
def test_every_verb_is_registered_from_its_module() -> None:
    from prm_plugins.cli import VERBS, build_parser

    names = [m.__name__.rsplit(".", 1)[1] for m in VERBS]
    assert names == ["score", "info", "export", "train", "label", "eval", "calibrate"]
    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    assert list(sub.choices) == names  # type: ignore[union-attr]


def test_python_m_runs_the_cli() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "prm_plugins.cli", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "calibrate" in proc.stdout


@pytest.mark.parametrize("old, new", [
    ("prm_plugins.cli_export", "prm_plugins.cli.export"),
    ("prm_plugins.cli_train", "prm_plugins.cli.train"),
    ("prm_plugins.cli_calibrate", "prm_plugins.cli.calibrate"),
    ("prm_plugins.labeling.cli", "prm_plugins.cli.label"),
    ("prm_plugins.evaluation.cli", "prm_plugins.cli.eval"),
])
def test_old_cli_modules_warn_and_forward(old: str, new: str) -> None:
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=f"{old} moved to {new}"):
        shim = importlib.import_module(old)
    target = importlib.import_module(new)
    assert shim.run is target.run and shim.add_parser is target.make_parser


def test_row_errors_number_steps_from_one(model_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"question": "w1", "steps": ["w2", " "]}\n'
                   '{"question": "w1", "steps": ["w2", "w3"]}\n')
    assert main(["score", str(model_dir), "-i", str(src), "-o", str(out), "--no-progress"]) == 1
    error = json.loads(out.read_text().splitlines()[0])["error"]
    assert error.startswith("step 2 is empty") and "item 0" not in error
    assert "steps[1]" not in error
    capsys.readouterr()
    assert main(["score", str(model_dir), "-q", "w1", "--steps", "w2", ""]) == 2
    assert "error: step 2 is empty" in _one_error(capsys, "score")


def test_label_progress_bar_has_a_total(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import tqdm

    real = tqdm.tqdm

    def shown(*args: object, **kwargs: object) -> object:  # drawn even without a terminal
        return real(*args, **{**kwargs, "disable": False})

    monkeypatch.setattr(tqdm, "tqdm", shown)
    row = {"question": "Tom has 3 boxes of 4 pens. How many pens?",
           "answer": "Tom has 3*4 = <<3*4=12>>12 pens.\n#### 12"}
    src = tmp_path / "gsm8k.jsonl"
    src.write_text((json.dumps(row) + "\n") * 3 + "\n")
    assert main(["label", "gsm8k", "-i", str(src), "-o", str(tmp_path / "o.jsonl")]) == 0
    assert "3/3" in capsys.readouterr().err
    assert main(["label", "gsm8k", "-i", str(src), "-o", str(tmp_path / "o.jsonl"),
                 "--limit", "2"]) == 0
    assert "2/2" in capsys.readouterr().err
