"""Reliability report: hostile inputs, faults and load against the shipped default PRM.

Every case is run for real, and its outcome is counted as one of:

* **scored**: exactly one finite score in [0, 1] per step given;
* **refused**: a ``PRMError`` (``InvalidInputError``, ``ChainTooLongError``,
  ``ModelIntegrityError``...) whose message names the problem;
* **defect**: anything else (a crash with a foreign exception, a wrong number of scores, a
  hang, a valid item lost). The script exits 1 when there is any defect.

Sections:

1. Hostile inputs to ``score`` / ``score_batch``: step tags and special tokens inside steps,
   empty steps, 10,000 steps (strict and windowed), a 1 MB step, odd and invalid Unicode,
   wrong types, and a seeded fuzz of random chains drawn from a hostile alphabet.
2. Hostile input files through ``prm score --input``: broken JSON, invalid UTF-8 and
   wrong-typed lines mixed with good ones; every good line must come out scored.
3. Faults: generators that fail transiently, fail for good or hang (best-of-N with retries
   and timeouts); a CUDA session that fails to start; damaged model directories.
4. Load: 1,000 concurrent requests (5% invalid) through :class:`MicroBatcher`; each valid
   answer is compared with direct scoring, threads are counted before and after.
5. Round two (``reliability_round_two.py``): outputs that are their own input, interrupted
   runs, hostile lines and steps, strategies over hostile candidates and lying scorers, a
   micro-batcher over broken scorers, graphs and manifests that lie.

Writes ``benchmarks/results/reliability.md`` and ``.json``::

    python benchmarks/reliability_report.py            # about 2-4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import platform
import random
import shlex
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime as ort
from reliability_round_two import round_two  # sibling script (benchmarks/ is on sys.path)

from prm_plugins import __version__, load_prm
from prm_plugins.errors import PRMError
from prm_plugins.microbatch import MicroBatcher
from prm_plugins.runtime import OnnxPRM, default_model_dir
from prm_plugins.strategies import AllCandidatesFailedError, RetryPolicy, best_of_n

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

Q = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many?"
GOOD = ["In May she sold 48 / 2 = 24 clips.", "In total she sold 48 + 24 = 72 clips.",
        "The answer is 72."]


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Tally:
    """Rows of the report: case, outcome, detail, seconds."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def run(self, section: str, case: str, fn: Callable[[], Any], *,
            expect: str, n_steps: int | None = None) -> None:
        """Run ``fn``; ``expect`` is ``"scored"`` or ``"refused"``."""
        start = time.perf_counter()
        try:
            value = fn()
            outcome, detail = "scored", ""
            if n_steps is not None:
                scores = value.scores
                if len(scores) != n_steps or not all(
                        math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores):
                    outcome, detail = "defect", f"{len(scores)} scores for {n_steps} steps"
                else:
                    detail = f"{n_steps} scores for {n_steps} steps"
        except PRMError as exc:
            outcome, detail = "refused", f"{type(exc).__name__}: {str(exc)[:160]}"
        except Exception as exc:  # a foreign exception is a defect
            outcome, detail = "defect", f"{type(exc).__name__}: {str(exc)[:160]}"
        seconds = time.perf_counter() - start
        if outcome != "defect" and outcome != expect:
            detail = f"expected {expect}, got {outcome}: {detail}"
            outcome = "defect"
        self.rows.append({"section": section, "case": case, "outcome": outcome,
                          "detail": detail, "seconds": round(seconds, 3)})
        print(f"[{section}] {case}: {outcome} ({seconds:.2f} s) {detail[:100]}", flush=True)

    def add(self, section: str, case: str, outcome: str, detail: str, seconds: float) -> None:
        self.rows.append({"section": section, "case": case, "outcome": outcome,
                          "detail": detail, "seconds": round(seconds, 3)})
        print(f"[{section}] {case}: {outcome} ({seconds:.2f} s) {detail[:100]}", flush=True)


