"""``import prm_plugins`` must stay light: no torch, transformers, onnxruntime, frameworks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import prm_plugins

HEAVY = ["torch", "transformers", "onnxruntime", "onnx", "langchain", "langchain_core",
         "llama_index", "tokenizers"]


def test_import_loads_no_heavy_package() -> None:
    code = (
        "import sys, json, prm_plugins, prm_plugins.cli;"
        "prm_plugins.cli.build_parser();"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_public_api_is_pinned() -> None:
    assert sorted(prm_plugins.__all__) == sorted([
        "ChainTooLongError", "InvalidInputError", "ManifestVersionError", "ModelIntegrityError",
        "ModelLoadError", "OnnxPRM", "PRMError", "StepScorer", "StepScores",
        "UnknownFormatError", "VLLMPRM", "__version__", "aggregate_scores", "load_prm",
        "split_steps",
    ])
    for name in prm_plugins.__all__:
        assert hasattr(prm_plugins, name), name


def test_formats_are_registered() -> None:
    from prm_plugins.formats import available_formats, get_format

    assert {"token-classification", "qwen-prm", "math-shepherd", "rlhflow", "skywork"} <= set(
        available_formats()
    )
    assert get_format("token-classification").name == "token-classification"


def test_unknown_format_lists_known_ones() -> None:
    from prm_plugins import UnknownFormatError
    from prm_plugins.formats import get_format

    with pytest.raises(UnknownFormatError, match="known formats: .*token-classification"):
        get_format("no-such-format")


def test_runtime_package_imports_light_and_keeps_its_names() -> None:
    # prm_plugins.runtime became a package: its old names still import from it, without a
    # warning, and importing it still loads no onnxruntime, tokenizers or torch.
    code = (
        "import sys, json, warnings;"
        "warnings.simplefilter('error');"
        "from prm_plugins.runtime import (OnnxPRM, load_prm, default_model_dir,"
        " CPU_ATTENTION_BUDGET, PROB_TOLERANCE, OUTPUT_NAME, Device, LongChains);"
        "import prm_plugins.runtime as r;"
        "print(json.dumps([[m for m in " + repr(HEAVY) + " if m in sys.modules],"
        " sorted(r.__all__), OUTPUT_NAME, CPU_ATTENTION_BUDGET, PROB_TOLERANCE,"
        " (default_model_dir() / 'prm.json').is_file()]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, names, output, budget, tolerance, shipped = json.loads(
        out.stdout.strip().splitlines()[-1])
    assert heavy == []
    assert names == ["OnnxPRM", "default_model_dir", "load_prm"]
    assert (output, budget, tolerance, shipped) == ("step_probs", 1 << 20, 1e-4, True)


OLD_RUNTIME_MODULES = {
    "batching": ["Batch", "bucket_length", "pad_batch", "plan_batches"],
    "buckets": ["AUTO_MIN_LENGTH", "plan_bucketed_batches", "resolve_length_buckets",
                "row_bucket", "rows_cap"],
    "windows": ["Window", "plan_windows"],
    "iobinding": ["BoundRunner", "CUDA_GRAPH_MAX_TOKENS", "cuda_graph_session"],
}


@pytest.mark.parametrize("module", sorted(OLD_RUNTIME_MODULES))
def test_old_runtime_module_paths_warn_and_forward(module: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    new = importlib.import_module(f"prm_plugins.runtime.{module}")
    monkeypatch.delitem(sys.modules, f"prm_plugins.{module}", raising=False)
    with pytest.warns(FutureWarning, match=rf"prm_plugins\.{module} moved to "
                                           rf"prm_plugins\.runtime\.{module}; import it from"):
        old = importlib.import_module(f"prm_plugins.{module}")
    assert sorted(old.__all__) == sorted(new.__all__) == sorted(OLD_RUNTIME_MODULES[module])
    for name in OLD_RUNTIME_MODULES[module]:
        assert getattr(old, name) is getattr(new, name), name
    if module == "iobinding":  # its module-level graph names, now from the contract's home
        assert (old.INPUT_NAMES, old.OUTPUT_NAME) == (("input_ids", "attention_mask"),
                                                      "step_probs")
