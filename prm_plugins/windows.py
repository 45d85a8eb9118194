"""Moved to :mod:`prm_plugins.runtime.windows`: this shim warns and forwards for one release."""

from __future__ import annotations

import warnings

warnings.warn(
    "prm_plugins.windows moved to prm_plugins.runtime.windows; import it from there. "
    "The old path goes in the next release",
    FutureWarning,
    stacklevel=2,
)

from prm_plugins.runtime.windows import *  # noqa: E402, F403
from prm_plugins.runtime.windows import (  # noqa: E402
    Window,
    plan_windows,
)

__all__ = [
    "Window",
    "plan_windows",
]
