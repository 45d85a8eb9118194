"""The warning when onnxruntime and onnxruntime-gpu are both installed.

Why the distribution lookup is monkeypatched: two ONNX Runtime distributions in one environment
overwrite each other's files (that is the fault being warned about), so the test environment
cannot really hold both. The check reads only package metadata through
``importlib.metadata.distribution``; replacing that lookup makes this environment report a
second distribution while the real onnxruntime session is still created and run.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path
from typing import Any

import pytest

from prm_plugins import load_prm
from prm_plugins.runtime import install
from prm_plugins.runtime.install import (
    OnnxRuntimeInstallWarning,
    check_onnxruntime_install,
    onnxruntime_distributions,
)

from support.graph_models import make_model_dir

_REAL_DISTRIBUTION = importlib.metadata.distribution


class _FakeDistribution:
    def __init__(self, version: str) -> None:
        self.version = version


def _pretend_installed(monkeypatch: pytest.MonkeyPatch, extra: dict[str, str]) -> None:
    """Make ``importlib.metadata.distribution`` also report the distributions in ``extra``."""

    def distribution(name: str) -> Any:
        if name in extra:
            return _FakeDistribution(extra[name])
        return _REAL_DISTRIBUTION(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    monkeypatch.setattr(install, "_warned", False)


def _real_runtime() -> str:
    found = [n for n in ("onnxruntime-gpu", "onnxruntime") if n in onnxruntime_distributions()]
    assert len(found) == 1, f"this environment should hold exactly one runtime, found {found}"
    return found[0]


def _other(name: str) -> str:
    return "onnxruntime" if name == "onnxruntime-gpu" else "onnxruntime-gpu"


def test_one_runtime_installed_gives_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install, "_warned", False)
    real = _real_runtime()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_onnxruntime_install() == []
    assert list(onnxruntime_distributions()) == [real]


def test_both_runtimes_warn_once_naming_both_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _real_runtime()
    _pretend_installed(monkeypatch, {_other(real): "1.20.0"})
    with pytest.warns(OnnxRuntimeInstallWarning) as record:
        found = check_onnxruntime_install()
    assert sorted(found) == ["onnxruntime", "onnxruntime-gpu"]
    message = str(record[0].message)
    assert "onnxruntime 1" in message and "onnxruntime-gpu 1" in message
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(check_onnxruntime_install()) == ["onnxruntime", "onnxruntime-gpu"]


def test_loading_a_model_warns_once_when_both_are_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model_dir = make_model_dir(tmp_path / "m", max_length=32)
    real = _real_runtime()
    _pretend_installed(monkeypatch, {_other(real): "1.20.0"})
    with pytest.warns(OnnxRuntimeInstallWarning, match="several ONNX Runtime distributions"):
        prm = load_prm(model_dir, device="cpu")
    assert len(prm.score("w1 + w2 = ?", ["w3 = 4"]).scores) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", OnnxRuntimeInstallWarning)
        load_prm(model_dir, device="cpu")


def test_loading_a_model_with_one_runtime_does_not_warn(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(install, "_warned", False)
    model_dir = make_model_dir(tmp_path / "m", max_length=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OnnxRuntimeInstallWarning)
        load_prm(model_dir, device="cpu")


def test_missing_extra_message_gives_the_checkout_and_the_published_command() -> None:
    from prm_plugins.errors import MissingExtraError, require

    with pytest.raises(MissingExtraError) as info:
        require("prm_plugins_no_such_module", "langchain")
    message = str(info.value)
    assert "'prm_plugins_no_such_module'" in message
    assert 'pip install ".[langchain]"' in message and "checkout" in message
    assert 'pip install "prm-plugins[langchain]"' in message and "published" in message
