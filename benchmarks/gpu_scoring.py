"""GPU scoring speed: PyTorch eager (SDPA), torch.compile and ONNX Runtime (plain, fused, fused
with CUDA graphs) on the same random-weight Qwen2-0.5B- and Qwen2-1.5B-shaped PRMs, fp16.

Issue 7 ("GPU fast path"). Each model is a ``qwen-prm`` step-probability module (Qwen2 trunk
+ 2-class score MLP, ``softmax[..., 1]``), random weights built from a config (nothing
downloaded), exported twice with :func:`prm_plugins.onnx_export.export.export_torch_graph`:
``plain`` (the dynamo exporter's graph) and ``fused`` (opset-23 Attention, RMSNormalization,
RotaryEmbedding, grouped K/V). Shapes: 1x512, 16x512, 64x512, 16x2048 and a best-of-16 mix of
chain lengths (right-padded; the CUDA-graph path runs it as the runtime does, in bucketed
batches). For every path and shape: warm-up, then the median (and p10/p90) of ``--repeats``
timed runs on rotating random inputs already on the device (CUDA events for torch;
``run_with_iobinding`` with device buffers, then synchronize, for ONNX Runtime); parity
against eager on left- and right-padded batches; device memory after warm-up and after the
timed runs (growth means shapes leak). Also: the measured fp16 matmul peak and the FLOP floor
``2 x non-embedding parameters x tokens / peak``, Memcpy nodes in ONNX Runtime's optimised
fused graph, and the issue's targets (met / missed).

Writes ``benchmarks/results/gpu_scoring.json`` and ``.md`` (``--smoke``: ``gpu_scoring_smoke.*``)
with the device, versions and command. ``--smoke`` runs a tiny config in fp32 on CPU (CPU
provider, no CUDA graphs) so the script itself is tested without a GPU::

    python benchmarks/gpu_scoring.py --smoke
    python benchmarks/gpu_scoring.py                       # on a CUDA machine, fp16
    python benchmarks/gpu_scoring.py --models qwen2-0.5b --repeats 30
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
logger = logging.getLogger("gpu_scoring")


def _ensure_importable() -> None:
    """Make ``prm_plugins`` and ``prm_plugins.onnx_export`` importable from a plain checkout.

    An installed prm-plugins maps ``onnx_export/`` into the package (setuptools
    ``package-dir``); on a machine where the repository is only copied (a lent GPU machine),
    the repository root is added to the package's search path instead.
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import prm_plugins

    try:
        import prm_plugins.onnx_export  # noqa: F401
    except ModuleNotFoundError:
        prm_plugins.__path__.append(str(ROOT))

#: Qwen2-0.5B and -1.5B shapes (config.json of the public checkpoints), plus the smoke model.
MODELS: dict[str, dict[str, Any]] = {
    "qwen2-0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                   "num_attention_heads": 14, "num_key_value_heads": 2,
                   "vocab_size": 151936, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
                   "max_position_embeddings": 32768, "tie_word_embeddings": True},
    "qwen2-1.5b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                   "num_attention_heads": 12, "num_key_value_heads": 2,
                   "vocab_size": 151936, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
                   "max_position_embeddings": 131072, "tie_word_embeddings": True},
    "smoke": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
              "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 512,
              "tie_word_embeddings": False},
}
SHAPES = ["1x512", "16x512", "64x512", "16x2048", "bo16"]
SMOKE_SHAPES = ["1x64", "4x64", "2x128", "bo8"]
PATHS = ["torch_eager", "torch_compile", "ort_plain", "ort_fused", "ort_fused_cudagraph",
         "prm_runtime"]
