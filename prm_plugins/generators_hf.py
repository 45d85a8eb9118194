"""Moved to :mod:`prm_plugins.adapters.transformers`; this path goes in the next release."""

from __future__ import annotations

import warnings

from prm_plugins.adapters.transformers.generator import *  # noqa: F403
from prm_plugins.adapters.transformers.generator import (
    DEFAULT_SYSTEM_PROMPT,
    SMOLLM2_GGUF_FILE,
    SMOLLM2_PACKAGE,
    LocalHFGenerator,
    first_line,
    smollm2_generator,
    smollm2_path,
)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "SMOLLM2_GGUF_FILE",
    "SMOLLM2_PACKAGE",
    "LocalHFGenerator",
    "first_line",
    "smollm2_generator",
    "smollm2_path",
]

warnings.warn(
    "prm_plugins.generators_hf moved to prm_plugins.adapters.transformers; import it from "
    "there. The old path goes in the next release", FutureWarning, stacklevel=2)
