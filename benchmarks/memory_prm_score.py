"""Peak resident memory and throughput of ``prm score`` over a large generated JSONL file.

Generates ``--rows`` varied chains (questions of 8-60 words, 1-12 steps of 3-30 words with
written arithmetic; every chain fits the model's ``max_length``, so the lengths spread over
the whole range), then runs ``prm score MODEL --input F --output O --no-progress`` in a child
process ``--repeats`` times and reads the child's own peak RSS (``ru_maxrss`` from
``os.wait4``) and its wall time. A one-row run gives the resident size of a loaded model for
comparison.

``--variant`` runs the same file through a small in-process driver instead of the CLI, with
``OnnxPRM`` keyword arguments and a chunk size of your choosing, which is how the sources of
memory were told apart (see ``benchmarks/results/memory_prm_score.md``)::

    .venv/bin/python benchmarks/memory_prm_score.py --rows 4000
    .venv/bin/python benchmarks/memory_prm_score.py --rows 4000 \\
        --variant '{"chunk": 256, "prm": {"buckets": null}}' --variant '{"chunk": 64}'

Not a test and not run by CI: it takes minutes, and the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_WORDS = ("apples oranges pencils boxes marbles tickets cookies students buses pages hours "
          "dollars minutes bottles eggs books cars trees flowers coins shirts bags chairs "
          "friends tables cakes miles games songs weeks").split()
_NAMES = "Tom Ana Li Sam Maria Omar Jo Priya Ken Zoe".split()
_FILLER = ("so then after that each of the which means in total together remaining left more "
           "than half twice as many per day every altogether").split()

#: The in-process driver for ``--variant``: reads the JSONL in chunks, like ``prm score``.
_DRIVER = r"""
import json, sys
from prm_plugins.runtime import load_prm
spec = json.loads(sys.argv[1])
prm = load_prm(spec.get("model"), device="cpu", **spec.get("prm", {}))
chunk, n = [], 0
def flush(chunk):
    global n
    n += len(prm.score_batch(chunk))
with open(spec["input"], encoding="utf-8") as fh:
    for line in fh:
        row = json.loads(line)
        chunk.append((row["question"], row["steps"]))
        if len(chunk) >= spec.get("chunk", 256):
            flush(chunk); chunk = []