# -- 1. hostile inputs ------------------------------------------------------------------------
def hostile_inputs(t: Tally, prm: OnnxPRM, windowed: OnnxPRM, fuzz: int) -> None:
    s = "inputs"
    special = [tok for tok in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")
               if prm.tokenizer.token_to_id(tok) is not None]
    sep = str(prm.format.options.get("separator", "\n"))
    tricky = [f"48 / 2 = 24 {sep} 24 + 48 = 72", " ".join(special) + " 3 + 4 = 7",
              "step one\n\nstep two\n", sep * 5 + "x"]
    t.run(s, "step tags and special tokens inside steps", lambda: prm.score(Q, tricky),
          expect="scored", n_steps=len(tricky))
    t.run(s, "empty step", lambda: prm.score(Q, ["a", ""]), expect="refused")
    t.run(s, "whitespace-only step", lambda: prm.score(Q, ["a", " \n\t "]), expect="refused")
    t.run(s, "no steps", lambda: prm.score(Q, []), expect="refused")
    many = [f"Step {i}: {i} + 1 = {i + 1}" for i in range(10_000)]
    t.run(s, "10,000 steps, long_chains='error'", lambda: prm.score(Q, many), expect="refused")
    t.run(s, "10,000 steps, long_chains='window'", lambda: windowed.score(Q, many),
          expect="scored", n_steps=10_000)
    mb = "She sells 12 eggs at $3 each, so 12 * 3 = 36 dollars. " * 19_000
    t.run(s, f"1 MB step ({len(mb.encode()):,} bytes), error mode",
          lambda: prm.score(Q, [GOOD[0], mb]), expect="refused")
    t.run(s, "1 MB step, window mode", lambda: windowed.score(Q, [GOOD[0], mb]),
          expect="refused")
    t.run(s, "1 MB of one word (tokenises to [UNK])",
          lambda: prm.score(Q, ["a" * 1_000_000]), expect="scored", n_steps=1)
    odd = ["\x00\x00 nul", "zero\u200bwidth", "\u202eRTL \u05e9\u05dc\u05d5\u05dd",
           "emoji \U0001f600 3 + 4 = 7", "e\u0301\u0301\u0301", "\ufeffBOM", "a\r\nb\tc"]
    t.run(s, "odd but valid Unicode (7 kinds)", lambda: prm.score(Q, odd), expect="scored",
          n_steps=len(odd))
    t.run(s, "lone surrogate in a step", lambda: prm.score(Q, ["ab\ud800"]), expect="refused")
    t.run(s, "lone surrogate in the question", lambda: prm.score("q\udfff", ["a"]),
          expect="refused")
    wrong: list[tuple[str, Callable[[], Any]]] = [
        ("steps is a str", lambda: prm.score(Q, "one step")),  # type: ignore[arg-type]
        ("steps is None", lambda: prm.score(Q, None)),  # type: ignore[arg-type]
        ("a step is an int", lambda: prm.score(Q, ["a", 3])),  # type: ignore[list-item]
        ("question is None", lambda: prm.score(None, ["a"])),  # type: ignore[arg-type]
        ("batch item is not a pair", lambda: prm.score_batch([("q", ["a"], "x")])),  # type: ignore[list-item]
        ("batch is a dict", lambda: prm.score_batch({"q": ["a"]})),  # type: ignore[arg-type]
    ]
    for name, fn in wrong:
        t.run(s, f"wrong type: {name}", fn, expect="refused")

    # Seeded fuzz: random chains from a hostile alphabet, in batches of 16.
    rng = random.Random(0)
    alphabet = (list("abc xyz 0123456789+-*/=$%.,\n\t") + special + [sep, "\u200b", "\x00",
                "\U0001f600", "\u05e9", "\ufeff", "<extra_0>", " ки", "<|im_end|>"])
    start = time.perf_counter()
    tried = scored = refused = defects = 0
    examples: list[str] = []
    for _ in range(fuzz // 16):
        items = []
        for _ in range(16):
            steps = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
                     for _ in range(rng.randint(1, 8))]
            items.append(("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))),
                          steps))
        for q, steps in items:
            tried += 1
            try:
                got = prm.score(q, steps)
                if len(got.scores) == len(steps):
                    scored += 1
                else:
                    defects += 1
                    examples.append(f"{len(got.scores)} scores for {len(steps)} steps")
            except PRMError:
                refused += 1  # e.g. a whitespace-only step drawn by chance
            except Exception as exc:
                defects += 1
                examples.append(f"{type(exc).__name__}: {exc}")
        batch_ok = [(q, st) for q, st in items if all(x.strip() for x in st)]
        if batch_ok:  # the same chains in one batch must score as they did one by one
            together = prm.score_batch(batch_ok)
            alone = [prm.score(q, st) for q, st in batch_ok]
            for a, b in zip(together, alone, strict=True):
                if max(abs(x - y) for x, y in zip(a.scores, b.scores, strict=True)) > 0.1:
                    defects += 1
                    examples.append("batch and one-by-one scores differ by > 0.1")
    t.add(s, f"fuzz: {tried} random hostile chains", "defect" if defects else "scored",
          f"{scored} scored one score per step, {refused} refused with a clear error "
          f"(whitespace-only steps), {defects} defects {examples[:2]}",
          time.perf_counter() - start)


