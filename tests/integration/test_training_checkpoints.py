"""Durability of ``prm train``: atomic checkpoints, periodic saves, ``--resume``, ``--out`` checks.

Offline and fast: the tiny BERT trunk and toy data of ``test_training.py``; the abrupt-death
tests kill a small subprocess (no torch in it) with ``os._exit`` at each point of a save.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

try:
    import torch
    from transformers import AutoModelForTokenClassification
except ImportError:
    pytest.skip("the training tests need the train extra: pip install 'prm-plugins[train]'",
                allow_module_level=True)

from prm_plugins.errors import InvalidInputError, ModelLoadError
from prm_plugins.training import TrainConfig, train
from prm_plugins.training.checkpoint import (
    CHECKPOINT_FILES,
    RESUME_DIR,
    atomic_write_dir,
    prepare_out_dir,
    recover_checkpoint,
    verify_checkpoint,
)

from support.training_toys import toy_config, toy_rows, write_rows


class Killed(BaseException):
    """Stands for a kill: nothing in the trainer catches it."""


def _kill_at_optimizer_step(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    real = torch.optim.AdamW.step
    calls = {"n": 0}

    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed(f"killed at optimizer step {n}")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)


def _weights(out: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


def _info(out: Path) -> dict[str, Any]:
    return json.loads((out / "training.json").read_text())


def _strip_times(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


# -- resume ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("ckpt_data") / "train.jsonl", toy_rows(80, 0))


def _resume_config(base: Path, data: Path, out: Path, **changes: Any) -> TrainConfig:
    # 64 training chains in batches of 16: 4 batches an epoch, so step 10 is mid-epoch 3.
    # Dropout on, so the torch RNG state matters; validation at 7 and 14 with keep_best, so
    # the best weights so far must be carried over too.
    return toy_config(base, data, out, steps=14, save_every=5, eval_every=7, dropout=0.1,
                       **changes)


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(
        base_dir: Path, toy_data: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    whole = tmp_path / "whole"
    train(_resume_config(base_dir, toy_data, whole))

    cut = tmp_path / "cut"
    _kill_at_optimizer_step(monkeypatch, 13)  # after the checkpoints of steps 5 and 10
    with pytest.raises(Killed):
        train(_resume_config(base_dir, toy_data, cut))
    monkeypatch.undo()
    partial = verify_checkpoint(cut)  # complete and consistent, and says it is unfinished
    assert partial["complete"] is False and partial["steps"] == 10
    state = json.loads((cut / RESUME_DIR / "state.json").read_text())
    assert state["step"] == 10 and state["data"]["epoch"] == 2 and state["data"]["batch"] == 2
    assert state["best_step"] == 7 and state["best_weights"] == "file"

    result = train(_resume_config(base_dir, toy_data, cut, resume=True))
    assert result.steps == 14
    a, b = _weights(whole), _weights(cut)
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert differing == []
    ia, ib = _info(whole), _info(cut)
    assert ib["complete"] is True and ib["resumed_at"] == [10] and ia["resumed_at"] == []
    assert _strip_times(ia["history"]) == _strip_times(ib["history"])
    assert ia["best_step"] == ib["best_step"]
    assert not (cut / RESUME_DIR).exists()  # a finished checkpoint carries no resume state
    verify_checkpoint(cut)
    # every name a real checkpoint holds is one prm train knows, so a new run may replace it
    assert {p.name for p in whole.iterdir()} <= CHECKPOINT_FILES
    assert prepare_out_dir(whole, resume=False) == whole.resolve()


def test_resume_without_the_saved_state_does_not_reproduce(
        base_dir: Path, toy_data: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The equality above is not automatic: drop the RNG/data-position restore and it breaks."""
    from prm_plugins.training import resume

    whole = tmp_path / "whole"
    train(_resume_config(base_dir, toy_data, whole))
    cut = tmp_path / "cut"
    _kill_at_optimizer_step(monkeypatch, 13)
    with pytest.raises(Killed):
        train(_resume_config(base_dir, toy_data, cut))
    monkeypatch.undo()
    monkeypatch.setattr(resume.BatchCursor, "restore", lambda self, state: None)
    train(_resume_config(base_dir, toy_data, cut, resume=True))
    a, b = _weights(whole), _weights(cut)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_periodic_checkpoint_default_is_each_validation(
        base_dir: Path, toy_data: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert TrainConfig().save_every is None
    out = tmp_path / "run"
    _kill_at_optimizer_step(monkeypatch, 10)
    with pytest.raises(Killed):
        train(toy_config(base_dir, toy_data, out, steps=12, eval_every=4))
    info = verify_checkpoint(out)
    assert info["steps"] == 8 and [h["step"] for h in info["history"]] == [4, 8]
    # it is export-ready: the transformers files load
    AutoModelForTokenClassification.from_pretrained(out, local_files_only=True)


def test_resume_refuses_other_settings_other_data_and_damage(
        base_dir: Path, toy_data: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    _kill_at_optimizer_step(monkeypatch, 7)
    with pytest.raises(Killed):
        train(_resume_config(base_dir, toy_data, out))
    monkeypatch.undo()
    with pytest.raises(InvalidInputError, match=r"--lr 0\.01 -> 0\.02"):
        train(_resume_config(base_dir, toy_data, out, resume=True, lr=2e-2))
    other = write_rows(tmp_path / "other.jsonl", toy_rows(80, 5))
    with pytest.raises(InvalidInputError, match="--data file is not the one"):
        train(_resume_config(base_dir, other, out, resume=True))
    # without --resume an unfinished run is not thrown away
    with pytest.raises(InvalidInputError, match="unfinished run .*step 5.*--resume"):
        train(_resume_config(base_dir, toy_data, out))
    weights = out / RESUME_DIR / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelLoadError, match="damaged: resume/model.safetensors"):
        train(_resume_config(base_dir, toy_data, out, resume=True))


def test_resume_with_nothing_to_resume_says_so(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no checkpoint to resume"):
        prepare_out_dir(tmp_path / "new", resume=True)
    done = tmp_path / "done"
    atomic_write_dir(done, lambda d: (d / "config.json").write_text("{}"), {"complete": True})
    with pytest.raises(InvalidInputError, match="finished run"):
        prepare_out_dir(done, resume=True)
    assert prepare_out_dir(done, resume=False) == done.resolve()  # replaced at the end


def test_config_rejects_bad_save_every() -> None:
    with pytest.raises(InvalidInputError, match="--save-every"):
        TrainConfig(data="d", out="o", save_every=0).validate()


# -- atomic saves under abrupt death ------------------------------------------------------------
_HARNESS = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import prm_plugins.training.checkpoint as ck

    out, version, kill_at, exchange = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    if exchange == "0":
        ck._exchange = lambda a, b: False
    die = lambda: os._exit(9)  # abrupt: no cleanup, no finally, as SIGKILL

    def write(tmp):
        (tmp / "model.safetensors").write_bytes(version.encode() * 4096)
        if kill_at == "mid-write":
            die()
        (tmp / "config.json").write_text(json.dumps({"v": version}))

    real_replace, real_rename, real_rmtree = os.replace, os.rename, ck.shutil.rmtree
    renames = []
    def replace(a, b, *args, **kw):
        if kill_at == "before-commit" and str(b).endswith("training.json"):
            die()
        return real_replace(a, b, *args, **kw)
    def rename(a, b, *args, **kw):
        renames.append(b)
        if kill_at == "between-renames" and len(renames) == 2:
            die()
        return real_rename(a, b, *args, **kw)
    def swap(tmp, out):
        if kill_at == "after-commit":
            die()
        return real_swap(tmp, out)
    def rmtree(path, *args, **kw):
        if kill_at == "before-cleanup":
            die()
        return real_rmtree(path, *args, **kw)
    real_swap = ck._swap_into_place
    ck.os.replace, ck.os.rename, ck._swap_into_place = replace, rename, swap
    ck.shutil.rmtree = rmtree
    ck.atomic_write_dir(out, write, {"complete": version == "v2", "version": version})
""")


def _save_in_subprocess(out: Path, version: str, kill_at: str, exchange: bool) -> int:
    return subprocess.run([sys.executable, "-c", _HARNESS, str(out), version, kill_at,
                           "1" if exchange else "0"], check=False, timeout=60).returncode


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
@pytest.mark.parametrize("kill_at,survivor", [
    ("mid-write", "v1"), ("before-commit", "v1"), ("after-commit", "v1"),
    ("between-renames", "v2"), ("before-cleanup", "v2"), ("never", "v2"),
])
def test_a_save_killed_at_any_point_leaves_one_complete_checkpoint(
        tmp_path: Path, kill_at: str, survivor: str, exchange: bool) -> None:
    if kill_at == "between-renames" and exchange:
        pytest.skip("one atomic exchange: there is no 'between'")
    out = tmp_path / "ckpt"
    assert _save_in_subprocess(out, "v1", "never", exchange) == 0
    before = verify_checkpoint(out)
    rc = _save_in_subprocess(out, "v2", kill_at, exchange)
    assert rc == (0 if kill_at == "never" else 9)
    recover_checkpoint(out)  # what every start of prm train does first
    info = verify_checkpoint(out)  # every file matches the sha256 training.json records
    assert info["version"] == survivor
    assert json.loads((out / "config.json").read_text()) == {"v": survivor}
    assert (out / "model.safetensors").read_bytes() == survivor.encode() * 4096
    if survivor == "v1":
        assert info == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no leftovers


def test_exchange_swaps_directories_atomically_on_linux(tmp_path: Path) -> None:
    from prm_plugins.training import checkpoint

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not checkpoint._exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) not available here")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_a_failed_save_keeps_the_old_checkpoint_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    atomic_write_dir(out, lambda d: (d / "config.json").write_text('"old"'), {"v": 1})

    def failing(d: Path) -> None:
        (d / "config.json").write_text('"new"')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write_dir(out, failing, {"v": 2})
    assert verify_checkpoint(out)["v"] == 1
    assert (out / "config.json").read_text() == '"old"'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_folder_with_other_files_is_never_replaced(tmp_path: Path) -> None:
    own = tmp_path / "mine"
    own.mkdir()
    (own / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match=r"files prm train did not write \(notes.txt\)"):
        prepare_out_dir(own, resume=False)
    assert (own / "notes.txt").read_text() == "keep me"
    with pytest.raises(InvalidInputError, match="filesystem root|did not write"):
        prepare_out_dir("/", resume=False)


# -- the CLI: --out checked first, one-line errors ------------------------------------------------
def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from prm_plugins.cli import main

    rc = main(argv)
    err = capsys.readouterr().err
    return rc, err


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("prm train: ")
    return lines[0]


def test_cli_out_naming_a_file_is_refused_before_loading_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "model.txt"
    existing.write_text("important")
    # the data file does not exist either: --out must be checked first
    rc, err = _cli(["train", "--data", str(tmp_path / "missing.jsonl"), "--out", str(existing),
                    "--no-progress"], capsys)
    assert rc == 2
    line = _one_line_error(err)
    assert "is a file" in line and "model.txt" in line and "missing.jsonl" not in line
    assert existing.read_text() == "important"
    rc, err = _cli(["train", "--data", str(tmp_path / "missing.jsonl"),
                    "--out", str(existing / "sub"), "--no-progress"], capsys)
    assert rc == 2 and "is a file, not a folder" in _one_line_error(err)


def test_cli_unwritable_out_is_a_one_line_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if Path("/proc/self").is_dir():  # not even root can make folders in /proc
        rc, err = _cli(["train", "--data", "d.jsonl", "--out", "/proc/prm-train-test/run",
                        "--no-progress"], capsys)
        assert rc == 2 and "cannot create the folder" in _one_line_error(err)
    if os.geteuid() == 0:
        return  # root writes through permission bits
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        rc, err = _cli(["train", "--data", "d.jsonl", "--out", str(locked / "run"),
                        "--no-progress"], capsys)
    finally:
        locked.chmod(0o755)
    assert rc == 2 and "is not writable" in _one_line_error(err)


@pytest.mark.parametrize("line", [
    "[" * 100_000 + "]" * 100_000,
    '{"prompt": "q", "completions": ["a"], "labels": [' + "9" * 5000 + "]}",
    '{"prompt": "q", "completions": ["a", "b"], "labels": [true]}',
], ids=["deep-json", "5000-digit-int", "labels-mismatch"])
def test_cli_hostile_training_line_is_a_one_line_error(
        base_dir: Path, tmp_path: Path, line: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    good = [json.dumps(r) for r in toy_rows(4, 0)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join([*good, line, *good]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    rc, err = _cli(["train", "--data", str(data), "--out", str(out), "--no-progress",
                    "--base-model", str(base_dir), "--max-steps", "1", "--device", "cpu"],
                   capsys)
    assert rc == 2
    assert "data.jsonl" in _one_line_error(err)
    assert len(err) < 600  # the line itself is not echoed back
    assert not out.exists()


@pytest.mark.slow
def test_sigkill_during_real_training_leaves_a_resumable_checkpoint(
        base_dir: Path, toy_data: Path, tmp_path: Path) -> None:
    """A real ``prm train`` process killed with SIGKILL while saving every step."""
    import signal
    import time

    args = ["--data", str(toy_data), "--base-model", str(base_dir), "--max-steps", "40",
            "--batch-size", "16", "--lr", "1e-2", "--eval-every", "10", "--val-fraction",
            "0.2", "--device", "cpu", "--no-progress", "--vocab-keep-top", "50",
            "--max-length", "128", "--threads", "1", "--dropout", "0.1"]
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, "-m", "prm_plugins.cli", "train", *args, "--out",
                    str(whole)], check=True, capture_output=True, timeout=300)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "prm_plugins.cli", "train", *args,
                             "--out", str(cut), "--save-every", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (cut / "training.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.35)  # a few saves in: a kill now most likely lands inside one
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    recover_checkpoint(cut)
    info = verify_checkpoint(cut)
    assert info["complete"] is False and 1 <= info["steps"] < 40
    subprocess.run([sys.executable, "-m", "prm_plugins.cli", "train", *args, "--out",
                    str(cut), "--resume"], check=True, capture_output=True, timeout=300)
    a, b = _weights(whole), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _info(cut)["resumed_at"] == [info["steps"]]
