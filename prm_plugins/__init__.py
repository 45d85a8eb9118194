"""prm-plugins: process reward models on ONNX Runtime, for LangChain and LlamaIndex.

``import prm_plugins`` loads no torch, transformers, onnxruntime, langchain or llama_index;
the scorer imports onnxruntime only when a model is loaded.

Examples:
    >>> from prm_plugins import load_prm  # doctest: +SKIP
    >>> prm = load_prm()  # doctest: +SKIP
    >>> prm.score("Ann has 3 pens and buys 2 more. How many?", ["3 + 2 = 5", "5"])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prm_plugins.errors import (
    ChainTooLongError,
    InvalidInputError,
    ManifestVersionError,
    ModelIntegrityError,
    ModelLoadError,
    PRMError,
    UnknownFormatError,
)
from prm_plugins.lazy import lazy_exports
from prm_plugins.steps import split_steps
from prm_plugins.types import StepScorer, StepScores, aggregate_scores

if TYPE_CHECKING:
    from prm_plugins.backends.vllm import VLLMPRM
    from prm_plugins.runtime import OnnxPRM, load_prm

__version__ = "0.1.0"

__all__ = [
    "ChainTooLongError",
    "InvalidInputError",
    "ManifestVersionError",
    "ModelIntegrityError",
    "ModelLoadError",
    "OnnxPRM",
    "PRMError",
    "StepScorer",
    "StepScores",
    "UnknownFormatError",
    "VLLMPRM",
    "__version__",
    "aggregate_scores",
    "load_prm",
    "split_steps",
]

#: The scorers (numpy, then onnxruntime when a model loads; an HTTP client) load on first use.
__getattr__, __dir__ = lazy_exports(__name__, {
    "OnnxPRM": "prm_plugins.runtime", "load_prm": "prm_plugins.runtime",
    "VLLMPRM": "prm_plugins.backends.vllm",
})
