"""torch -> ONNX: export a step-probability module as a graph that follows the contract.

The contract (every format; its names live in :mod:`prm_plugins.manifest`): inputs
``input_ids [B,T] int64`` and ``attention_mask [B,T] int64``, output ``step_probs [B,T]
float32``, dynamic ``B`` and ``T``.
:func:`export_graph` runs ``torch.onnx.export`` (dynamo or legacy), :func:`check_graph`
checks the result against the contract, and :func:`export_torch_graph` does both (and the
fusion) for a module built elsewhere.

Examples:
    >>> export_torch_graph(model, sample, "m.onnx")  # doctest: +SKIP
    {'mode': 'plain'}
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

from prm_plugins.errors import ModelLoadError
from prm_plugins.formats import PRMFormat
from prm_plugins.manifest import GRAPH_INPUTS, GRAPH_OUTPUT
from prm_plugins.onnx_export.config import MAX_LENGTH_CAP, MODEL_FILE, ExportConfig

__all__ = [
    "check_graph",
    "export_graph",
    "export_torch_graph",
    "param_bytes",
    "sample_inputs",
]

logger = logging.getLogger(__name__)


def param_bytes(model: Any) -> int:
    """Bytes of the module's parameters and buffers (decides on external data)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def sample_inputs(fmt: PRMFormat, chains: list[tuple[str, list[str]]], pad_id: int,
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


def export_graph(model: Any, sample: tuple[Any, Any], path: Path, config: ExportConfig,
                 max_length: int, external: bool) -> None:
    """Run ``torch.onnx.export`` with dynamic batch and sequence axes.

    Args:
        model: ``(input_ids, attention_mask) -> step_probs`` torch module.
        sample: example inputs (see :func:`sample_inputs`).
        path: the ``.onnx`` file to write.
        config: the exporter, opset and optimisation to use.
        max_length: upper bound of the dynamic sequence axis.
        external: keep the weights in ``<path>.data``.

    Raises:
        ModelLoadError: the exporter failed (the message names the other exporter).
    """
    import torch

    # torch logs one warning per torchvision op it cannot register; not our concern.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            if config.exporter == "dynamo":
                _export_dynamo(model, sample, path, config, max_length, external)
            else:
                _export_legacy(model, sample, path, config, external)
    finally:
        registration.setLevel(level)


def _export_dynamo(model: Any, sample: tuple[Any, Any], path: Path, config: ExportConfig,
                   max_length: int, external: bool) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1)
    seq = torch.export.Dim("sequence", min=1, max=max(max_length, 4))
    axes = {0: batch, 1: seq}
    try:
        program = torch.onnx.export(
            model, sample, None, input_names=list(GRAPH_INPUTS),
            output_names=[GRAPH_OUTPUT], opset_version=config.opset, dynamo=True,
            dynamic_shapes={name: axes for name in GRAPH_INPUTS},
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


def _export_legacy(model: Any, sample: tuple[Any, Any], path: Path, config: ExportConfig,
                   external: bool) -> None:
    import torch

    # The legacy exporter's deprecation notice, and its advanced-indexing note (indices
    # here come from arange/cumsum, never negative; parity checks the result anyway).
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
    tmp = path.parent / "legacy"
    tmp.mkdir()
    axes_named = {0: "batch", 1: "sequence"}
    try:
        torch.onnx.export(
            model, sample, str(tmp / MODEL_FILE), input_names=list(GRAPH_INPUTS),
            output_names=[GRAPH_OUTPUT], opset_version=config.opset or 17, dynamo=False,
            dynamic_axes={n: axes_named for n in (*GRAPH_INPUTS, GRAPH_OUTPUT)},
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

    The building block of :func:`~prm_plugins.onnx_export.export.export_prm`, for
    benchmarks and experiments that make the torch module themselves (e.g. random weights
    from a config).

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
    export_graph(model, sample, path, config, max_length, external)
    fusion: dict[str, Any] = {"mode": "plain"}
    if optimize == "fused":
        fusion = {"mode": "fused", **fuse_decoder_graph(path, path, external_data=external,
                                                         what=what).to_dict()}
    check_graph(path)
    return fusion


def check_graph(path: Path) -> int:
    """Check the graph's contract (names, dtypes, rank) and return its opset.

    Raises:
        ModelLoadError: the graph breaks the contract (the message lists what it needs).
    """
    import onnx

    onnx.checker.check_model(str(path))
    proto = onnx.load(str(path), load_external_data=False)
    elem = onnx.TensorProto
    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    outputs = {o.name: o.type.tensor_type for o in proto.graph.output}
    problems = []
    for name in GRAPH_INPUTS:
        if name not in inputs or inputs[name].elem_type != elem.INT64:
            problems.append(f"input {name} int64")
    if list(outputs) != [GRAPH_OUTPUT] or outputs[GRAPH_OUTPUT].elem_type != elem.FLOAT:
        problems.append(f"single output {GRAPH_OUTPUT} float32 (got {list(outputs)})")
    elif len(outputs[GRAPH_OUTPUT].shape.dim) != 2:
        problems.append(f"{GRAPH_OUTPUT} of rank 2 (a [B, T] tensor)")
    if problems:
        raise ModelLoadError(
            f"the exported graph breaks the graph contract: needs {', '.join(problems)}. "
            f"The torch wrapper must return {GRAPH_OUTPUT} [B, T] float32"
        )
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))
