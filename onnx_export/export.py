"""Export a local PRM checkpoint to an ONNX model directory, with measured parity.

:func:`export_prm` takes a checkpoint as downloaded: the format from ``--format``, the
checkpoint's ``prm_format.json``, or detected (:mod:`prm_plugins.onnx_export.detect`); the
tokenizer from ``tokenizer.json`` or a sentencepiece ``tokenizer.model``; the weights from
safetensors or tensors-only ``.bin`` files (:mod:`prm_plugins.onnx_export.checkpoint`; never
remote code). It loads the family's torch wrapper, exports a graph that follows the contract
(``input_ids [B,T] int64``, ``attention_mask [B,T] int64`` -> ``step_probs [B,T] float32``,
dynamic ``B`` and ``T``), measures parity against the torch wrapper on fresh random chains
rendered by the format (several batch sizes and lengths, right and left padding), and only
then writes the model directory: ``model.onnx`` (+ ``model.onnx.data`` past 2 GB),
``tokenizer.json`` and ``prm.json``.

Everything is built in a hidden staging directory beside ``out_dir`` and moved into place at
the end, ``prm.json`` last: a failed export (parity included) leaves ``out_dir`` as it was.

Examples:
    >>> from prm_plugins.onnx_export.export import ExportConfig, export_prm
    >>> cfg = ExportConfig("ckpt/", "out/", format="token-classification")  # doctest: +SKIP
    >>> export_prm(cfg)  # doctest: +SKIP
    PosixPath('out')
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, ModelLoadError, ParityError, require
from prm_plugins.formats import PRMFormat, get_format
from prm_plugins.manifest import MANIFEST_NAME, Manifest

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

#: Graph dtypes: fp32; fp16 and bf16 compute (GPU); bf16-weights: bf16 weights, fp32 compute
#: (any provider). See :mod:`prm_plugins.onnx_export.bf16` for what runs where.
DTYPES: tuple[str, ...] = ("fp32", "fp16", "bf16", "bf16-weights")
QUANTIZATIONS: tuple[str, ...] = ("int8", "int8-weights")
DEVICES: tuple[str, ...] = ("cpu", "cuda")
EXPORTERS: tuple[str, ...] = ("dynamo", "legacy")
#: Graph optimisation modes: ``plain`` (the exporter's graph) and ``fused`` (opset-23
#: Attention/RMSNormalization/RotaryEmbedding, see :mod:`prm_plugins.onnx_export.fuse`).
OPTIMIZE_MODES: tuple[str, ...] = ("plain", "fused")
#: Default ``max_length`` is the model's context, capped here (PRM chains are rarely longer).
MAX_LENGTH_CAP = 4096
#: Graphs whose weights pass this many bytes keep them in ``model.onnx.data``.
EXTERNAL_DATA_THRESHOLD = int(1.8 * 2**30)
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "step_probs"
#: Config attributes that hold a checkpoint's context length, most common first.
_CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


@dataclass
class ExportConfig:
    """Settings of one export; every field is also a ``prm export`` flag.

    Examples:
        >>> ExportConfig("ckpt", "out", format="math-shepherd", quantize="int8")  # doctest: +SKIP
    """

    model_dir: str = field(metadata={
        "help": "local transformers checkpoint directory as downloaded (config.json, "
                "*.safetensors or *.bin read as tensors only, tokenizer.json or a sentencepiece "
                "tokenizer.model); nothing is downloaded", "positional": True})
    out_dir: str = field(metadata={
        "help": "model directory to write (must be new or empty, unless --overwrite)",
        "positional": True})
    format: str | None = field(default=None, metadata={
        "help": "PRM format: token-classification, qwen-prm, math-shepherd, rlhflow, skywork, "
                "or an installed plugin's name; default: the one in the checkpoint's "
                "prm_format.json (written by `prm train`), else detected from config "
                "architectures, head tensors and tokenizer (RLHFlow's plain Llama checkpoints "
                "need --format rlhflow)"})
    dtype: str = field(default="fp32", metadata={
        "help": "weights and compute of the graph. fp16 is meant for --device cuda (on CPU it "
                "works only where ONNX Runtime has CPU fp16 kernels). bf16 computes in bf16 as "
                "upstream runs published PRMs: ONNX Runtime CUDA only (its CPU provider has no "
                "bf16 kernels), so it needs --device cuda. bf16-weights stores the checkpoint's "
                "bf16 weights as bf16 (half of fp32's size) and computes in fp32: CPU and CUDA. "
                "prm.json parity.by_dtype compares the graph with torch in each precision",
        "choices": DTYPES})
    opset: int | None = field(default=None, metadata={
        "help": "ONNX opset (default: the exporter's own)"})
    quantize: str | None = field(default=None, metadata={
        "help": "CPU int8 graphs; the directory then holds only the int8 graph. int8: dynamic "
                "quantisation (fastest; activation scales are per batch, so a chain's scores "
                "move slightly with its batch mates). int8-weights: 8-bit weight blocks "
                "(MatMulNBits) and embeddings, activations quantised per row: the same scores "
                "alone or in any batch, closer to fp32, about 1.6x the time of int8",
        "choices": QUANTIZATIONS})
    max_length: int | None = field(default=None, metadata={
        "help": f"longest chain in tokens (default: the model's max_position_embeddings, "
                f"capped at {MAX_LENGTH_CAP})"})
    format_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "format option override KEY=VALUE (VALUE parsed as JSON when it can be, "
                "e.g. bos_token_id=1, separator=[SEP]); repeatable", "flag": "--option",
        "metavar": "KEY=VALUE"})
    device: str = field(default="cpu", metadata={
        "help": "where torch runs the source model and ONNX Runtime runs parity",
        "choices": DEVICES})
    exporter: str = field(default="dynamo", metadata={
        "help": "torch.onnx exporter: dynamo (torch.export, default) or legacy (TorchScript)",
        "choices": EXPORTERS})
    tolerance: float | None = field(default=None, metadata={
        "help": "max |Δp| the final graph may differ from torch at step positions "
                "(default: 1e-4 fp32 and bf16-weights, 2e-2 fp16, 5e-2 bf16, 0.1 int8)"})
    mean_tolerance: float | None = field(default=None, metadata={
        "help": "mean |Δp| bound of the final graph (default: none for fp32/fp16, 0.02 int8)"})
    parity_chains: int = field(default=16, metadata={
        "help": "random chains compared for parity"})
    parity_batch_sizes: tuple[int, ...] = field(default=(1, 3, 4), metadata={
        "help": "batch sizes the parity chains are run in (cycled)"})
    parity_max_tokens: int = field(default=256, metadata={
        "help": "longest parity chain in tokens (capped at max_length)"})
    parity_seed: int = field(default=0, metadata={"help": "seed of the parity chains"})
    per_channel: bool = field(default=True, metadata={
        "help": "int8: per-channel weight scales (default; --no-per-channel for per-tensor)"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace the model files of an existing model directory (other files stay)"})
    quantize_embeddings: bool = field(default=False, metadata={
        "help": "int8: quantise the embedding tables (Gather) too; they dominate a small "
                "model's size (the default PRM: 28 -> 11 MiB at the same step AUROC)"})
    optimize: str = field(default="plain", metadata={
        "help": "graph: plain (the exporter's graph, any format) or fused (decoder trunks "
                "only: opset-23 Attention with the padding mask, RMSNormalization, "
                "RotaryEmbedding, grouped K/V fed to Attention; the fast path on ONNX Runtime "
                "CUDA; op counts go into prm.json)", "choices": OPTIMIZE_MODES})
    checks: tuple[str, ...] = field(default=(), metadata={
        "help": "deterministic step checks the runtime applies after the model by default "
                "(written to prm.json extra.checks; e.g. arithmetic)"})

    def validate(self) -> None:
        """Check every field, raising :class:`InvalidInputError` with the fix."""
        def bad(name: str, value: Any, want: str) -> InvalidInputError:
            return InvalidInputError(f"export {name} must be {want}, got {value!r}")

        if self.dtype not in DTYPES:
            raise bad("dtype", self.dtype, f"one of {list(DTYPES)}")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise bad("quantize", self.quantize, f"None or one of {list(QUANTIZATIONS)}")
        if self.quantize_embeddings and self.quantize != "int8":
            raise InvalidInputError(
                "--quantize-embeddings needs --quantize int8 (int8-weights always quantises "
                "the embeddings)")
        if self.quantize is not None and self.dtype != "fp32":
            raise InvalidInputError(
                f"--quantize {self.quantize} starts from the fp32 graph; got dtype "
                f"{self.dtype!r}. Drop --dtype or --quantize"
            )
        if self.device not in DEVICES:
            raise bad("device", self.device, f"one of {list(DEVICES)}")
        if self.dtype == "bf16":
            self._validate_bf16()
        if self.optimize not in OPTIMIZE_MODES:
            raise bad("optimize", self.optimize, f"one of {list(OPTIMIZE_MODES)}")
        if self.optimize == "fused":
            self._validate_fused()
        if self.exporter not in EXPORTERS:
            raise bad("exporter", self.exporter, f"one of {list(EXPORTERS)}")
        if self.opset is not None and not (isinstance(self.opset, int) and 14 <= self.opset):
            raise bad("opset", self.opset, "an int >= 14 or None")
        if self.max_length is not None and not (
            isinstance(self.max_length, int) and self.max_length >= 4
        ):
            raise bad("max_length", self.max_length, "an int >= 4 or None")
        if not isinstance(self.format_options, dict):
            raise bad("format_options", self.format_options, "a dict")
        for name in ("tolerance", "mean_tolerance"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise bad(name, value, "a positive float or None")
        if not isinstance(self.parity_chains, int) or self.parity_chains < 1:
            raise bad("parity_chains", self.parity_chains, "an int >= 1")
        sizes = tuple(self.parity_batch_sizes)
        if not sizes or any(not isinstance(b, int) or b < 1 for b in sizes):
            raise bad("parity_batch_sizes", self.parity_batch_sizes, "positive ints")
        if not isinstance(self.parity_max_tokens, int) or self.parity_max_tokens < 4:
            raise bad("parity_max_tokens", self.parity_max_tokens, "an int >= 4")
        from prm_plugins.checks import KNOWN_CHECKS

        unknown = [c for c in self.checks if c not in KNOWN_CHECKS]
        if unknown:
            raise InvalidInputError(
                f"unknown step check(s) {unknown}; known checks: {', '.join(KNOWN_CHECKS)}"
            )
        try:
            json.dumps(self.format_options)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"format_options must be JSON-serialisable (they go into prm.json): {exc}"
            ) from exc

    def _validate_bf16(self) -> None:
        from prm_plugins.onnx_export.bf16 import CPU_BF16_NOTE

        if self.device != "cuda":
            raise InvalidInputError(
                f"--dtype bf16 computes in bf16 and needs --device cuda: {CPU_BF16_NOTE}, so "
                "the graph could neither be checked here nor run on a CPU. For CPU use "
                "--dtype bf16-weights (the bf16 weights, computed in fp32) or fp32"
            )
        if self.exporter != "dynamo":
            raise InvalidInputError(
                "--dtype bf16 needs --exporter dynamo (the legacy TorchScript exporter cannot "
                f"export bf16 graphs); got --exporter {self.exporter}"
            )

    def _validate_fused(self) -> None:
        from prm_plugins.onnx_export.fuse import FUSED_OPSET

        if self.exporter != "dynamo":
            raise InvalidInputError(
                f"--optimize fused needs --exporter dynamo (got {self.exporter!r}): only the "
                "dynamo exporter writes scaled-dot-product attention as the Attention op"
            )
        if self.opset is not None and self.opset != FUSED_OPSET:
            raise InvalidInputError(
                f"--optimize fused exports opset {FUSED_OPSET} (the first with Attention, "
                f"RMSNormalization and RotaryEmbedding); got --opset {self.opset}. Drop "
                "--opset, or use --optimize plain"
            )
        if self.quantize is not None:
            raise InvalidInputError(
                f"--optimize fused is the GPU graph and --quantize {self.quantize} a CPU one; "
                "choose one (for CPU: --quantize with --optimize plain)"
            )


def _with_saved_format(config: ExportConfig, model_dir: Path) -> ExportConfig:
    """Fill ``format`` and default options from ``prm_format.json`` when the checkpoint has one.

    ``prm train`` writes that file, so ``prm export CKPT OUT`` needs no flags; ``--option``
    values still override the saved options. Without the file, ``format`` stays as given
    (``None`` is then detected from the checkpoint by :func:`detect_format`).

    Raises:
        InvalidInputError: a broken file, or a ``--format`` that differs from the one the
            checkpoint was trained for.
    """
    saved_path = model_dir / "prm_format.json"
    if not saved_path.is_file():
        return config  # --format as given; None: detected from the checkpoint
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
        name, options = saved["format"], dict(saved.get("options") or {})
        if not isinstance(name, str):
            raise TypeError(f"format is {type(name).__name__}, not str")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            f"{saved_path} is not a valid prm_format.json ({exc}); it must be "
            '{"format": NAME, "options": {...}}. Fix or delete it and pass --format'
        ) from exc
    if config.format and config.format != name:
        raise InvalidInputError(
            f"{model_dir} was trained for format {name!r} (prm_format.json) but --format "
            f"{config.format!r} was given; drop --format, or delete prm_format.json to "
            "export it as another format"
        )
    return replace(config, format=name, format_options={**options, **config.format_options})


def resolve_max_length(requested: int | None, hf_config: Any) -> int:
    """The ``max_length`` to write: the request, or the model's context capped.

    Args:
        requested: ``ExportConfig.max_length``.
        hf_config: the checkpoint's transformers config.

    Raises:
        InvalidInputError: the request is longer than the model's context.
    """
    configs = [hf_config, getattr(hf_config, "text_config", None)]
    limit = next((int(v) for c in configs if c is not None for a in _CONTEXT_ATTRS
                  if isinstance(v := getattr(c, a, None), int) and v > 0), None)
    if requested is not None:
        if limit is not None and requested > limit:
            raise InvalidInputError(
                f"--max-length {requested} is longer than the model's context of {limit} "
                "tokens (max_position_embeddings); pass at most that"
            )
        return int(requested)
    if limit is None:
        logger.warning("the model config names no context length; max_length set to %d",
                       MAX_LENGTH_CAP)
        return MAX_LENGTH_CAP
    if limit > MAX_LENGTH_CAP:
        logger.info("max_length %d (the model takes %d; raise it with --max-length)",
                    MAX_LENGTH_CAP, limit)
    return min(limit, MAX_LENGTH_CAP)


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
    import torch

    from prm_plugins.onnx_export.wrappers import build_step_prob_model, load_hf_tokenizer

    started = time.perf_counter()
    model_dir = Path(config.model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"checkpoint directory {str(model_dir)!r} does not exist")
    out_dir = Path(config.out_dir)
    _check_out_dir(out_dir, model_dir, config.overwrite)
    config = _with_saved_format(config, model_dir)
    if config.format is not None:
        get_format(config.format)  # an unknown name fails before anything loads
    providers = _providers(config)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "--device cuda was asked for but torch sees no CUDA device (torch "
            f"{torch.__version__}); use --device cpu or a CUDA build of torch"
        )

    hf_config = _load_hf_config(model_dir)
    hf_tok = load_hf_tokenizer(model_dir)
    format_source = "--format" if config.format else ""
    if (model_dir / "prm_format.json").is_file():
        format_source = "prm_format.json"
    if config.format is None:
        from prm_plugins.onnx_export.detect import detect_format_with_evidence

        detected, evidence = detect_format_with_evidence(model_dir, hf_config, hf_tok)
        config = replace(config, format=detected)
        format_source = f"detected: {evidence}"
    format_name = config.format
    assert format_name is not None, "set above: given, saved or detected"
    fmt_cls = get_format(format_name)
    with _explain_detected(format_source):
        options = fmt_cls.options_from_hf(hf_tok, **config.format_options)
    options = json.loads(json.dumps(options))  # JSON-safe, exactly as prm.json will hold
    if config.optimize == "fused":
        _check_fusable(hf_config, model_dir)
        from prm_plugins.onnx_export.fuse import FUSED_OPSET

        config = replace(config, opset=FUSED_OPSET)
    max_length = resolve_max_length(config.max_length, hf_config)
    pad_id = _pad_token_id(hf_tok)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial",
                                    dir=out_dir.parent))
    try:
        with _explain_detected(format_source):
            fmt = _save_tokenizer(hf_tok, staging / TOKENIZER_FILE, fmt_cls, options)
        torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16,
                       "bf16-weights": torch.bfloat16}.get(config.dtype, torch.float32)
        logger.info("loading %s as %s (%s) on %s", model_dir, config.format, config.dtype,
                    config.device)
        model = build_step_prob_model(config.format, model_dir, options, torch_dtype)
        if config.dtype == "bf16-weights":
            model = model.float()  # exact: bf16 values are fp32 values
        model = model.to(config.device)
        from prm_plugins.onnx_export.parity import (
            DEFAULT_MEAN_TOLERANCES,
            DEFAULT_TOLERANCES,
            measure_parity,
            random_chains,
        )

        chains = random_chains(fmt, config.parity_chains, seed=config.parity_seed,
                               max_tokens=min(config.parity_max_tokens, max_length))
        graph_dir = staging / "fp32" if config.quantize else staging
        graph_dir.mkdir(exist_ok=True)
        graph = graph_dir / MODEL_FILE
        external = _param_bytes(model) > EXTERNAL_DATA_THRESHOLD
        sample = _sample_inputs(fmt, chains, pad_id, max_length, config.device)
        t0 = time.perf_counter()
        _export_graph(model, sample, graph, config, max_length, external)
        logger.info("exported %s in %.1f s", graph.name, time.perf_counter() - t0)
        fusion: dict[str, Any] = {}
        if config.optimize == "fused":
            from prm_plugins.onnx_export.fuse import fuse_decoder_graph

            t0 = time.perf_counter()
            fusion = fuse_decoder_graph(graph, graph, external_data=external,
                                        what=_describe(hf_config, model_dir)).to_dict()
            logger.info("fused in %.1f s: %s", time.perf_counter() - t0, fusion["fused_ops"])
        bf16_info: dict[str, Any] = {}
        if config.dtype == "bf16-weights":
            from prm_plugins.onnx_export.bf16 import bf16_weights

            bf16_info = bf16_weights(graph, graph, external_data=external)
        opset = _check_graph(graph)

        device_note = f"{_torch_precision(config.dtype)} on {config.device}"
        graph_tol = DEFAULT_TOLERANCES[config.dtype], DEFAULT_MEAN_TOLERANCES[config.dtype]
        if not config.quantize:
            graph_tol = _tolerances(config, *graph_tol)
        parity_kwargs: dict[str, Any] = {
            "pad_token_id": pad_id, "batch_sizes": tuple(config.parity_batch_sizes),
            "max_length": max_length, "device": config.device, "seed": config.parity_seed,
            "reference": f"torch wrapper ({device_note})",
        }
        report = _measure(measure_parity, graph, model, fmt, chains, graph_tol, providers,
                          config, parity_kwargs)
        report.check(f"the exported {config.optimize} {config.dtype} graph")
        parity = report.to_dict()
        other = _other_precision(config.dtype)
        other_report = None
        if other is not None:  # bf16 graphs: torch in the other precision, for information
            model = model.to(other)  # in place, after the gating figures
            other_report = _measure(
                measure_parity, graph, model, fmt, chains, (float("inf"), None), providers,
                config, {**parity_kwargs,
                         "reference": f"torch wrapper ({_precision_name(other)} on "
                                      f"{config.device})"})
        parity["by_dtype"] = _parity_by_dtype(parity, config, other_report)
        if fusion:
            fusion = {"mode": "fused", **fusion,
                      "parity": _fusion_parity(parity, config, providers)}

        final_dtype = config.dtype
        quant_info: dict[str, Any] = {}
        if config.quantize is not None:
            from prm_plugins.onnx_export.quantize import (
                DEFAULT_OP_TYPES,
                quantize_int8,
                quantize_int8_weights,
            )

            t0 = time.perf_counter()
            op_types = (*DEFAULT_OP_TYPES, *(("Gather",) if config.quantize_embeddings else ()))
            if config.quantize == "int8-weights":
                if external:
                    raise InvalidInputError(
                        "--quantize int8-weights does not handle graphs over 2 GB yet; use "
                        "--quantize int8 or fp32")
                quantize_int8_weights(graph, staging / MODEL_FILE)
            else:
                quantize_int8(graph, staging / MODEL_FILE, per_channel=config.per_channel,
                              op_types=op_types, external_data=external)
            logger.info("quantised to int8 in %.1f s", time.perf_counter() - t0)
            shutil.rmtree(graph_dir)
            graph = staging / MODEL_FILE
            opset = _check_graph(graph)
            tol = _tolerances(config, DEFAULT_TOLERANCES["int8"], DEFAULT_MEAN_TOLERANCES["int8"])
            report = _measure(measure_parity, graph, model, fmt, chains, tol,
                              ["CPUExecutionProvider"], config, parity_kwargs)
            report.check("the int8 graph", hint=(
                "Dynamic int8 loses this much on this model. Try --no-per-channel, accept the "
                "measured difference with --tolerance/--mean-tolerance, or ship fp32"))
            parity = {**report.to_dict(), "fp32_graph": parity}
            final_dtype = "int8"
            quant_info = {"method": "onnxruntime.quantization.quantize_dynamic",
                          "weight_type": "QInt8", "per_channel": config.per_channel,
                          "op_types": list(op_types), "matmul_const_b_only": True}
            if config.quantize == "int8-weights":
                quant_info = {"method": "onnxruntime.quantization.MatMulNBitsQuantizer",
                              "bits": 8, "block_size": 32, "accuracy_level": 4,
                              "embeddings": "quantize_dynamic Gather QInt8",
                              "batch_independent": True}

        names = sorted(p.name for p in staging.iterdir() if p.is_file())
        manifest = Manifest(
            format=format_name,
            format_options=options,
            max_length=max_length,
            dtype=final_dtype,
            opset=opset,
            parity=parity,
            versions=_versions(),
            source=_source(model_dir, hf_config, model),
            model_file=MODEL_FILE,
            tokenizer_file=TOKENIZER_FILE,
            fusion=fusion or {"mode": "plain"},
            extra={"pad_token_id": pad_id, "exporter": f"torch.onnx ({config.exporter})",
                   "export_device": config.device, "format_source": format_source,
                   "tokenizer_source": "tokenizer.json" if (model_dir / TOKENIZER_FILE).is_file()
                   else "tokenizer.model (sentencepiece, converted)",
                   **({"checks": list(config.checks)} if config.checks else {}),
                   **({"bf16_weights": bf16_info} if bf16_info else {}),
                   **({"quantization": quant_info} if quant_info else {})},
        )
        manifest.hash_files(staging, names)
        manifest.write(staging)
        manifest.parity["runtime_check"] = _runtime_check(staging, config, chains, report)
        manifest.write(staging)
        del model
        _publish(staging, out_dir, [*names, MANIFEST_NAME])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote %s (%s, parity max |Δp| %.3g) in %.1f s", out_dir, final_dtype,
                parity["max_abs_diff"], time.perf_counter() - started)
    return out_dir


# -- steps of export_prm ------------------------------------------------------------------
def _check_out_dir(out_dir: Path, model_dir: Path, overwrite: bool) -> None:
    """Refuse an out_dir whose files the export would lose."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInputError(f"out_dir {str(out_dir)!r} exists and is not a directory")
    if out_dir.exists() and out_dir.resolve() == model_dir.resolve():
        raise InvalidInputError(
            f"out_dir {str(out_dir)!r} is the checkpoint directory; write the model directory "
            "somewhere else (its tokenizer.json would be replaced)"
        )
    if not out_dir.is_dir():
        return
    present = sorted(p.name for p in out_dir.iterdir())
    if not present:
        return
    if not overwrite:
        raise InvalidInputError(
            f"out_dir {str(out_dir)!r} is not empty (holds {present[:6]}"
            f"{' ...' if len(present) > 6 else ''}); choose a new directory, or pass "
            "--overwrite to replace the model files of an earlier export"
        )
    if MANIFEST_NAME not in present:
        raise InvalidInputError(
            f"--overwrite replaces an earlier export, but {str(out_dir)!r} has no "
            f"{MANIFEST_NAME} (holds {present[:6]}); refusing to write into a directory that "
            "is not a model directory. Choose a new or empty directory"
        )


