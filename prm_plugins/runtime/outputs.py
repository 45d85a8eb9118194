"""The graph contract, checked: a session's declared names, and every run's ``step_probs``.

A model directory is input like any other: a graph may declare the wrong outputs, return
logits instead of probabilities, or overflow to NaN in fp16. :func:`check_graph_contract`
refuses a session whose inputs and output do not follow the contract of
:mod:`prm_plugins.manifest` when the model loads; :func:`check_step_probs` checks each run's
output (shape, dtype, finite, within [0, 1] where the mask is 1) before any score is read.

Examples:
    >>> import numpy as np
    >>> mask = np.array([[1, 1, 0]])
    >>> check_step_probs(np.array([[0.5, 1.00001, 7.0]]), mask, "model.onnx").tolist()
    [[0.5, 1.0, 1.0]]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from prm_plugins.errors import ModelLoadError, ModelOutputError
from prm_plugins.manifest import GRAPH_INPUTS, GRAPH_OUTPUT

__all__ = ["PROB_TOLERANCE", "check_declared_output", "check_graph_contract",
           "check_step_probs"]

#: How far outside [0, 1] a probability may stray through float rounding (softmax/sigmoid in
#: fp32 or fp16 can give 1.0000001) before the output counts as broken; values within it are
#: clipped to [0, 1], values past it raise :class:`ModelOutputError`.
PROB_TOLERANCE = 1e-4
_FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)")


def check_graph_contract(session: Any, model_path: str | Path) -> set[str]:
    """The session's input names, after checking that the graph follows the contract.

    Args:
        session: an ``onnxruntime.InferenceSession``.
        model_path: the graph's path, named in the error.

    Raises:
        ModelLoadError: an input or the output is missing, or the declared output is not a
            float ``[B, T]`` tensor.
    """
    input_names = {i.name for i in session.get_inputs()}
    missing = set(GRAPH_INPUTS) - input_names
    outputs = {o.name: o for o in session.get_outputs()}
    if missing or GRAPH_OUTPUT not in outputs:
        raise ModelLoadError(
            f"{model_path} does not follow the graph contract "
            f"(inputs {', '.join(GRAPH_INPUTS)}; output {GRAPH_OUTPUT}): inputs "
            f"{sorted(input_names)}, outputs {list(outputs)}. Re-export with "
            "`prm export`"
        )
    check_declared_output(outputs[GRAPH_OUTPUT], model_path)
    return input_names


def check_declared_output(output: Any, model_path: str | Path) -> None:
    """Refuse a graph whose declared ``step_probs`` is not a float ``[B, T]`` tensor.

    Args:
        output: the session's ``NodeArg`` of the output (``shape`` and ``type``).
        model_path: the graph's path, named in the error.

    Raises:
        ModelLoadError: a rank other than 2 or a non-float type.
    """
    shape, kind = getattr(output, "shape", None), str(getattr(output, "type", ""))
    problems = []
    if isinstance(shape, (list, tuple)) and len(shape) != 2:
        problems.append(f"rank {len(shape)} (shape {list(shape)})")
    if kind and kind not in _FLOAT_TYPES:
        problems.append(f"type {kind}")
    if problems:
        raise ModelLoadError(
            f"{model_path} declares {GRAPH_OUTPUT} with {' and '.join(problems)}; "
            f"the graph contract is a float32 [B, T] tensor, one probability per token. "
            "Re-export with `prm export`"
        )


def check_step_probs(probs: Any, mask: np.ndarray, where: str) -> np.ndarray:
    """``probs`` as float32 after the contract checks.

    Only positions where ``mask`` is 1 are checked (padding may hold anything); values within
    :data:`PROB_TOLERANCE` outside [0, 1] are clipped.

    Args:
        probs: the graph's ``step_probs`` for one batch.
        mask: the batch's ``attention_mask`` ``[B, T]``.
        where: the model, as named in the error (its path and directory).

    Raises:
        ModelOutputError: a shape other than the mask's, a non-float dtype, a value that is
            not finite, or one past the tolerance outside [0, 1].
    """
    arr = np.asarray(probs)
    if arr.shape != mask.shape:
        raise ModelOutputError(
            f"{where} returned {GRAPH_OUTPUT} of shape {arr.shape} for inputs of shape "
            f"{mask.shape}; expected {mask.shape}, one probability per token ([B, T]). "
            "The graph does not follow the contract: re-export it with `prm export`"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise ModelOutputError(
            f"{where} returned {GRAPH_OUTPUT} of dtype {arr.dtype}; expected float32 "
            "probabilities. Re-export it with `prm export`"
        )
    real = arr[mask != 0].astype(np.float64)
    if real.size == 0:
        return arr.astype(np.float32, copy=False)
    finite = np.isfinite(real)
    if not finite.all():
        bad = real[~finite]
        raise ModelOutputError(
            f"{where} returned {bad.size} of {real.size} {GRAPH_OUTPUT} values that are "
            f"not finite (e.g. {bad[:3].tolist()}) on a batch of shape {mask.shape}; a "
            "PRM's output must be probabilities. The model is broken (overflow in fp16, "
            "a bad export or bad weights): re-export it, or check it with `prm info`"
        )
    low, high = float(real.min()), float(real.max())
    if low < -PROB_TOLERANCE or high > 1.0 + PROB_TOLERANCE:
        raise ModelOutputError(
            f"{where} returned {GRAPH_OUTPUT} values outside [0, 1] (min {low!r}, max "
            f"{high!r}) on a batch of shape {mask.shape}; the graph must output "
            "probabilities (softmax or sigmoid), not logits. Re-export it with `prm export`"
        )
    arr = arr.astype(np.float32, copy=False)
    if low < 0.0 or high > 1.0:  # rounding within the tolerance
        arr = np.clip(arr, 0.0, 1.0)
    return arr
