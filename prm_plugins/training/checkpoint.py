"""Checkpoint directories of ``prm train``: atomic saves, periodic resume state, recovery.

A checkpoint directory (``--out``) is what ``prm export`` takes: ``config.json``,
``model.safetensors``, the fast tokenizer, ``prm_format.json`` and ``training.json``. While a
run is in progress it also holds ``resume/`` (what ``prm train --resume`` needs: the current
weights, the optimiser state, the RNG states and the position in the data), and
``training.json`` says ``"complete": false``.

Every save is atomic. The whole directory is written as a hidden sibling
(``.NAME.tmp-XXXX``), ``training.json`` last (itself written under a temporary name and
renamed), every file flushed to disk, and only then swapped into place: with one atomic
``renameat2(RENAME_EXCHANGE)`` on Linux, elsewhere with two renames
(old -> ``.NAME.old-XXXX``, new -> NAME). So a run killed at any moment leaves either the
previous complete checkpoint or the new complete one, never a mix; in the two-rename case a
kill between the renames leaves NAME missing for an instant and both complete checkpoints as
hidden siblings, and :func:`recover_checkpoint` (called at every start) puts the newer one back.

``training.json`` records the sha256 of every other file of the checkpoint, so
:func:`verify_checkpoint` can tell a complete checkpoint from a damaged one.

Resume state is written without pickling objects: weights as safetensors, the optimiser's
state dict and the torch RNG states (plain tensors, numbers, lists and dicts) with
``torch.save``, read back with ``torch.load(..., weights_only=True)``, and the rest as JSON.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, ModelLoadError, require

__all__ = [
    "CHECKPOINT_FILES",
    "FORMAT_FILE",
    "RESUME_DIR",
    "TRAINING_FILE",
    "atomic_write_dir",
    "file_digests",
    "load_resume_state",
    "prepare_out_dir",
    "read_training_info",
    "recover_checkpoint",
    "save_checkpoint",
    "save_resume_state",
    "sha256_file",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

TRAINING_FILE = "training.json"
FORMAT_FILE = "prm_format.json"
RESUME_DIR = "resume"
STATE_FILE = "state.json"
TENSORS_FILE = "tensors.pt"
WEIGHTS_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"

#: Names ``prm train`` writes in a checkpoint directory. A directory holding anything else is
#: not replaced (it may be the user's own folder).
CHECKPOINT_FILES = frozenset({
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "added_tokens.json",
    "chat_template.jinja", FORMAT_FILE, TRAINING_FILE, RESUME_DIR,
})

_TMP, _OLD, _PROBE = "tmp", "old", "probe"


def _hidden(out: Path, kind: str) -> str:
    return f".{out.name}.{kind}-"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(root: Path) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every file under ``root`` but ``training.json``."""
    out: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != TRAINING_FILE:
            out[rel] = sha256_file(path)
    return out


# -- the output folder ------------------------------------------------------------------------
def _is_ours(path: Path) -> bool:
    """True when ``path`` is a directory holding only names ``prm train`` writes."""
    try:
        return path.is_dir() and not path.is_symlink() and all(
            p.name in CHECKPOINT_FILES or p.name.startswith(".training.json")
            for p in path.iterdir())
    except OSError:
        return False


def recover_checkpoint(out: Path) -> None:
    """Finish a swap a kill interrupted, and remove leftovers of killed saves.

    When ``out`` is missing but a complete hidden sibling exists (a kill between the two
    renames of the non-Linux swap), the newest complete one is renamed into place. Hidden
    siblings left by killed saves are then removed (only ones holding nothing but checkpoint
    files).
    """
    parent = out.parent
    if not parent.is_dir():
        return
    siblings = {kind: sorted((p for p in parent.iterdir() if p.name.startswith(_hidden(out, kind))),
                             key=lambda p: p.stat().st_mtime, reverse=True)
                for kind in (_TMP, _OLD, _PROBE)}
    if not out.exists() and not out.is_symlink():
        # a new complete checkpoint (tmp with training.json) wins over the old one
        for cand in [*siblings[_TMP], *siblings[_OLD]]:
            if (cand / TRAINING_FILE).is_file() and _is_ours(cand):
                os.rename(cand, out)
                logger.warning("recovered checkpoint %s from %s (a save was interrupted "
                               "between its two renames)", out, cand.name)
                break
    for paths in siblings.values():
        for p in paths:
            if p.exists() and _is_ours(p):
                shutil.rmtree(p, ignore_errors=True)


def _probe_writable(parent: Path, out: Path) -> None:
    try:
        probe = tempfile.mkdtemp(prefix=_hidden(out, _PROBE), dir=parent)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write --out {str(out)!r}: folder {str(parent)!r} is not writable "
            f"({exc.strerror or exc}); pick a folder you can write") from None
    os.rmdir(probe)


