"""The published chat families are registered under their names (one case per family).

The per-family files (``tests/integration/test_format_*.py``) test rendering and scores
against each family's upstream code; what is the same test for every family lives here.
"""

from __future__ import annotations

import pytest

from prm_plugins.formats import get_format
from prm_plugins.formats.qwen_prm import QwenPRMFormat
from prm_plugins.formats.rlhflow import RLHFlowFormat
from prm_plugins.formats.skywork import SkyworkFormat


@pytest.mark.parametrize(("name", "cls"), [
    ("qwen-prm", QwenPRMFormat),
    ("rlhflow", RLHFlowFormat),
    ("skywork", SkyworkFormat),
], ids=["qwen-prm", "rlhflow", "skywork"])
def test_registered(name: str, cls: type) -> None:
    assert get_format(name) is cls
