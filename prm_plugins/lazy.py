"""Lazy exports for package ``__init__`` modules, and one-release aliases for moved names.

The one mechanism every prm-plugins module uses for a name it exports without importing it
at import time (:pep:`562` module ``__getattr__``/``__dir__``):

- a *lazy export* keeps an import cheap: ``import prm_plugins`` must load no onnxruntime,
  so :class:`~prm_plugins.runtime.OnnxPRM` is imported on first use; an adapter package
  imports the part that needs a further package (LangChain's agent middleware needs
  ``langchain``, not only ``langchain-core``) only when that part is asked for;
- a *moved name* is a name that now lives elsewhere: the old path keeps working for one
  release and warns with :class:`FutureWarning` on each use.

Type checkers do not run ``__getattr__``: import the lazy names under
``if TYPE_CHECKING:`` as well, so that they see each one's real type.

Examples:
    >>> from typing import TYPE_CHECKING
    >>> from prm_plugins.lazy import lazy_exports
    >>> if TYPE_CHECKING:  # doctest: +SKIP
    ...     from prm_plugins.runtime import OnnxPRM
    >>> __getattr__, __dir__ = lazy_exports(  # doctest: +SKIP
    ...     __name__, {"OnnxPRM": "prm_plugins.runtime"},
    ...     moved={"old_name": "prm_plugins.experimental.training"})
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports", "moved_warning"]


def moved_warning(old_path: str, new_module: str) -> str:
    """The text of the :class:`FutureWarning` for a name or module that moved.

    Args:
        old_path: the old dotted path, e.g. ``"prm_plugins.checks.unused_quantities"``.
        new_module: the module that holds it now, e.g. ``"prm_plugins.experimental.coverage"``.

    Returns:
        E.g. ``prm_plugins.checks.unused_quantities moved to prm_plugins.experimental.coverage;
        import it from there. The old path goes in the next release``.
    """
    return (f"{old_path} moved to {new_module}; import it from there. "
            "The old path goes in the next release")


def lazy_exports(
    module_name: str,
    exports: Mapping[str, str],
    *,
    moved: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` that import ``exports`` on first use.

    Assign the pair at module level: ``__getattr__, __dir__ = lazy_exports(__name__, {...})``.

    Args:
        module_name: the module's ``__name__``.
        exports: public name -> the module that defines it (absolute dotted path). The name is
            imported on first access, then kept in the module's namespace (later lookups cost
            nothing).
        moved: old name -> the module that holds it now. Each access warns with
            :class:`FutureWarning` (:func:`moved_warning`) and returns the name from its new
            module; moved names are left out of ``dir()``.

    Returns:
        ``(__getattr__, __dir__)`` for the module.

    Raises:
        ValueError: if a name is both in ``exports`` and in ``moved``.
    """
    lazy = dict(exports)
    old = dict(moved or {})
    both = sorted(set(lazy) & set(old))
    if both:
        raise ValueError(f"{module_name}: {', '.join(both)} both exported and moved; "
                         "list each name once")

    def __getattr__(name: str) -> Any:
        if name in lazy:
            value = getattr(importlib.import_module(lazy[name]), name)
            sys.modules[module_name].__dict__[name] = value
            return value
        if name in old:
            warnings.warn(moved_warning(f"{module_name}.{name}", old[name]), FutureWarning,
                          stacklevel=2)
            return getattr(importlib.import_module(old[name]), name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(sys.modules[module_name].__dict__) | set(lazy))

    return __getattr__, __dir__