@contextlib.contextmanager
def _explain_detected(format_source: str) -> Iterator[None]:
    """Say, in a format's own error, that the format was detected and its options defaulted."""
    try:
        yield
    except InvalidInputError as exc:
        if not format_source.startswith("detected"):
            raise
        raise InvalidInputError(
            f"{exc} (the format was {format_source}; it takes the family's default options: "
            "pass --option KEY=VALUE for a checkpoint trained with others, or --format)"
        ) from exc


def _check_fusable(hf_config: Any, model_dir: Path) -> None:
    """Refuse ``--optimize fused`` early for a trunk without RMSNorm and rotary positions."""
    configs = [c for c in (hf_config, getattr(hf_config, "text_config", None)) if c is not None]
    has_rms = any(getattr(c, "rms_norm_eps", None) is not None for c in configs)
    has_rope = any(getattr(c, a, None) is not None for c in configs
                   for a in ("rope_theta", "rope_parameters", "rope_scaling"))
    if not (has_rms and has_rope):
        from prm_plugins.onnx_export.fuse import FusionError

        raise FusionError(
            f"--optimize fused needs a decoder trunk with RMSNorm and rotary positions "
            f"(Qwen2, Llama, Mistral); {_describe(hf_config, model_dir)} has "
            f"{'no rms_norm_eps' if not has_rms else ''}"
            f"{' and ' if not (has_rms or has_rope) else ''}"
            f"{'no rotary settings' if not has_rope else ''} in its config (an encoder such as "
            "BERT, or another architecture). Export it with --optimize plain"
        )