def prepare_out_dir(out: str | os.PathLike[str], *, resume: bool) -> Path:
    """Check ``--out`` before anything is loaded; return it resolved.

    ``out`` must be a new path, an empty folder, or a checkpoint directory of ``prm train``
    (a finished one is replaced at the end of the run; an unfinished one needs ``resume``).
    Its parent folder is created when missing and must be writable (checkpoints are written
    as a sibling and swapped into place).

    Raises:
        InvalidInputError: ``out`` is a file, a folder with other files, an unfinished run
            without ``resume``, ``resume`` without a run to continue, or not writable.
    """
    given = str(out)
    path = Path(out).expanduser().resolve()
    if not path.name:
        raise InvalidInputError(f"--out {given!r} is a filesystem root; name a folder")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise InvalidInputError(
            f"--out {given!r}: {str(parent)!r} is a file, not a folder; pick another --out")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot create the folder {str(parent)!r} for --out {given!r} "
                f"({exc.strerror or exc}); pick a folder you can write") from None
    _probe_writable(parent, path)
    recover_checkpoint(path)
    if path.exists() and not path.is_dir():
        raise InvalidInputError(
            f"--out {given!r} is a file; prm train writes a folder there (config.json, "
            "model.safetensors, ...). Pick a new folder name")
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    foreign = [n for n in entries if n not in CHECKPOINT_FILES]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise InvalidInputError(
            f"--out {given!r} is a folder holding files prm train did not write ({shown}); "
            "its checkpoints replace the whole folder, so pick a new or empty folder")
    unfinished = (path / RESUME_DIR / STATE_FILE).is_file()
    if resume and not unfinished:
        what = ("a finished run (nothing to resume)" if (path / TRAINING_FILE).is_file()
                else "no checkpoint to resume")
        raise InvalidInputError(
            f"--resume: --out {given!r} holds {what}; drop --resume to start a new run")
    if unfinished and not resume:
        step = "?"
        with contextlib.suppress(Exception):
            step = str(read_training_info(path).get("steps", "?"))
        raise InvalidInputError(
            f"--out {given!r} holds an unfinished run (checkpoint at step {step}); pass "
            "--resume to continue it, or pick another --out (or delete that folder) to start "
            "over")
    return path


# -- atomic directory writes -------------------------------------------------------------------
def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        _fsync(path)
    _fsync(root)


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - e.g. directories on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux's ``renameat2(RENAME_EXCHANGE)``.

    Returns:
        False when the system has no such call or the filesystem refuses it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Put the complete directory ``tmp`` at ``out``; remove what ``out`` held."""
    if not out.exists():
        os.rename(tmp, out)
        return
    if _exchange(tmp, out):
        old = tmp  # now holds the previous checkpoint
    else:
        old = Path(tempfile.mkdtemp(prefix=_hidden(out, _OLD), dir=out.parent))
        os.rmdir(old)
        os.rename(out, old)
        os.rename(tmp, out)
    _fsync(out.parent)
    if _is_ours(old):
        shutil.rmtree(old, ignore_errors=True)
    else:  # someone put other files there meanwhile: never delete them
        logger.warning("the previous contents of %s were moved to %s (they hold files "
                       "prm train did not write)", out, old)


def atomic_write_dir(out: Path, write: Callable[[Path], None],
                     info: Mapping[str, Any]) -> Path:
    """Write a checkpoint directory atomically.

    Args:
        out: the directory to (re)place.
        write: fills a fresh empty directory with every file but ``training.json``.
        info: the content of ``training.json``; the sha256 of every other file is added under
            ``"files"``, and it is written last.

    Returns:
        ``out``.
    """
    parent = out.parent
    tmp = Path(tempfile.mkdtemp(prefix=_hidden(out, _TMP), dir=parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        write(tmp)
        body = dict(info)
        body["files"] = file_digests(tmp)
        part = tmp / ".training.json.part"
        part.write_text(json.dumps(body, indent=2, default=str, allow_nan=False) + "\n",
                        encoding="utf-8")
        _fsync_tree(tmp)
        os.replace(part, tmp / TRAINING_FILE)
        _fsync(tmp)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def save_checkpoint(
    model: Any, tokenizer: Any, fmt: Any, out: str | os.PathLike[str],
    info: dict[str, Any], *, max_length: int = 512, resume: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory that ``prm export`` takes, atomically.

    Files: ``config.json`` + ``model.safetensors`` (transformers), ``tokenizer.json`` +
    ``tokenizer_config.json`` (fast tokenizer), ``prm_format.json`` (``fmt``'s name and
    options) and ``training.json`` (``info`` plus the sha256 of every other file), and with
    ``resume`` (the keyword arguments of :func:`save_resume_state`) ``resume/``. The
    directory is written as a hidden sibling and swapped into place, so ``out`` is always
    either the previous complete checkpoint or this one.
    """
    import copy

    from prm_plugins.training.tokenizer import to_hf_tokenizer

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).to("cpu") if _on_gpu(model) else model

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        to_hf_tokenizer(tokenizer, model_max_length=max_length).save_pretrained(str(tmp))
        (tmp / FORMAT_FILE).write_text(
            json.dumps({"format": fmt.name, "options": fmt.options}, indent=2) + "\n",
            encoding="utf-8")
        if resume is not None:
            save_resume_state(tmp, **resume)

    return atomic_write_dir(out, write, _finite(info))


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _on_gpu(model: Any) -> bool:
    try:
        return next(model.parameters()).device.type != "cpu"
    except StopIteration:  # pragma: no cover
        return False


