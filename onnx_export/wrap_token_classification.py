"""Moved to :mod:`prm_plugins.onnx_export.wrappers.token_classification`.

This old path warns and goes in the next release.
"""

from __future__ import annotations

import warnings

from prm_plugins.onnx_export.checkpoint import load_pretrained
from prm_plugins.onnx_export.wrappers.token_classification import *  # noqa: F403
from prm_plugins.onnx_export.wrappers.token_classification import (
    TokenClassificationStepProbs,
    build,
)

__all__ = ["TokenClassificationStepProbs", "build", "load_pretrained"]

warnings.warn(
    "prm_plugins.onnx_export.wrap_token_classification moved to "
    "prm_plugins.onnx_export.wrappers.token_classification; import it from there. The old "
    "path goes in the next release",
    FutureWarning,
    stacklevel=2,
)
