"""``import prm_plugins`` must stay light: no torch, transformers, onnxruntime, frameworks."""

from __future__ import annotations

import json
import subprocess
import sys

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
        "UnknownFormatError", "__version__", "aggregate_scores", "load_prm", "split_steps",
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
    import pytest

    from prm_plugins import UnknownFormatError
    from prm_plugins.formats import get_format

    with pytest.raises(UnknownFormatError, match="known formats: .*token-classification"):
        get_format("no-such-format")
