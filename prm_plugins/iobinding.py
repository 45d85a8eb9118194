"""Moved to :mod:`prm_plugins.runtime.iobinding`: this shim warns and forwards for one release."""

from __future__ import annotations

import warnings

from prm_plugins.manifest import GRAPH_INPUTS as INPUT_NAMES  # noqa: F401
from prm_plugins.manifest import GRAPH_OUTPUT as OUTPUT_NAME  # noqa: F401
from prm_plugins.runtime.iobinding import *  # noqa: F403
from prm_plugins.runtime.iobinding import (
    CUDA_GRAPH_MAX_TOKENS,
    BoundRunner,
    cuda_graph_session,
)

__all__ = [
    "BoundRunner",
    "CUDA_GRAPH_MAX_TOKENS",
    "cuda_graph_session",
]

warnings.warn(
    "prm_plugins.iobinding moved to prm_plugins.runtime.iobinding; import it from there. "
    "The old path goes in the next release",
    FutureWarning,
    stacklevel=2,
)
