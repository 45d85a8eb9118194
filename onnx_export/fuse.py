"""Fuse a decoder PRM's graph into ONNX opset-23 ``Attention``, ``RMSNormalization`` and
``RotaryEmbedding`` ops: the graph ``prm export --optimize fused`` writes.

The plain export keeps attention as MatMul-Softmax-MatMul over ``T x T``, RMSNorm as six
element-wise ops and rotary as Slice/Neg/Concat/Mul/Add, which ONNX Runtime CUDA runs far
slower than PyTorch (``../shared/GPU.md``). Exported at opset 23, ``scaled_dot_product_attention``
becomes the native ``Attention`` op, which takes the padding-and-causal mask as a boolean
``attn_mask`` and so scores left- and right-padded batches correctly (unlike the
``com.microsoft`` GroupQueryAttention fusion, which assumes a decode-style graph). This module
then:

1. cleans the graph (constant folding, common subexpressions: onnxscript's optimizer);
2. fuses RMSNorm and rotary patterns into ``RMSNormalization`` / ``RotaryEmbedding``
   (onnxscript's opset-23 rules, plus :class:`RotaryEmbeddingCastFusion`, the same rotary
   pattern with the ``Cast`` to fp16/bf16 that a half-precision trunk puts after ``Cos``/``Sin``);
3. folds grouped-query ``repeat_kv`` (``Unsqueeze -> Expand -> Reshape`` of K and V) into
   ``Attention``, which takes fewer K/V heads than query heads natively (:func:`fold_repeat_kv`);
4. counts every op type before and after, and refuses a graph in which a required fused op
   is missing (an encoder, eager attention, a rotary variant the rules do not know).

Examples:
    >>> report = fuse_decoder_graph("model.onnx", "model.onnx")  # doctest: +SKIP
    >>> report.fused_ops
    {'Attention': 24, 'RMSNormalization': 49, 'RotaryEmbedding': 48}
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prm_plugins.errors import FusionError, require
from prm_plugins.onnx_export.checkpoint import describe_checkpoint

__all__ = [
    "FUSED_OPSET",
    "FUSED_OP_TYPES",
    "FusionError",
    "FusionReport",
    "check_fusable",
    "count_ops",
    "fold_repeat_kv",
    "fuse_decoder_graph",
]

logger = logging.getLogger(__name__)

#: Opset of the fused graph: the first with ``Attention``, ``RMSNormalization`` and
#: ``RotaryEmbedding`` in the default domain.
FUSED_OPSET = 23
#: Op types a fused decoder graph must hold (each at least once).
FUSED_OP_TYPES: tuple[str, ...] = ("Attention", "RMSNormalization", "RotaryEmbedding")


@dataclass
class FusionReport:
    """What :func:`fuse_decoder_graph` did, as written into ``prm.json`` (``fusion``).

    Attributes:
        fused_ops: op type -> count in the final graph, for :data:`FUSED_OP_TYPES`.
        fusions: rule -> times it fired in this pass.
        ops_before: op type -> count after cleaning, before the fusion rules.
        ops_after: op type -> count of the final graph.
        nodes_before: node count before the fusion rules.
        nodes_after: node count of the final graph.
    """

    fused_ops: dict[str, int]
    fusions: dict[str, int]
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    nodes_before: int = 0
    nodes_after: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return asdict(self)


def count_ops(model: Any) -> dict[str, int]:
    """Op type -> count over a model's main graph (an ``onnx.ModelProto`` or ``onnx_ir.Model``).

    Ops outside the default ONNX domain are named ``domain::OpType``.
    """
    graph = model.graph
    nodes: Iterable[Any] = graph if callable(getattr(graph, "node", None)) else graph.node
    counts: Counter[str] = Counter()
    for node in nodes:
        domain = node.domain or ""
        name = node.op_type if domain in ("", "ai.onnx") else f"{domain}::{node.op_type}"
        counts[name] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _rotary_cast_rule() -> Any:
    """The rotary pattern of a half-precision trunk -> opset-23 ``RotaryEmbedding``.

    transformers computes ``cos``/``sin`` in float32 and casts them to the model dtype, so an
    fp16 graph holds ``Unsqueeze(Cast(Cos(Concat(f, f))))`` where onnxscript's rule expects
    ``Unsqueeze(Cos(Concat(f, f)))``. The rewrite keeps the angles in float32 and casts the
    half-width caches: ``RotaryEmbedding(x, Cast(Cos(f)), Cast(Sin(f)))``.
    """
    from onnxscript.rewriter import _ir_utils, pattern

    class RotaryEmbeddingCastFusion(pattern.RewriteRuleClassBase):
        def __init__(self) -> None:
            super().__init__(name="RotaryEmbeddingCast", remove_nodes=False)

        def pattern(self, op: Any, x: Any, freqs: Any, start1: Any, end1: Any, start2: Any,
                    end2: Any, one1: Any, one2: Any) -> Any:
            both = op.Concat(freqs, freqs, axis=-1)
            cos = op.Unsqueeze(op.Cast(op.Cos(both)), one1)
            sin = op.Unsqueeze(op.Cast(op.Sin(both)), one2)
            first = op.Slice(x, start1, end1, [3], [1])
            second = op.Slice(x, start2, end2, [3], [1])
            rotated = op.Concat(op.Neg(second), first, axis=-1)
            return x * cos + rotated * sin

        def check(self, op: Any, *args: Any, **bound: Any) -> Any:
            x, one1, one2 = bound["x"], bound["one1"], bound["one2"]
            start1, end1, start2, end2 = (bound[k] for k in ("start1", "end1", "start2", "end2"))
            result = pattern.MatchResult()
            if not (_ir_utils.is_singleton_value(one1, 1)
                    and _ir_utils.is_singleton_value(one2, 1)):
                return result.fail("cos/sin are not unsqueezed at axis 1")
            shape = x.shape
            if shape is None or len(shape) != 4 or not isinstance(shape[1], int) \
                    or not isinstance(shape[3], int):
                return result.fail("x is not [B, heads, T, head_size] with static heads/size")
            half = shape[3] // 2
            if not (_ir_utils.is_singleton_value(start1, 0)
                    and _ir_utils.is_singleton_value(end1, half)
                    and _ir_utils.is_singleton_value(start2, half)
                    and _ir_utils.is_singleton_value(end2, lambda v: v >= shape[3])):
                return result.fail("x is not split into two halves of the head")
            if x.dtype is None:
                return result.fail("x has no known dtype")
            return result

        def rewrite(self, op: Any, x: Any, freqs: Any, **_: Any) -> Any:
            to = int(x.dtype)
            return op.RotaryEmbedding(x, op.Cast(op.Cos(freqs), to=to),
                                      op.Cast(op.Sin(freqs), to=to),
                                      interleaved=0, num_heads=x.shape[1])

    return pattern.RewriteRuleSet([RotaryEmbeddingCastFusion.rule()])


def _const_ints(value: Any) -> list[int] | None:
    """The int64 contents of a constant value (initializer or folded Constant), else None."""
    const = getattr(value, "const_value", None)
    if const is None:
        return None
    try:
        return [int(v) for v in const.numpy().reshape(-1)]
    except Exception:  # noqa: BLE001 - not a readable int tensor
        return None


def fold_repeat_kv(model: Any) -> int:
    """Feed K and V to each ``Attention`` before grouped-query ``repeat_kv`` expands them.

    transformers' ``repeat_kv`` turns ``[B, kv_heads, T, D]`` into ``[B, heads, T, D]`` with
    ``Unsqueeze(axis 2) -> Expand -> Reshape``; opset-23 ``Attention`` takes 4-D K/V with
    ``kv_heads`` dividing ``heads`` directly, so the copies (``heads / kv_heads`` times the K/V
    memory traffic) go away. Only exact matches are rewritten; the exporter's parity check
    runs on the result.

    Args:
        model: an ``onnx_ir.Model`` (changed in place; dead nodes are removed later).

    Returns:
        K/V inputs rewired.
    """
    folded = 0
    for node in list(model.graph):
        if node.op_type != "Attention" or node.domain not in ("", "ai.onnx"):
            continue
        if len(node.inputs) < 3 or node.inputs[0] is None:
            continue
        q_shape = node.inputs[0].shape
        for index in (1, 2):
            value = node.inputs[index]
            source = _repeat_kv_source(value)
            if source is None:
                continue
            s_shape = source.shape
            if q_shape is not None and s_shape is not None and len(q_shape) == 4 \
                    and len(s_shape) == 4 and isinstance(q_shape[1], int) \
                    and isinstance(s_shape[1], int) and q_shape[1] % s_shape[1] != 0:
                continue
            node.replace_input_with(index, source)
            folded += 1
    return folded


def _repeat_kv_source(value: Any) -> Any:
    """``src`` when ``value = Reshape(Expand(Unsqueeze(src, [2]), _), _)`` with ``src`` 4-D."""
    reshape = value.producer() if value is not None else None
    if reshape is None or reshape.op_type != "Reshape":
        return None
    expand = reshape.inputs[0].producer() if reshape.inputs[0] is not None else None
    if expand is None or expand.op_type != "Expand":
        return None
    unsqueeze = expand.inputs[0].producer() if expand.inputs[0] is not None else None
    if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or len(unsqueeze.inputs) < 2:
        return None
    if _const_ints(unsqueeze.inputs[1]) != [2]:
        return None
    source = unsqueeze.inputs[0]
    shape = source.shape if source is not None else None
    if shape is None or len(shape) != 4:
        return None
    return source


def fuse_decoder_graph(
    src: str | Path,
    dst: str | Path,
    *,
    external_data: bool = False,
    required: Iterable[str] = FUSED_OP_TYPES,
    what: str = "the model",
) -> FusionReport:
    """Clean and fuse an opset-23 decoder graph, check the fused ops are there, and save it.

    Args:
        src: the exported ``.onnx`` (opset 23).
        dst: where to write the fused graph (may be ``src``).
        external_data: keep the weights in ``<dst>.data`` (graphs past 2 GB).
        required: op types that must be present after fusion.
        what: the model's name for messages (architecture, checkpoint).

    Returns:
        The op counts and fusions applied.

    Raises:
        FusionError: a required op type is missing from the fused graph, or the graph is
            not opset 23.
    """
    require("onnxscript", "export")
    import onnx_ir as ir
    from onnxscript import optimizer
    from onnxscript.rewriter import onnx_fusions

    src, dst = Path(src), Path(dst)
    model = ir.load(str(src))
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
    if opset != FUSED_OPSET:
        raise FusionError(
            f"fused export needs an opset-{FUSED_OPSET} graph (native Attention, "
            f"RMSNormalization, RotaryEmbedding); {src.name} is opset {opset}. Export with "
            f"--opset {FUSED_OPSET} (the default of --optimize fused)"
        )
    optimizer.optimize_ir(model)
    before = count_ops(model)
    nodes_before = sum(before.values())
    fusions: dict[str, int] = {}
    for name, count in onnx_fusions.fuse(model).items():
        fusions[name] = int(count)
    fusions["RotaryEmbeddingCast"] = int(_rotary_cast_rule().apply_to_model(model))
    fusions["RepeatKVIntoAttention"] = fold_repeat_kv(model)
    optimizer.optimize_ir(model)
    after = count_ops(model)
    required = tuple(required)
    fused = {op: int(after.get(op, 0)) for op in (*required, *[
        o for o in FUSED_OP_TYPES if o not in required])}
    missing = [op for op in required if fused.get(op, 0) == 0]
    if missing:
        top = ", ".join(f"{k} {v}" for k, v in list(after.items())[:12])
        raise FusionError(
            f"--optimize fused found no {', '.join(missing)} in the graph of {what} "
            f"(ops: {top}). Fused export is for decoder trunks with scaled-dot-product "
            "attention, RMSNorm and rotary positions (Qwen2, Llama, Mistral: the qwen-prm, "
            "math-shepherd, rlhflow and skywork formats, or a token classifier on such a "
            "trunk). Encoders (BERT, the default PRM) and eager attention cannot be fused; "
            "export them with --optimize plain"
        )
    _save(model, dst, external_data)
    report = FusionReport(fused_ops=fused, fusions=fusions, ops_before=before,
                          ops_after=after, nodes_before=nodes_before,
                          nodes_after=sum(after.values()))
    logger.info("fused graph: %s (%d -> %d nodes; rules fired %s)", fused, nodes_before,
                report.nodes_after, {k: v for k, v in fusions.items() if v})
    return report


def _save(model: Any, dst: Path, external_data: bool) -> None:
    import onnx_ir as ir

    data = dst.with_name(dst.name + ".data")
    if external_data:
        tmp = dst.with_name(dst.name + ".fused.tmp")
        ir.save(model, str(tmp), external_data=tmp.name + ".data")
        tmp.replace(dst)
        # The graph names its data file; keep that name by re-saving beside dst.
        proto_model = ir.load(str(dst))
        ir.save(proto_model, str(dst), external_data=data.name)
        tmp.with_name(tmp.name + ".data").unlink(missing_ok=True)
        return
    ir.save(model, str(dst))
    data.unlink(missing_ok=True)


def check_fusable(hf_config: Any, model_dir: Path) -> None:
    """Refuse ``--optimize fused`` early for a trunk without RMSNorm and rotary positions.

    Raises:
        FusionError: the checkpoint's config has no ``rms_norm_eps`` or no rotary settings.
    """
    configs = [c for c in (hf_config, getattr(hf_config, "text_config", None)) if c is not None]
    has_rms = any(getattr(c, "rms_norm_eps", None) is not None for c in configs)
    has_rope = any(getattr(c, a, None) is not None for c in configs
                   for a in ("rope_theta", "rope_parameters", "rope_scaling"))
    if not (has_rms and has_rope):
        raise FusionError(
            f"--optimize fused needs a decoder trunk with RMSNorm and rotary positions "
            f"(Qwen2, Llama, Mistral); {describe_checkpoint(hf_config, model_dir)} has "
            f"{'no rms_norm_eps' if not has_rms else ''}"
            f"{' and ' if not (has_rms or has_rope) else ''}"
            f"{'no rotary settings' if not has_rope else ''} in its config (an encoder such as "
            "BERT, or another architecture). Export it with --optimize plain"
        )
