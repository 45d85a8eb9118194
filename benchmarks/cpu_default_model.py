"""CPU latency of the default PRM: 8 GSM8K chains of 6 steps, scored with ONNX Runtime.

The target (issue "A default PRM that works out of the box"): one ``score_batch`` call on
8 chains x 6 steps in under 50 ms on 2 cores. Chains are real GSM8K-test solutions (the first
6 steps of the reference chains in ``data/gsm8k_test_stepwise_seed1.jsonl`` that have 6 or
more), rotated so no two consecutive calls see the same batch. Timed: the whole
``score_batch`` call (rendering + tokenising + ONNX Runtime), and the graph alone
(``run_graph`` on the padded batch). Warm-up first, then the median and p90 of ``--repeats``.

Writes ``benchmarks/results/cpu_default_model.md`` (and ``.json``) with the machine, the load
average before and after (the CPU here is shared: a busy machine inflates the figures), the
versions and the command. Compare model directories with ``--model DIR`` (repeatable)::

    .venv/bin/python benchmarks/cpu_default_model.py
    .venv/bin/python benchmarks/cpu_default_model.py --model runs/export_L3_fp32 --model ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from prm_plugins.runtime import default_model_dir, load_prm
from prm_plugins.runtime.batching import pad_batch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "gsm8k_test_stepwise_seed1.jsonl"


def _chains(path: Path, n_steps: int) -> list[tuple[str, list[str]]]:
    chains = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row.get("perturbation") is None and len(row["completions"]) >= n_steps:
                chains.append((row["prompt"], row["completions"][:n_steps]))
    if not chains:
        raise SystemExit(f"no reference chain with {n_steps}+ steps in {path}")
    return chains


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench(model_dir: Path, chains: list[tuple[str, list[str]]], *, batch: int, repeats: int,
          threads: int, warmup: int) -> dict[str, Any]:
    """Time ``score_batch`` and the bare graph on rotating batches of ``batch`` chains."""
    prm = load_prm(model_dir, device="cpu", intra_op_num_threads=threads)
    batches = [chains[i:i + batch] for i in range(0, len(chains) - batch + 1, batch)]
    tokens = []
    call_ms, graph_ms = [], []
    for i in range(warmup + repeats):
        items = batches[i % len(batches)]
        t0 = time.perf_counter()
        prm.score_batch(items)
        t1 = time.perf_counter()
        rendered = [prm.format.render(q, s).input_ids for q, s in items]
        length = max(map(len, rendered))
        ids, mask = pad_batch(rendered, length, prm._pad_id)
        t2 = time.perf_counter()
        prm.run_graph(ids, mask)
        t3 = time.perf_counter()
        if i >= warmup:
            call_ms.append(1000 * (t1 - t0))
            graph_ms.append(1000 * (t3 - t2))
            tokens.append(length)
    size = sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file())
    onnx_size = (model_dir / prm.manifest.model_file).stat().st_size
    return {
        "model": str(model_dir), "dtype": prm.manifest.dtype,
        "layers": prm.manifest.source.get("num_hidden_layers")
        or prm.manifest.source.get("config", {}).get("num_hidden_layers"),
        "onnx_mb": onnx_size / 1e6, "dir_mb": size / 1e6,
        "batch": batch, "padded_tokens_median": statistics.median(tokens),
        "score_batch_ms": {"median": statistics.median(call_ms), "p90": _pct(call_ms, 90),
                           "min": min(call_ms)},
        "graph_ms": {"median": statistics.median(graph_ms), "p90": _pct(graph_ms, 90),
                     "min": min(graph_ms)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", type=Path,
                        help="model directory (repeatable; default: the shipped default PRM)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--chains", type=int, default=8, help="chains per call")
    parser.add_argument("--steps", type=int, default=6, help="steps per chain")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--target-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "cpu_default_model.md")
    args = parser.parse_args(argv)

    models = args.model or [default_model_dir()]
    chains = _chains(args.data, args.steps)
    load_before = os.getloadavg()
    results = [bench(m, chains, batch=args.chains, repeats=args.repeats, threads=args.threads,
                     warmup=args.warmup) for m in models]
    load_after = os.getloadavg()
    import onnxruntime

    meta = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "cpu": _cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
        "load_average_before": load_before, "load_average_after": load_after,
        "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
        "chains": args.chains, "steps": args.steps, "repeats": args.repeats,
        "data": str(args.data.relative_to(ROOT) if args.data.is_relative_to(ROOT) else args.data),
        "target_ms": args.target_ms,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    lines = [
        "# CPU latency of the default PRM",
        "",
        f"{args.chains} GSM8K-test chains x {args.steps} steps per call (real reference "
        f"solutions, rotated), ONNX Runtime CPU provider, {args.threads} intra-op threads; "
        f"{args.warmup} warm-up calls, then {args.repeats} timed. `score_batch` = the whole call "
        "(render, tokenise, run); `graph` = `run_graph` on the padded batch alone. "
        f"Target: {args.target_ms:.0f} ms per call.",
        "",
        "| model | dtype | ONNX MB | padded tokens | score_batch median / p90 / min ms "
        "| graph median / p90 / min ms | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        sb, g = r["score_batch_ms"], r["graph_ms"]
        ok = "met" if sb["median"] < args.target_ms else "missed"
        model = Path(r["model"])
        shown = model.relative_to(ROOT) if model.is_relative_to(ROOT) else model
        lines.append(
            f"| `{shown}` "
            f"| {r['dtype']} | {r['onnx_mb']:.1f} | {r['padded_tokens_median']:.0f} "
            f"| {sb['median']:.1f} / {sb['p90']:.1f} / {sb['min']:.1f} "
            f"| {g['median']:.1f} / {g['p90']:.1f} / {g['min']:.1f} | {ok} |")
    lines += [
        "",
        f"- machine: {meta['cpu']}, {meta['cores']} cores; load average before "
        f"{load_before[0]:.2f}, after {load_after[0]:.2f} (the CPU is shared with other work: "
        "a load above ~1 means other processes competed for the cores while this ran, and "
        "the min column is the closest to an idle machine)",
        f"- onnxruntime {meta['onnxruntime']}, Python {meta['python']}, {meta['date']}",
        f"- command: `{meta['command']}`",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    args.out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
