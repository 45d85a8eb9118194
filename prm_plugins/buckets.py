"""Moved to :mod:`prm_plugins.runtime.buckets`: this shim warns and forwards for one release."""

from __future__ import annotations

import warnings

from prm_plugins.runtime.buckets import *  # noqa: F403
from prm_plugins.runtime.buckets import (
    AUTO_MIN_LENGTH,
    plan_bucketed_batches,
    resolve_length_buckets,
    row_bucket,
    rows_cap,
)

__all__ = [
    "AUTO_MIN_LENGTH",
    "plan_bucketed_batches",
    "resolve_length_buckets",
    "row_bucket",
    "rows_cap",
]

warnings.warn(
    "prm_plugins.buckets moved to prm_plugins.runtime.buckets; import it from there. "
    "The old path goes in the next release",
    FutureWarning,
    stacklevel=2,
)
