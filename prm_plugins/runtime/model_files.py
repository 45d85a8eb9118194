"""A model directory's files, read once and verified: graph, external data, tokenizer.

Each file the model reads is read once, its sha256 checked on those very bytes
(:func:`prm_plugins.manifest.read_verified`), and the session and tokenizer are built from the
returned bytes, never from the path again: a file swapped after the check is never used. A
graph whose external data ``prm.json`` does not list is refused (its hash could not be
checked). Token ids the manifest names are then checked against the real vocabulary.

Imports ``tokenizers`` only inside :func:`load_tokenizer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prm_plugins.errors import ManifestError, ModelLoadError
from prm_plugins.manifest import (
    MANIFEST_NAME,
    Manifest,
    external_data_files,
    normalise_location,
    read_verified,
    verify_files,
)

__all__ = ["ModelFiles", "check_token_ids", "find_pad_id", "load_tokenizer", "read_model_files"]

#: Tried in order when the manifest names no ``extra.pad_token_id``.
_PAD_TOKENS = ("<pad>", "[PAD]", "<|endoftext|>", "<|finetune_right_pad_id|>")


@dataclass
class ModelFiles:
    """The verified contents of the files a model reads.

    Attributes:
        graph: the ONNX graph (``bytes``, or a read-only ``mmap`` past
            :data:`prm_plugins.manifest.MMAP_THRESHOLD`).
        external: external-data location (as written in the graph) -> its contents.
        tokenizer: ``tokenizer.json``.
    """

    graph: Any
    external: dict[str, Any]
    tokenizer: Any


def read_model_files(model_dir: Path, manifest: Manifest, *, verify: bool) -> ModelFiles:
    """Read the graph, its external data and the tokenizer once, and check every other file.

    Args:
        model_dir: the model directory.
        manifest: its manifest.
        verify: check sha256s (files that are symlinks out of the directory are refused
            either way).

    Raises:
        ModelLoadError: a missing or unlisted file, external data outside the directory.
        ModelIntegrityError: a file whose bytes do not match its sha256.
    """
    graph = read_verified(model_dir, manifest, manifest.model_file, verify=verify)
    external = read_external_data(model_dir, manifest, graph, verify=verify)
    tokenizer = read_verified(model_dir, manifest, manifest.tokenizer_file, verify=verify)
    if verify:
        verify_files(model_dir, manifest,
                     skip={manifest.model_file, manifest.tokenizer_file, *external})
    return ModelFiles(graph, external, tokenizer)


def read_external_data(model_dir: Path, manifest: Manifest, graph: Any, *,
                       verify: bool) -> dict[str, Any]:
    """Location -> verified contents of every external-data file the graph reads.

    Raises:
        ModelLoadError: a location outside the directory, or (with ``verify``) one that
            ``prm.json`` does not list, so its hash could not be checked.
    """
    model_path = model_dir / manifest.model_file
    external: dict[str, Any] = {}
    for location in sorted(external_data_files(graph)):
        name = normalise_location(location)
        listed = name in manifest.files
        if verify and not listed:
            raise ModelLoadError(
                f"{model_path} reads external data file {location!r}, which is not "
                f"listed in {model_dir / MANIFEST_NAME} 'files': its sha256 cannot be "
                "checked, so it could be replaced unseen. Re-export the model (prm export "
                "hashes every file), or add the file's sha256 to 'files'"
            )
        try:
            external[location] = read_verified(model_dir, manifest, name, verify=verify)
        except ModelLoadError as exc:
            if type(exc) is not ModelLoadError:
                raise
            raise ModelLoadError(
                f"{model_path} reads external data from {location!r}: {exc}"
            ) from exc
    return external


def load_tokenizer(data: Any, path: Path) -> Any:
    """A ``tokenizers.Tokenizer`` from the verified bytes, never truncating or padding.

    Args:
        data: the contents of ``tokenizer.json``.
        path: its path, named in the error.

    Raises:
        ModelLoadError: the bytes are not a tokenizer.
    """
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_str(bytes(data).decode("utf-8"))
    except Exception as exc:
        raise ModelLoadError(f"cannot read tokenizer {path}: {exc}") from exc
    tok.no_truncation()  # never truncate silently; length is checked by the scorer
    tok.no_padding()
    return tok


def check_token_ids(tokenizer: Any, manifest: Manifest, model_dir: Path) -> None:
    """Token ids written in ``prm.json`` must exist in the tokenizer's vocabulary.

    Raises:
        ManifestError: a ``format_options.*token_id`` or ``extra.pad_token_id`` past the
            vocabulary.
    """
    vocab = int(tokenizer.get_vocab_size(with_added_tokens=True))
    named = [(f"format_options.{k}", v) for k, v in manifest.format_options.items()
             if k.endswith("token_id")]
    named.append(("extra.pad_token_id", manifest.extra.get("pad_token_id")))
    bad = [f"{field} is {value!r}" for field, value in named
           if value is not None and not 0 <= value < vocab]
    if bad:
        raise ManifestError(
            f"{model_dir / MANIFEST_NAME}: {'; '.join(bad)}, outside the tokenizer's "
            f"vocabulary of {vocab} ids (0..{vocab - 1}); fix the id(s) in prm.json or "
            "re-export the model"
        )


def find_pad_id(tokenizer: Any, manifest: Manifest) -> int:
    """The id padding is filled with: the manifest's ``extra.pad_token_id``, a known pad token,
    or 0 (padding is masked out anyway)."""
    pad = manifest.extra.get("pad_token_id")
    if isinstance(pad, int):
        return pad
    for name in _PAD_TOKENS:
        tid = tokenizer.token_to_id(name)
        if tid is not None:
            return int(tid)
    return 0