def _describe(hf_config: Any, model_dir: Path) -> str:
    archs = getattr(hf_config, "architectures", None) or [getattr(hf_config, "model_type", "?")]
    return f"{model_dir.name} ({archs[0]})"


def _fusion_parity(parity: dict[str, Any], config: ExportConfig, providers: list[str]
                   ) -> dict[str, Any]:
    """The fused graph's parity figures in short, per dtype, for ``prm.json`` ``fusion``."""
    figures = {"max_abs_diff": parity["max_abs_diff"], "mean_abs_diff": parity["mean_abs_diff"],
               "by_padding": parity.get("by_padding", {}), "tolerance": parity["tolerance"],
               "provider": parity.get("backend") or providers[0]}
    out: dict[str, Any] = {config.dtype: figures}
    for other in DTYPES:
        if other != config.dtype:
            how = f"--dtype {other}" + (" --device cuda" if other in ("fp16", "bf16") else "")
            out[other] = (f"not measured by this export; export with --optimize fused {how} "
                          "to measure it")
    return out


def _torch_precision(dtype: str) -> str:
    """The precision torch computes in for a graph dtype (bf16-weights computes in fp32)."""
    return "fp32" if dtype == "bf16-weights" else dtype


def _precision_name(torch_dtype: Any) -> str:
    import torch

    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[torch_dtype]