# -- 2. hostile input files -------------------------------------------------------------------
def hostile_files(t: Tally, tmp: Path) -> None:
    from prm_plugins.cli import main

    good = [{"question": Q, "steps": GOOD[: k + 1]} for k in range(3)] * 10
    bad = [b'{"question": "cut off',
           b'{"question": "\xff\xfe not utf-8", "steps": ["a"]}',
           b'{"question": 3, "steps": ["a"]}',
           b'{"question": "q", "steps": "not a list"}',
           b'{"question": "q", "steps": ["", "a"]}',
           b"[1, 2, 3]",
           b'{"question": "q", "steps": ["a\\ud800"]}']
    lines: list[bytes] = []
    for i, row in enumerate(good):
        lines.append(json.dumps(row).encode())
        if i % 4 == 0 and bad:
            lines.append(bad.pop(0))
    lines.extend(bad)
    src = tmp / "mixed.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp / "out.jsonl"
    start = time.perf_counter()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["score", "--input", str(src), "--output", str(out), "--no-progress",
                   "--device", "cpu"])
    rows = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    scored = [r for r in rows if "step_scores" in r]
    complete = all(len(r["step_scores"]) == len(r["steps"]) for r in scored)
    n_bad = len(lines) - len(good)
    ok = (len(scored) == len(good) and complete and rc != 0 and len(rows) == len(lines)
          and err.getvalue().count("line ") == n_bad)
    t.add("files", f"prm score --input: {len(good)} good lines + {n_bad} bad ones",
          "scored" if ok else "defect",
          f"exit {rc}; {len(scored)}/{len(good)} good lines scored in full; {len(rows)} output "
          f"rows for {len(lines)} input lines; bad lines reported on stderr: "
          f"{err.getvalue().count('line ')}",
          time.perf_counter() - start)


# -- 3. faults --------------------------------------------------------------------------------
class FlakyGenerator:
    """Fails transiently with probability ``p_fail``, hangs with probability ``p_hang``."""

    def __init__(self, seed: int, p_fail: float, p_hang: float) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.p_fail, self.p_hang = p_fail, p_hang
        self.release = threading.Event()
        self.calls = 0

    def sample(self, prompt: str, n: int) -> list[str]:
        with self.lock:
            self.calls += 1
            r = self.rng.random()
        if r < self.p_fail:
            raise ConnectionError("injected: connection reset")
        if r < self.p_fail + self.p_hang:
            self.release.wait(10)
        return ["\n".join(GOOD)] * n


