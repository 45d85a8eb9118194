"""Moved to ``prm_plugins.cli.eval``: this shim warns and forwards for one release."""

from __future__ import annotations

import warnings

from prm_plugins.cli.eval import *  # noqa: F403
from prm_plugins.cli.eval import (
    BonEvalConfig,
    StepsEvalConfig,
    add_parser,
    run,
)

__all__ = ["BonEvalConfig", "StepsEvalConfig", "add_parser", "run"]

warnings.warn(
    "prm_plugins.evaluation.cli moved to prm_plugins.cli.eval; import it from there. "
    "The old path goes in the next release",
    FutureWarning,
    stacklevel=2,
)
