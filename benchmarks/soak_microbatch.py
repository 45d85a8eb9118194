"""Soak: many async clients score GSM8K chains through one MicroBatcher for N minutes.

Each of ``--clients`` tasks loops: pick a real GSM8K-test chain (reference or perturbed,
from ``data/gsm8k_test_stepwise_seed1.jsonl``), ``await batcher.score(...)``, check the
answer against the score computed for that chain up front (any mismatch is counted as lost),
repeat. Every ``--sample-seconds`` the script records requests answered, throughput, batches,
mean batch size and the process RSS (``/proc/self/statm``); at the end it checks the thread
count is back to where it started. Results: ``benchmarks/results/soak_microbatch.md``/.json::

    python benchmarks/soak_microbatch.py --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

from prm_plugins.microbatch import MicroBatcher
from prm_plugins.runtime import default_model_dir, load_prm

ROOT = Path(__file__).resolve().parents[1]



def _dynamic_int8(prm: Any) -> bool:
    """True for a dynamic-int8 graph, whose scores depend slightly on batch company."""
    quant = prm.manifest.extra.get("quantization") or {}
    return str(quant.get("method", "")).endswith("quantize_dynamic")

def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _chains(path: Path, n: int) -> list[tuple[str, list[str]]]:
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            out.append((row["prompt"], row["completions"]))
            if len(out) >= n:
                break
    return out


async def _soak(args: argparse.Namespace) -> dict[str, Any]:
    prm = load_prm(args.model, device="cpu")
    chains = _chains(args.data, args.chains)
    expected = [s.scores for s in prm.score_batch(chains)]
    threads_before = threading.active_count()
    answered = lost = 0
    max_diff = 0.0
    # Dynamic int8 quantises activations with per-batch scales, so a chain's scores move a
    # little with the company it is batched with; other graphs (fp32, fp16, the weight-only
    # int8 default) must match to 1e-5.
    tol = args.tolerance if args.tolerance is not None else (
        0.05 if _dynamic_int8(prm) else 1e-5)
    samples: list[dict[str, Any]] = []
    stop_at = time.monotonic() + 60 * args.minutes
    async with MicroBatcher(prm, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms) as mb:
        async def client(seed: int) -> None:
            nonlocal answered, lost, max_diff
            rng = random.Random(seed)
            while time.monotonic() < stop_at:
                i = rng.randrange(len(chains))
                got = (await mb.score(*chains[i])).scores
                if len(got) != len(expected[i]):
                    lost += 1
                else:
                    diff = max(abs(a - b) for a, b in zip(got, expected[i], strict=True))
                    max_diff = max(max_diff, diff)
                    lost += diff > tol
                answered += 1

        async def sampler() -> None:
            t0 = last_t = time.monotonic()
            last_n = last_b = 0
            while time.monotonic() < stop_at:
                await asyncio.sleep(min(args.sample_seconds, max(stop_at - time.monotonic(), 0)))
                now = time.monotonic()
                batches = mb.stats.batches - last_b
                samples.append({
                    "t_s": round(now - t0, 1), "answered": answered,
                    "per_s": round((answered - last_n) / max(now - last_t, 1e-9), 1),
                    "batches": mb.stats.batches,
                    "mean_batch": round((answered - last_n) / batches, 1) if batches else None,
                    "rss_mib": round(_rss_mib(), 1), "threads": threading.active_count()})
                print(samples[-1], flush=True)
                last_t, last_n, last_b = now, answered, mb.stats.batches

        await asyncio.gather(sampler(), *(client(i) for i in range(args.clients)))
    return {"answered": answered, "lost": lost, "tolerance": tol, "max_abs_diff": max_diff,
            "dtype": prm.manifest.dtype, "batches": mb.stats.batches,
            "largest_batch": mb.stats.largest_batch, "failed": mb.stats.failed,
            "threads_before": threads_before, "threads_after": threading.active_count(),
            "samples": samples}


def main(argv: list[str] | None = None) -> int:
    """Run the soak; returns 0 when nothing was lost and no thread leaked, else 1."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=default_model_dir())
    p.add_argument("--data", type=Path, default=ROOT / "data" / "gsm8k_test_stepwise_seed1.jsonl")
    p.add_argument("--chains", type=int, default=500)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--sample-seconds", type=float, default=30.0)
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest |Δp| from the up-front score that counts as right (default: "
                        "0.05 for int8 graphs, whose scores depend on the batch, else 1e-5)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak_microbatch")
    args = p.parse_args(argv)
    if not args.data.is_file():
        print(f"{args.data} not found: make it with `prm label gsm8k --input "
              "../shared/data/gsm8k/test.jsonl --out data/gsm8k_test_stepwise_seed1.jsonl "
              "--seed 1`, or pass --data", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    r = asyncio.run(_soak(args))
    r["seconds"] = round(time.monotonic() - t0, 1)
    r["command"] = "python benchmarks/soak_microbatch.py " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    r["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_end": os.getloadavg()}
    r["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(r, indent=1) + "\n")
    rss = [s["rss_mib"] for s in r["samples"]]
    rate = [s["per_s"] for s in r["samples"]]
    md = [
        "# Soak: concurrent async scoring through MicroBatcher", "",
        f"Command: `{r['command'].strip()}`; {r['seconds']} s on {os.cpu_count()} CPUs "
        f"(load average at the end {', '.join(f'{x:.2f}' for x in r['machine']['load_avg_end'])}"
        f"); the default PRM; {args.clients} client tasks over {len(rss) and args.chains} "
        "real GSM8K-test chains.", "",
        f"- requests answered: **{r['answered']}**, wrong or lost: **{r['lost']}**, errors: "
        f"{r['failed']}; largest |Δp| from the score computed up front "
        f"{r['max_abs_diff']:.4f} (tolerance {r['tolerance']}; {r['dtype']} graph)",
        f"- batched calls: {r['batches']} (largest {r['largest_batch']}, mean "
        f"{r['answered'] / max(r['batches'], 1):.1f} chains per call)",
        f"- throughput per {args.sample_seconds:.0f} s window: min {min(rate, default=0):.1f}, "
        f"max {max(rate, default=0):.1f} chains/s",
        f"- RSS: first window {rss[0] if rss else '-'} MiB, last {rss[-1] if rss else '-'} MiB, "
        f"max {max(rss, default=0)} MiB",
        f"- threads: {r['threads_before']} before, {r['threads_after']} after closing", "",
        "| t (s) | answered | chains/s | mean batch | RSS MiB | threads |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {s['t_s']} | {s['answered']} | {s['per_s']} | {s['mean_batch']} | "
          f"{s['rss_mib']} | {s['threads']} |" for s in r["samples"]],
    ]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if r["lost"] == 0 and r["threads_after"] <= r["threads_before"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
