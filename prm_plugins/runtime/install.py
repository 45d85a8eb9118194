"""Checks on how ONNX Runtime is installed: two runtime distributions in one environment.

``onnxruntime`` and ``onnxruntime-gpu`` (and the other builds: DirectML, OpenVINO, ROCm, QNN)
all install the same ``onnxruntime`` import folder. With two of them in one environment the
files of the one installed last overwrite the other's, and uninstalling either leaves a broken
folder: the CUDA provider can go missing without an error, or ``import onnxruntime`` can fail.
This happens when ``pip install prm-plugins`` (which asks for ``onnxruntime-gpu`` on Linux and
Windows x86-64) runs in an environment that already holds ``onnxruntime``.

:func:`check_onnxruntime_install` warns about it, once per process; the scorer calls it when it
creates a session. Only package metadata is read (no import of onnxruntime).

Examples:
    >>> from prm_plugins.runtime.install import onnxruntime_distributions
    >>> sorted(onnxruntime_distributions())  # doctest: +SKIP
    ['onnxruntime-gpu']
"""

from __future__ import annotations

import importlib.metadata
import logging
import warnings

__all__ = [
    "ONNXRUNTIME_DISTRIBUTIONS",
    "OnnxRuntimeInstallWarning",
    "check_onnxruntime_install",
    "onnxruntime_distributions",
]

logger = logging.getLogger(__name__)

#: The distributions that each install the ``onnxruntime`` import folder.
ONNXRUNTIME_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-rocm",
    "onnxruntime-qnn",
)

_warned = False


class OnnxRuntimeInstallWarning(RuntimeWarning):
    """More than one ONNX Runtime distribution is installed in this environment."""


def onnxruntime_distributions() -> dict[str, str]:
    """The ONNX Runtime distributions installed in this environment.

    Returns:
        Distribution name -> installed version, for each of :data:`ONNXRUNTIME_DISTRIBUTIONS`
        that is installed (normally exactly one).
    """
    found: dict[str, str] = {}
    for name in ONNXRUNTIME_DISTRIBUTIONS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found[name] = dist.version
    return found


def check_onnxruntime_install() -> list[str]:
    """Warn (once per process) when more than one ONNX Runtime distribution is installed.

    Returns:
        The installed ONNX Runtime distributions when there are several (in
        :data:`ONNXRUNTIME_DISTRIBUTIONS` order), else an empty list.

    Warns:
        OnnxRuntimeInstallWarning: the first time several are found; the message names them
            with their versions and gives the commands that leave one.
    """
    global _warned
    found = onnxruntime_distributions()
    if len(found) < 2:
        return []
    if not _warned:
        _warned = True
        listed = ", ".join(f"{name} {version}" for name, version in found.items())
        message = (
            f"several ONNX Runtime distributions are installed in this environment ({listed}); "
            "they share one 'onnxruntime' folder, so the one installed last has overwritten the "
            "other and the CUDA provider may be missing or broken. Keep one: "
            f"pip uninstall -y {' '.join(found)} && pip install onnxruntime-gpu "
            "(Linux and Windows x86-64; elsewhere: pip install onnxruntime)"
        )
        logger.warning(message)
        warnings.warn(message, OnnxRuntimeInstallWarning, stacklevel=2)
    return list(found)
