"""Round two of the reliability report: the hostile set of issue 23, run for real.

Each probe is one thing an attacker or an unlucky user did (an output file that is its own
input, a step of 5,000 nested signs, a graph that outputs NaN, a batcher over a scorer that
lies, ...). A probe is *handled* when it ends in a correct score or a clear ``PRMError``
(or, for the CLI, a one-line error and a non-zero exit, never a traceback), and no input
row is lost. ``reliability_report.py`` imports :func:`round_two` and counts its rows with
the rest; run alone::

    python benchmarks/reliability_round_two.py
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

Q = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many?"
GOOD = ["In May she sold 48 / 2 = 24 clips.", "In total she sold 48 + 24 = 72 clips.",
        "The answer is 72."]
HOSTILE_STEPS = {
    "5,000 unary minus signs": "-" * 5000 + "5 = 5",
    "5,000 nested brackets": "(" * 5000 + "1" + ")" * 5000 + " = 1",
    "100,000-digit number": "9" * 100_000 + " + 1 = 2",
    "power tower 9^9^9^9": "9^9^9^9 = 1",
}


def _cli(argv: Sequence[str], *, timeout: float = 120) -> tuple[int, str, str]:
    """Run ``prm ARGV`` in a fresh interpreter; (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "prm_plugins.cli", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def _clean_error(rc: int, err: str) -> bool:
    return rc != 0 and "Traceback" not in err and "error" in err.lower()


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _wait_for_rows(out: Path, proc: subprocess.Popen[str], limit_s: float = 120) -> None:
    """Wait until ``prm score`` has written its first rows (to ``OUT.partial``, ``OUT.partial.2``
    ...), or has exited, or ``limit_s`` has passed.

    A fixed sleep measured nothing on a loaded machine: signalled before its first write,
    the run kept 0 rows, and "in order" held trivially. Signalling once rows exist tests
    that the written prefix survives the interrupt.
    """
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        if any(b"\n" in p.read_bytes()[:65536] for p in out.parent.glob(f"{out.name}*")):
            return
        time.sleep(0.2)


# -- data loss -------------------------------------------------------------------------------
def data_loss(t: Any, tmp: Path) -> None:
    s = "round 2: data loss"
    src = tmp / "in.jsonl"
    body = "".join(json.dumps({"question": Q, "steps": GOOD[: k + 1]}) + "\n" for k in range(3))
    src.write_text(body, encoding="utf-8")

    def same_file(out: Path) -> tuple[str, str]:
        start = time.perf_counter()
        rc, _, err = _cli(["score", "--input", str(src), "--output", str(out), "--no-progress",
                           "--device", "cpu"])
        kept = src.read_text(encoding="utf-8") == body
        ok = _clean_error(rc, err) and kept
        return ("refused" if ok else "defect",
                f"exit {rc}; input kept intact: {kept}; {err.strip().splitlines()[-1][:140]}"
                f" ({time.perf_counter() - start:.1f} s)")

    outcome, detail = same_file(src)
    t.add(s, "prm score --output is the --input file", outcome, detail, 0)
    link = tmp / "link.jsonl"
    link.symlink_to(src)
    outcome, detail = same_file(link)
    t.add(s, "prm score --output is a symlink to the input", outcome, detail, 0)
    hard = tmp / "hard.jsonl"
    os.link(src, hard)
    outcome, detail = same_file(hard)
    t.add(s, "prm score --output is a hard link to the input", outcome, detail, 0)

    for name, out in (("--output in a missing folder", tmp / "no" / "such" / "out.jsonl"),
                      ("--output is a folder", tmp)):
        rc, _, err = _cli(["score", "--input", str(src), "--output", str(out), "--no-progress",
                           "--device", "cpu"])
        t.add(s, f"prm score {name}", "refused" if _clean_error(rc, err) else "defect",
              f"exit {rc}; {err.strip().splitlines()[-1][:140] if err.strip() else ''}", 0)

    # An interrupted run keeps its in-order prefix and says how to continue.
    big = tmp / "big.jsonl"
    big.write_text("".join(json.dumps({"question": f"{Q} ({i})", "steps": GOOD}) + "\n"
                           for i in range(20_000)), encoding="utf-8")
    out = tmp / "big_out.jsonl"
    for sig in (signal.SIGINT, signal.SIGTERM):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "prm_plugins.cli", "score", "--input",
                                 str(big), "--output", str(out), "--no-progress", "--device",
                                 "cpu"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        _wait_for_rows(out, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        partial = [p for p in tmp.iterdir() if p.name.startswith("big_out")]
        rows: list[dict[str, Any]] = []
        for p in partial:
            rows.extend(_rows(p))
        in_order = all(r["question"] == f"{Q} ({i})" for i, r in enumerate(rows))
        told = "--skip" in err
        ok = proc.returncode != 0 and bool(rows) and in_order and told and "Traceback" not in err
        t.add(s, f"prm score killed by {sig.name} mid-file",
              "scored" if ok else "defect",
              f"exit {proc.returncode}; {len(rows)} rows kept, in order: {in_order}; says how "
              f"to continue: {told}; {err.strip().splitlines()[-1][:120] if err.strip() else ''}",
              time.perf_counter() - start)
        for p in partial:
            p.unlink()

    target = tmp / "a_file"
    target.write_text("not a folder")
    rc, _, err = _cli(["train", "--data", str(src), "--out", str(target)])
    t.add(s, "prm train --out names an existing file",
          "refused" if _clean_error(rc, err) else "defect",
          f"exit {rc}; {err.strip().splitlines()[-1][:140] if err.strip() else ''}", 0)


# -- hostile lines and steps -----------------------------------------------------------------
def hostile_lines(t: Any, prm: Any, tmp: Path) -> None:
    s = "round 2: hostile lines"
    from prm_plugins.cli import main

    lines = {
        "nested 100,000 deep": "[" * 100_000 + "]" * 100_000,
        "a 5,000-digit integer": '{"question": "q", "steps": ["a"], "n": ' + "7" * 5000 + "}",
        "a stale error key": json.dumps({"question": Q, "steps": GOOD, "error": "old",
                                         "line": 99}),
        "U+2028 and U+2029 in a step": json.dumps({"question": Q, "steps": [
            "In May she sold 48 / 2 = 24\u2028clips.\u2029"]}, ensure_ascii=False),
    }
    src = tmp / "hostile.jsonl"
    good = json.dumps({"question": Q, "steps": GOOD})
    src.write_text("\ufeff" + good + "\n" + "\n".join(lines.values()) + "\n" + good + "\n",
                   encoding="utf-8")
    out = tmp / "hostile_out.jsonl"
    start = time.perf_counter()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            rc = main(["score", "--input", str(src), "--output", str(out), "--no-progress",
                       "--device", "cpu"])
    except BaseException as exc:  # noqa: BLE001 - anything escaping is the defect counted
        t.add(s, "prm score over hostile lines", "defect", f"{type(exc).__name__}: {exc}",
              time.perf_counter() - start)
        return
    raw = out.read_bytes().decode("utf-8")
    rows = [json.loads(x) for x in raw.split("\n") if x.strip()]
    seconds = time.perf_counter() - start
    n_in = 2 + len(lines)
    t.add(s, "UTF-8 byte-order mark before the first line",
          "scored" if rows and "step_scores" in rows[0] else "defect",
          f"first row: {sorted(rows[0]) if rows else None}", seconds)
    for i, name in enumerate(lines, start=1):
        row = rows[i] if i < len(rows) else {}
        if name == "a stale error key":
            ok = "step_scores" in row and "error" not in row
            t.add(s, "input row with a stale 'error' key", "scored" if ok else "defect",
                  f"output keys {sorted(row)}", 0)
        elif name.startswith("U+2028"):
            raw_seps = "\u2028" in raw or "\u2029" in raw
            ok = "step_scores" in row and not raw_seps
            t.add(s, "U+2028/U+2029 in a step", "scored" if ok else "defect",
                  f"scored: {'step_scores' in row}; raw separators in output: {raw_seps}", 0)
        else:
            ok = "error" in row
            t.add(s, f"input line {name}", "refused" if ok else "defect",
                  f"{str(row.get('error', row))[:140]}", 0)
    t.add(s, f"{n_in} input lines in, rows lost", "scored" if len(rows) == n_in and rc == 1
          else "defect", f"{len(rows)} output rows, exit {rc}", 0)

    for verb, extra in (("train", ["--out", str(tmp / "train_out")]),
                        ("calibrate", [str(tmp / "model_copy")])):
        deep = tmp / f"{verb}_deep.jsonl"
        deep.write_text("[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
        if verb == "calibrate" and not (tmp / "model_copy").exists():
            shutil.copytree(prm.model_dir, tmp / "model_copy")
        args = [verb, *extra, "--data", str(deep)] if verb == "calibrate" else [
            verb, "--data", str(deep), *extra]
        rc, _, e = _cli(args)
        t.add(s, f"prm {verb} --data with a line nested 100,000 deep",
              "refused" if _clean_error(rc, e) else "defect",
              f"exit {rc}; {e.strip().splitlines()[-1][:140] if e.strip() else ''}", 0)

    from prm_plugins.checks import check_arithmetic

    for name, step in HOSTILE_STEPS.items():
        _run_detail(t, s, f"calculator check on a step of {name}",
                    lambda step=step: f"verdict {check_arithmetic(step)[0]!r}")
        fits = len(step) < 400  # the long ones render past the model's 512 tokens
        t.run(s, f"prm.score on a step of {name}" + ("" if fits else " (over max_length)"),
              lambda step=step: prm.score(Q, [GOOD[0], step]),
              expect="scored" if fits else "refused", n_steps=2 if fits else None)
    short = "-" * 440 + "5 = 5"  # deep enough for the old recursive parser, under 512 tokens
    t.run(s, "prm.score on a step of 440 unary minus signs (fits the model)",
          lambda: prm.score(Q, [GOOD[0], short]), expect="scored", n_steps=2)


# -- strategies -------------------------------------------------------------------------------
class _Solutions:
    """A generator that returns fixed solutions (one hostile among good ones)."""

    def __init__(self, solutions: list[str]) -> None:
        self.solutions = solutions
        self.k = 0

    def sample(self, prompt: str, n: int) -> list[str]:
        out = [self.solutions[(self.k + i) % len(self.solutions)] for i in range(n)]
        self.k += n
        return out

    def propose_next_steps(self, question: str, prefix: Sequence[str], n: int) -> list[str]:
        if len(prefix) >= 2:
            return [f"The answer is 72. ({i})" for i in range(n)]
        pool = [GOOD[len(prefix)], HOSTILE_STEPS["5,000 unary minus signs"]]
        return [pool[i % 2] for i in range(n)]


class _LyingScorer:
    """Wraps a real scorer and returns NaN for chains that mention ``poison``."""

    def __init__(self, prm: Any) -> None:
        self.prm = prm

    def score(self, question: str, steps: Sequence[str]) -> Any:
        return self.score_batch([(question, steps)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[Any]:
        out = self.prm.score_batch(items)
        for (_, steps), s in zip(items, out, strict=True):
            if any("poison" in x for x in steps):
                s.scores[:] = [float("nan")] * len(s.scores)
        return out


def strategies(t: Any, prm: Any) -> None:
    s = "round 2: strategies"
    from prm_plugins.strategies import RetryPolicy, best_of_n

    hostile = "\n".join([GOOD[0], HOSTILE_STEPS["5,000 nested brackets"], "The answer is 72."])
    gen = _Solutions(["\n".join(GOOD), hostile, "\n".join(GOOD[:2] + ["The answer is 70."])])
    fast = RetryPolicy.no_wait(max_attempts=2)

    def bon() -> str:
        r = best_of_n(Q, gen, prm, n=3, retry=fast)
        return f"chose a candidate of {len(r.candidates)}; ok {sum(c.ok for c in r.candidates)}"

    _run_detail(t, s, "best_of_n with one candidate of 5,000 nested brackets", bon)

    def dvts() -> str:
        from prm_plugins.strategies import DVTS

        r = DVTS(_Solutions([]), prm, n=4, beam_width=2, max_steps=4, retry=fast).run(Q)
        return f"{len(r.finished)} finished chains"

    _run_detail(t, s, "DVTS with a proposed step of 5,000 minus signs", dvts)

    poisoned = _Solutions(["\n".join(GOOD), "\n".join(GOOD[:2] + ["poison: the answer is 7."])])

    def nan_pick() -> str:
        r = best_of_n(Q, poisoned, _LyingScorer(prm), n=2, retry=fast)
        bad = [c for c in r.candidates if "poison" in (c.text or "")]
        if "poison" in (r.best.text or "") or any(c.ok for c in bad):
            raise AssertionError(f"a NaN-scored candidate was kept: best={r.best.text!r}")
        return f"NaN candidate reported failed: {bad[0].error if bad else '?'}"[:160]

    _run_detail(t, s, "best_of_n over a scorer that returns NaN for one candidate", nan_pick)

    timeout = RetryPolicy().timeout
    t.add(s, "default RetryPolicy bounds a hung generator",
          "scored" if isinstance(timeout, (int, float)) and timeout > 0 else "defect",
          f"RetryPolicy().timeout = {timeout!r}", 0)


def _run_detail(t: Any, section: str, case: str, fn: Callable[[], str]) -> None:
    from prm_plugins.errors import PRMError

    start = time.perf_counter()
    try:
        outcome, detail = "scored", fn()
    except PRMError as exc:
        outcome, detail = "refused", f"{type(exc).__name__}: {str(exc)[:140]}"
    except BaseException as exc:  # noqa: BLE001 - a foreign exception is the defect counted
        outcome, detail = "defect", f"{type(exc).__name__}: {str(exc)[:140]}"
    t.add(section, case, outcome, detail, time.perf_counter() - start)


# -- micro-batcher ----------------------------------------------------------------------------
class _WrongCount:
    """A scorer that returns one result too few (a broken backend)."""

    def __init__(self, prm: Any) -> None:
        self.prm = prm

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[Any]:
        return self.prm.score_batch(items)[:-1]


class _Hangs:
    """A scorer that never answers until released (a hung backend)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[Any]:
        self.release.wait(30)
        raise RuntimeError("released")


def batcher(t: Any, prm: Any) -> None:
    s = "round 2: micro-batcher"
    from prm_plugins.microbatch import MicroBatcher

    async def wrong_count() -> str:
        b = MicroBatcher(_WrongCount(prm), max_batch=4, max_wait_ms=20)
        results = await asyncio.wait_for(asyncio.gather(
            *(b.score(Q, GOOD) for _ in range(4)), return_exceptions=True), 10)
        start = time.perf_counter()
        await asyncio.wait_for(b.aclose(), 10)
        errors = [r for r in results if isinstance(r, BaseException)]
        return (f"{len(errors)}/4 callers got an error "
                f"({type(errors[0]).__name__ if errors else '-'}); aclose "
                f"{time.perf_counter() - start:.2f} s")

    def run(coro: Callable[[], Any]) -> Callable[[], str]:
        return lambda: asyncio.run(coro())

    _run_detail(t, s, "scorer returns one result too few", run(wrong_count))

    hung = _Hangs()

    async def hangs() -> str:
        b = MicroBatcher(hung, max_batch=4, max_wait_ms=5, batch_timeout_s=1.0)
        start = time.perf_counter()
        res = await asyncio.wait_for(asyncio.gather(b.score(Q, GOOD), return_exceptions=True),
                                     10)
        await asyncio.wait_for(b.aclose(), 10)
        return (f"caller answered with {type(res[0]).__name__} after "
                f"{time.perf_counter() - start:.2f} s; aclose returned")

    _run_detail(t, s, "scorer hangs (batch_timeout_s=1)", run(hangs))
    hung.release.set()

    def two_loops() -> str:
        b = MicroBatcher(prm, max_batch=4, max_wait_ms=5)
        first = asyncio.run(b.score(Q, GOOD))
        start = time.perf_counter()
        try:
            asyncio.run(asyncio.wait_for(b.score(Q, GOOD), 10))
        finally:
            with contextlib.suppress(Exception):
                asyncio.run(b.aclose())
        return (f"second loop scored too ({len(first.scores)} scores) in "
                f"{time.perf_counter() - start:.2f} s")

    _run_detail(t, s, "one batcher used from two event loops", two_loops)

    def unclosed() -> str:
        import gc

        code = ("import asyncio, threading\n"
                "from prm_plugins import load_prm\n"
                "from prm_plugins.microbatch import MicroBatcher\n"
                f"Q, GOOD = {Q!r}, {GOOD!r}\n"
                "async def main():\n"
                "    b = MicroBatcher(load_prm(device='cpu'))\n"
                "    await b.score(Q, GOOD)\n"
                "asyncio.run(main())\n"
                "print('done', flush=True)\n")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, cwd=ROOT)
        gc.collect()
        if proc.returncode != 0 or "done" not in proc.stdout:
            raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-200:]}")
        return f"process exited on its own in {time.perf_counter() - start:.1f} s"

    _run_detail(t, s, "a batcher never closed", unclosed)


# -- models that lie --------------------------------------------------------------------------
def _swap_graph(model_dir: Path, out: Path, make: Callable[[Any, Any], Any]) -> Path:
    """Copy ``model_dir`` with its graph replaced by ``make(helper, TensorProto)``, rehashed."""
    import onnx
    from onnx import TensorProto, helper

    from prm_plugins.manifest import Manifest

    shutil.copytree(model_dir, out)
    graph = make(helper, TensorProto)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(out / "model.onnx"))
    man = Manifest.read(out)
    man.hash_files(out, list(man.files))
    man.write(out)
    return out


def _probs_graph(helper: Any, tp: Any, *, value: float, rank3: bool = False,
                 shorter: bool = False) -> Any:
    ids = helper.make_tensor_value_info("input_ids", tp.INT64, ["B", "T"])
    mask = helper.make_tensor_value_info("attention_mask", tp.INT64, ["B", "T"])
    nodes = [helper.make_node("Cast", ["attention_mask"], ["m"], to=tp.FLOAT),
             helper.make_node("Constant", [], ["c"], value=helper.make_tensor(
                 "c", tp.FLOAT, [], [value])),
             helper.make_node("Mul", ["m", "c"], ["p"])]
    last = "p"
    if rank3:
        nodes += [helper.make_node("Constant", [], ["ax"], value=helper.make_tensor(
            "ax", tp.INT64, [1], [2])), helper.make_node("Unsqueeze", ["p", "ax"], ["p3"])]
        last = "p3"
    if shorter:
        consts = {"st": 0, "en": 1, "axes": 1}
        for k, v in consts.items():
            nodes.append(helper.make_node("Constant", [], [k], value=helper.make_tensor(
                k, tp.INT64, [1], [v])))
        nodes.append(helper.make_node("Slice", ["p", "st", "en", "axes"], ["ps"]))
        last = "ps"
    nodes.append(helper.make_node("Identity", [last], ["step_probs"]))
    out = helper.make_tensor_value_info("step_probs", tp.FLOAT, None)
    return helper.make_graph(nodes, "liar", [ids, mask], [out])


def lying_models(t: Any, model_dir: Path, tmp: Path) -> None:
    s = "round 2: models that lie"
    from prm_plugins import load_prm

    liars = {
        "graph outputs NaN": {"value": float("nan")},
        "graph outputs 1.5": {"value": 1.5},
        "graph outputs rank 3": {"value": 0.5, "rank3": True},
        "graph outputs the wrong length": {"value": 0.5, "shorter": True},
    }
    for name, kw in liars.items():
        d = _swap_graph(model_dir, tmp / name.replace(" ", "_"),
                        lambda h, tp, kw=kw: _probs_graph(h, tp, **kw))
        t.run(s, name, lambda d=d: load_prm(d, device="cpu").score(Q, GOOD), expect="refused")

    def manifest_edit(name: str, edit: Callable[[dict[str, Any]], None]) -> None:
        d = tmp / ("manifest_" + name.replace(" ", "_").replace("'", ""))
        shutil.copytree(model_dir, d)
        man = json.loads((d / "prm.json").read_text())
        edit(man)
        (d / "prm.json").write_text(json.dumps(man))
        t.run(s, f"prm.json: {name}", lambda: load_prm(d, device="cpu").score(Q, GOOD),
              expect="refused")

    def setter(path: Sequence[str], value: Any) -> Callable[[dict[str, Any]], None]:
        def edit(man: dict[str, Any]) -> None:
            node = man
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        return edit

    manifest_edit("max_length 'abc'", setter(["max_length"], "abc"))
    manifest_edit("max_length null", setter(["max_length"], None))
    manifest_edit("max_length 10**30", setter(["max_length"], 10**30))
    manifest_edit("format_options a list", setter(["format_options"], [1, 2]))
    manifest_edit("files a list", setter(["files"], ["model.onnx"]))
    manifest_edit("format a number", setter(["format"], 3))
    manifest_edit("dtype unknown", setter(["dtype"], "fp7"))
    opts = json.loads((model_dir / "prm.json").read_text()).get("format_options", {})
    id_keys = [k for k, v in opts.items() if k.endswith("_id") and isinstance(v, int)]
    for key in id_keys[:2]:
        manifest_edit(f"{key} out of vocabulary", setter(["format_options", key], 10**9))
        manifest_edit(f"{key} negative", setter(["format_options", key], -1))

    d = tmp / "symlinked"
    d.mkdir()
    outside = tmp / "outside_tokenizer.json"
    shutil.copy(model_dir / "tokenizer.json", outside)
    for f in model_dir.iterdir():
        if f.is_file() and f.name != "tokenizer.json":
            shutil.copy(f, d / f.name)
    (d / "tokenizer.json").symlink_to(outside)
    t.run(s, "model file is a symlink out of the model directory",
          lambda: load_prm(d, device="cpu"), expect="refused")

    d = tmp / "external_data"
    shutil.copytree(model_dir, d)
    import onnx

    m = onnx.load(str(d / "model.onnx"))
    onnx.save(m, str(d / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    from prm_plugins.manifest import Manifest

    man = Manifest.read(d)
    man.hash_files(d, [n for n in man.files if n != "weights.bin"])
    man.write(d)
    t.run(s, "graph reads an external-data file prm.json does not list",
          lambda: load_prm(d, device="cpu"), expect="refused")


def round_two(t: Any, prm: Any, model_dir: Path, tmp: Path) -> None:
    """Run every round-two probe into the tally ``t``."""
    data_loss(t, tmp)
    hostile_lines(t, prm, tmp)
    strategies(t, prm)
    batcher(t, prm)
    lying_models(t, model_dir, tmp)


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from reliability_report import Tally  # type: ignore[import-not-found]

    from prm_plugins import load_prm
    from prm_plugins.runtime import default_model_dir

    prm = load_prm(device="cpu")
    t = Tally()
    with tempfile.TemporaryDirectory() as tmp:
        round_two(t, prm, default_model_dir(), Path(tmp))
    defects = [r for r in t.rows if r["outcome"] == "defect"]
    print(f"{len(t.rows)} probes, {len(defects)} defects")
    return 1 if defects else 0


if __name__ == "__main__":
    raise SystemExit(main())
