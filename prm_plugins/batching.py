"""Moved to :mod:`prm_plugins.runtime.batching`: this shim warns and forwards for one release."""

from __future__ import annotations

import warnings

from prm_plugins.runtime.batching import *  # noqa: F403
from prm_plugins.runtime.batching import (
    Batch,
    bucket_length,
    pad_batch,
    plan_batches,
)

__all__ = [
    "Batch",
    "bucket_length",
    "pad_batch",
    "plan_batches",
]

warnings.warn(
    "prm_plugins.batching moved to prm_plugins.runtime.batching; import it from there. "
    "The old path goes in the next release",
    FutureWarning,
    stacklevel=2,
)
