"""Dynamic int8 quantisation of an exported PRM graph, for CPU inference.

``prm export ... --quantize int8`` exports the fp32 graph, checks its parity (fp32
tolerance), quantises it here with ONNX Runtime's ``quantize_dynamic`` (int8 weights,
activations quantised at run time), then measures the int8 graph's own parity against the
torch fp32 model (default tolerance max |Δp| <= 0.05; the mean is reported too).

Layout decision: the int8 model directory holds the int8 graph as ``model.onnx`` and no
fp32 graph, so a model directory is always one graph, one tokenizer, one manifest
(``prm.json`` says ``"dtype": "int8"`` and keeps the fp32 graph's parity figures under
``parity["fp32_graph"]``). Export again without ``--quantize`` for the fp32 directory.

int8 graphs use ``MatMulInteger``/``DynamicQuantizeLinear``, which ONNX Runtime runs on the
CPU provider; they are not meant for CUDA.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from prm_plugins.errors import require

__all__ = ["DEFAULT_OP_TYPES", "quantize_int8"]

logger = logging.getLogger(__name__)

#: Op types quantised by default: the matrix products with weights, where the time and the
#: weights are (``MatMulConstBOnly``: attention's activation x activation products stay
#: fp32). Embedding lookups (``Gather``) stay fp32 by default: quantising them saves disk,
#: not time (``--quantize-embeddings`` turns it on; on the default PRM it cut 28 to 11 MiB
#: at the same step AUROC).
DEFAULT_OP_TYPES: tuple[str, ...] = ("MatMul", "Gemm")


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    *,
    per_channel: bool = True,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    preprocess: bool = True,
    external_data: bool = False,
) -> Path:
    """Quantise the fp32 graph ``src`` into the int8 graph ``dst`` (dynamic quantisation).

    Args:
        src: fp32 ``.onnx`` file (its ``.data`` file beside it when it has one).
        dst: output ``.onnx`` file; its directory must exist.
        per_channel: per-output-channel weight scales (default). On a trained 6-layer
            MiniLM-sized token-classification PRM they cut max |Δp| from 0.10 (per-tensor)
            to 0.04 and mean |Δp| from 0.040 to 0.011.
        op_types: op types to quantise.
        preprocess: run ONNX Runtime's pre-processing first (shape inference and graph
            optimisation), as its quantisation guide recommends.
        external_data: write the weights to ``<dst>.data`` (graphs over 2 GB).

    Returns:
        ``dst``.

    Examples:
        >>> quantize_int8("fp32/model.onnx", "int8/model.onnx")  # doctest: +SKIP
    """
    require("onnxruntime", "export")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    model_input = src
    pre = dst.with_name(dst.stem + ".preprocessed.onnx")
    if preprocess:
        # Symbolic shape inference is skipped: the graph's dynamic shapes are already named,
        # and it fails on some exporter outputs without changing what gets quantised.
        try:
            quant_pre_process(
                str(src), str(pre), skip_symbolic_shape=True,
                save_as_external_data=external_data, all_tensors_to_one_file=True,
                external_data_location=pre.name + ".data",
            )
            model_input = pre
        except Exception as exc:  # pre-processing is an optimisation, not a requirement
            logger.warning("ONNX Runtime pre-processing failed (%s); quantising as exported",
                           exc)
    logger.info("quantising %s to int8 (per_channel=%s, ops=%s)", src.name, per_channel,
                list(op_types))
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # quantize_dynamic warns on the root logger
    try:
        quantize_dynamic(
            str(model_input), str(dst), per_channel=per_channel, weight_type=QuantType.QInt8,
            op_types_to_quantize=list(op_types), use_external_data_format=external_data,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)
        for leftover in (pre, pre.with_name(pre.name + ".data")):
            leftover.unlink(missing_ok=True)
    return dst
