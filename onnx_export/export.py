"""Export a local PRM checkpoint to an ONNX model directory, with measured parity.

:func:`export_prm` takes a checkpoint as downloaded: the format from ``--format``, the
checkpoint's ``prm_format.json``, or detected (:mod:`prm_plugins.onnx_export.detect`); the
tokenizer from ``tokenizer.json`` or a sentencepiece ``tokenizer.model``; the weights from
safetensors or tensors-only ``.bin`` files (:mod:`prm_plugins.onnx_export.checkpoint`; never
remote code). It loads the family's torch wrapper (:mod:`prm_plugins.onnx_export.wrappers`),
exports a graph that follows the contract (``input_ids [B,T] int64``, ``attention_mask [B,T]
int64`` -> ``step_probs [B,T] float32``, dynamic ``B`` and ``T``;
:mod:`prm_plugins.onnx_export.graph`), measures parity against the torch wrapper on fresh
random chains rendered by the format (several batch sizes and lengths, right and left
padding; :mod:`prm_plugins.onnx_export.parity_gate`), and only then writes the model
directory: ``model.onnx`` (+ ``model.onnx.data`` past 2 GB), ``tokenizer.json`` and
``prm.json``.

Everything is built in a hidden staging directory beside ``out_dir`` and moved into place at
the end, ``prm.json`` last (:mod:`prm_plugins.onnx_export.publish`): a failed export (parity
included) leaves ``out_dir`` as it was.

Examples:
    >>> from prm_plugins.onnx_export.export import ExportConfig, export_prm
    >>> cfg = ExportConfig("ckpt/", "out/", format="token-classification")  # doctest: +SKIP
    >>> export_prm(cfg)  # doctest: +SKIP
    PosixPath('out')
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, ModelLoadError, require
from prm_plugins.formats import PRMFormat, get_format
from prm_plugins.manifest import MANIFEST_NAME, Manifest
from prm_plugins.onnx_export.checkpoint import (
    describe_checkpoint,
    load_hf_config,
    load_hf_tokenizer,
    pad_token_id,
)
from prm_plugins.onnx_export.config import (
    DTYPES,
    EXTERNAL_DATA_THRESHOLD,
    MAX_LENGTH_CAP,
    MODEL_FILE,
    OPTIMIZE_MODES,
    TOKENIZER_FILE,
    ExportConfig,
    resolve_max_length,
    with_saved_format,
)
from prm_plugins.onnx_export.detect import detect_format_with_evidence, explain_detected
from prm_plugins.onnx_export.graph import (
    check_graph,
    export_graph,
    export_torch_graph,
    param_bytes,
    sample_inputs,
)
from prm_plugins.onnx_export.parity import ParityReport, random_chains
from prm_plugins.onnx_export.parity_gate import ParityGate, parity_providers
from prm_plugins.onnx_export.publish import (
    check_out_dir,
    publish,
    save_tokenizer,
    source,
    staging_dir,
    versions,
)

__all__ = [
    "DTYPES",
    "EXTERNAL_DATA_THRESHOLD",
    "MAX_LENGTH_CAP",
    "OPTIMIZE_MODES",
    "ExportConfig",
    "export_prm",
    "export_torch_graph",
    "resolve_max_length",
]

logger = logging.getLogger(__name__)


@dataclass
class _Plan:
    """What :func:`export_prm` settled before loading the model."""

    config: ExportConfig  # format filled in: given, from prm_format.json, or detected
    model_dir: Path
    out_dir: Path
    hf_config: Any
    hf_tok: Any
    fmt_cls: type[PRMFormat]
    options: dict[str, Any]  # JSON-safe, exactly as prm.json will hold them
    format_source: str
    max_length: int
    pad_id: int
    providers: list[str]


@dataclass
class _Graph:
    """The graph in staging, its parity figures and what was done to it."""

    path: Path
    opset: int
    external: bool
    report: ParityReport
    parity: dict[str, Any]
    dtype: str
    fusion: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # bf16_weights / quantization


def export_prm(config: ExportConfig) -> Path:
    """Export, check parity, optionally quantise, and write the model directory.

    Args:
        config: what to export and how.

    Returns:
        ``Path(config.out_dir)``, holding ``model.onnx``, ``tokenizer.json`` and ``prm.json``.

    Raises:
        InvalidInputError: a bad setting, or an out_dir that would lose files.
        ModelLoadError: the checkpoint cannot be read.
        ParityError: the graph differs from the torch model past the tolerance; nothing
            is written.
        MissingExtraError: the ``export`` extra is not installed.

    Examples:
        >>> export_prm(ExportConfig("ckpt", "out", format="token-classification"))  # doctest: +SKIP
    """
    config.validate()
    for module in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime"):
        require(module, "export")
    started = time.perf_counter()
    plan = _plan(config)
    with staging_dir(plan.out_dir) as staging:
        graph = _export_into(staging, plan)
    logger.info("wrote %s (%s, parity max |Δp| %.3g) in %.1f s", plan.out_dir, graph.dtype,
                graph.parity["max_abs_diff"], time.perf_counter() - started)
    return plan.out_dir


def _plan(config: ExportConfig) -> _Plan:
    """Check the directories and the device, read the checkpoint's config and tokenizer,
    and settle the format, its options and ``max_length``."""
    import torch

    model_dir = Path(config.model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"checkpoint directory {str(model_dir)!r} does not exist")
    out_dir = Path(config.out_dir)
    check_out_dir(out_dir, model_dir, config.overwrite)
    config = with_saved_format(config, model_dir)
    if config.format is not None:
        get_format(config.format)  # an unknown name fails before anything loads
    providers = parity_providers(config.device)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "--device cuda was asked for but torch sees no CUDA device (torch "
            f"{torch.__version__}); use --device cpu or a CUDA build of torch"
        )
    hf_config = load_hf_config(model_dir)
    hf_tok = load_hf_tokenizer(model_dir)
    config, format_source = _settle_format(config, model_dir, hf_config, hf_tok)
    assert config.format is not None, "set above: given, saved or detected"
    fmt_cls = get_format(config.format)
    with explain_detected(format_source):
        options = fmt_cls.options_from_hf(hf_tok, **config.format_options)
    options = json.loads(json.dumps(options))  # JSON-safe, exactly as prm.json will hold
    if config.optimize == "fused":
        from prm_plugins.onnx_export.fuse import FUSED_OPSET, check_fusable

        check_fusable(hf_config, model_dir)
        config = replace(config, opset=FUSED_OPSET)
    return _Plan(config=config, model_dir=model_dir, out_dir=out_dir, hf_config=hf_config,
                 hf_tok=hf_tok, fmt_cls=fmt_cls, options=options, format_source=format_source,
                 max_length=resolve_max_length(config.max_length, hf_config),
                 pad_id=pad_token_id(hf_tok), providers=providers)


def _settle_format(config: ExportConfig, model_dir: Path, hf_config: Any, hf_tok: Any
                   ) -> tuple[ExportConfig, str]:
    """The config with its format, and where the format came from (for ``prm.json``)."""
    format_source = "--format" if config.format else ""
    if (model_dir / "prm_format.json").is_file():
        format_source = "prm_format.json"
    if config.format is None:
        detected, evidence = detect_format_with_evidence(model_dir, hf_config, hf_tok)
        config = replace(config, format=detected)
        format_source = f"detected: {evidence}"
    return config, format_source


def _export_into(staging: Path, plan: _Plan) -> _Graph:
    """Build, check and write every file in ``staging``, then publish it to ``out_dir``."""
    config = plan.config
    with explain_detected(plan.format_source):
        fmt = save_tokenizer(plan.hf_tok, staging / TOKENIZER_FILE, plan.fmt_cls, plan.options)
    model = _load_model(plan)
    chains = random_chains(fmt, config.parity_chains, seed=config.parity_seed,
                           max_tokens=min(config.parity_max_tokens, plan.max_length))
    gate = ParityGate(model, fmt, chains, config, plan.providers, plan.pad_id, plan.max_length)
    graph = _export_checked(staging, plan, gate)
    if config.quantize is not None:
        graph = _quantize(staging, graph, gate)
    names = sorted(p.name for p in staging.iterdir() if p.is_file())
    manifest = _manifest(plan, graph, gate.model)
    manifest.hash_files(staging, names)
    manifest.write(staging)
    manifest.parity["runtime_check"] = gate.check_runtime(staging, graph.report)
    manifest.write(staging)
    del model, gate
    publish(staging, plan.out_dir, [*names, MANIFEST_NAME])
    return graph


def _load_model(plan: _Plan) -> Any:
    """The family's torch wrapper in the export's dtype, on its device."""
    import torch

    from prm_plugins.onnx_export.wrappers import build_step_prob_model

    config = plan.config
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16,
                   "bf16-weights": torch.bfloat16}.get(config.dtype, torch.float32)
    logger.info("loading %s as %s (%s) on %s", plan.model_dir, config.format, config.dtype,
                config.device)
    assert config.format is not None, "settled by _plan"
    model = build_step_prob_model(config.format, plan.model_dir, plan.options, torch_dtype)
    if config.dtype == "bf16-weights":
        model = model.float()  # exact: bf16 values are fp32 values
    return model.to(config.device)


def _export_checked(staging: Path, plan: _Plan, gate: ParityGate) -> _Graph:
    """Export (and fuse, or store bf16 weights), check the contract, gate parity."""
    config = plan.config
    graph_dir = staging / "fp32" if config.quantize else staging
    graph_dir.mkdir(exist_ok=True)
    path = graph_dir / MODEL_FILE
    external = param_bytes(gate.model) > EXTERNAL_DATA_THRESHOLD
    sample = sample_inputs(gate.fmt, gate.chains, plan.pad_id, plan.max_length, config.device)
    t0 = time.perf_counter()
    export_graph(gate.model, sample, path, config, plan.max_length, external)
    logger.info("exported %s in %.1f s", path.name, time.perf_counter() - t0)
    fusion: dict[str, Any] = {}
    if config.optimize == "fused":
        from prm_plugins.onnx_export.fuse import fuse_decoder_graph

        t0 = time.perf_counter()
        fusion = fuse_decoder_graph(path, path, external_data=external,
                                    what=describe_checkpoint(plan.hf_config, plan.model_dir)
                                    ).to_dict()
        logger.info("fused in %.1f s: %s", time.perf_counter() - t0, fusion["fused_ops"])
    extra: dict[str, Any] = {}
    if config.dtype == "bf16-weights":
        from prm_plugins.onnx_export.bf16 import bf16_weights

        extra["bf16_weights"] = bf16_weights(path, path, external_data=external)
    opset = check_graph(path)
    report, parity = gate.check_graph(path)
    if fusion:
        fusion = {"mode": "fused", **fusion, "parity": gate.fusion_figures(parity)}
    return _Graph(path=path, opset=opset, external=external, report=report, parity=parity,
                  dtype=config.dtype, fusion=fusion, extra=extra)


def _quantize(staging: Path, graph: _Graph, gate: ParityGate) -> _Graph:
    """Replace the staged fp32 graph by its int8 graph, gated on its own parity."""
    from prm_plugins.onnx_export.quantize import quantize_graph

    config = gate.config
    assert config.quantize is not None, "called for --quantize only"
    path = staging / MODEL_FILE
    info = quantize_graph(graph.path, path, config.quantize, per_channel=config.per_channel,
                          embeddings=config.quantize_embeddings, external_data=graph.external)
    shutil.rmtree(graph.path.parent)
    opset = check_graph(path)
    report, parity = gate.check_int8(path, graph.parity)
    return replace(graph, path=path, opset=opset, report=report, parity=parity, dtype="int8",
                   extra={**graph.extra, "quantization": info})


def _manifest(plan: _Plan, graph: _Graph, model: Any) -> Manifest:
    """``prm.json`` of the staged files (hashed and written by the caller)."""
    config, model_dir = plan.config, plan.model_dir
    assert config.format is not None, "settled by _plan"
    tokenizer_source = ("tokenizer.json" if (model_dir / TOKENIZER_FILE).is_file()
                        else "tokenizer.model (sentencepiece, converted)")
    return Manifest(
        format=config.format,
        format_options=plan.options,
        max_length=plan.max_length,
        dtype=graph.dtype,
        opset=graph.opset,
        parity=graph.parity,
        versions=versions(),
        source=source(model_dir, plan.hf_config, model),
        model_file=MODEL_FILE,
        tokenizer_file=TOKENIZER_FILE,
        fusion=graph.fusion or {"mode": "plain"},
        extra={"pad_token_id": plan.pad_id, "exporter": f"torch.onnx ({config.exporter})",
               "export_device": config.device, "format_source": plan.format_source,
               "tokenizer_source": tokenizer_source,
               **({"checks": list(config.checks)} if config.checks else {}),
               **graph.extra},
    )
