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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, require

__all__ = ["DEFAULT_OP_TYPES", "quantize_graph", "quantize_int8", "quantize_int8_weights"]

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


def quantize_int8_weights(
    src: str | Path,
    dst: str | Path,
    *,
    block_size: int = 32,
    embeddings: bool = True,
) -> Path:
    """Quantise the weights of ``src`` to int8, keeping each row's result its own.

    Dynamic quantisation (:func:`quantize_int8`) picks one activation scale for the whole
    ``[batch, tokens, hidden]`` tensor, so a chain's scores move with its batch mates (by up
    to 0.04 on the default PRM, 0.1 on odd inputs). Here the weights of every ``MatMul`` are
    stored as 8-bit blocks (ONNX Runtime's ``MatMulNBits``, ``block_size`` weights per
    scale) and activations are quantised per row block at run time (``accuracy_level=4``),
    so a chain scores the same alone or in any batch. With ``embeddings`` the embedding
    tables (``Gather``) are stored as int8 too (dequantised on lookup; disk, not speed).

    On the default PRM (3-layer MiniLM): 11.8 MiB, max |Δp| 0.019 / mean 0.002 against the
    fp32 graph, batch-vs-alone difference 0.0000 on 96 validation chains; about 1.6x the time
    of dynamic int8 on 2 CPU cores (``benchmarks/results/cpu_default_model.md``).

    Args:
        src: fp32 ``.onnx`` file.
        dst: output ``.onnx`` file; its directory must exist.
        block_size: weights per quantisation scale (a power of two >= 16).
        embeddings: also store ``Gather`` tables as int8.

    Returns:
        ``dst``.
    """
    require("onnxruntime", "export")
    require("onnx", "export")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    src, dst = Path(src), Path(dst)
    if block_size < 16 or block_size & (block_size - 1):
        from prm_plugins.errors import InvalidInputError

        raise InvalidInputError(f"block_size must be a power of two >= 16, got {block_size}")
    root = logging.getLogger()
    level = root.level
    quantizer_logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    q_level = quantizer_logger.level
    root.setLevel(max(level, logging.ERROR))
    quantizer_logger.setLevel(logging.ERROR)  # it logs every node at INFO
    mid = dst.with_name(dst.stem + ".matmul.onnx")
    try:
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(src)), bits=8, block_size=block_size, is_symmetric=True,
            accuracy_level=4, op_types_to_quantize=("MatMul",),
        )
        quantizer.process()
        n_quantised = sum(1 for n in quantizer.model.model.graph.node
                          if n.op_type == "MatMulNBits")
        if n_quantised == 0:
            from prm_plugins.errors import InvalidInputError

            raise InvalidInputError(
                f"{src.name}: no MatMul with a constant weight was found to quantise; "
                "export without --quantize"
            )
        logger.info("stored %d MatMul weights as 8-bit blocks of %d", n_quantised, block_size)
        if not embeddings:
            quantizer.model.save_model_to_file(str(dst), False)
            return dst
        quantizer.model.save_model_to_file(str(mid), False)
        quantize_dynamic(str(mid), str(dst), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Gather"], per_channel=False)
    finally:
        root.setLevel(level)
        quantizer_logger.setLevel(q_level)
        mid.unlink(missing_ok=True)
    return dst


def quantize_graph(src: Path, dst: Path, method: str, *, per_channel: bool = True,
                   embeddings: bool = False, external_data: bool = False) -> dict[str, Any]:
    """Quantise ``src`` into ``dst`` by ``prm export --quantize`` ``method``.

    Args:
        src: the fp32 graph.
        dst: the int8 graph to write.
        method: ``"int8"`` (:func:`quantize_int8`) or ``"int8-weights"``
            (:func:`quantize_int8_weights`).
        per_channel: int8: per-channel weight scales.
        embeddings: int8: quantise the embedding tables (``Gather``) too.
        external_data: the graph keeps its weights in ``<src>.data`` (over 2 GB).

    Returns:
        How it was quantised, as ``prm.json`` records it (``extra.quantization``).

    Raises:
        InvalidInputError: ``int8-weights`` asked for a graph over 2 GB.
    """
    t0 = time.perf_counter()
    op_types = (*DEFAULT_OP_TYPES, *(("Gather",) if embeddings else ()))
    if method == "int8-weights":
        if external_data:
            raise InvalidInputError(
                "--quantize int8-weights does not handle graphs over 2 GB yet; use "
                "--quantize int8 or fp32")
        quantize_int8_weights(src, dst)
    else:
        quantize_int8(src, dst, per_channel=per_channel, op_types=op_types,
                      external_data=external_data)
    logger.info("quantised to int8 in %.1f s", time.perf_counter() - t0)
    if method == "int8-weights":
        return {"method": "onnxruntime.quantization.MatMulNBitsQuantizer",
                "bits": 8, "block_size": 32, "accuracy_level": 4,
                "embeddings": "quantize_dynamic Gather QInt8",
                "batch_independent": True}
    return {"method": "onnxruntime.quantization.quantize_dynamic",
            "weight_type": "QInt8", "per_channel": per_channel,
            "op_types": list(op_types), "matmul_const_b_only": True}
