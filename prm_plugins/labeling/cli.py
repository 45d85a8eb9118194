"""Moved to ``prm_plugins.cli.label``: this shim warns and forwards for one release."""

from __future__ import annotations

import warnings

from prm_plugins.cli.label import *  # noqa: F403
from prm_plugins.cli.label import (
    add_parser,
    run,
)

__all__ = ["add_parser", "run"]

warnings.warn(
    "prm_plugins.labeling.cli moved to prm_plugins.cli.label; import it from there. "
    "The old path goes in the next release",
    FutureWarning,
    stacklevel=2,
)
