"""The rendering side of a served PRM: a local tokenizer and the project's own format class.

A served scorer renders every chain on the client, exactly as :class:`~prm_plugins.OnnxPRM`
renders it (same format class, options, neutralising, step positions), and sends token ids.
:func:`load_rendering` builds that from either

* an exported model directory (``prm.json`` beside ``tokenizer.json``): its format, format
  options, ``max_length``, recommended checks and calibration are taken from the manifest,
  and ``tokenizer.json`` is read once and checked against its sha256; or
* a Hugging Face checkpoint directory or a ``tokenizer.json`` path, with the format named by
  the caller (``format="qwen-prm"``): its options are derived from the checkpoint's tokenizer
  by the format's own ``options_from_hf`` (what ``prm export`` writes into ``prm.json``,
  e.g. Math-Shepherd's BOS and ``+``/``-`` ids), read from ``tokenizer.json`` and
  ``tokenizer_config.json`` by :class:`CheckpointTokenizer` without transformers; options
  the caller gives win.

Nothing is downloaded: the path must be on disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, ManifestError, ModelLoadError

__all__ = ["CheckpointTokenizer", "Rendering", "load_rendering"]


@dataclass
class Rendering:
    """What a served scorer needs to render chains and post-process their scores.

    Attributes:
        format: the format instance (``render``, ``step_notes``).
        tokenizer: the ``tokenizers.Tokenizer``.
        max_length: longest chain accepted, in tokens (``None``: not checked here).
        checks: step checks applied after the model (see :mod:`prm_plugins.checks`).
        calibration: a :class:`~prm_plugins.calibration.PlattCalibration`, or ``None``.
        source: the path the tokenizer came from.
    """

    format: Any
    tokenizer: Any
    max_length: int | None
    checks: tuple[str, ...]
    calibration: Any
    source: Path


def _token_text(value: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string or ``{"content"}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


class CheckpointTokenizer:
    """What a format's ``options_from_hf`` reads from a transformers tokenizer, without it.

    ``bos_token``, ``bos_token_id``, ``chat_template`` and ``encode(text,
    add_special_tokens=True)``, from the checkpoint's ``tokenizer.json`` and, when it is
    there, ``tokenizer_config.json`` (``bos_token``, ``add_bos_token``, ``chat_template``;
    or ``chat_template.jinja``). ``add_bos_token`` is honoured as transformers' Llama-family
    fast tokenizers honour it (BOS put first, or left out, whatever ``tokenizer.json``'s
    post-processor says).

    Args:
        tokenizer: the ``tokenizers.Tokenizer`` of ``tokenizer.json``.
        folder: the checkpoint directory holding the config files.
    """

    def __init__(self, tokenizer: Any, folder: Path) -> None:
        self._tok = tokenizer
        config: dict[str, Any] = {}
        file = folder / "tokenizer_config.json"
        if file.is_file():
            try:
                loaded = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise ModelLoadError(f"cannot read {file}: {exc}") from exc
            config = loaded if isinstance(loaded, dict) else {}
        self.bos_token = _token_text(config.get("bos_token"))
        found = tokenizer.token_to_id(self.bos_token) if self.bos_token else None
        self.bos_token_id: int | None = None if found is None else int(found)
        add_bos = config.get("add_bos_token")
        self._add_bos = add_bos if isinstance(add_bos, bool) else None
        template = config.get("chat_template")
        jinja = folder / "chat_template.jinja"
        if not isinstance(template, str) and jinja.is_file():
            template = jinja.read_text(encoding="utf-8")
        self.chat_template = template if isinstance(template, str) else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``, as the transformers tokenizer of the checkpoint gives them."""
        ids = list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)
        bos = self.bos_token_id
        if add_special_tokens and bos is not None and self._add_bos is not None:
            has = bool(ids) and ids[0] == bos
            if self._add_bos and not has:
                ids.insert(0, bos)
            elif not self._add_bos and has:
                ids.pop(0)
        return ids


def _tokenizer_from(path: Path) -> tuple[Any, Path]:
    from prm_plugins.runtime.model_files import load_tokenizer

    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise ModelLoadError(
            f"no tokenizer at {str(path)!r}: give a model directory holding tokenizer.json "
            "(an exported prm-plugins model or a Hugging Face checkpoint) or the path of a "
            "tokenizer.json file; nothing is downloaded")
    return load_tokenizer(file.read_bytes(), file), file


