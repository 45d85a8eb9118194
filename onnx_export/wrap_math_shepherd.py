"""Moved to :mod:`prm_plugins.onnx_export.wrappers.math_shepherd`.

This old path warns and goes in the next release.
"""

from __future__ import annotations

import warnings

from prm_plugins.onnx_export.wrappers.math_shepherd import *  # noqa: F403
from prm_plugins.onnx_export.wrappers.math_shepherd import TwoTokenStepProbs, build, two_token_head

__all__ = ["TwoTokenStepProbs", "build", "two_token_head"]

warnings.warn(
    "prm_plugins.onnx_export.wrap_math_shepherd moved to "
    "prm_plugins.onnx_export.wrappers.math_shepherd; import it from there. The old path "
    "goes in the next release",
    FutureWarning,
    stacklevel=2,
)
