"""What one export does: :class:`ExportConfig`, its options, and the settings read with it.

Every field of :class:`ExportConfig` is also a ``prm export`` flag (its ``help`` metadata
is the flag's help). :func:`with_saved_format` fills the format from the checkpoint's
``prm_format.json``; :func:`resolve_max_length` sets the context written to ``prm.json``.

Examples:
    >>> cfg = ExportConfig("ckpt/", "out/", format="math-shepherd", quantize="int8")
    >>> cfg.validate()
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError

__all__ = [
    "DEVICES",
    "DTYPES",
    "EXPORTERS",
    "EXTERNAL_DATA_THRESHOLD",
    "MAX_LENGTH_CAP",
    "MODEL_FILE",
    "OPTIMIZE_MODES",
    "QUANTIZATIONS",
    "TOKENIZER_FILE",
    "ExportConfig",
    "resolve_max_length",
    "with_saved_format",
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
#: File names in the model directory.
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
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


def with_saved_format(config: ExportConfig, model_dir: Path) -> ExportConfig:
    """Fill ``format`` and default options from ``prm_format.json`` when the checkpoint has one.

    ``prm train`` writes that file, so ``prm export CKPT OUT`` needs no flags; ``--option``
    values still override the saved options. Without the file, ``format`` stays as given
    (``None`` is then detected from the checkpoint by
    :func:`prm_plugins.onnx_export.detect.detect_format`).

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