def _checks(checks: Sequence[str] | None, recommended: Sequence[str]) -> tuple[str, ...]:
    from prm_plugins.checks import KNOWN_CHECKS

    chosen = recommended if checks is None else checks
    if isinstance(chosen, str) or not all(isinstance(c, str) for c in chosen):
        raise InvalidInputError(
            f"checks must be a list of check names, got {chosen!r}; known: {KNOWN_CHECKS}")
    unknown = [c for c in chosen if c not in KNOWN_CHECKS]
    if unknown:
        raise InvalidInputError(
            f"unknown step check(s) {unknown}; known checks: {', '.join(KNOWN_CHECKS)}")
    return tuple(chosen)


def _from_model_dir(model_dir: Path, format: str | None,
                    format_options: Mapping[str, Any] | None) -> tuple[Any, Any, Any, Path]:
    """``(manifest, tokenizer, format options, tokenizer path)`` of an exported directory."""
    from prm_plugins.manifest import Manifest, read_verified
    from prm_plugins.runtime.model_files import check_token_ids, load_tokenizer

    manifest = Manifest.read(model_dir)
    if format is not None and format != manifest.format:
        raise InvalidInputError(
            f"format={format!r}, but {model_dir / 'prm.json'} says the model's format is "
            f"{manifest.format!r}; leave format out to use the model's own")
    data = read_verified(model_dir, manifest, manifest.tokenizer_file, verify=True)
    tok_path = model_dir / manifest.tokenizer_file
    tokenizer = load_tokenizer(data, tok_path)
    check_token_ids(tokenizer, manifest, model_dir)
    options = {**manifest.format_options, **dict(format_options or {})}
    return manifest, tokenizer, options, tok_path


def load_rendering(
    tokenizer: str | os.PathLike[str],
    *,
    format: str | None = None,
    format_options: Mapping[str, Any] | None = None,
    max_length: int | None = None,
    checks: Sequence[str] | None = None,
    calibrate: bool = True,
) -> Rendering:
    """Build the format for a served PRM from a local tokenizer (rules: module docs).

    Args:
        tokenizer: an exported model directory, a checkpoint directory with
            ``tokenizer.json``, or a ``tokenizer.json`` path.
        format: the PRM format name (``"qwen-prm"``, ``"math-shepherd"``, ...); required
            unless ``tokenizer`` is an exported model directory (whose ``prm.json`` names it).
        format_options: format options over the manifest's (or the format's defaults).
        max_length: longest chain in tokens; ``None`` takes the manifest's, if any.
        checks: step checks; ``None`` takes the manifest's recommended ones (or none).
        calibrate: apply the manifest's Platt calibration, if it has one.

    Raises:
        ModelLoadError: no tokenizer at the path (or a file that fails its sha256).
        InvalidInputError: no format named, an unknown check, options that do not fit.
        UnknownFormatError: no such format.
    """
    from prm_plugins.formats import get_format

    path = Path(tokenizer)
    manifest = None
    if path.is_dir() and (path / "prm.json").is_file():
        manifest, tok, options, tok_path = _from_model_dir(path, format, format_options)
        format = manifest.format
        if max_length is None:
            max_length = int(manifest.max_length)
    else:
        if format is None:
            raise InvalidInputError(
                f"{str(path)!r} is not an exported prm-plugins model (no prm.json), so name "
                "the PRM's format: format='qwen-prm', 'math-shepherd', ... (see "
                "prm_plugins.formats.available_formats())")
        tok, tok_path = _tokenizer_from(path)
        options = get_format(format).options_from_hf(CheckpointTokenizer(tok, tok_path.parent),
                                                     **dict(format_options or {}))
    check = max_length if max_length is None else int(max_length)
    if check is not None and (isinstance(max_length, bool) or check < 1):
        raise InvalidInputError(f"max_length must be an int >= 1 or None, got {max_length!r}")
    fmt = get_format(format)(tok, options)
    extra = manifest.extra if manifest is not None else {}
    calibration = None
    if calibrate and "calibration" in extra:
        from prm_plugins.calibration import PlattCalibration

        try:
            calibration = PlattCalibration.from_manifest(extra["calibration"])
        except InvalidInputError as exc:
            raise ManifestError(f"{path / 'prm.json'}: {exc}") from exc
    return Rendering(format=fmt, tokenizer=tok, max_length=check,
                     checks=_checks(checks, extra.get("checks", [])),
                     calibration=calibration, source=tok_path)
