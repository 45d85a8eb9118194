"""Moved to :mod:`prm_plugins.onnx_export.wrappers.rlhflow`.

This old path warns and goes in the next release.
"""

from __future__ import annotations

import warnings

from prm_plugins.onnx_export.wrappers.rlhflow import *  # noqa: F403
from prm_plugins.onnx_export.wrappers.rlhflow import build

__all__ = ["build"]

warnings.warn(
    "prm_plugins.onnx_export.wrap_rlhflow moved to "
    "prm_plugins.onnx_export.wrappers.rlhflow; import it from there. The old path goes in "
    "the next release",
    FutureWarning,
    stacklevel=2,
)
