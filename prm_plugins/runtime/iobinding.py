"""Run a PRM graph through ONNX Runtime IO binding, with device buffers kept per shape.

:class:`BoundRunner` is what :class:`prm_plugins.runtime.OnnxPRM` uses on the CUDA provider
(and, when asked, on CPU): inputs are copied once into device ``OrtValue`` buffers, the output
is written into a device buffer, and only ``step_probs`` comes back to the host. With bucketed
shapes (:mod:`prm_plugins.runtime.buckets`) each ``(rows, length)`` keeps its own buffers, filled in
place, so memory stops growing after warm-up; and with ``cuda_graph=True`` each such shape
is captured once as a CUDA graph (its own ``gpu_graph_id``) and replayed after.

Imports only numpy here and onnxruntime through the session it is given.

Examples:
    >>> runner = BoundRunner(session, device="cuda")  # doctest: +SKIP
    >>> probs = runner.run(ids, mask, keep=True)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from prm_plugins.errors import InvalidInputError
from prm_plugins.manifest import GRAPH_INPUTS, GRAPH_OUTPUT

__all__ = ["BoundRunner", "CUDA_GRAPH_MAX_TOKENS", "cuda_graph_session"]

logger = logging.getLogger(__name__)

#: Batches up to this many padded tokens are captured as CUDA graphs. Below it a forward pass
#: is bound by kernel launches (``../shared/GPU.md``: batch 1 x 512), which graphs remove;
#: above it the GPU is busy anyway and each captured graph would hold its own activations.
CUDA_GRAPH_MAX_TOKENS = 4096


# GPU only (the CPU test suite cannot run it): a session with CUDA graph capture.
def cuda_graph_session(path: str | bytes, options: Any) -> Any:
    """A CUDA session with ``enable_cuda_graph``, or ``None`` (with a warning) if refused.

    ONNX Runtime captures CUDA graphs only when every compute node runs on the CUDA provider;
    its refusal, or any other failure, is reported and the caller runs without graphs.

    Args:
        path: the ``.onnx`` file, or its verified bytes.
        options: ``onnxruntime.SessionOptions``.
    """
    import warnings

    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(
            path, options, providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"}),
                                      "CPUExecutionProvider"])
    except Exception as exc:
        warnings.warn(f"CUDA graphs are off: ONNX Runtime refused enable_cuda_graph for this "
                      f"model ({str(exc)[:300]}); nodes that run on the CPU provider rule "
                      "graphs out. Export with --optimize fused, or drop cuda_graph",
                      RuntimeWarning, stacklevel=3)
        return None
    if sess.get_providers()[0] != "CUDAExecutionProvider":
        return None
    return sess


@dataclass
class _Slot:
    """Device buffers (and a CUDA graph id) of one input shape, reused across runs."""

    ids: Any
    mask: Any
    out: Any
    binding: Any
    graph_id: int


class BoundRunner:
    """Runs ``(input_ids, attention_mask) -> step_probs`` with IO binding.

    Args:
        session: an ``onnxruntime.InferenceSession`` of a model that follows the graph contract.
        device: ``"cuda"`` or ``"cpu"``: where the bound buffers live.
        device_id: the device ordinal.
        cuda_graph: the session was created with ``enable_cuda_graph``; shapes run with
            ``keep=True`` and at most ``graph_max_tokens`` tokens are captured once each and
            replayed (each gets its own ``gpu_graph_id``); other runs disable capture.
        graph_max_tokens: largest ``rows x length`` captured as a CUDA graph.
    """

    def __init__(self, session: Any, *, device: str = "cuda", device_id: int = 0,
                 cuda_graph: bool = False,
                 graph_max_tokens: int = CUDA_GRAPH_MAX_TOKENS) -> None:
        if device not in ("cuda", "cpu"):
            raise InvalidInputError(f"device must be 'cuda' or 'cpu', got {device!r}")
        if cuda_graph and device != "cuda":
            raise InvalidInputError("CUDA graphs need device='cuda'")
        self.session = session
        self.device = device
        self.device_id = int(device_id)
        self.cuda_graph = bool(cuda_graph)
        self.graph_max_tokens = int(graph_max_tokens)
        self._slots: dict[tuple[int, int], _Slot] = {}
        self._run_options: dict[int, Any] = {}

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """Input shapes that hold buffers (and, with CUDA graphs, a graph id)."""
        return list(self._slots)

    def graph_id(self, shape: tuple[int, int]) -> int:
        """The ``gpu_graph_id`` a kept shape runs with: >= 1 captured, -1 not captured."""
        return self._slots[shape].graph_id

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, *,
            keep: bool = False) -> np.ndarray:
        """``step_probs [B, T]`` (float32, on the host) of one padded batch.

        Args:
            input_ids: int64 ``[B, T]``.
            attention_mask: int64 ``[B, T]``.
            keep: keep device buffers for this shape and reuse them on later runs (bucketed
                shapes; a captured CUDA graph needs fixed buffers). Unkept runs bind fresh
                buffers and are never captured.
        """
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        if ids.shape != mask.shape or ids.ndim != 2:
            raise InvalidInputError(
                f"input_ids and attention_mask must be [B, T] of one shape, got {ids.shape} "
                f"and {mask.shape}"
            )
        if keep:
            slot = self._slot((int(ids.shape[0]), int(ids.shape[1])))
            slot.ids.update_inplace(ids)
            slot.mask.update_inplace(mask)
            self.session.run_with_iobinding(slot.binding, self._options(slot.graph_id))
            return np.asarray(slot.out.numpy(), dtype=np.float32)
        import onnxruntime as ort

        binding = self.session.io_binding()
        for name, array in zip(GRAPH_INPUTS, (ids, mask), strict=True):
            binding.bind_ortvalue_input(
                name, ort.OrtValue.ortvalue_from_numpy(array, self.device, self.device_id))
        binding.bind_output(GRAPH_OUTPUT, self.device, self.device_id)
        self.session.run_with_iobinding(binding, self._options(-1))
        (probs,) = binding.copy_outputs_to_cpu()
        return np.asarray(probs, dtype=np.float32)

    def _slot(self, shape: tuple[int, int]) -> _Slot:
        slot = self._slots.get(shape)
        if slot is not None:
            return slot
        import onnxruntime as ort

        def buffer(dtype: type) -> Any:
            return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device,
                                                             self.device_id)

        ids, mask, out = buffer(np.int64), buffer(np.int64), buffer(np.float32)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(GRAPH_INPUTS[0], ids)
        binding.bind_ortvalue_input(GRAPH_INPUTS[1], mask)
        binding.bind_ortvalue_output(GRAPH_OUTPUT, out)
        captured = self.cuda_graph and shape[0] * shape[1] <= self.graph_max_tokens
        # gpu_graph_id 0 is ONNX Runtime's own; -1 runs without capture.
        graph_id = sum(s.graph_id > 0 for s in self._slots.values()) + 1 if captured else -1
        slot = _Slot(ids, mask, out, binding, graph_id)
        self._slots[shape] = slot
        logger.debug("bound buffers for shape %s (gpu_graph_id %d)", shape, graph_id)
        return slot

    def _options(self, graph_id: int) -> Any:
        if not self.cuda_graph:
            return None
        options = self._run_options.get(graph_id)
        if options is None:
            import onnxruntime as ort

            options = ort.RunOptions()
            options.add_run_config_entry("gpu_graph_id", str(graph_id))
            self._run_options[graph_id] = options
        return options