def _other_precision(dtype: str) -> Any:
    """The torch dtype a bf16 graph is also compared with (``None`` for other graphs)."""
    import torch

    return {"bf16-weights": torch.bfloat16, "bf16": torch.float32}.get(dtype)


def _parity_by_dtype(parity: dict[str, Any], config: ExportConfig,
                     other_report: Any) -> dict[str, Any]:
    """``parity.by_dtype``: the graph against torch in each precision, keyed by torch's.

    The gating comparison is always there (``gate: true``). bf16 graphs are also compared
    with torch in the other precision, for information (``gate: false``): a
    ``bf16-weights`` graph (fp32 compute) with torch in bf16, as upstream runs the model;
    a ``bf16`` graph with torch in fp32.
    """

    def short(figures: dict[str, Any], gate: bool) -> dict[str, Any]:
        keys = ("max_abs_diff", "mean_abs_diff", "by_padding", "reference", "backend")
        out = {k: figures[k] for k in keys if k in figures}
        out["gate"] = gate
        if gate:
            out["tolerance"] = figures["tolerance"]
            out["passed"] = figures["passed"]
        return out

    table = {_torch_precision(config.dtype): short(parity, True)}
    other = _other_precision(config.dtype)
    if other is not None and other_report is not None:
        table[_precision_name(other)] = short(other_report.to_dict(), False)
        logger.info("%s graph vs torch %s: max |Δp| %.3g, mean %.3g", config.dtype,
                    _precision_name(other), other_report.max_abs_diff,
                    other_report.mean_abs_diff)
    return table


