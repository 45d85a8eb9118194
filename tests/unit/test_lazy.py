"""``prm_plugins.lazy``: lazy exports and one-release aliases for moved names (PEP 562).

Each test builds a host module (a plain :class:`types.ModuleType` registered in
``sys.modules``, as a package ``__init__`` is) whose ``__getattr__``/``__dir__`` come from
:func:`~prm_plugins.lazy.lazy_exports`, and points it at a real module file written to
``tmp_path``, so "imported on first access" is observed in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from prm_plugins.lazy import lazy_exports, moved_warning

HOST = "lazy_test_host"
TARGET = "lazy_test_target"


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """A module exporting ``Fast`` lazily and ``old_helper`` as moved, both from TARGET."""
    (tmp_path / f"{TARGET}.py").write_text(
        "class Fast:\n    pass\n\n\ndef old_helper():\n    return 'new home'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, TARGET, raising=False)
    module = types.ModuleType(HOST)
    module.eager = 1  # type: ignore[attr-defined]
    module.__getattr__, module.__dir__ = lazy_exports(  # type: ignore[method-assign]
        HOST, {"Fast": TARGET}, moved={"old_helper": TARGET})
    monkeypatch.setitem(sys.modules, HOST, module)
    yield module
    sys.modules.pop(TARGET, None)


def test_a_lazy_name_is_imported_on_first_access_and_then_cached(
        host: types.ModuleType) -> None:
    assert TARGET not in sys.modules  # defining the exports imported nothing
    assert "Fast" in dir(host) and "Fast" not in vars(host)
    value = host.Fast
    assert TARGET in sys.modules and value is sys.modules[TARGET].Fast
    assert vars(host)["Fast"] is value  # kept in the module: __getattr__ is not asked again
    sys.modules[TARGET].Fast = object()  # so a second lookup that re-imported would differ
    assert host.Fast is value
    from lazy_test_host import Fast  # type: ignore[import-not-found]

    assert Fast is value
    assert dir(host) == sorted(dir(host)) and "eager" in dir(host)


def test_a_moved_name_warns_on_every_access_from_the_callers_file(
        host: types.ModuleType) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = host.old_helper
        second = host.old_helper
    assert first is second is sys.modules[TARGET].old_helper and first() == "new home"
    assert [w.category for w in caught] == [FutureWarning, FutureWarning]
    assert [str(w.message) for w in caught] == [moved_warning(f"{HOST}.old_helper", TARGET)] * 2
    assert str(caught[0].message) == (f"{HOST}.old_helper moved to {TARGET}; import it from "
                                      "there. The old path goes in the next release")
    assert {Path(w.filename) for w in caught} == {Path(__file__)}  # the caller, not lazy.py
    assert "old_helper" not in vars(host)  # never cached, so the next access warns again
    assert "old_helper" not in dir(host) and "Fast" in dir(host)


def test_a_moved_name_warns_under_the_default_filters_too(host: types.ModuleType) -> None:
    with pytest.warns(FutureWarning, match=rf"{HOST}\.old_helper moved to {TARGET}"):
        host.old_helper  # noqa: B018 - the access is the test


def test_a_name_both_exported_and_moved_is_refused() -> None:
    with pytest.raises(ValueError, match=f"^{HOST}: Fast, Slow both exported and moved; list "
                                         "each name once$"):
        lazy_exports(HOST, {"Fast": TARGET, "Slow": TARGET, "Other": TARGET},
                     moved={"Slow": TARGET, "Fast": TARGET})


def test_an_unknown_name_is_the_standard_attribute_error(host: types.ModuleType) -> None:
    plain = types.ModuleType(HOST)
    with pytest.raises(AttributeError) as standard:
        plain.nope  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError) as lazy:
        host.nope  # noqa: B018
    assert str(lazy.value) == str(standard.value) == f"module {HOST!r} has no attribute 'nope'"
    assert not hasattr(host, "nope") and getattr(host, "nope", 7) == 7
    assert TARGET not in sys.modules  # an unknown name imports nothing


HEAVY = ["onnxruntime", "torch", "transformers", "numpy", "tokenizers"]


def test_import_prm_plugins_loads_no_heavy_package_until_a_lazy_name_is_used() -> None:
    code = (
        "import json, sys, prm_plugins\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "lazy = [m for m in ('prm_plugins.runtime', 'prm_plugins.backends.vllm')"
        " if m in sys.modules]\n"
        "prm_plugins.OnnxPRM\n"
        "print(json.dumps([heavy, lazy, 'prm_plugins.runtime' in sys.modules,"
        " 'OnnxPRM' in vars(prm_plugins)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    heavy, lazy, loaded, cached = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == [] and lazy == []
    assert loaded and cached
