"""Shared, session-scoped fixtures: tiny random-weight checkpoints built on disk.

Builders live in ``tests/support/tiny_models.py`` (and family-specific modules beside it);
this file only wraps them in fixtures so every test session builds each checkpoint once. Heavy
packages are imported inside the fixtures, so collecting the light tests stays light.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# tests import their helpers as ``from support.X import ...``: make ``tests/`` importable
# whichever folder (tests/unit, tests/integration) the test module sits in.
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

#: Parity settings for exports made in tests: few, short chains (2 shared CPU cores).
TEST_PARITY: dict[str, Any] = {
    "parity_chains": 4,
    "parity_batch_sizes": (1, 3),
    "parity_max_tokens": 96,
}


@pytest.fixture(scope="session")
def tiny_token_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT-like token classifier (hidden 32, 2 layers, 2 labels) with a WordPiece
    tokenizer trained here that keeps ``"\\n"`` as a token (TRL's default separator)."""
    from support.tiny_models import make_tiny_token_classifier

    return make_tiny_token_classifier(tmp_path_factory.mktemp("ckpt") / "token-classifier")


@pytest.fixture(scope="session")
def tiny_causal_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-like causal LM (hidden 32, 2 layers, context 256) with a byte-level BPE
    tokenizer trained here that has ``" ки"``, ``"+"`` and ``"-"`` tokens and adds BOS."""
    from support.tiny_models import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("ckpt") / "causal-lm")


@pytest.fixture(scope="session")
def export_small() -> Callable[..., Path]:
    """``export_small(model_dir, out_dir, format, **config_fields) -> Path``.

    Runs :func:`export_prm` with test-sized parity settings (:data:`TEST_PARITY`), which
    any keyword overrides.
    """

    def run(model_dir: Path, out_dir: Path, format: str, **fields: Any) -> Path:
        from prm_plugins.onnx_export.export import ExportConfig, export_prm

        config = ExportConfig(str(model_dir), str(out_dir), format=format,
                              **{**TEST_PARITY, **fields})
        return export_prm(config)

    return run


@pytest.fixture(scope="session")
def export_cli() -> Callable[..., Path]:
    """``export_cli(model_dir, out_dir, format, *flags) -> Path`` through ``prm export``.

    The command line a user runs, with test-sized parity; asserts exit code 0.
    """

    def run(model_dir: Path, out_dir: Path, format: str, *flags: str) -> Path:
        from prm_plugins.cli import main

        code = main(["export", str(model_dir), str(out_dir), "--format", format,
                     "--parity-chains", "4", *flags])
        assert code == 0, f"prm export exited with {code}"
        return out_dir

    return run
