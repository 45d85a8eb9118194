"""Moved to :mod:`prm_plugins.answers`; this path goes in the next release."""

from __future__ import annotations

import warnings

from prm_plugins.answers import *  # noqa: F403
from prm_plugins.answers import (  # noqa: F401
    __all__,
    answer_is_correct,
    answers_match,
    extract_a_colon,
    extract_answer,
    extract_answer_is,
    extract_boxed,
    extract_gsm8k,
    extract_last_number,
    normalize_answer,
)

warnings.warn(
    "prm_plugins.evaluation.answers moved to prm_plugins.answers; import it from there. "
    "The old path goes in the next release",
    FutureWarning,
    stacklevel=2,
)
