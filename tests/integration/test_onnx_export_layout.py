"""onnx_export's layout: old module paths warn and forward; the new ones import light and quiet."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys

import pytest

EXPORT = "prm_plugins.onnx_export"
WRAPPERS = f"{EXPORT}.wrappers"

#: Old module -> {name it exported: (new module, name there)}.
SHIMS: dict[str, dict[str, tuple[str, str]]] = {
    f"{EXPORT}.heads": {
        "QwenPRMForProcessReward": (f"{WRAPPERS}.qwen_prm", "QwenPRMForProcessReward"),
        "SkyworkPRMValueModel": (f"{WRAPPERS}.skywork", "SkyworkPRMValueModel"),
        "SkyworkValueHead": (f"{WRAPPERS}.skywork", "SkyworkValueHead"),
        "load_trunk": (f"{WRAPPERS}.trunk", "load_trunk"),
        "read_safetensors": (f"{EXPORT}.checkpoint", "read_tensors"),
    },
    f"{EXPORT}.wrap_token_classification": {
        "TokenClassificationStepProbs": (f"{WRAPPERS}.token_classification",
                                         "TokenClassificationStepProbs"),
        "build": (f"{WRAPPERS}.token_classification", "build"),
        "load_pretrained": (f"{EXPORT}.checkpoint", "load_pretrained"),
    },
    f"{EXPORT}.wrap_math_shepherd": {
        "TwoTokenStepProbs": (f"{WRAPPERS}.math_shepherd", "TwoTokenStepProbs"),
        "build": (f"{WRAPPERS}.math_shepherd", "build"),
        "two_token_head": (f"{WRAPPERS}.math_shepherd", "two_token_head"),
    },
    f"{EXPORT}.wrap_qwen_prm": {
        "QwenPRMStepProbs": (f"{WRAPPERS}.qwen_prm", "QwenPRMStepProbs"),
        "build": (f"{WRAPPERS}.qwen_prm", "build"),
    },
    f"{EXPORT}.wrap_rlhflow": {"build": (f"{WRAPPERS}.rlhflow", "build")},
    f"{EXPORT}.wrap_skywork": {
        "SkyworkStepProbs": (f"{WRAPPERS}.skywork", "SkyworkStepProbs"),
        "build": (f"{WRAPPERS}.skywork", "build"),
    },
}

#: Every module of the new layout that imports without torch.
LIGHT_MODULES = [f"{EXPORT}.{m}" for m in (
    "bf16", "checkpoint", "config", "detect", "export", "fuse", "graph", "parity",
    "parity_gate", "publish", "quantize", "wrappers", "wrappers.trunk")]


@pytest.mark.parametrize("old", sorted(SHIMS))
def test_old_module_path_warns_and_forwards(old: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(FutureWarning, match=rf"{re.escape(old)} moved to .*next release"):
        module = importlib.import_module(old)
    assert sorted(module.__all__) == sorted(SHIMS[old])
    for name, (new_module, new_name) in SHIMS[old].items():
        assert getattr(module, name) is getattr(importlib.import_module(new_module), new_name)


def test_wrappers_package_keeps_its_public_names() -> None:
    from prm_plugins.onnx_export import checkpoint, wrappers

    assert wrappers.load_hf_tokenizer is checkpoint.load_hf_tokenizer
    assert sorted(wrappers.BUILDERS) == [
        "math-shepherd", "qwen-prm", "rlhflow", "skywork", "token-classification"]
    for module in wrappers.BUILDERS.values():
        assert module.startswith(f"{WRAPPERS}.")


def test_new_modules_import_without_torch_or_future_warnings() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {LIGHT_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps([m for m in ('torch', 'transformers', 'onnx') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
