"""The parity gate of one export: what :func:`export_prm` measures, enforces and records.

:class:`ParityGate` runs :func:`~prm_plugins.onnx_export.parity.measure_parity` on the
exported graph (and, for bf16 graphs, against torch in the other precision too), on the
int8 graph, and finally on the written model directory through the runtime scorer; each
check raises :class:`ParityError` past its tolerance, and the figures go into ``prm.json``.

Examples:
    >>> gate = ParityGate(model, fmt, chains, config,  # doctest: +SKIP
    ...                   ["CPUExecutionProvider"], pad_token_id=0, max_length=512)
    >>> report, figures = gate.check_graph(Path("staging/model.onnx"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, ParityError
from prm_plugins.formats import PRMFormat
from prm_plugins.onnx_export.config import DTYPES, ExportConfig
from prm_plugins.onnx_export.parity import (
    DEFAULT_MEAN_TOLERANCES,
    DEFAULT_TOLERANCES,
    ParityReport,
    measure_parity,
    onnx_session,
)

__all__ = ["ParityGate", "parity_providers", "torch_precision"]

logger = logging.getLogger(__name__)


def torch_precision(dtype: str) -> str:
    """The precision torch computes in for a graph dtype (bf16-weights computes in fp32)."""
    return "fp32" if dtype == "bf16-weights" else dtype


def _precision_name(torch_dtype: Any) -> str:
    import torch

    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[torch_dtype]


def _other_precision(dtype: str) -> Any:
    """The torch dtype a bf16 graph is also compared with (``None`` for other graphs)."""
    import torch

    return {"bf16-weights": torch.bfloat16, "bf16": torch.float32}.get(dtype)


@dataclass
class ParityGate:
    """The parity checks of one export, in the order :func:`export_prm` runs them.

    The exported graph against the torch wrapper (:meth:`check_graph`), the int8 graph
    (:meth:`check_int8`), then the written model directory through the runtime
    (:meth:`check_runtime`). A failed check raises :class:`ParityError`.

    Args:
        model: the torch wrapper, ``(input_ids, attention_mask) -> step_probs``.
        fmt: the model's format (renders the chains).
        chains: the parity chains (:func:`random_chains`).
        config: the export's settings (dtype, device, tolerances, batch sizes, seed).
        providers: ONNX Runtime providers for the graph (:func:`parity_providers`).
        pad_token_id: id written at padded positions.
        max_length: longest padded batch.
    """

    model: Any
    fmt: PRMFormat
    chains: list[tuple[str, list[str]]]
    config: ExportConfig
    providers: list[str]
    pad_token_id: int
    max_length: int


    def _tolerances(self, dtype: str) -> tuple[float, float | None]:
        """The (max, mean) |Δp| bounds: the config's, else ``dtype``'s defaults."""
        config = self.config
        return (config.tolerance if config.tolerance is not None else DEFAULT_TOLERANCES[dtype],
                config.mean_tolerance if config.mean_tolerance is not None
                else DEFAULT_MEAN_TOLERANCES[dtype])

    def measure(self, graph: Path, tolerance: tuple[float, float | None],
                providers: list[str], reference: str) -> ParityReport:
        """:func:`measure_parity`, turning ONNX Runtime failures into clear errors."""
        config = self.config
        try:
            session = onnx_session(graph, providers)
            return measure_parity(
                session, self.model, self.fmt, self.chains, tolerance=tolerance[0],
                mean_tolerance=tolerance[1], pad_token_id=self.pad_token_id,
                batch_sizes=tuple(config.parity_batch_sizes), max_length=self.max_length,
                device=config.device, seed=config.parity_seed, reference=reference)
        except ParityError:
            raise
        except Exception as exc:
            raise _run_error(config, exc) from exc

    def check_graph(self, graph: Path) -> tuple[ParityReport, dict[str, Any]]:
        """Gate the exported graph; return its report and ``prm.json`` parity figures.

        bf16 graphs are also compared with torch in the other precision, for information
        (``parity.by_dtype``); that moves the torch wrapper to that precision, in place.
        """
        config = self.config
        tolerance = (DEFAULT_TOLERANCES[config.dtype], DEFAULT_MEAN_TOLERANCES[config.dtype])
        if not config.quantize:
            tolerance = self._tolerances(config.dtype)
        report = self.measure(graph, tolerance, self.providers, self._reference())
        report.check(f"the exported {config.optimize} {config.dtype} graph")
        parity = report.to_dict()
        other = _other_precision(config.dtype)
        other_report = None
        if other is not None:  # bf16 graphs: torch in the other precision, for information
            self.model = self.model.to(other)  # in place, after the gating figures
            other_report = self.measure(
                graph, (float("inf"), None), self.providers,
                f"torch wrapper ({_precision_name(other)} on {config.device})")
        parity["by_dtype"] = _parity_by_dtype(parity, config, other_report)
        return report, parity

    def check_int8(self, graph: Path, fp32_parity: dict[str, Any]
                   ) -> tuple[ParityReport, dict[str, Any]]:
        """Gate the int8 graph on the CPU provider; its figures hold the fp32 graph's."""
        report = self.measure(graph, self._tolerances("int8"), ["CPUExecutionProvider"],
                              self._reference())
        report.check("the int8 graph", hint=(
            "Dynamic int8 loses this much on this model. Try --no-per-channel, accept the "
            "measured difference with --tolerance/--mean-tolerance, or ship fp32"))
        return report, {**report.to_dict(), "fp32_graph": fp32_parity}

    def check_runtime(self, model_dir: Path, report: ParityReport) -> dict[str, Any]:
        """Score the parity chains through the runtime scorer, the user's path, against torch.

        Raises:
            ParityError: the runtime's scores differ from torch past the graph's tolerance.
        """
        from prm_plugins.runtime import OnnxPRM

        config = self.config
        device = "cuda" if config.device == "cuda" and config.quantize is None else "cpu"
        prm = OnnxPRM(model_dir, device=device)  # type: ignore[arg-type]
        scored = prm.score_batch(self.chains)
        diffs = [abs(a - b) for s, ref in zip(scored, report.reference_probs, strict=True)
                 for a, b in zip(s.scores, ref, strict=True)]
        worst, mean = max(diffs), sum(diffs) / len(diffs)
        mean_tol = report.mean_tolerance
        if not (worst <= report.tolerance and (mean_tol is None or mean <= mean_tol)):
            raise ParityError(
                f"load_prm() scores of the parity chains differ from the torch model by max "
                f"|Δp| = {worst:.3g}, mean {mean:.3g} (tolerance {report.tolerance:g}"
                f"{'' if mean_tol is None else f', mean {mean_tol:g}'}), batched and padded "
                "as the runtime does. "
                + ("int8 activation scales depend on what is in each batch; raise --tolerance "
                   "if you accept this, or export fp32" if config.quantize else
                   "The raw graph passed, so the runtime's rendering or padding disagrees with "
                   "the export: report this bug")
            )
        return {"max_abs_diff": worst, "mean_abs_diff": mean, "n_steps": len(diffs),
                "provider": prm.provider}

    def fusion_figures(self, parity: dict[str, Any]) -> dict[str, Any]:
        """The fused graph's parity figures in short, per dtype, for ``prm.json`` ``fusion``."""
        config = self.config
        figures = {"max_abs_diff": parity["max_abs_diff"],
                   "mean_abs_diff": parity["mean_abs_diff"],
                   "by_padding": parity.get("by_padding", {}), "tolerance": parity["tolerance"],
                   "provider": parity.get("backend") or self.providers[0]}
        out: dict[str, Any] = {config.dtype: figures}
        for other in DTYPES:
            if other != config.dtype:
                how = f"--dtype {other}" + (" --device cuda" if other in ("fp16", "bf16") else "")
                out[other] = (f"not measured by this export; export with --optimize fused {how} "
                              "to measure it")
        return out

    def _reference(self) -> str:
        return f"torch wrapper ({torch_precision(self.config.dtype)} on {self.config.device})"


