"""``python -m prm_plugins.cli``: the ``prm`` command."""

from __future__ import annotations

import sys

from prm_plugins.cli import main

if __name__ == "__main__":
    sys.exit(main())