def _providers(config: ExportConfig) -> list[str]:
    if config.device == "cpu":
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise InvalidInputError(
            "--device cuda needs onnxruntime's CUDA provider for parity, and this "
            f"onnxruntime offers {ort.get_available_providers()}. Install onnxruntime-gpu "
            '(pip install "prm-plugins[cuda]") or use --device cpu'
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _load_hf_config(model_dir: Path) -> Any:
    import transformers

    from prm_plugins.onnx_export.checkpoint import first_line

    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(
            f"{model_dir} has no config.json; pass the directory of a local transformers "
            "checkpoint (prm export never downloads)"
        )
    try:
        return transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True,
                                                       trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(
            f"transformers could not read {model_dir / 'config.json'} ({type(exc).__name__}: "
            f"{first_line(str(exc))}); a model_type this transformers ({transformers.__version__}) "
            "does not know needs a newer transformers (remote code is never run)"
        ) from exc


def _pad_token_id(hf_tok: Any) -> int:
    """The id written at padded positions (masked out; any in-vocabulary id works)."""
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(hf_tok, attr, None)
        if isinstance(value, int):
            return value
    return 0


def _save_tokenizer(hf_tok: Any, path: Path, fmt_cls: type[PRMFormat],
                    options: dict[str, Any]) -> PRMFormat:
    """Write the fast tokenizer as ``tokenizer.json``; the format as the runtime builds it."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    tok.save(str(path))
    runtime_tok = Tokenizer.from_file(str(path))
    return fmt_cls(runtime_tok, options)


def _param_bytes(model: Any) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _sample_inputs(fmt: PRMFormat, chains: list[tuple[str, list[str]]], pad_id: int,
                   max_length: int, device: str) -> tuple[Any, Any]:
    """Two real rendered chains, right-padded: the example inputs of the export.

    Batch 2 and at least 3 tokens, so the exporter keeps both axes dynamic.
    """
    import torch

    rows = [fmt.render(q, s).input_ids for q, s in (chains * 2)[:2]]
    length = min(max(3, max(len(r) for r in rows) + 1), max_length)
    ids = torch.full((2, length), pad_id, dtype=torch.long)
    mask = torch.zeros((2, length), dtype=torch.long)
    for i, row in enumerate(rows):
        row = row[:length]
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def _export_graph(model: Any, sample: tuple[Any, Any], path: Path, config: ExportConfig,
                  max_length: int, external: bool) -> None:
    """Run ``torch.onnx.export`` with dynamic batch and sequence axes."""

    # torch logs one warning per torchvision op it cannot register; not our concern.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        _run_exporter(model, sample, path, config, max_length, external)
    finally:
        registration.setLevel(level)


def _run_exporter(model: Any, sample: tuple[Any, Any], path: Path, config: ExportConfig,
                  max_length: int, external: bool) -> None:
    import torch

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*axis name.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        if config.exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1)
            seq = torch.export.Dim("sequence", min=1, max=max(max_length, 4))
            axes = {0: batch, 1: seq}
            try:
                program = torch.onnx.export(
                    model, sample, None, input_names=list(INPUT_NAMES),
                    output_names=[OUTPUT_NAME], opset_version=config.opset, dynamo=True,
                    dynamic_shapes={"input_ids": axes, "attention_mask": axes},
                    # fused: fuse.py cleans and fuses, counting ops before and after.
                    optimize=config.optimize != "fused", verbose=False,
                )
            except Exception as exc:
                raise ModelLoadError(
                    f"torch.onnx dynamo export failed for {type(model).__name__}: "
                    f"{type(exc).__name__}: {str(exc)[:800]}. Try --exporter legacy"
                ) from exc
            if program is None:  # pragma: no cover - dynamo=True always returns one
                raise ModelLoadError("torch.onnx.export returned no program")
            program.save(str(path), external_data=external)
            return
        # The legacy exporter's deprecation notice, and its advanced-indexing note (indices
        # here come from arange/cumsum, never negative; parity checks the result anyway).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        tmp = path.parent / "legacy"
        tmp.mkdir()
        axes_named = {0: "batch", 1: "sequence"}
        try:
            torch.onnx.export(
                model, sample, str(tmp / MODEL_FILE), input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME], opset_version=config.opset or 17, dynamo=False,
                dynamic_axes={n: axes_named for n in (*INPUT_NAMES, OUTPUT_NAME)},
                do_constant_folding=True,
            )
        except Exception as exc:
            raise ModelLoadError(
                f"torch.onnx legacy export failed for {type(model).__name__}: "
                f"{type(exc).__name__}: {str(exc)[:800]}. Try --exporter dynamo"
            ) from exc
        import onnx

        proto = onnx.load(str(tmp / MODEL_FILE))
        onnx.save_model(proto, str(path), save_as_external_data=external,
                        all_tensors_to_one_file=True, location=path.name + ".data")
        shutil.rmtree(tmp)


def export_torch_graph(model: Any, sample: tuple[Any, Any], path: str | Path, *,
                       optimize: str = "plain", opset: int | None = None,
                       max_length: int = MAX_LENGTH_CAP, external: bool = False,
                       what: str = "the model") -> dict[str, Any]:
    """Export an already built step-probability module to ``path`` (no parity, no manifest).

    The building block of :func:`export_prm`, for benchmarks and experiments that make the
    torch module themselves (e.g. random weights from a config).

    Args:
        model: ``(input_ids, attention_mask) -> step_probs`` torch module, in eval mode.
        sample: example ``(input_ids, attention_mask)`` (batch >= 2, length >= 3).
        path: the ``.onnx`` file to write.
        optimize: ``"plain"`` or ``"fused"`` (see :mod:`prm_plugins.onnx_export.fuse`).
        opset: ONNX opset for ``plain`` (``fused`` is always 23).
        max_length: upper bound of the dynamic sequence axis.
        external: keep the weights in ``<path>.data``.
        what: the model's name for error messages.

    Returns:
        ``{"mode": "plain"}``, or the fusion report with ``mode`` ``"fused"``.

    Examples:
        >>> export_torch_graph(model, sample, "m.onnx", optimize="fused")  # doctest: +SKIP
    """
    from prm_plugins.onnx_export.fuse import FUSED_OPSET, fuse_decoder_graph

    config = ExportConfig("-", "-", optimize=optimize,
                          opset=FUSED_OPSET if optimize == "fused" else opset)
    config.validate()
    path = Path(path)
    _export_graph(model, sample, path, config, max_length, external)
    fusion: dict[str, Any] = {"mode": "plain"}
    if optimize == "fused":
        fusion = {"mode": "fused", **fuse_decoder_graph(path, path, external_data=external,
                                                         what=what).to_dict()}
    _check_graph(path)
    return fusion


def _check_graph(path: Path) -> int:
    """Check the graph's contract (names, dtypes, rank) and return its opset."""
    import onnx

    onnx.checker.check_model(str(path))
    proto = onnx.load(str(path), load_external_data=False)
    elem = onnx.TensorProto
    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    outputs = {o.name: o.type.tensor_type for o in proto.graph.output}
    problems = []
    for name in INPUT_NAMES:
        if name not in inputs or inputs[name].elem_type != elem.INT64:
            problems.append(f"input {name} int64")
    if list(outputs) != [OUTPUT_NAME] or outputs[OUTPUT_NAME].elem_type != elem.FLOAT:
        problems.append(f"single output {OUTPUT_NAME} float32 (got {list(outputs)})")
    elif len(outputs[OUTPUT_NAME].shape.dim) != 2:
        problems.append(f"{OUTPUT_NAME} of rank 2 (a [B, T] tensor)")
    if problems:
        raise ModelLoadError(
            f"the exported graph breaks the graph contract: needs {', '.join(problems)}. "
            "The torch wrapper must return step_probs [B, T] float32"
        )
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _tolerances(config: ExportConfig, default_max: float, default_mean: float | None
                ) -> tuple[float, float | None]:
    """The final graph's (max, mean) |Δp| bounds: the config's, else the defaults."""
    return (config.tolerance if config.tolerance is not None else default_max,
            config.mean_tolerance if config.mean_tolerance is not None else default_mean)


def _measure(measure: Any, graph: Path, model: Any, fmt: PRMFormat, chains: list[Any],
             tolerance: tuple[float, float | None], providers: list[str],
             config: ExportConfig, kwargs: dict[str, Any]) -> Any:
    """:func:`measure_parity`, turning ONNX Runtime failures into clear errors."""
    from prm_plugins.onnx_export.parity import onnx_session

    try:
        session = onnx_session(graph, providers)
        return measure(session, model, fmt, chains, tolerance=tolerance[0],
                       mean_tolerance=tolerance[1], **kwargs)
    except ParityError:
        raise
    except Exception as exc:
        if config.dtype == "fp16" and config.device == "cpu":
            raise InvalidInputError(
                "fp16 export needs --device cuda: the fp16 graph cannot be checked on "
                f"ONNX Runtime's CPU provider ({type(exc).__name__}: {str(exc)[:300]}). "
                "Export fp32 (optionally --quantize int8) for CPU, or run on a GPU"
            ) from exc
        if config.dtype == "bf16":
            raise ParityError(
                "ONNX Runtime could not run the bf16 graph on its CUDA provider "
                f"({type(exc).__name__}: {str(exc)[:300]}); an op without a CUDA bf16 kernel "
                "falls back to the CPU provider, which has none. Export --dtype fp16 for the "
                "GPU, or --dtype bf16-weights"
            ) from exc
        raise ParityError(
            f"ONNX Runtime could not run the exported graph for parity: "
            f"{type(exc).__name__}: {str(exc)[:800]}"
        ) from exc


def _runtime_check(model_dir: Path, config: ExportConfig, chains: list[Any],
                   report: Any) -> dict[str, Any]:
    """Score the parity chains through :func:`load_prm`, the user's path, against torch."""
    from prm_plugins.runtime import OnnxPRM

    device = "cuda" if config.device == "cuda" and config.quantize is None else "cpu"
    prm = OnnxPRM(model_dir, device=device)  # type: ignore[arg-type]
    scored = prm.score_batch(chains)
    diffs = [abs(a - b) for s, ref in zip(scored, report.reference_probs, strict=True)
             for a, b in zip(s.scores, ref, strict=True)]
    worst, mean = max(diffs), sum(diffs) / len(diffs)
    mean_tol = report.mean_tolerance
    if not (worst <= report.tolerance and (mean_tol is None or mean <= mean_tol)):
        raise ParityError(
            f"load_prm() scores of the parity chains differ from the torch model by max "
            f"|Δp| = {worst:.3g}, mean {mean:.3g} (tolerance {report.tolerance:g}"
            f"{'' if mean_tol is None else f', mean {mean_tol:g}'}), batched and padded as the "
            "runtime does. "
            + ("int8 activation scales depend on what is in each batch; raise --tolerance "
               "if you accept this, or export fp32" if config.quantize else
               "The raw graph passed, so the runtime's rendering or padding disagrees with "
               "the export: report this bug")
        )
    return {"max_abs_diff": worst, "mean_abs_diff": mean, "n_steps": len(diffs),
            "provider": prm.provider}


def _publish(staging: Path, out_dir: Path, names: list[str]) -> None:
    """Move the staged files into ``out_dir``, ``prm.json`` last.

    An earlier export's manifest is removed first (so no manifest ever vouches for a mix of
    old and new files), then its files the new export does not write.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    old_manifest = out_dir / MANIFEST_NAME
    stale: list[str] = []
    if old_manifest.is_file():
        try:
            stale = list(Manifest.read(out_dir).files)
        except Exception:  # an unreadable old manifest still goes
            stale = []
        old_manifest.unlink()
    for name in stale:
        target = out_dir / name
        if name not in names and target.parent == out_dir:
            target.unlink(missing_ok=True)
    for name in names:
        if name != MANIFEST_NAME:
            os.replace(staging / name, out_dir / name)
    os.replace(staging / MANIFEST_NAME, out_dir / MANIFEST_NAME)


def _versions() -> dict[str, str]:
    from importlib import metadata

    import onnxruntime

    import prm_plugins

    versions = {"prm-plugins": prm_plugins.__version__, "python": platform.python_version(),
                "onnxruntime": onnxruntime.__version__}
    for dist in ("torch", "transformers", "onnx", "onnxscript", "tokenizers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover
            continue
    return versions


def _source(model_dir: Path, hf_config: Any, model: Any) -> dict[str, Any]:
    from prm_plugins.onnx_export.checkpoint import count_params, find_weights

    archs = getattr(hf_config, "architectures", None) or []
    return {
        "model_dir": str(model_dir.resolve()),
        "architecture": archs[0] if archs else None,
        "model_type": getattr(hf_config, "model_type", None),
        "weights": find_weights(model_dir).kind,
        "num_params": count_params(model_dir),
        "num_params_exported": int(sum(p.numel() for p in model.parameters())),
    }
