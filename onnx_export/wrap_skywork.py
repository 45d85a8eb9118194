"""Moved to :mod:`prm_plugins.onnx_export.wrappers.skywork`.

This old path warns and goes in the next release.
"""

from __future__ import annotations

import warnings

from prm_plugins.onnx_export.wrappers.skywork import *  # noqa: F403
from prm_plugins.onnx_export.wrappers.skywork import SkyworkStepProbs, build

__all__ = ["SkyworkStepProbs", "build"]

warnings.warn(
    "prm_plugins.onnx_export.wrap_skywork moved to "
    "prm_plugins.onnx_export.wrappers.skywork; import it from there. The old path goes in "
    "the next release",
    FutureWarning,
    stacklevel=2,
)
