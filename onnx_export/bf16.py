"""bf16 graphs: what ONNX Runtime can run where, and the bf16-weights graph for CPU.

Published PRMs are bf16 checkpoints and upstream runs them in bf16 on GPUs. ONNX Runtime
1.31's CPU provider has no bf16 kernels for the ops a transformer needs (tried: a bf16
``Add``, ``Mul``, ``MatMul``, ``Gemm``, ``Softmax``, ``Sigmoid``, ``Pow``, ``Sqrt``,
``ReduceMean``, ``Div`` each fail session creation with ``NOT_IMPLEMENTED``, and so does a
whole bf16 decoder graph); only ``Cast`` from bf16 works. So ``prm export`` offers:

* ``--dtype bf16``: the graph computes in bf16, as upstream does; for ONNX Runtime's CUDA
  provider. It is exported and its parity measured with ``--device cuda`` only; on CPU the
  export refuses up front with this explanation.
* ``--dtype bf16-weights``: the checkpoint's bf16 weights stored as bf16 (half the file size
  of fp32, exactly the published values) and computed in fp32 on any provider: each bf16
  initializer feeds a ``Cast`` to float. Only initializers whose fp32 values are exactly
  representable in bf16 are stored that way, so the graph computes exactly what the fp32
  graph of the bf16 checkpoint computes (constants made in fp32, such as rotary
  frequencies, stay fp32).

Examples:
    >>> stats = bf16_weights("fp32/model.onnx", "model.onnx")  # doctest: +SKIP
    >>> stats["initializers_bf16"]  # doctest: +SKIP
    20
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CPU_BF16_NOTE", "bf16_weights"]

logger = logging.getLogger(__name__)

#: Why a bf16-compute graph is GPU-only, for error messages and docs.
CPU_BF16_NOTE = (
    "ONNX Runtime's CPU provider has no bf16 kernels for MatMul, Add, Mul, Softmax and the "
    "other ops of a transformer (session creation fails with NOT_IMPLEMENTED; tried with "
    "onnxruntime 1.31)"
)
#: Initializers smaller than this stay fp32 (scalars and small constants: no size to save).
_MIN_ELEMENTS = 16


def bf16_weights(src: str | Path, dst: str | Path, *, external_data: bool = False
                 ) -> dict[str, Any]:
    """Store ``src``'s bf16-exact float initializers as bf16, each cast back to float.

    Args:
        src: an fp32 ONNX graph (its weights loaded from a bf16 checkpoint).
        dst: the graph to write (may equal ``src``).
        external_data: keep the weights in ``<dst>.data``.

    Returns:
        ``{"initializers_bf16", "initializers_fp32", "bytes_before", "bytes_after"}``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src, dst = Path(src), Path(dst)
    proto = onnx.load(str(src), load_external_data=True)
    graph = proto.graph
    kept: list[Any] = []
    casts: list[Any] = []
    n_bf16 = n_fp32 = before = after = 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init).astype(np.float32, copy=False)
        before += values.nbytes
        bits = np.ascontiguousarray(values).view(np.uint32)
        if values.size < _MIN_ELEMENTS or np.any(bits & 0xFFFF):
            kept.append(init)
            n_fp32 += 1
            after += values.nbytes
            continue
        name = init.name
        stored = init.name + "_bf16"
        high = (bits >> 16).astype(np.uint16)
        kept.append(helper.make_tensor(stored, TensorProto.BFLOAT16, list(values.shape),
                                       high.tobytes(), raw=True))
        casts.append(helper.make_node("Cast", [stored], [name], to=TensorProto.FLOAT,
                                      name=f"{name}_to_float"))
        n_bf16 += 1
        after += high.nbytes
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*casts, *nodes])
    onnx.save_model(proto, str(dst), save_as_external_data=external_data,
                    all_tensors_to_one_file=True, location=dst.name + ".data")
    logger.info("bf16 weights: %d initializers stored as bf16, %d kept fp32 (%.1f -> %.1f MiB)",
                n_bf16, n_fp32, before / 2**20, after / 2**20)
    return {"initializers_bf16": n_bf16, "initializers_fp32": n_fp32,
            "bytes_before": before, "bytes_after": after}
