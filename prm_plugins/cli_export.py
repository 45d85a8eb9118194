"""Moved to ``prm_plugins.cli.export``: this shim warns and forwards for one release."""

from __future__ import annotations

import warnings

from prm_plugins.cli.export import *  # noqa: F403
from prm_plugins.cli.export import (
    add_parser,
    parse_option,
    run,
)

__all__ = ["add_parser", "parse_option", "run"]

warnings.warn(
    "prm_plugins.cli_export moved to prm_plugins.cli.export; import it from there. "
    "The old path goes in the next release",
    FutureWarning,
    stacklevel=2,
)