def parity_providers(device: str) -> list[str]:
    """ONNX Runtime providers for parity on ``device``.

    Raises:
        InvalidInputError: ``cuda`` asked for and this onnxruntime has no CUDA provider.
    """
    if device == "cpu":
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise InvalidInputError(
            "--device cuda needs onnxruntime's CUDA provider for parity, and this "
            f"onnxruntime offers {ort.get_available_providers()}. Install onnxruntime-gpu "
            '(pip install ".[cuda]" in a prm-plugins checkout, or pip install '
            '"prm-plugins[cuda]" once published) or use --device cpu'
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _run_error(config: ExportConfig, exc: Exception) -> Exception:
    """The error for a graph ONNX Runtime could not run for parity."""
    if config.dtype == "fp16" and config.device == "cpu":
        return InvalidInputError(
            "fp16 export needs --device cuda: the fp16 graph cannot be checked on "
            f"ONNX Runtime's CPU provider ({type(exc).__name__}: {str(exc)[:300]}). "
            "Export fp32 (optionally --quantize int8) for CPU, or run on a GPU"
        )
    if config.dtype == "bf16":
        return ParityError(
            "ONNX Runtime could not run the bf16 graph on its CUDA provider "
            f"({type(exc).__name__}: {str(exc)[:300]}); an op without a CUDA bf16 kernel "
            "falls back to the CPU provider, which has none. Export --dtype fp16 for the "
            "GPU, or --dtype bf16-weights"
        )
    return ParityError(
        f"ONNX Runtime could not run the exported graph for parity: "
        f"{type(exc).__name__}: {str(exc)[:800]}"
    )


def _parity_by_dtype(parity: dict[str, Any], config: ExportConfig,
                     other_report: ParityReport | None) -> dict[str, Any]:
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

    table = {torch_precision(config.dtype): short(parity, True)}
    other = _other_precision(config.dtype)
    if other is not None and other_report is not None:
        table[_precision_name(other)] = short(other_report.to_dict(), False)
        logger.info("%s graph vs torch %s: max |Δp| %.3g, mean %.3g", config.dtype,
                    _precision_name(other), other_report.max_abs_diff,
                    other_report.mean_abs_diff)
    return table