def faults(t: Tally, prm: OnnxPRM, tmp: Path, model_dir: Path) -> None:
    s = "faults"
    gen = FlakyGenerator(seed=1, p_fail=0.3, p_hang=0.05)
    policy = RetryPolicy(max_attempts=4, initial_wait=0.001, max_wait=0.01, jitter=0.0,
                         timeout=0.2)
    start = time.perf_counter()
    answered = failed_calls = lost = 0
    for _ in range(100):
        try:
            r = best_of_n(Q, gen, prm, n=4, max_concurrency=4, retry=policy)
        except AllCandidatesFailedError:
            failed_calls += 1
            continue
        answered += 1
        lost += sum(1 for c in r.candidates if c.ok and (c.step_scores is None or len(
            c.step_scores.scores) != len(c.steps)))
    gen.release.set()
    t.add(s, "100 best-of-4 calls, generator fails 30% and hangs 5% (timeout 0.2 s, 4 attempts)",
          "defect" if lost or answered + failed_calls != 100 else "scored",
          f"{answered} answered, {failed_calls} failed with AllCandidatesFailedError, "
          f"{gen.calls} generator attempts for 400 candidates, {lost} lost",
          time.perf_counter() - start)

    dead = FlakyGenerator(seed=2, p_fail=1.0, p_hang=0.0)
    t.run(s, "generator that always fails", lambda: best_of_n(
        Q, dead, prm, n=4, retry=RetryPolicy.no_wait(max_attempts=3)), expect="refused")

    import prm_plugins.runtime.session as session
    if "CUDAExecutionProvider" in ort.get_available_providers() and not (
            session.cuda_driver_present()):
        real = session.cuda_driver_present
        session.cuda_driver_present = lambda: True  # ORT then really tries CUDA and fails
        try:
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                auto = load_prm(model_dir, device="auto")
            same = auto.score(Q, GOOD).scores == prm.score(Q, GOOD).scores
            warned = any("running on CPU" in str(w.message) for w in caught)
            t.add(s, "CUDA provider fails at session start, device='auto'",
                  "scored" if auto.provider == "CPUExecutionProvider" and warned and same
                  else "defect",
                  f"fell back to {auto.provider}, warned={warned}, same scores={same}",
                  time.perf_counter() - start)
            t.run(s, "CUDA provider fails at session start, device='cuda'",
                  lambda: load_prm(model_dir, device="cuda"), expect="refused")
        finally:
            session.cuda_driver_present = real

    def damaged(name: str, damage: Callable[[Path], None]) -> None:
        d = tmp / name.replace(" ", "_")
        shutil.copytree(model_dir, d)
        damage(d)
        t.run(s, f"model dir: {name}", lambda: load_prm(d, device="cpu"), expect="refused")

    def flip(d: Path) -> None:
        data = bytearray((d / "model.onnx").read_bytes())
        data[len(data) // 2] ^= 1
        (d / "model.onnx").write_bytes(bytes(data))

    def newer(d: Path) -> None:
        man = json.loads((d / "prm.json").read_text())
        man["manifest_version"] = 999
        (d / "prm.json").write_text(json.dumps(man))

    damaged("graph truncated", lambda d: (d / "model.onnx").write_bytes(
        (d / "model.onnx").read_bytes()[:-4096]))
    damaged("one bit flipped in the graph", flip)
    damaged("tokenizer.json missing", lambda d: (d / "tokenizer.json").unlink())
    damaged("tokenizer.json edited", lambda d: (d / "tokenizer.json").write_text(
        (d / "tokenizer.json").read_text().replace('"[UNK]"', '"[UNX]"', 1)))
    damaged("manifest from a newer version", newer)
    damaged("manifest not UTF-8", lambda d: (d / "prm.json").write_bytes(
        b"\xff" + (d / "prm.json").read_bytes()))


# -- 4. load ----------------------------------------------------------------------------------
def load(t: Tally, prm: OnnxPRM) -> None:
    rng = random.Random(3)
    chains = [(f"{Q} ({k})", GOOD[: 1 + k % 3]) for k in range(50)]
    expected = {q: prm.score(q, st).scores for q, st in chains}
    requests: list[tuple[str, list[str]]] = []
    for i in range(1000):
        q, st = chains[rng.randrange(len(chains))]
        requests.append((q, ["  "] if i % 20 == 7 else st))  # 5% invalid
    threads_before = threading.active_count()
    rss_before = _rss_mib()

    async def main() -> tuple[int, int, int, Any]:
        async with MicroBatcher(prm, max_batch=32, max_wait_ms=5, max_queue=256) as batcher:
            results = await asyncio.gather(*(batcher.score(q, st) for q, st in requests),
                                           return_exceptions=True)
            stats = batcher.stats
        right = wrong = refused = 0
        for (q, st), res in zip(requests, results, strict=True):
            if isinstance(res, PRMError) and st == ["  "]:
                refused += 1
            elif not isinstance(res, BaseException) and res.scores == expected[q]:
                right += 1
            else:
                wrong += 1
        return right, wrong, refused, stats

    start = time.perf_counter()
    right, wrong, refused, stats = asyncio.run(main())
    seconds = time.perf_counter() - start
    time.sleep(0.2)
    threads_after = threading.active_count()
    ok = wrong == 0 and right == 950 and refused == 50 and threads_after <= threads_before
    t.add("load", "1,000 concurrent requests through MicroBatcher (50 invalid)",
          "scored" if ok else "defect",
          f"{right} answered = direct scores, {refused} invalid refused alone, {wrong} wrong or "
          f"lost; {stats.batches} score_batch calls, largest {stats.largest_batch}; threads "
          f"{threads_before} -> {threads_after}; RSS {rss_before:.0f} -> {_rss_mib():.0f} MiB",
          seconds)


# -- report -----------------------------------------------------------------------------------
def write(t: Tally, argv: list[str], total: float) -> Path:
    counts = {k: sum(1 for r in t.rows if r["outcome"] == k)
              for k in ("scored", "refused", "defect")}
    soak = RESULTS / "soak_microbatch.json"
    soak_line = ""
    if soak.is_file():
        data = json.loads(soak.read_text())
        soak_line = (f"\nSoak (`benchmarks/results/soak_microbatch.md`, "
                     f"`{data.get('command', '?')}`): {data.get('answered', '?')} requests "
                     f"answered in {data.get('seconds', '?')} s through one MicroBatcher, "
                     f"{data.get('lost', '?')} lost or wrong (beyond "
                     f"{data.get('tolerance', '?')}), {data.get('failed', '?')} failed, "
                     f"threads {data.get('threads_before', '?')} -> "
                     f"{data.get('threads_after', '?')}.\n")
    meta = {"command": "python " + shlex.join(["benchmarks/reliability_report.py", *argv]),
            "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "onnxruntime": ort.__version__,
            "prm_plugins": __version__, "seconds": round(total, 1), "counts": counts}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reliability.json").write_text(json.dumps({"meta": meta, "rows": t.rows},
                                                         indent=2) + "\n")
    lines = [
        "# Reliability report (default PRM)", "",
        f"Command: `{meta['command']}` ({meta['seconds']} s; Python {meta['python']}, "
        f"onnxruntime {meta['onnxruntime']}, {meta['cpus']} CPUs).", "",
        f"**{len(t.rows)} cases: {counts['scored']} scored correctly, {counts['refused']} "
        f"refused with a clear error, {counts['defect']} defects.** A defect is a foreign "
        "exception, a wrong number of scores, or a valid item lost.", soak_line,
        "| section | case | outcome | detail | s |", "|---|---|---|---|---:|",
    ]
    for r in t.rows:
        detail = r["detail"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['section']} | {r['case']} | {r['outcome']} | {detail} | "
                     f"{r['seconds']} |")
    path = RESULTS / "reliability.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    ap.add_argument("--fuzz", type=int, default=2000, help="random hostile chains to try")
    ap.add_argument("--skip-round-two", action="store_true",
                    help="skip the hostile set of round two (reliability_round_two.py)")
    args = ap.parse_args(argv)
    model_dir = Path(args.model) if args.model else default_model_dir()
    start = time.perf_counter()
    prm = load_prm(model_dir, device="cpu")
    windowed = load_prm(model_dir, device="cpu", long_chains="window")
    t = Tally()
    with tempfile.TemporaryDirectory() as tmp:
        hostile_inputs(t, prm, windowed, args.fuzz)
        hostile_files(t, Path(tmp))
        faults(t, prm, Path(tmp), model_dir)
        load(t, prm)
        if not args.skip_round_two:
            round_two(t, prm, model_dir, Path(tmp))
    path = write(t, argv, time.perf_counter() - start)
    defects = [r for r in t.rows if r["outcome"] == "defect"]
    print(f"wrote {path}: {len(t.rows)} cases, {len(defects)} defects")
    return 1 if defects else 0


if __name__ == "__main__":
    raise SystemExit(main())
