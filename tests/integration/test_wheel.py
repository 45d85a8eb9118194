"""The built wheel holds every package of the source tree, and each imports from the wheel.

``pyproject.toml`` lists the packages by hand (``adapters/`` and ``onnx_export/`` are mapped
into the ``prm_plugins`` namespace, which automatic discovery does not do), so a new
subpackage left off the list would install as a broken import for users while every test
run from the checkout passes. This test builds the wheel as pip does for a user, installs
it into a scratch folder and imports every package from there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support.paths import ROOT

#: source folder -> the import name it is installed under (pyproject's package-dir).
_ROOTS = {"prm_plugins": "prm_plugins", "adapters": "prm_plugins.adapters",
          "onnx_export": "prm_plugins.onnx_export"}


def _source_packages() -> set[str]:
    found = set()
    for folder, name in _ROOTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A clean copy: setuptools reuses build/lib of an earlier build, which would hide a
    # package missing from the list.
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "runs", "data",
        ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", ".ort*"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (whl,) = out.glob("prm_plugins-*.whl")
    return whl


def test_the_wheel_holds_every_source_package_and_the_default_model(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = {str(Path(n).parent).replace("/", ".") for n in names
                if n.endswith("/__init__.py")}
    assert _source_packages() - in_wheel == set(), "add them to pyproject's packages list"
    for needed in ("prm_plugins/models/default/model.onnx", "prm_plugins/py.typed",
                   "prm_plugins/models/default/prm.json"):
        assert needed in names


def test_every_package_imports_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
         str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    packages = sorted(_source_packages())
    code = (
        "import importlib, json, sys\n"
        f"names = {packages!r}\n"
        "files = {n: importlib.import_module(n).__file__ for n in names}\n"
        "print(json.dumps(files))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = json.loads(proc.stdout.strip().splitlines()[-1])
    outside = {n: f for n, f in files.items() if not str(f).startswith(str(target))}
    assert outside == {}, "imported from the checkout, not the wheel"
