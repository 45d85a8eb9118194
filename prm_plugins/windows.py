"""Moved to :mod:`prm_plugins.runtime.windows`: this shim warns and forwards for one release."""

from __future__ import annotations

import warnings

from prm_plugins.runtime.windows import *  # noqa: F403
from prm_plugins.runtime.windows import (
    Window,
    plan_windows,
)

__all__ = [
    "Window",
    "plan_windows",
]

warnings.warn(
    "prm_plugins.windows moved to prm_plugins.runtime.windows; import it from there. "
    "The old path goes in the next release",
    FutureWarning,
    stacklevel=2,
)
