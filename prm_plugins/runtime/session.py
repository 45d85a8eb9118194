"""The ONNX Runtime session: provider choice, built from verified bytes (never from the path).

``device="auto"`` takes CUDA when this onnxruntime has the CUDA provider *and* a CUDA driver
can be loaded, else the CPU; ``"cuda"`` raises when CUDA cannot run instead of falling back.
On the CPU the session runs without memory patterns (a scorer meets many shapes, and a pattern
is planned and kept per shape) and lets go of the graph bytes it would keep for a provider
fallback the CPU never makes.

Imports onnxruntime only inside :func:`create_session`.
"""

from __future__ import annotations

import ctypes
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prm_plugins.errors import ModelLoadError
from prm_plugins.runtime.install import check_onnxruntime_install

__all__ = ["CPU", "CUDA", "Device", "OpenedSession", "create_session", "cuda_driver_present"]

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def cuda_driver_present() -> bool:
    """True when a CUDA driver library can be loaded (so a GPU may be there)."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


@dataclass(frozen=True)
class OpenedSession:
    """A session and where it runs.

    Attributes:
        session: the ``onnxruntime.InferenceSession``.
        provider: :data:`CUDA` or :data:`CPU`.
        cuda_graph: the session was created with ``enable_cuda_graph``.
    """

    session: Any
    provider: str
    cuda_graph: bool = False


def session_options(threads: int | None, external: dict[str, Any]) -> Any:
    """``onnxruntime.SessionOptions``: full graph optimisation, quiet logs, the external data
    handed over from memory (the verified bytes), ``threads`` intra-op threads when given."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    if external:
        names = list(external)
        opts.add_external_initializers_from_files_in_memory(
            names, [external[n] for n in names], [len(external[n]) for n in names])
    return opts


def create_session(model: Any, external: dict[str, Any], *, model_dir: Path, model_path: Path,
                   dtype: str, device: Device = "auto", threads: int | None = None,
                   cuda_graph: bool = False) -> OpenedSession:
    """The ONNX Runtime session of a graph, built from its verified bytes.

    Args:
        model: the graph's verified bytes (or a read-only ``mmap``).
        external: external-data location -> verified contents.
        model_dir: the model directory, named in errors only.
        model_path: the graph's path, named in errors only (never read).
        dtype: the manifest's dtype (a ``"bf16"`` graph runs on CUDA only).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        threads: ONNX Runtime intra-op threads (default: its own choice).
        cuda_graph: try a session with ``enable_cuda_graph`` first on CUDA.

    Raises:
        ModelLoadError: CUDA asked for and unable to run, a bf16 graph on the CPU, or a graph
            ONNX Runtime cannot load.

    Warns:
        RuntimeWarning: ``"auto"`` fell back to the CPU, or ``cuda_graph`` without CUDA; the
            warning points at the caller of whatever called this (``OnnxPRM``'s caller).
    """
    import onnxruntime as ort

    check_onnxruntime_install()  # warns once when onnxruntime and onnxruntime-gpu are both there
    opts = session_options(threads, external)
    model = bytes(model) if not isinstance(model, bytes) else model
    available = ort.get_available_providers()
    want_cuda = device == "cuda" or (
        device == "auto" and CUDA in available and cuda_driver_present()
    )
    if want_cuda:
        opened = _open_cuda(model, opts, device, available, cuda_graph)
        if opened is not None:
            return opened
    if dtype == "bf16":  # see prm_plugins.onnx_export.bf16
        raise ModelLoadError(
            f"{model_dir} holds a bf16-compute graph (prm export --dtype bf16), which "
            "only ONNX Runtime's CUDA provider runs (its CPU provider has no bf16 kernels). "
            "Load it with device='cuda' on a GPU, or export --dtype bf16-weights or fp32 "
            "for CPU"
        )
    if cuda_graph:
        warnings.warn("cuda_graph=True but the model runs on CPU; no CUDA graphs",
                      RuntimeWarning, stacklevel=3)
    return OpenedSession(_cpu_session(model, opts, model_path), CPU)


def _open_cuda(model: bytes, opts: Any, device: Device, available: list[str],
               cuda_graph: bool) -> OpenedSession | None:
    """A CUDA session, or ``None`` (with a warning) when ``"auto"`` must fall back to CPU."""
    import onnxruntime as ort

    from prm_plugins.runtime.iobinding import cuda_graph_session

    if CUDA not in available:
        raise ModelLoadError(
            "device='cuda' was asked for but this onnxruntime has no CUDA provider "
            f"(available: {available}). Install onnxruntime-gpu "
            '(pip install ".[cuda]" in a prm-plugins checkout, or pip install '
            '"prm-plugins[cuda]" once published) or use device="auto" / "cpu"'
        )
    sess = cuda_graph_session(model, opts) if cuda_graph else None
    graphs = sess is not None
    try:
        sess = sess or ort.InferenceSession(model, opts, providers=[CUDA, CPU])
    except Exception as exc:  # CUDA libraries missing or the device failing
        if device == "cuda":
            raise ModelLoadError(f"CUDA session could not start: {exc}") from exc
        warnings.warn(f"CUDA session could not start ({exc}); running on CPU",
                      RuntimeWarning, stacklevel=4)
        return None
    if sess.get_providers()[0] == CUDA:
        return OpenedSession(sess, CUDA, cuda_graph=graphs)
    if device == "cuda":
        raise ModelLoadError(
            "device='cuda' was asked for but ONNX Runtime fell back to "
            f"{sess.get_providers()[0]} (CUDA or cuDNN libraries not found); "
            'install them with pip install ".[cuda]" in a prm-plugins checkout (once '
            'published: pip install "prm-plugins[cuda]")'
        )
    warnings.warn("CUDA provider could not start; running on CPU",
                  RuntimeWarning, stacklevel=4)
    return None


def _cpu_session(model: bytes, opts: Any, model_path: Path) -> Any:
    import onnxruntime as ort

    # On the CPU, a memory pattern is planned and kept per input shape, and a scorer meets
    # many shapes: off, peak memory over a large file fell by ~0.7 GB at the same speed.
    opts.enable_mem_pattern = False
    try:
        sess = ort.InferenceSession(model, opts, providers=[CPU])
    except Exception as exc:
        raise ModelLoadError(f"ONNX Runtime cannot load {model_path}: {exc}") from exc
    # A session built from bytes keeps them for a provider fallback the CPU never makes
    # (the whole graph, for as long as the scorer lives); let them go.
    if getattr(sess, "_model_bytes", None) is not None:
        sess._model_bytes = None
    return sess
