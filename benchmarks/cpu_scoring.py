"""CPU scoring throughput of the default PRM: ONNX Runtime fp32 vs int8 vs PyTorch, chains/s.

Issue 7, item 4. The default PRM as shipped (``prm_plugins/models/default``, a 3-layer
MiniLM-sized BERT token classifier, int8) is compared with exports of its own checkpoint
(``runs/default_L3``) made here with ``prm export``: fp32, and dynamic int8
(``--quantize int8 --quantize-embeddings``), and with that checkpoint run by PyTorch (the same
torch wrapper the exporter checks parity against). Every path does the
same work per call: render and tokenise the chains with the model's format, pad them into
one batch, run the model, read the step probabilities (checks and calibration off, so only
the model differs). Batches of ``--chains`` real GSM8K-test reference chains (first
``--steps`` steps), rotated; warm-up, then the median of ``--repeats`` calls on
``--threads`` threads (ONNX Runtime intra-op threads; ``torch.set_num_threads``).

Writes ``benchmarks/results/cpu_scoring.md`` and ``.json`` with the machine, load average,
versions and command::

    .venv/bin/python benchmarks/cpu_scoring.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from prm_plugins.runtime import OnnxPRM, default_model_dir
from prm_plugins.runtime.batching import pad_batch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "gsm8k_test_stepwise_seed1.jsonl"
CHECKPOINT = ROOT / "runs" / "default_L3"


def load_chains(path: Path, n_steps: int) -> list[tuple[str, list[str]]]:
    chains = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row.get("perturbation") is None and len(row["completions"]) >= n_steps:
                chains.append((row["prompt"], row["completions"][:n_steps]))
    if not chains:
        raise SystemExit(f"no reference chain with {n_steps}+ steps in {path}")
    return chains


def export_once(checkpoint: Path, out: Path, **fields: Any) -> Path:
    """``prm export CHECKPOINT OUT`` (the checkpoint's own format) with ``fields``, once."""
    if (out / "prm.json").is_file():
        return out
    from prm_plugins.onnx_export.export import ExportConfig, export_prm

    return export_prm(ExportConfig(str(checkpoint), str(out), **fields))


def time_interleaved(fns: dict[str, Any], batches: list[Any], *, warmup: int,
                     repeats: int) -> dict[str, list[float]]:
    """ms per call of each function, the functions taking turns on the same batch.

    On a shared CPU the load changes from second to second; interleaving gives every path
    the same conditions, so their ratio holds even when the absolute figures do not.
    """
    ms: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(warmup + repeats):
        items = batches[i % len(batches)]
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            fns[name](items)
            if i >= warmup:
                ms[name].append(1000 * (time.perf_counter() - t0))
    return ms


def summary(ms: list[float], chains: int) -> dict[str, float]:
    med = statistics.median(ms)
    return {"median_ms": med, "p90_ms": float(np.percentile(ms, 90)), "min_ms": min(ms),
            "chains_per_s": chains / (med / 1000), "chains_per_s_best": chains / (min(ms) / 1000)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT,
                        help="torch checkpoint of the default PRM (prm train output)")
    parser.add_argument("--int8-model", type=Path, default=None,
                        help="int8 model directory (default: the shipped default PRM)")
    parser.add_argument("--fp32-model", type=Path, default=None,
                        help="fp32 model directory (default: exported from --checkpoint)")
    parser.add_argument("--chains", type=int, default=8, help="chains per call")
    parser.add_argument("--steps", type=int, default=6, help="steps per chain")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "cpu_scoring.md")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    chains = load_chains(args.data, args.steps)
    batches = [chains[i:i + args.chains]
               for i in range(0, len(chains) - args.chains + 1, args.chains)]
    int8_dir = args.int8_model or default_model_dir()
    tmp = Path(tempfile.gettempdir())
    fp32_dir = args.fp32_model or export_once(args.checkpoint, tmp / "prm_cpu_scoring_fp32")
    # dynamic int8 as `prm export --quantize int8 --quantize-embeddings` makes it (the
    # default PRM's recipe before int8-weights), beside whatever int8 the package ships
    dynamic_dir = export_once(args.checkpoint, tmp / "prm_cpu_scoring_int8_dynamic",
                              quantize="int8", quantize_embeddings=True)
    load_before = os.getloadavg()
    prms: dict[str, OnnxPRM] = {
        label: OnnxPRM(model_dir, device="cpu", intra_op_num_threads=args.threads, checks=(),
                       calibrate=False)
        for label, model_dir in (("ONNX Runtime int8 (shipped default)", int8_dir),
                                 ("ONNX Runtime int8 dynamic", dynamic_dir),
                                 ("ONNX Runtime fp32", fp32_dir))}

    from prm_plugins.onnx_export.wrappers import build_step_prob_model

    ref = prms["ONNX Runtime fp32"]
    model = build_step_prob_model(ref.manifest.format, args.checkpoint,
                                  ref.manifest.format_options, torch.float32)

    def torch_score(items: list[tuple[str, list[str]]]) -> list[list[float]]:
        rendered = [ref.format.render(q, s) for q, s in items]
        ids, mask = pad_batch([r.input_ids for r in rendered],
                              max(len(r) for r in rendered), ref._pad_id)
        with torch.inference_mode():
            probs = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        return [[float(probs[i, p]) for p in r.step_positions] for i, r in enumerate(rendered)]

    torch_label = f"PyTorch fp32 (eager, {torch.__version__})"
    fns = {**{label: prm.score_batch for label, prm in prms.items()}, torch_label: torch_score}
    timings = time_interleaved(fns, batches, warmup=args.warmup, repeats=args.repeats)
    results: list[dict[str, Any]] = [
        {"path": label, "model": str(prm.model_dir), "dtype": prm.manifest.dtype,
         "quantization": (prm.manifest.extra.get("quantization") or {}).get("method"),
         **summary(timings[label], args.chains)} for label, prm in prms.items()]
    results.append({"path": torch_label, "model": str(args.checkpoint), "dtype": "fp32",
                    **summary(timings[torch_label], args.chains)})
    # agreement of the three on one batch: what speed costs in probability
    sample = batches[0]
    want = torch_score(sample)
    for r, prm in zip(results, prms.values(), strict=False):
        got = [s.scores for s in prm.score_batch(sample)]
        r["max_abs_diff_vs_torch"] = max(abs(a - b) for x, y in zip(got, want, strict=True)
                                         for a, b in zip(x, y, strict=True))
    load_after = os.getloadavg()

    import onnxruntime

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    meta = {"command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
            "cpu": cpu, "cores": os.cpu_count(), "threads": args.threads,
            "load_average_before": load_before, "load_average_after": load_after,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "chains": args.chains, "steps": args.steps,
            "repeats": args.repeats, "warmup": args.warmup,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    lines = [
        "# CPU scoring throughput of the default PRM: ONNX Runtime fp32 vs int8 vs PyTorch",
        "",
        f"{args.chains} GSM8K-test chains x {args.steps} steps per call (real reference "
        f"solutions, rotated), {args.threads} threads; {args.warmup} warm-up calls, then "
        f"{args.repeats} timed, the paths taking turns on each batch. Each call "
        "renders, tokenises, pads one batch, runs the model "
        "and reads the step probabilities (checks and calibration off).",
        "",
        "| path | dtype | median / p90 / min ms per call | chains/s (median) | chains/s (best) "
        "| max abs diff vs torch |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        dtype = r["dtype"] + (f" ({r['quantization'].rsplit('.', 1)[-1]})"
                              if r.get("quantization") else "")
        lines.append(f"| {r['path']} | {dtype} | {r['median_ms']:.1f} / {r['p90_ms']:.1f} "
                     f"/ {r['min_ms']:.1f} | {r['chains_per_s']:.1f} | "
                     f"{r['chains_per_s_best']:.1f} | "
                     f"{r.get('max_abs_diff_vs_torch', 0.0):.3g} |")
    lines += [
        "",
        f"- models: shipped int8 `{int8_dir}`; int8 dynamic `{dynamic_dir}` and fp32 "
        f"`{fp32_dir}`, both exported here from `{args.checkpoint}` (`prm export`, the "
        "checkpoint's own format; dynamic int8 with `--quantize int8 --quantize-embeddings`); "
        f"torch: `{args.checkpoint}` through the exporter's torch wrapper",
        f"- machine: {cpu}, {os.cpu_count()} cores; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f} (shared CPU: above ~1 other work competed; the best "
        "column is the closest to an idle machine)",
        f"- onnxruntime {meta['onnxruntime']}, torch {meta['torch']}, Python {meta['python']}, "
        f"{meta['date']}",
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
