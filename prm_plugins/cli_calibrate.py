"""Moved to ``prm_plugins.cli.calibrate``: this shim warns and forwards for one release."""

from __future__ import annotations

import warnings

from prm_plugins.cli.calibrate import *  # noqa: F403
from prm_plugins.cli.calibrate import (
    add_parser,
    run,
)

__all__ = ["add_parser", "run"]

warnings.warn(
    "prm_plugins.cli_calibrate moved to prm_plugins.cli.calibrate; import it from there. "
    "The old path goes in the next release",
    FutureWarning,
    stacklevel=2,
)