#: What each path is, for the report.
PATH_NOTES = {
    "torch_eager": "PyTorch eager, SDPA attention",
    "torch_compile": "torch.compile (default mode; shapes turn dynamic after the first "
                     "recompile unless --compile-static)",
    "ort_plain": "ONNX Runtime, plain dynamo export, IO binding",
    "ort_fused": "ONNX Runtime, fused opset-23 graph, IO binding",
    "ort_fused_cudagraph": "fused graph, one CUDA graph per shape (every shape captured), "
                           "best-of-n mix in bucketed batches",
    "prm_runtime": "the shipped runtime path: prm_plugins BoundRunner on the fused graph, host "
                   "arrays in and out (copies timed), CUDA graphs for shapes up to 4096 tokens, "
                   "best-of-n mix in bucketed batches",
}
#: Issue 7 targets, checked on the shapes they name.
TARGET_SHAPES = ("64x512", "16x2048")


# -- inputs -------------------------------------------------------------------------------
def mix_lengths(n: int, rng: np.random.Generator, *, lo: int, hi: int) -> list[int]:
    """Chain lengths of a best-of-n call: log-normal around 45% of ``hi``, within [lo, hi].

    Sampled solutions to one question share the prompt and vary in length; the spread here
    (sigma 0.35) puts the longest chain near twice the shortest, as in GSM8K/MATH samples.
    """
    raw = rng.lognormal(np.log(0.45 * hi), 0.35, size=n)
    return [int(v) for v in np.clip(raw, lo, hi)]


def make_batch(shape: str, vocab: int, rng: np.random.Generator, *, max_len: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Random token ids and a right-padded mask for ``BxT`` (all valid) or ``boN`` (a mix)."""
    if shape.startswith("bo"):
        n = int(shape[2:])
        lengths = mix_lengths(n, rng, lo=max(8, max_len // 16), hi=max_len)
        length = max(lengths)
    else:
        n, length = (int(v) for v in shape.split("x"))
        lengths = [length] * n
    ids = rng.integers(3, vocab, size=(n, length), dtype=np.int64)
    mask = np.zeros((n, length), dtype=np.int64)
    for r, k in enumerate(lengths):
        mask[r, :k] = 1
    return ids, mask


def to_left_padding(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same rows, left-padded."""
    out_ids, out_mask = np.zeros_like(ids), np.zeros_like(mask)
    for r in range(len(ids)):
        k = int(mask[r].sum())
        out_ids[r, ids.shape[1] - k:] = ids[r, :k]
        out_mask[r, ids.shape[1] - k:] = 1
    return out_ids, out_mask


# -- model --------------------------------------------------------------------------------
def build_model(name: str, dtype: Any, device: str, seed: int = 0) -> Any:
    """The ``qwen-prm`` step-probability module with random weights, in eval mode."""
    import torch
    from transformers import Qwen2Config, Qwen2Model

    from prm_plugins.onnx_export.wrappers.qwen_prm import QwenPRMForProcessReward, QwenPRMStepProbs

    torch.manual_seed(seed)
    config = Qwen2Config(**MODELS[name], attn_implementation="sdpa")
    with torch.device(device):  # random init on the GPU: seconds, not minutes, for 1.5B
        trunk = Qwen2Model(config)
        prm = QwenPRMForProcessReward(trunk, config.hidden_size)
    with torch.no_grad():  # a head that spreads probabilities, so parity means something
        for p in prm.score.parameters():
            p.normal_(0.0, 0.05)
    return QwenPRMStepProbs(prm).to(dtype=dtype, device=device).eval()


def non_embedding_params(model: Any) -> int:
    return int(sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n))