# -- reading back -------------------------------------------------------------------------------
def read_training_info(out: Path) -> dict[str, Any]:
    """``training.json`` of a checkpoint directory.

    Raises:
        ModelLoadError: it is missing or not a JSON object.
    """
    path = out / TRAINING_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if not isinstance(info, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return info


def verify_checkpoint(out: Path) -> dict[str, Any]:
    """Check every file of a checkpoint against the sha256 ``training.json`` records.

    Returns:
        ``training.json``.

    Raises:
        ModelLoadError: a recorded file is missing or differs, or the record is absent.
    """
    info = read_training_info(out)
    files = info.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelLoadError(f"{out / TRAINING_FILE} records no file digests; it was not "
                             "written by this version of prm train")
    for rel, digest in files.items():
        path = out / rel
        if not path.is_file():
            raise ModelLoadError(f"checkpoint {out} is damaged: {rel} is missing")
        if sha256_file(path) != digest:
            raise ModelLoadError(f"checkpoint {out} is damaged: {rel} does not match the "
                                 f"sha256 recorded in {TRAINING_FILE}")
    return info


def save_resume_state(root: Path, *, weights: Mapping[str, Any],
                      best: Mapping[str, Any] | None, tensors: Mapping[str, Any],
                      state: Mapping[str, Any]) -> None:
    """Write ``root/resume/``: weights, best weights, tensors and JSON state.

    Args:
        root: the (temporary) checkpoint directory.
        weights: the model's current state dict.
        best: the best weights so far when they differ from ``weights``, else None.
        tensors: plain tensors and containers of them (optimizer state dict, RNG states).
        state: JSON-able training state (step, data position, history, ...).
    """
    torch: Any = require("torch", "train")
    st: Any = require("safetensors.torch", "train")
    d = root / RESUME_DIR
    d.mkdir()

    def plain(sd: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}

    st.save_file(plain(weights), str(d / WEIGHTS_FILE))
    if best is not None:
        st.save_file(plain(best), str(d / BEST_FILE))
    torch.save(dict(tensors), str(d / TENSORS_FILE))
    # NaN allowed here (a diverged loss): Python's json reads it back; this file is ours
    (d / STATE_FILE).write_text(json.dumps(dict(state)) + "\n", encoding="utf-8")


def load_resume_state(out: Path) -> dict[str, Any]:
    """Read what :func:`save_resume_state` wrote, after :func:`verify_checkpoint`.

    Returns:
        ``{"info": training.json, "state": ..., "weights": ..., "best": ... or None,
        "tensors": ...}``.

    Raises:
        ModelLoadError: the checkpoint is damaged or unreadable.
    """
    torch: Any = require("torch", "train")
    st: Any = require("safetensors.torch", "train")
    info = verify_checkpoint(out)
    d = out / RESUME_DIR
    try:
        state = json.loads((d / STATE_FILE).read_text(encoding="utf-8"))
        weights = st.load_file(str(d / WEIGHTS_FILE))
        best = st.load_file(str(d / BEST_FILE)) if (d / BEST_FILE).is_file() else None
        # weights_only: plain tensors and containers only, no arbitrary objects unpickled
        tensors = torch.load(str(d / TENSORS_FILE), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means a damaged checkpoint
        raise ModelLoadError(f"cannot read the resume state in {d}: {exc}") from None
    if not isinstance(state, dict) or not isinstance(tensors, dict):
        raise ModelLoadError(f"the resume state in {d} is not what prm train writes")
    return {"info": info, "state": state, "weights": weights, "best": best, "tensors": tensors}
