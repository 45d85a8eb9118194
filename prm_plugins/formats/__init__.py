"""PRM formats: one module per PRM family, registered under ``prm_plugins.formats``.

A third party adds a family by shipping a :class:`PRMFormat` subclass and declaring it in
its own package metadata::

    [project.entry-points."prm_plugins.formats"]
    my-family = "my_pkg.my_format:MyFormat"
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from prm_plugins.errors import UnknownFormatError
from prm_plugins.formats.base import PRMFormat, Rendered, break_token

__all__ = ["PRMFormat", "Rendered", "available_formats", "break_token", "get_format"]

ENTRY_POINT_GROUP = "prm_plugins.formats"

# Built-in families, so a source checkout works before `pip install` writes entry points.
_BUILTIN: dict[str, str] = {
    "token-classification": "prm_plugins.formats.token_classification:TokenClassificationFormat",
    "qwen-prm": "prm_plugins.formats.qwen_prm:QwenPRMFormat",
    "math-shepherd": "prm_plugins.formats.math_shepherd:MathShepherdFormat",
    "rlhflow": "prm_plugins.formats.rlhflow:RLHFlowFormat",
    "skywork": "prm_plugins.formats.skywork:SkyworkFormat",
}


def _targets() -> dict[str, str]:
    targets = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        targets.setdefault(ep.name, ep.value)
    return targets


def available_formats() -> list[str]:
    """Names of every registered format (built-in and installed plugins)."""
    return sorted(_targets())


def get_format(name: str) -> type[PRMFormat]:
    """The format class registered under ``name``.

    Raises:
        UnknownFormatError: no such format; the message lists the known ones.
    """
    targets = _targets()
    if name not in targets:
        raise UnknownFormatError(
            f"unknown PRM format {name!r}; known formats: {', '.join(sorted(targets))}. "
            f"Third-party formats register under the entry-point group {ENTRY_POINT_GROUP!r}"
        )
    module_name, _, attr = targets[name].partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, PRMFormat)):
        raise UnknownFormatError(f"{targets[name]!r} registered as {name!r} is not a PRMFormat")
    return cls
