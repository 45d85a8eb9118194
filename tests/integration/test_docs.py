"""Every Python block in README.md and docs/*.md runs as pasted, and every relative link resolves.

The rule for documentation blocks (say it once, here):

* Every fenced block whose info string is ``python`` (or ``py``) is run on its own, as a
  reader would paste it into a fresh file: a new module namespace, the working directory a
  fresh temporary folder, the network closed (connecting a socket raises). A block must be
  complete: its own imports, its own data; nothing carries over from the block before it.
* A block that cannot run offline on a CPU (it needs a published checkpoint, a GPU, a Ray
  cluster or a network server) is marked by an HTML comment on the line right above its
  fence, with the reason: ``<!-- no-run: needs a GPU -->``. The test reports it as skipped
  with that reason (``pytest -rs`` lists them).
* A block that takes more than a few seconds is marked ``<!-- slow: why -->`` and runs
  only with ``-m slow``.

Other fences (``bash``, ``text``, ...) are not run.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.paths import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_INFO = {"python", "py", "python3"}
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>no-run|slow)\s*:\s*(?P<reason>.*?)\s*-->\s*$")
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a page."""

    page: str
    line: int  # 1-based line of the opening fence
    source: str
    no_run: str | None = None
    slow: str | None = None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def extract_blocks(text: str, page: str) -> list[Block]:
    """The fenced ``python`` blocks of a Markdown text, with the marker right above each.

    Raises:
        ValueError: a fence is never closed, a marker has no reason, or a marker is not
            directly above a Python fence (so a typo cannot silently skip or run a block).
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            marker = MARKER.match(lines[i])
            if marker:
                nxt = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
                info = nxt.group("info").strip().split() if nxt else []
                if not info or info[0] not in PYTHON_INFO:
                    raise ValueError(f"{page}:{i + 1}: a <!-- {marker.group('kind')}: ... --> "
                                     "marker must be on the line right above a ```python fence")
                if not marker.group("reason"):
                    raise ValueError(f"{page}:{i + 1}: the marker gives no reason")
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").strip().split()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{page}:{start + 1}: the fence opened here is never closed")
        i += 1
        if not info or info[0] not in PYTHON_INFO:
            continue
        marker = MARKER.match(lines[start - 1]) if start > 0 else None
        kinds = {marker.group("kind"): marker.group("reason")} if marker else {}
        indent = len(m.group("indent"))
        blocks.append(Block(page, start + 1, "\n".join(b[indent:] for b in body) + "\n",
                            no_run=kinds.get("no-run"), slow=kinds.get("slow")))
    return blocks


def _all_blocks() -> list[Block]:
    blocks: list[Block] = []
    for path in PAGES:
        blocks += extract_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    return blocks


BLOCKS = _all_blocks()


def _params() -> list[Any]:
    params = []
    for b in BLOCKS:
        marks = [pytest.mark.slow] if b.slow else []
        params.append(pytest.param(b, id=b.id, marks=marks))
    return params


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: Any) -> None:
        if self.family == getattr(socket, "AF_UNIX", None):
            return _connect(self, address)
        raise OSError(f"documentation blocks run offline; a block tried to connect to {address}")

    _connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)


def run_block(block: Block) -> dict[str, Any]:
    """Run one block as a fresh module; returns its namespace (errors propagate)."""
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": f"<{block.id}>"}
    exec(compile(block.source, f"<{block.id}>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("block", _params())
def test_python_block_runs_as_pasted(
    block: Block, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if block.no_run is not None:
        pytest.skip(f"{block.id} is marked no-run: {block.no_run}")
    monkeypatch.chdir(tmp_path)
    _offline(monkeypatch)
    run_block(block)


def test_the_pages_hold_runnable_blocks() -> None:
    """Guards the extractor itself: a README without runnable blocks means it broke."""
    readme = [b for b in BLOCKS if b.page == "README.md"]
    assert len([b for b in readme if b.no_run is None]) >= 3, [b.id for b in readme]
    assert (ROOT / "docs").is_dir() and len(PAGES) > 1


def test_extractor_reads_fences_and_markers() -> None:
    text = "\n".join([
        "intro", "```python", "a = 1", "```", "",
        "<!-- no-run: needs a GPU -->", "```python", "b = 2", "```",
        "```bash", "echo no", "```",
        "<!-- slow: trains a model -->", "```py", "c = 3", "```",
        "- item", "  ```python", "  d = 4", "  ```",
    ])
    blocks = extract_blocks(text, "page.md")
    assert [(b.line, b.source, b.no_run, b.slow) for b in blocks] == [
        (2, "a = 1\n", None, None),
        (7, "b = 2\n", "needs a GPU", None),
        (14, "c = 3\n", None, "trains a model"),
        (18, "d = 4\n", None, None),
    ]
    with pytest.raises(ValueError, match="never closed"):
        extract_blocks("```python\nx = 1\n", "p.md")
    with pytest.raises(ValueError, match="right above"):
        extract_blocks("<!-- no-run: GPU -->\n\n```python\nx = 1\n```\n", "p.md")
    with pytest.raises(ValueError, match="no reason"):
        extract_blocks("<!-- no-run: -->\n```python\nx = 1\n```\n", "p.md")


def test_a_failing_block_fails() -> None:
    with pytest.raises(ZeroDivisionError):
        run_block(Block("p.md", 1, "x = 1 / 0\n"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    missing = []
    for m in LINK.finditer(page.read_text(encoding="utf-8")):
        target = m.group("target").split("#", 1)[0]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # an anchor on the same page, or a URL
        if not (page.parent / target).exists():
            missing.append(target)
    assert not missing, f"{page.name} links to files that do not exist: {missing}"
