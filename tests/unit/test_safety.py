"""Safety properties, checked: no network on the scoring path, no pickle, no remote code.

The network test replaces the socket layer with one that raises on any connection or name
lookup, then loads models and scores through every entry point; a hidden call to a hub, a
telemetry endpoint or a DNS lookup fails the test. The source scan reads the project's own
code (AST, not grep) for the calls that load pickles or run remote code.
"""

from __future__ import annotations

import ast
import asyncio
import json
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prm_plugins import load_prm
from prm_plugins.cli import main
from prm_plugins.runtime import default_model_dir

from support.graph_models import make_model_dir
from support.paths import ROOT

SOURCES = [p for d in ("prm_plugins", "onnx_export", "adapters") for p in (ROOT / d).rglob("*.py")]


class NetworkBlocked(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    attempts: list[str] = []

    def refuse(name: str):  # type: ignore[no-untyped-def]
        def _refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
            attempts.append(f"{name}{args[1:2] or args[:1]}")
            raise NetworkBlocked(f"network call on the scoring path: {name}{args!r}")
        return _refuse

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    return attempts


def test_the_blocker_blocks(no_network: list[str]) -> None:
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("example.com", 443), timeout=1)
    assert no_network  # so the tests below would see an attempt


def test_scoring_makes_no_network_call(no_network: list[str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    model = make_model_dir(tmp_path / "m", max_length=64)
    prm = load_prm(model, device="auto")
    prm.score("w1 w2", ["w3", "w4 w5"])
    prm.score_batch([("w1", ["w2"]), ("w3", ["w4", "w5"])])
    asyncio.run(prm.ascore("w1", ["w2"]))
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"question": "w1", "steps": ["w2", "w3"]}) + "\n")
    assert main(["score", str(model), "--input", str(rows), "--output",
                 str(tmp_path / "out.jsonl")]) == 0
    assert main(["info", str(model)]) == 0
    assert no_network == []


@pytest.mark.skipif(not (default_model_dir() / "prm.json").is_file(),
                    reason="the default PRM is not in this checkout")
def test_the_default_prm_loads_and_scores_offline(no_network: list[str]) -> None:
    s = load_prm().score("Tom has 3 apples and buys 2. How many?",
                         ["3 + 2 = 5", "The answer is 5."])
    assert len(s.scores) == 2 and no_network == []


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _kw(call: ast.Call, key: str) -> object:
    for k in call.keywords:
        if k.arg == key:
            return k.value.value if isinstance(k.value, ast.Constant) else "<expr>"
    return None


def _own_loaders() -> set[str]:
    """Classes of the project with their own ``from_pretrained`` (safetensors readers)."""
    return {node.name for path in SOURCES for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ClassDef) and any(
                isinstance(f, ast.FunctionDef) and f.name == "from_pretrained"
                for f in node.body)}


def test_source_loads_no_pickle_and_never_trusts_remote_code() -> None:
    assert len(SOURCES) > 40  # the scan really reads the tree
    own = _own_loaders()
    assert {"QwenPRMForProcessReward", "SkyworkPRMValueModel"} <= own
    problems = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in {"pickle", "dill", "cloudpickle", "joblib"}
                       for n in names):
                    problems.append(f"{where}:{node.lineno} imports a pickle library")
        for call in _calls(tree):
            name = _name(call.func)
            if _kw(call, "trust_remote_code") not in (None, False):
                problems.append(f"{where}:{call.lineno} {name}(trust_remote_code=...)")
            if name == "load" and isinstance(call.func, ast.Attribute) and \
                    getattr(call.func.value, "id", "") == "torch" and \
                    _kw(call, "weights_only") is not True:
                problems.append(f"{where}:{call.lineno} torch.load without weights_only=True")
            if _kw(call, "allow_pickle") not in (None, False):
                problems.append(f"{where}:{call.lineno} {name}(allow_pickle=...)")
            receiver = getattr(getattr(call.func, "value", None), "id", "")
            # A **kwargs dict passes only where the file spells the flag out in it.
            splat_ok = any(k.arg is None for k in call.keywords) and \
                '"local_files_only": True' in text
            if name == "from_pretrained" and receiver not in own and not splat_ok and \
                    _kw(call, "local_files_only") is not True:
                problems.append(f"{where}:{call.lineno} from_pretrained without "
                                "local_files_only=True")
    assert problems == []


# -- hostile step text: one score per step, whatever the text ----------------------------------
_HOSTILE = st.lists(
    st.one_of(
        st.text(min_size=1, max_size=40),
        st.sampled_from(["[SEP]", "[CLS]", "[PAD]", "[UNK]", "[MASK]", " [SEP] [SEP] ", "ки",
                         "<extra_0>", "\n", "Step 2:", "2+2=5", "\u200b", "😀" * 5]),
    ).filter(lambda s: s.strip()),
    min_size=1, max_size=6)


@pytest.mark.skipif(not (default_model_dir() / "prm.json").is_file(),
                    reason="the default PRM is not in this checkout")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(question=st.text(max_size=60), steps=_HOSTILE)
def test_hostile_steps_get_exactly_one_score_each(question: str, steps: list[str]) -> None:
    prm = _default_prm()
    rendered = prm.format.render(question, steps)
    positions = list(rendered.step_positions)
    assert len(positions) == len(steps)
    assert positions == sorted(set(positions))  # distinct, in order: no step merged or dropped
    s = prm.score(question, steps)
    assert len(s.scores) == len(steps) and all(0.0 <= x <= 1.0 for x in s.scores)


_PRM_CACHE: list[object] = []


def _default_prm():  # type: ignore[no-untyped-def]
    if not _PRM_CACHE:
        _PRM_CACHE.append(load_prm(device="cpu"))
    return _PRM_CACHE[0]
