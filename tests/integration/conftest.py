"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT trunk (hidden 32) and a BERT-style WordPiece tokenizer, saved as a base
    (the training tests' starting point; needs the train extra)."""
    pytest.importorskip("torch", reason="needs the train extra: pip install 'prm-plugins[train]'")
    pytest.importorskip("transformers",
                        reason="needs the train extra: pip install 'prm-plugins[train]'")
    from support.training_toys import make_tiny_bert_base

    return make_tiny_bert_base(tmp_path_factory.mktemp("tiny_bert_base"))
