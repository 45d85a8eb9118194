"""Moved to :mod:`prm_plugins.onnx_export.wrappers.qwen_prm`.

This old path warns and goes in the next release.
"""

from __future__ import annotations

import warnings

from prm_plugins.onnx_export.wrappers.qwen_prm import *  # noqa: F403
from prm_plugins.onnx_export.wrappers.qwen_prm import QwenPRMStepProbs, build

__all__ = ["QwenPRMStepProbs", "build"]

warnings.warn(
    "prm_plugins.onnx_export.wrap_qwen_prm moved to "
    "prm_plugins.onnx_export.wrappers.qwen_prm; import it from there. The old path goes "
    "in the next release",
    FutureWarning,
    stacklevel=2,
)