flush(chunk)
print(n)
"""


def _sentence(rng: random.Random, n_words: int, arithmetic: bool) -> str:
    words = [rng.choice(_NAMES), "has"]
    while len(words) < n_words:
        words.append(rng.choice(_FILLER if rng.random() < 0.4 else _WORDS))
        if rng.random() < 0.2:
            words.append(str(rng.randint(1, 999)))
    text = " ".join(words[:n_words])
    if arithmetic:
        a, b = rng.randint(1, 500), rng.randint(1, 500)
        op = rng.choice("+-*")
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        if rng.random() < 0.3:
            value += rng.choice((-1, 1, 10))  # some wrong arithmetic
        text += f", {a} {op} {b} = {value}"
    return text + "."


def generate(path: Path, rows: int, seed: int, model_dir: Path | None) -> dict[str, Any]:
    """Write ``rows`` varied chains that fit the model; return their token-length spread."""
    from prm_plugins.runtime import load_prm

    prm = load_prm(model_dir, device="cpu")
    rng = random.Random(seed)
    lengths: list[int] = []
    with path.open("w", encoding="utf-8") as fh:
        while len(lengths) < rows:
            question = _sentence(rng, rng.randint(8, 60), False)[:-1] + "?"
            steps = [_sentence(rng, rng.randint(3, 30), rng.random() < 0.7)
                     for _ in range(rng.randint(1, 12))]
            n = len(prm.format.render(question, steps))
            if n > prm.max_length:
                continue
            lengths.append(n)
            fh.write(json.dumps({"question": question, "steps": steps}) + "\n")
    lengths.sort()
    return {"rows": rows, "seed": seed, "tokens_min": lengths[0],
            "tokens_median": lengths[len(lengths) // 2], "tokens_max": lengths[-1],
            "distinct_lengths": len(set(lengths))}


def _prm_command(pythonpath: str | None = None) -> list[str]:
    exe = Path(sys.executable).parent / "prm"
    if exe.is_file() and not pythonpath:
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from prm_plugins.cli import main; "
            "sys.exit(main(sys.argv[1:]))"]


def measure(cmd: list[str], pythonpath: str | None = None) -> dict[str, float]:
    """Run ``cmd`` once: its peak RSS (MiB), wall time and CPU time (s), from the kernel."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    # cwd outside the checkout: the editable install maps prm_plugins.onnx_export only when
    # prm_plugins is not found first on sys.path[0].
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=tempfile.gettempdir(), env=env)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    rss_kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    return {"peak_rss_mib": rss_kib / 1024, "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime}


def run_case(name: str, cmd: list[str], rows: int, repeats: int,
             pythonpath: str | None = None) -> dict[str, Any]:
    """``repeats`` runs of ``cmd``: the largest peak RSS, the median wall and CPU times."""
    runs = [measure(cmd, pythonpath) for _ in range(repeats)]
    rss = max(r["peak_rss_mib"] for r in runs)
    wall = sorted(r["wall_s"] for r in runs)[len(runs) // 2]
    cpu = sorted(r["cpu_s"] for r in runs)[len(runs) // 2]
    result = {"case": name, "command": shlex.join(cmd), "pythonpath": pythonpath,
              "peak_rss_mib": round(rss, 1), "wall_s_median": round(wall, 2),
              "cpu_s_median": round(cpu, 2), "chains_per_s": round(rows / wall, 1),
              "chains_per_cpu_s": round(rows / cpu, 1), "runs": runs}
    print(f"{name:44s} peak RSS {rss:7.1f} MiB  wall {wall:7.2f} s ({rows / wall:6.1f} "
          f"chains/s)  CPU {cpu:7.2f} s ({rows / cpu:6.1f} chains/CPU-s)", flush=True)
    return result


def _max_diff(a: Path, b: Path) -> float:
    """Largest difference of any step score between two ``prm score`` outputs (same rows)."""
    worst = 0.0
    with a.open(encoding="utf-8") as fa, b.open(encoding="utf-8") as fb:
        for la, lb in zip(fa, fb, strict=True):
            ra, rb = json.loads(la), json.loads(lb)
            if "step_scores" in ra or "step_scores" in rb:
                worst = max([worst, *(abs(x - y) for x, y in zip(
                    ra["step_scores"], rb["step_scores"], strict=True))])
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model directory (default PRM)")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per case (the figures file keeps every run)")
    parser.add_argument("--variant", action="append", default=[],
                        help='JSON {"chunk": N, "prm": {OnnxPRM kwargs}}: in-process driver')
    parser.add_argument("--no-cli", action="store_true", help="only the --variant cases")
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="also run every case with DIR first on PYTHONPATH (a copy of an "
                        "older prm_plugins to compare against), alternating with this one")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "chains.jsonl"
        spread = generate(data, args.rows, args.seed, args.model)
        one = Path(tmp) / "one.jsonl"
        one.write_text(data.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
        print(f"generated {spread}", flush=True)
        model = [str(args.model)] if args.model else []
        results = []
        sides = [(None, "")] + ([(args.baseline, "baseline: ")] if args.baseline else [])
        for repeat in range(args.repeats):
            for pythonpath, tag in sides if repeat % 2 == 0 else sides[::-1]:
                if not args.no_cli:
                    if repeat == 0:
                        results.append(run_case(f"{tag}prm score (1 row: loaded model)", [
                            *_prm_command(pythonpath), "score", *model, "--input", str(one),
                            "--output", str(Path(tmp) / "one.out.jsonl"), "--no-progress"], 1,
                            1, pythonpath))
                    results.append(run_case(f"{tag}prm score ({args.rows} rows)", [
                        *_prm_command(pythonpath), "score", *model, "--input", str(data),
                        "--output", str(Path(tmp) / f"out{tag[:1]}.jsonl"), "--no-progress"],
                        args.rows, 1, pythonpath))
                for variant in args.variant:
                    spec = {"chunk": 256, **json.loads(variant), "input": str(data),
                            "model": str(args.model) if args.model else None}
                    results.append(run_case(f"{tag}driver {variant}", [
                        sys.executable, "-c", _DRIVER, json.dumps(spec)], args.rows, 1,
                        pythonpath))
        if args.baseline and not args.no_cli:
            results.append({"case": "max |score difference| baseline vs this",
                            "max_abs_diff": _max_diff(Path(tmp) / "out.jsonl",
                                                      Path(tmp) / "outb.jsonl")})
            print(f"max |score difference|, baseline vs this: {results[-1]['max_abs_diff']}")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version()},
            "data": spread, "results": results}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