# -- timing -------------------------------------------------------------------------------
def summarize(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {"median_ms": float(np.median(arr)), "p10_ms": float(np.percentile(arr, 10)),
            "p90_ms": float(np.percentile(arr, 90)), "min_ms": float(arr.min()),
            "n": len(ms)}


class Clock:
    """Times a callable: CUDA events on a GPU, perf_counter on CPU."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def time(self, fn: Callable[[], Any]) -> float:
        if self.cuda:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return float(start.elapsed_time(end))
        t0 = time.perf_counter()
        fn()
        return 1000 * (time.perf_counter() - t0)


def device_memory_mb(cuda: bool) -> float | None:
    """Device memory in use (all processes' allocations on this GPU), MiB; on CPU the
    process's resident memory."""
    if not cuda:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    import torch

    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


def matmul_peak_tflops(cuda: bool, dtype: Any, n: int, repeats: int = 20) -> float:
    """Measured dense matmul throughput (n x n x n), median of ``repeats``."""
    import torch

    dev = "cuda" if cuda else "cpu"
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    clock = Clock(cuda)
    for _ in range(3):
        a @ b
    ms = [clock.time(lambda: a @ b) for _ in range(repeats)]
    return 2 * n**3 / (statistics.median(ms) / 1000) / 1e12


# -- paths --------------------------------------------------------------------------------
class TorchPath:
    def __init__(self, model: Any, device: str, compiled: bool, static: bool = False) -> None:
        import torch

        self.device = device
        self.model = model
        self.static = compiled and static
        self.fn = torch.compile(model) if compiled and not static else model
        self._torch = torch
        self._per_shape: dict[tuple[int, ...], Any] = {}

    def for_shape(self, shape: tuple[int, ...]) -> Any:
        """``--compile-static``: one ``torch.compile(dynamic=False)`` per input shape."""
        if shape not in self._per_shape:
            self._per_shape[shape] = self._torch.compile(self.model, dynamic=False)
        return self._per_shape[shape]

    def prepare(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> list[Any]:
        t = self._torch
        return [(t.from_numpy(i).to(self.device), t.from_numpy(m).to(self.device))
                for i, m in batches]

    def run(self, prepared: Any) -> Any:
        fn = self.for_shape(tuple(prepared[0].shape)) if self.static else self.fn
        with self._torch.inference_mode():
            return fn(*prepared)

    def probs(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = self.run(self.prepare([(ids, mask)])[0])
        return out.float().cpu().numpy()


class OrtPath:
    """An ONNX Runtime session timed through IO binding with device buffers."""

    def __init__(self, path: Path, *, cuda: bool, cuda_graph: bool = False,
                 optimized_copy: Path | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # On the GPU, ONNX Runtime's warnings say which nodes fell back to the CPU provider,
        # how many Memcpy nodes it added, and whether it refused CUDA graph capture.
        opts.log_severity_level = 2 if cuda else 3
        if optimized_copy is not None:
            opts.optimized_model_filepath = str(optimized_copy)
            opts.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name",
                optimized_copy.name + ".data")
            opts.add_session_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        if cuda:
            cuda_opts = {"enable_cuda_graph": "1"} if cuda_graph else {}
            providers: list[Any] = [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.provider = self.session.get_providers()[0]
        self.device = "cuda" if cuda else "cpu"
        self.cuda_graph = cuda_graph
        self._ort = ort
        self._slots: dict[tuple[int, int], tuple[Any, Any, Any, Any, Any]] = {}

    def _slot(self, shape: tuple[int, int]) -> tuple[Any, Any, Any, Any, Any]:
        if shape not in self._slots:
            ort = self._ort

            def buf(dtype: Any) -> Any:
                return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device, 0)

            ids, mask, out = buf(np.int64), buf(np.int64), buf(np.float32)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input("input_ids", ids)
            binding.bind_ortvalue_input("attention_mask", mask)
            binding.bind_ortvalue_output("step_probs", out)
            options = ort.RunOptions()
            if self.cuda_graph:
                options.add_run_config_entry("gpu_graph_id", str(len(self._slots) + 1))
            self._slots[shape] = (ids, mask, out, binding, options)
        return self._slots[shape]

    def load(self, ids: np.ndarray, mask: np.ndarray) -> Any:
        """Copy a batch into its shape's device buffers (untimed); returns the runner."""
        slot = self._slot(ids.shape)
        slot[0].update_inplace(np.ascontiguousarray(ids))
        slot[1].update_inplace(np.ascontiguousarray(mask))
        return slot

    def run(self, slot: Any) -> None:
        self.session.run_with_iobinding(slot[3], slot[4])

    def probs(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        slot = self.load(ids, mask)
        self.run(slot)
        return np.asarray(slot[2].numpy(), dtype=np.float32)


class RuntimePath:
    """The runtime's own path: :class:`prm_plugins.runtime.iobinding.BoundRunner`, host arrays
    in and out, device buffers per shape, CUDA graphs (when ONNX Runtime allows them) for shapes
    up to ``CUDA_GRAPH_MAX_TOKENS``."""

    def __init__(self, path: Path, *, cuda: bool) -> None:
        import onnxruntime as ort

        from prm_plugins.runtime.iobinding import BoundRunner, cuda_graph_session

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 2 if cuda else 3
        session = cuda_graph_session(str(path), opts) if cuda else None
        self.cuda_graph = session is not None
        if session is None:
            providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda
                         else ["CPUExecutionProvider"])
            session = ort.InferenceSession(str(path), opts, providers=providers)
        self.provider = session.get_providers()[0]
        self.runner = BoundRunner(session, device="cuda" if cuda else "cpu",
                                  cuda_graph=self.cuda_graph)

    def load(self, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ids, mask

    def run(self, slot: tuple[np.ndarray, np.ndarray]) -> None:
        self.runner.run(*slot, keep=True)

    def probs(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.runner.run(ids, mask, keep=True)


def count_memcpy(optimized: Path) -> dict[str, int]:
    import onnx

    proto = onnx.load(str(optimized), load_external_data=False)
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type.startswith("Memcpy"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def parity(ref: Callable[[np.ndarray, np.ndarray], np.ndarray],
           got: Callable[[np.ndarray, np.ndarray], np.ndarray],
           ids: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """max / mean |Δp| at valid positions, right- and left-padded, vs the reference path."""
    out: dict[str, float] = {}
    want = ref(ids, mask)
    valid = mask.astype(bool)
    for side, (i, m) in {"right": (ids, mask), "left": to_left_padding(ids, mask)}.items():
        have = got(i, m)
        if side == "left":
            have = np.stack([np.concatenate([have[r][m[r].astype(bool)],
                                             np.zeros(int((~m[r].astype(bool)).sum()))])
                             for r in range(len(m))])
        d = np.abs(have[valid].astype(np.float64) - want[valid].astype(np.float64))
        d = np.where(np.isfinite(d), d, np.inf)
        out[f"{side}_max_abs_diff"] = float(d.max())
        out[f"{side}_mean_abs_diff"] = float(d.mean())
    return out


# -- one model ----------------------------------------------------------------------------
def bench_model(name: str, args: argparse.Namespace, cuda: bool, peak: float,
                work: Path) -> dict[str, Any]:
    import torch

    from prm_plugins.onnx_export.export import export_torch_graph
    from prm_plugins.runtime.buckets import (
        plan_bucketed_batches,
        resolve_length_buckets,
        row_bucket,
    )

    dtype = torch.float32 if args.smoke else torch.float16
    device = "cuda" if cuda else "cpu"
    model = build_model(name, dtype, device)
    vocab = MODELS[name]["vocab_size"]
    params = non_embedding_params(model)
    shapes = args.shapes or (SMOKE_SHAPES if args.smoke else SHAPES)
    max_len = 128 if args.smoke else 2048
    rng = np.random.default_rng(0)
    batches = {s: [make_batch(s, vocab, rng, max_len=max_len if s.startswith("bo") else 0)
                   for _ in range(args.rotate)] for s in shapes}
    for s in shapes:  # the best-of-n mix keeps one length set, with rotating tokens
        if s.startswith("bo"):
            first = batches[s][0]
            batches[s] = [(rng.integers(3, vocab, size=first[0].shape, dtype=np.int64),
                           first[1]) for _ in range(args.rotate)]
    parity_batch = make_batch("bo4", vocab, np.random.default_rng(1), max_len=min(max_len, 512))
    result: dict[str, Any] = {"model": name, "config": MODELS[name],
                              "non_embedding_params": params,
                              "dtype": "fp32" if args.smoke else "fp16", "paths": {},
                              "exports": {}}
    clock = Clock(cuda)

    # exports (on the device the model lives on; the dynamo exporter traces on the host)
    sample = make_batch("2x16", vocab, np.random.default_rng(2), max_len=0)
    sample_t = tuple(torch.from_numpy(a).to(device) for a in sample)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weight_bytes > 1.8 * 2**30  # protobuf's 2 GB limit: weights beside the graph
    graphs: dict[str, Path] = {}
    for mode in ("plain", "fused"):
        if not ({f"ort_{mode}", f"ort_{mode}_cudagraph"} & set(args.paths)):
            continue
        path = work / name / mode / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            fusion = export_torch_graph(model, sample_t, path, optimize=mode,
                                        max_length=max(max_len, 512), external=external,
                                        what=name)
        except Exception as exc:  # noqa: BLE001 - recorded, the other paths still run
            logger.error("export %s %s failed: %s", name, mode, exc)
            result["exports"][mode] = {"error": f"{type(exc).__name__}: {str(exc)[:600]}"}
            continue
        graphs[mode] = path
        info = {"seconds": round(time.perf_counter() - t0, 1),
                "bytes": sum(p.stat().st_size for p in path.parent.iterdir())}
        if fusion.get("mode") == "fused":
            info.update(fused_ops=fusion["fused_ops"], fusions=fusion["fusions"],
                        nodes_before=fusion["nodes_before"], nodes_after=fusion["nodes_after"])
        result["exports"][mode] = info
        logger.info("%s %s export: %s", name, mode, info)

    ref_path = TorchPath(model, device, compiled=False)
    for path_name in args.paths:
        logger.info("%s: %s", name, path_name)
        entry: dict[str, Any] = {"shapes": {}}
        result["paths"][path_name] = entry
        try:
            if path_name == "prm_runtime":
                if "fused" not in graphs:
                    entry["skipped"] = "the fused export failed"
                    continue
                runner = RuntimePath(graphs["fused"], cuda=cuda)
                entry.update(provider=runner.provider, cuda_graphs=runner.cuda_graph)
                entry["parity_vs_eager"] = parity(ref_path.probs, runner.probs, *parity_batch)
            elif path_name.startswith("ort_"):
                mode = "fused" if "fused" in path_name else "plain"
                graph_on = path_name.endswith("cudagraph")
                if graph_on and not cuda:  # smoke: the bucketed batches, without graphs
                    entry["note"] = "no CUDA device: bucketed batches run without CUDA graphs"
                    graph_on = False
                if mode not in graphs:
                    entry["skipped"] = f"the {mode} export failed"
                    continue
                optimized = (work / name / "optimized" / "model.onnx"
                             if path_name == "ort_fused" and cuda else None)
                if optimized is not None:
                    optimized.parent.mkdir(parents=True, exist_ok=True)
                runner: Any = OrtPath(graphs[mode], cuda=cuda, cuda_graph=graph_on,
                                      optimized_copy=optimized)
                entry["provider"] = runner.provider
                if optimized is not None and optimized.is_file():
                    entry["memcpy_nodes"] = count_memcpy(optimized)
                entry["parity_vs_eager"] = parity(ref_path.probs, runner.probs, *parity_batch)
            else:
                runner = (ref_path if path_name == "torch_eager"
                          else TorchPath(model, device, compiled=True,
                                         static=args.compile_static))
                if path_name == "torch_compile":
                    entry["parity_vs_eager"] = parity(ref_path.probs, runner.probs,
                                                      *parity_batch)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            for shape in shapes:
                entry["shapes"][shape] = bench_shape(
                    runner, batches[shape], clock, args, cuda,
                    buckets=(resolve_length_buckets("auto", max_len)
                             if path_name in ("ort_fused_cudagraph", "prm_runtime")
                             and shape.startswith("bo") else None),
                    plan=plan_bucketed_batches, row_bucket=row_bucket)
                sh = entry["shapes"][shape]
                sh["floor_ms"] = 2 * params * sh["tokens"] / (peak * 1e12) * 1000
                logger.info("  %s %s: %.2f ms", path_name, shape, sh["median_ms"])
            if cuda and path_name.startswith("torch"):
                entry["torch_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        except Exception as exc:  # noqa: BLE001 - recorded, the other paths still run
            logger.error("%s %s failed: %s", name, path_name, exc)
            entry["error"] = f"{type(exc).__name__}: {str(exc)[:600]}"
            entry["traceback"] = traceback.format_exc()[-2000:]
        finally:
            runner = None
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
    del model, ref_path
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def bench_shape(runner: Any, batches: list[tuple[np.ndarray, np.ndarray]], clock: Clock,
                args: argparse.Namespace, cuda: bool, *, buckets: tuple[int, ...] | None,
                plan: Any, row_bucket: Any) -> dict[str, Any]:
    """Warm up, then time ``args.repeats`` runs on rotating batches."""
    if buckets is not None:  # the runtime's way: bucketed batches, rows padded to 2^k
        batches = [piece for ids, mask in batches
                   for piece in bucket_pieces(ids, mask, buckets, plan, row_bucket)]
        per_call = len(batches) // args.rotate
    else:
        per_call = 1
    tokens = int(sum(b[0].size for b in batches[:per_call]))
    valid = int(sum(int(b[1].sum()) for b in batches[:per_call]))
    is_ort = hasattr(runner, "load")
    prepared = None if is_ort else runner.prepare(batches)

    def call(k: int) -> Callable[[], Any]:
        group = range(k * per_call, (k + 1) * per_call)
        if is_ort:
            slots = [runner.load(*batches[j]) for j in group]  # untimed host -> device copy
            return lambda: [runner.run(s) for s in slots]
        items = [prepared[j] for j in group]
        return lambda: [runner.run(p) for p in items]

    for k in range(args.warmup):
        fn = call(k % args.rotate)
        fn()
    clock.sync()
    mem_warm = device_memory_mb(cuda)
    ms = []
    for k in range(args.repeats):
        fn = call(k % args.rotate)
        ms.append(clock.time(fn))
    mem_end = device_memory_mb(cuda)
    out = summarize(ms)
    out.update(tokens=tokens, valid_tokens=valid, batches_per_call=per_call,
               shapes=sorted({list(b[0].shape).__repr__() for b in batches[:per_call]}),
               device_mem_after_warmup_mb=mem_warm, device_mem_after_timing_mb=mem_end)
    if mem_warm is not None and mem_end is not None:
        out["device_mem_growth_mb"] = mem_end - mem_warm
    return out


def bucket_pieces(ids: np.ndarray, mask: np.ndarray, buckets: tuple[int, ...], plan: Any,
                  row_bucket: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split one right-padded batch as :class:`OnnxPRM` with ``cuda_graph=True`` does."""
    lengths = [int(m.sum()) for m in mask]
    pieces = []
    for batch in plan(lengths, buckets, token_budget=8192, max_batch_size=64):
        rows = row_bucket(len(batch.indices), max(1, min(64, 8192 // batch.length)))
        pi = np.zeros((rows, batch.length), dtype=np.int64)
        pm = np.zeros((rows, batch.length), dtype=np.int64)
        for r, i in enumerate(batch.indices):
            pi[r, :lengths[i]] = ids[i, :lengths[i]]
            pm[r, :lengths[i]] = 1
        pieces.append((pi, pm))
    return pieces


# -- report -------------------------------------------------------------------------------
def targets(model: dict[str, Any]) -> dict[str, Any]:
    """Issue 7's targets on one model's figures."""
    paths = model["paths"]

    def med(path: str, shape: str) -> float | None:
        sh = paths.get(path, {}).get("shapes", {}).get(shape)
        return None if sh is None else sh["median_ms"]

    out: dict[str, Any] = {}
    for shape in TARGET_SHAPES:
        eager, comp = med("torch_eager", shape), med("torch_compile", shape)
        ort_best = min((v for p in ("ort_fused", "ort_fused_cudagraph")
                        if (v := med(p, shape)) is not None), default=None)
        if ort_best is None:
            continue
        floor = paths["ort_fused"]["shapes"].get(shape, {}).get("floor_ms") \
            if "ort_fused" in paths else None
        out[shape] = {
            "ort_best_ms": ort_best,
            "speedup_vs_eager": None if eager is None else eager / ort_best,
            "speedup_vs_compile": None if comp is None else comp / ort_best,
            "x_floor": None if not floor else ort_best / floor,
            "met_2x_eager": None if eager is None else eager / ort_best >= 2.0,
            "met_1.3x_compile": None if comp is None else comp / ort_best >= 1.3,
            "met_1.5x_floor": None if not floor else ort_best / floor <= 1.5,
        }
    best_1 = min((v for p in ("ort_fused", "ort_fused_cudagraph")
                  if (v := med(p, "1x512")) is not None), default=None)
    if best_1 is not None:
        out["1x512"] = {"ort_best_ms": best_1, "met_under_3ms": best_1 < 3.0}
    return out


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "onnxruntime-gpu", "onnxruntime", "transformers", "onnx",
                 "onnxscript", "prm-plugins"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    import onnxruntime
    import torch

    out["onnxruntime (imported)"] = onnxruntime.__version__
    out["torch (imported)"] = torch.__version__
    out["cuda (torch)"] = str(torch.version.cuda)
    return out


def device_name(cuda: bool) -> str:
    if cuda:
        import torch

        props = torch.cuda.get_device_properties(0)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"CPU ({platform.processor()})"


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [f"# GPU scoring speed{' (SMOKE: tiny model, CPU, fp32)' if meta['smoke'] else ''}",
             "", "Paths: " + "; ".join(f"`{k}` {v}" for k, v in PATH_NOTES.items()) + ".",
             "", f"Device: {meta['device']}; {meta['dtype']}; median of {meta['repeats']} after "
             f"{meta['warmup']} warm-up runs, {meta['rotate']} rotating inputs; "
             f"matmul peak {meta['matmul_peak_tflops']:.3g} TFLOP/s (measured, "
             f"{meta['matmul_n']}^3). Floor = 2 x non-embedding params x padded tokens / peak.",
             ""]
    for model in report["models"]:
        paths = [p for p in PATHS if p in model["paths"]]
        shapes = list(dict.fromkeys(s for e in model["paths"].values()
                                    for s in e.get("shapes", {})))
        lines += [f"## {model['model']} ({model['non_embedding_params'] / 1e6:.3g} M "
                  "non-embedding parameters)", "",
                  "| shape | " + " | ".join(paths) + " | floor |",
                  "|---|" + "---:|" * (len(paths) + 1)]
        for shape in shapes:
            row = [shape]
            floor = None
            for p in paths:
                sh = model["paths"][p].get("shapes", {}).get(shape)
                row.append("-" if sh is None else f"{sh['median_ms']:.2f} ms")
                floor = floor or (sh or {}).get("floor_ms")
            row.append("-" if floor is None else f"{floor:.2f} ms")
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "| path | provider | parity vs eager (max abs, right / left) | "
                  "memory | notes |", "|---|---|---|---|---|"]
        for p in paths:
            e = model["paths"][p]
            par = e.get("parity_vs_eager")
            par_s = "-" if not par else (f"{par['right_max_abs_diff']:.2e} / "
                                         f"{par['left_max_abs_diff']:.2e}")
            mem = e.get("torch_peak_allocated_mb")
            growth = [sh.get("device_mem_growth_mb") for sh in e.get("shapes", {}).values()]
            growth = [g for g in growth if g is not None]
            where = "process RSS" if meta["smoke"] else "device memory"
            mem_s = "; ".join(x for x in (
                f"torch peak {mem:.0f} MiB" if mem else "",
                f"{where} growth after warm-up, max over shapes {max(growth):.0f} MiB"
                if growth else "") if x)
            notes = e.get("skipped") or e.get("note") or e.get("error", "")[:120]
            if "memcpy_nodes" in e:
                notes = f"Memcpy nodes in optimised graph: {e['memcpy_nodes'] or 0} " + notes
            lines.append(f"| {p} | {e.get('provider', '-')} | {par_s} | {mem_s or '-'} | "
                         f"{notes} |")
        ex = model.get("exports", {})
        if "fused" in ex and "fused_ops" in ex["fused"]:
            lines += ["", f"Fused graph: {ex['fused']['fused_ops']} (rules fired: "
                      f"{ {k: v for k, v in ex['fused']['fusions'].items() if v} }), "
                      f"{ex['fused']['nodes_before']} -> {ex['fused']['nodes_after']} nodes."]
        if model.get("targets"):
            lines += ["", "Targets (issue 7): " + "; ".join(
                f"{s}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) and not
                                     isinstance(v, bool) else f"{k} {v}"
                                     for k, v in t.items())
                for s, t in model["targets"].items())]
        lines.append("")
    lines += [f"- versions: {meta['versions']}", f"- command: `{meta['command']}`",
              f"- date: {meta['date']}", f"- wall time: {meta['wall_s']:.0f} s", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny model, short shapes, fp32, CPU provider (checks the script)")
    parser.add_argument("--models", nargs="+", choices=[m for m in MODELS if m != "smoke"],
                        default=["qwen2-0.5b", "qwen2-1.5b"])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=PATHS)
    parser.add_argument("--shapes", nargs="+", help=f"default {SHAPES} (smoke {SMOKE_SHAPES})")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 50; "
                        "smoke 5)")
    parser.add_argument("--warmup", type=int, default=None, help="default 10 (smoke 2)")
    parser.add_argument("--rotate", type=int, default=4, help="distinct inputs per shape")
    parser.add_argument("--compile-static", action="store_true",
                        help="torch.compile(dynamic=False) once per shape (slower to run: one "
                        "compile per shape) instead of one torch.compile whose shapes turn "
                        "dynamic after the first recompile")
    parser.add_argument("--work-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "prm_gpu_scoring",
                        help="where the exported graphs go (kept: a rerun exports again)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results .md (default benchmarks/results/gpu_scoring[_smoke].md)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "torch._dynamo", "torch._inductor"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _ensure_importable()
    args.repeats = args.repeats or (5 if args.smoke else 50)
    args.warmup = args.warmup or (2 if args.smoke else 10)
    started = time.perf_counter()

    import torch  # before onnxruntime: its CUDA libraries serve onnxruntime-gpu

    cuda = torch.cuda.is_available() and not args.smoke
    import onnxruntime as ort

    if cuda and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    if not args.smoke and not cuda:
        raise SystemExit("no CUDA device: run with --smoke on CPU, or on a GPU machine")
    if cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit(f"onnxruntime offers {ort.get_available_providers()}, no CUDA "
                         "provider: install onnxruntime-gpu (CUDA 13 build)")
    dtype = torch.float32 if args.smoke else torch.float16
    matmul_n = 512 if args.smoke else 8192
    peak = matmul_peak_tflops(cuda, dtype, matmul_n)
    logger.info("matmul peak %.1f TFLOP/s", peak)
    models = ["smoke"] if args.smoke else args.models
    report: dict[str, Any] = {"meta": {
        "smoke": args.smoke, "device": device_name(cuda), "dtype": "fp32" if args.smoke else
        "fp16", "repeats": args.repeats, "warmup": args.warmup, "rotate": args.rotate,
        "matmul_peak_tflops": peak, "matmul_n": matmul_n, "versions": versions(),
        "compile_static": args.compile_static,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }, "models": []}
    out = args.out or RESULTS / ("gpu_scoring_smoke.md" if args.smoke else "gpu_scoring.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in models:
        result = bench_model(name, args, cuda, peak, args.work_dir)
        result["targets"] = targets(result)
        report["models"].append(result)
        report["meta"]["wall_s"] = time.perf_counter() - started
        # written after every model: a run cut short still leaves what it measured
        text = markdown(report)
        out.write_text(text, encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n",
                                            encoding="utf-8")
    sys.stdout.write(text + "\n")
    failed = [(m["model"], p) for m in report["models"] for p, e in m["paths"].items()
              if "error" in e]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
