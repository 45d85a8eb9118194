"""Platt calibration: the fit, the runtime applying it from prm.json, and ``prm calibrate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from prm_plugins import InvalidInputError, load_prm
from prm_plugins.calibration import PlattCalibration, fit_platt
from prm_plugins.cli import main
from prm_plugins.manifest import Manifest

from support.graph_models import make_model_dir


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_fit_recovers_known_slope_and_offset() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 2.0, size=20000)
    y = rng.random(20000) < _sigmoid(0.6 * z + 0.8)
    cal = fit_platt(_sigmoid(z), y)
    assert cal.a == pytest.approx(0.6, abs=0.05)
    assert cal.b == pytest.approx(0.8, abs=0.06)


def test_apply_is_the_formula_and_keeps_the_order() -> None:
    cal = PlattCalibration(a=0.7, b=0.7)
    p = [0.05, 0.3, 0.5, 0.93]
    out = cal.apply(p)
    for raw, new in zip(p, out, strict=True):
        assert new == pytest.approx(1 / (1 + math.exp(-(0.7 * math.log(raw / (1 - raw)) + 0.7))))
    assert out == sorted(out)
    assert PlattCalibration(1.0, 0.0).apply([0.0, 1.0]) == pytest.approx([1e-6, 1 - 1e-6])


def test_bad_inputs_are_refused_with_the_reason() -> None:
    with pytest.raises(InvalidInputError, match="both good and bad"):
        fit_platt([0.2, 0.9], [True, True])
    with pytest.raises(InvalidInputError, match="2 probabilities but 1 labels"):
        fit_platt([0.2, 0.9], [True])
    with pytest.raises(InvalidInputError, match="slope is"):  # scores rank bad above good
        fit_platt([0.9, 0.8, 0.2, 0.1] * 10, [False, False, True, True] * 10)
    with pytest.raises(InvalidInputError, match="must be > 0"):
        PlattCalibration(a=-1.0, b=0.0)
    with pytest.raises(InvalidInputError, match="method"):
        PlattCalibration.from_manifest({"a": 1.0, "b": 0.0})


def _stepwise(path: Path) -> Path:
    # Words of the graph's vocabulary; labels follow whether a step holds an even word, so
    # both classes are present and the fit has something to learn.
    rows = []
    rng = np.random.default_rng(0)
    for i in range(40):
        steps = [" ".join(f"w{int(k)}" for k in rng.integers(0, 40, size=3)) for _ in range(3)]
        labels = [int(s.split()[0][1:]) % 2 == 0 for s in steps]
        rows.append({"prompt": f"w{i % 40} w{(i * 7) % 40}", "completions": steps,
                     "labels": labels})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prm_calibrate_writes_prm_json_and_the_runtime_applies_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_model_dir(tmp_path / "m", max_length=64)
    data = _stepwise(tmp_path / "val.jsonl")
    assert main(["calibrate", str(model), "--data", str(data), "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)
    man = Manifest.read(model)
    assert man.extra["calibration"] == entry and entry["method"] == "platt"
    assert entry["rows"] == 40 and entry["steps"] == 120
    assert entry["log_loss"]["after"] <= entry["log_loss"]["before"]

    raw = load_prm(model, device="cpu", calibrate=False)
    cal = load_prm(model, device="cpu")  # hashes still hold: only prm.json changed
    steps = ["w3 w8 w1", "w10 w2 w5"]
    expected = PlattCalibration(entry["a"], entry["b"]).apply(raw.score("w1 w2", steps).scores)
    assert cal.score("w1 w2", steps).scores == pytest.approx(expected)
    assert cal.score("w1 w2", steps).scores != pytest.approx(raw.score("w1 w2", steps).scores)

    assert main(["calibrate", str(model), "--remove"]) == 0
    assert "calibration" not in Manifest.read(model).extra
    assert load_prm(model, device="cpu").score("w1 w2", steps).scores == pytest.approx(
        raw.score("w1 w2", steps).scores)


def test_prm_calibrate_usage_errors(tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    model = make_model_dir(tmp_path / "m", max_length=64)
    assert main(["calibrate", str(model)]) == 2
    assert "needs --data" in capsys.readouterr().err
    one_class = tmp_path / "good.jsonl"
    one_class.write_text(json.dumps({"prompt": "w1", "completions": ["w2"], "labels": [True]})
                         + "\n")
    assert main(["calibrate", str(model), "--data", str(one_class)]) == 2
    assert "both good and bad" in capsys.readouterr().err
    assert "calibration" not in Manifest.read(model).extra
    assert main(["calibrate", str(tmp_path / "nope"), "--data", str(one_class)]) == 2


def test_the_model_dir_workflow_is_a_public_api_the_cli_runs(tmp_path: Path) -> None:
    from prm_plugins.calibration import calibrate_model_dir, remove_calibration
    from prm_plugins.labeling.stepwise import read_stepwise_jsonl

    model = make_model_dir(tmp_path / "m", max_length=64)
    rows = read_stepwise_jsonl(_stepwise(tmp_path / "val.jsonl"))
    entry = calibrate_model_dir(model, rows, batch_size=7, data_name="val.jsonl")
    assert Manifest.read(model).extra["calibration"] == entry
    assert entry["data"] == "val.jsonl" and entry["steps"] == 120
    twin = make_model_dir(tmp_path / "twin", max_length=64)
    assert main(["calibrate", str(twin), "--data", str(tmp_path / "val.jsonl"), "--json"]) == 0
    cli_entry = Manifest.read(twin).extra["calibration"]
    # the same fit as the CLI's (batch size and padding move scores by float noise at most)
    assert {k: cli_entry[k] for k in ("rows", "steps", "good_steps", "data")} == {
        k: entry[k] for k in ("rows", "steps", "good_steps", "data")}
    assert (cli_entry["a"], cli_entry["b"]) == pytest.approx((entry["a"], entry["b"]), abs=1e-6)
    with pytest.raises(InvalidInputError, match="no stepwise rows"):
        calibrate_model_dir(model, [])
    with pytest.raises(InvalidInputError, match="batch_size"):
        calibrate_model_dir(model, rows, batch_size=0)
    assert remove_calibration(model) is True
    assert remove_calibration(model) is False
    assert "calibration" not in Manifest.read(model).extra
