"""Errors raised by prm-plugins.

Every error says what was wrong, what was received, and how to fix it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PRMError",
    "InvalidInputError",
    "ChainTooLongError",
    "ModelLoadError",
    "ModelIntegrityError",
    "ManifestVersionError",
    "ManifestError",
    "ModelOutputError",
    "UnknownFormatError",
    "ParityError",
    "MissingExtraError",
]


class PRMError(Exception):
    """Base class of every error prm-plugins raises on purpose."""


class InvalidInputError(PRMError, ValueError):
    """A question or a step list is not what the scorer accepts."""


class ChainTooLongError(PRMError, ValueError):
    """A rendered chain is longer than the model's ``max_length``.

    Attributes:
        n_tokens: length of the rendered chain in tokens.
        max_length: the model's limit.
    """

    def __init__(self, message: str, *, n_tokens: int, max_length: int) -> None:
        super().__init__(message)
        self.n_tokens = n_tokens
        self.max_length = max_length


class ModelLoadError(PRMError, OSError):
    """A model directory is missing files or cannot be read."""


class ModelIntegrityError(ModelLoadError):
    """A model file's sha256 does not match the one written in ``prm.json``."""


class ManifestVersionError(ModelLoadError):
    """``prm.json`` was written by a newer, incompatible manifest version."""


class ManifestError(ModelLoadError):
    """``prm.json`` holds a field of the wrong type or value (the message names each one)."""


class ModelOutputError(PRMError, RuntimeError):
    """The graph's ``step_probs`` broke the contract on a run: wrong shape, rank or dtype,
    NaN or infinite values, or probabilities outside [0, 1]; the message names the model."""


class UnknownFormatError(PRMError, KeyError):
    """No PRM format is registered under the requested name."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0]) if self.args else ""


class ParityError(PRMError, RuntimeError):
    """The exported graph does not match the source model within tolerance."""


class MissingExtraError(PRMError, ImportError):
    """An optional dependency is missing; the message names the pip extra."""


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra.

    Args:
        module: importable module name, e.g. ``"torch"``.
        extra: the prm-plugins extra that installs it, e.g. ``"export"``.

    Returns:
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError(
            f"{module!r} is not installed; it is needed here. "
            f'Install it with: pip install "prm-plugins[{extra}]"'
        ) from exc
