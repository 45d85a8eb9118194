"""The engine: a PRM run by ONNX Runtime, and the mechanics under it.

``from prm_plugins.runtime import OnnxPRM, load_prm, default_model_dir`` is the public path
(unchanged from when this was one module). The modules, one job each:

* :mod:`~prm_plugins.runtime.scorer`: :class:`OnnxPRM` and :func:`load_prm`, which tie the
  rest together;
* :mod:`~prm_plugins.runtime.model_files`: the model directory's files read once and
  verified, the tokenizer built from those bytes, the manifest's token ids checked;
* :mod:`~prm_plugins.runtime.session`: provider choice and the ONNX Runtime session, built
  from the verified bytes;
* :mod:`~prm_plugins.runtime.batching` and :mod:`~prm_plugins.runtime.buckets`: token-budget
  batches, and the few fixed shapes used for CUDA graphs;
* :mod:`~prm_plugins.runtime.windows`: chains longer than the model scored in windows;
* :mod:`~prm_plugins.runtime.iobinding`: IO binding with device buffers, CUDA graphs;
* :mod:`~prm_plugins.runtime.outputs`: the graph contract checked on the session and on every
  run's output (the contract's names live in :mod:`prm_plugins.manifest`).

Importing this package loads numpy but no onnxruntime, tokenizers or torch: those are
imported when a model is loaded.

Examples:
    >>> from prm_plugins.runtime import load_prm
    >>> prm = load_prm()  # doctest: +SKIP
    >>> prm.score("2 + 3 * 4 = ?", ["3 * 4 = 12", "2 + 12 = 14"]).min  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

from prm_plugins.manifest import GRAPH_OUTPUT
from prm_plugins.runtime.outputs import PROB_TOLERANCE as PROB_TOLERANCE
from prm_plugins.runtime.scorer import CPU_ATTENTION_BUDGET as CPU_ATTENTION_BUDGET
from prm_plugins.runtime.scorer import LongChains as LongChains
from prm_plugins.runtime.scorer import OnnxPRM, default_model_dir, load_prm
from prm_plugins.runtime.session import Device as Device

__all__ = ["OnnxPRM", "default_model_dir", "load_prm"]

#: The graph's output name, as this module called it (its home is :mod:`prm_plugins.manifest`).
OUTPUT_NAME = GRAPH_OUTPUT
