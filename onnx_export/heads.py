"""Moved: the heads live beside their family in :mod:`prm_plugins.onnx_export.wrappers`.

:class:`QwenPRMForProcessReward` is in ``wrappers.qwen_prm``, the Skywork value head in
``wrappers.skywork``, :func:`load_trunk` in ``wrappers.trunk``; ``read_safetensors`` is
:func:`prm_plugins.onnx_export.checkpoint.read_tensors`. This old path warns and goes in the
next release.
"""

from __future__ import annotations

import warnings

from prm_plugins.onnx_export.checkpoint import read_tensors as read_safetensors
from prm_plugins.onnx_export.wrappers.qwen_prm import QwenPRMForProcessReward
from prm_plugins.onnx_export.wrappers.skywork import SkyworkPRMValueModel, SkyworkValueHead
from prm_plugins.onnx_export.wrappers.trunk import load_trunk

__all__ = [
    "QwenPRMForProcessReward",
    "SkyworkPRMValueModel",
    "SkyworkValueHead",
    "load_trunk",
    "read_safetensors",
]

warnings.warn(
    "prm_plugins.onnx_export.heads moved to prm_plugins.onnx_export.wrappers (qwen_prm, "
    "skywork, trunk); import it from there. The old path goes in the next release",
    FutureWarning,
    stacklevel=2,
)
