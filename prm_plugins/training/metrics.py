"""Moved to :mod:`prm_plugins.evaluation.metrics`; this path goes in the next release.

Training and evaluation compute their AUROC figures with one module, so they cannot disagree.
"""

from __future__ import annotations

import warnings

from prm_plugins.evaluation.metrics import *  # noqa: F403
from prm_plugins.evaluation.metrics import auroc, step_auroc_report  # noqa: F401

__all__ = ["auroc", "step_auroc_report"]

warnings.warn(
    "prm_plugins.training.metrics moved to prm_plugins.evaluation.metrics; import it from "
    "there. The old path goes in the next release",
    FutureWarning,
    stacklevel=2,
)
