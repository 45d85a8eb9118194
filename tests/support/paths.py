"""Where things are: the repository root and the tests folder, for every test that needs a path.

Tests live one or two folders down (``tests/unit/``, ``tests/integration/``); computing the root
here, once, keeps them free of ``Path(__file__).parents[n]`` arithmetic that breaks on a move.
"""

from __future__ import annotations

from pathlib import Path

#: ``tests/`` (the folder that holds ``conftest.py`` and ``support/``).
TESTS: Path = Path(__file__).resolve().parents[1]

#: The repository root (holds ``pyproject.toml``, ``prm_plugins/``, ``examples/``).
ROOT: Path = TESTS.parent
