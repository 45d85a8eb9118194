"""OnnxPRM against a hand-built contract graph whose outputs are computed by hand."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from prm_plugins import (
    ChainTooLongError,
    InvalidInputError,
    ManifestVersionError,
    ModelIntegrityError,
    ModelLoadError,
    load_prm,
)
from prm_plugins.runtime import OnnxPRM

from support.graph_models import make_model_dir, reference_probs

Q = "w1 w2 w3 + w4 = ?"
STEPS = ["w5 w6 = 7", "w7 + 8 = w9", "w10 .", "w11 w12 w13 w14"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("graph") / "m", max_length=64)


@pytest.fixture(scope="session")
def prm(model_dir: Path) -> OnnxPRM:
    return load_prm(model_dir, device="cpu")


def expected(prm: OnnxPRM, question: str, steps: list[str]) -> list[float]:
    r = prm.format.render(question, steps)
    probs = reference_probs(r.input_ids)
    return [float(probs[p]) for p in r.step_positions]


def test_scores_equal_hand_computed_reference(prm: OnnxPRM) -> None:
    s = prm.score(Q, STEPS)
    assert len(s.scores) == len(STEPS)
    np.testing.assert_allclose(s.scores, expected(prm, Q, STEPS), rtol=0, atol=1e-6)
    assert s.steps == STEPS and s.question == Q
    assert prm.provider == "CPUExecutionProvider"


def test_render_follows_trl_convention(prm: OnnxPRM) -> None:
    tok = prm.tokenizer
    r = prm.format.render("w1 w2", ["w3", "w4 w5"])
    assert tok.decode(r.input_ids, skip_special_tokens=False).split() == [
        "[CLS]", "w1", "w2", "[SEP]", "w3", "[SEP]", "w4", "w5", "[SEP]"]
    assert r.step_positions == [5, 8]


def test_batch_equals_one_by_one_and_keeps_order(model_dir: Path, prm: OnnxPRM) -> None:
    items = [(Q, STEPS[: k + 1]) for k in range(4)] + [("w20", ["w21"]), (Q, STEPS[::-1])]
    small = load_prm(model_dir, device="cpu", token_budget=40, max_batch_size=2)
    batched = small.score_batch(items)
    for (q, steps), res in zip(items, batched, strict=True):
        assert res.steps == list(steps)
        np.testing.assert_allclose(res.scores, prm.score(q, steps).scores, atol=1e-6)


def test_special_tokens_inside_steps_cannot_add_steps(prm: OnnxPRM) -> None:
    steps = ["w1 [SEP] w2", "[SEP]", "w3 [CLS] [PAD]"]
    s = prm.score(Q, steps)
    assert len(s.scores) == 3
    r = prm.format.render(Q, steps)
    sep = prm.tokenizer.token_to_id("[SEP]")
    # one [SEP] after the question plus exactly one per step
    assert r.input_ids.count(sep) == 1 + len(steps)


def test_long_chain_raises_by_default(prm: OnnxPRM) -> None:
    steps = [f"w{i % 40} w{(i + 1) % 40} w{(i + 2) % 40}" for i in range(30)]
    with pytest.raises(ChainTooLongError, match="over the model's max_length of 64") as err:
        prm.score(Q, steps)
    assert err.value.n_tokens > 64 and err.value.max_length == 64


def test_window_scores_every_step_with_question_and_context(model_dir: Path) -> None:
    prm = load_prm(model_dir, device="cpu", long_chains="window")
    steps = [f"w{i % 40} w{(i + 1) % 40} w{(i + 2) % 40}" for i in range(30)]
    s = prm.score(Q, steps)
    assert len(s.scores) == 30
    # Steps that fit in the first window score as if unwindowed.
    n_fit = max(k for k in range(1, 31) if len(prm.format.render(Q, steps[:k])) <= 64)
    np.testing.assert_allclose(s.scores[:n_fit], expected(prm, Q, steps[:n_fit]), atol=1e-6)
    # Every score is the graph's output for the question plus a run of preceding steps
    # ending at that step, which fits in max_length.
    for i, score in enumerate(s.scores):
        matches = [
            start for start in range(i + 1)
            if len(prm.format.render(Q, steps[start : i + 1])) <= 64
            and abs(expected(prm, Q, steps[start : i + 1])[-1] - score) < 1e-6
        ]
        assert matches, f"step {i} score {score} matches no window"


def test_step_too_long_for_any_window(model_dir: Path) -> None:
    prm = load_prm(model_dir, device="cpu", long_chains="window")
    with pytest.raises(ChainTooLongError, match="no window can score it"):
        prm.score(Q, ["w1"] * 3 + [" ".join(f"w{i % 40}" for i in range(80))])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ((Q, []), "empty"),
        ((Q, "a single string"), "split_steps"),
        ((Q, ["ok", 3]), "steps\\[1\\]"),
        ((Q, ["ok", "  "]), "steps\\[1\\] is empty"),
        ((3, ["ok"]), "question must be a str"),
        ((Q,), "must be a \\(question, steps\\) pair"),
    ],
)
def test_bad_inputs_give_clear_errors(prm: OnnxPRM, item: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        prm.score_batch([item])  # type: ignore[list-item]


def test_threads_share_one_scorer(prm: OnnxPRM) -> None:
    items = [(Q, STEPS[: 1 + i % 4]) for i in range(24)]
    serial = [prm.score(q, s).scores for q, s in items]
    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(lambda it: prm.score(*it).scores, items))
    np.testing.assert_allclose(np.concatenate(serial), np.concatenate(parallel), atol=1e-7)


def test_ascore_matches_score(prm: OnnxPRM) -> None:
    async def main() -> list[list[float]]:
        res = await asyncio.gather(*(prm.ascore(Q, STEPS[: k + 1]) for k in range(4)))
        return [r.scores for r in res]

    got = asyncio.run(main())
    for k, scores in enumerate(got):
        np.testing.assert_allclose(scores, prm.score(Q, STEPS[: k + 1]).scores, atol=1e-7)


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path / "m")
    data = (d / "model.onnx").read_bytes()
    (d / "model.onnx").write_bytes(data[:-10])  # truncated
    with pytest.raises(ModelIntegrityError, match="does not match its sha256"):
        load_prm(d, device="cpu")


def test_wrong_hash_in_manifest_is_refused(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path / "m")
    man = json.loads((d / "prm.json").read_text())
    man["files"]["tokenizer.json"] = "0" * 64
    (d / "prm.json").write_text(json.dumps(man))
    with pytest.raises(ModelIntegrityError, match="tokenizer.json does not match"):
        load_prm(d, device="cpu")


def test_missing_file_and_missing_dir(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path / "m")
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="listed in prm.json but missing"):
        load_prm(d, device="cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_prm(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="prm export"):
        load_prm(tmp_path / "empty")


def test_newer_manifest_is_refused(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path / "m")
    man = json.loads((d / "prm.json").read_text())
    man["manifest_version"] = 99
    (d / "prm.json").write_text(json.dumps(man))
    with pytest.raises(ManifestVersionError, match="upgrade"):
        load_prm(d, device="cpu")


def test_cuda_demanded_without_gpu_raises(model_dir: Path) -> None:
    from prm_plugins.runtime.session import cuda_driver_present

    if cuda_driver_present():
        pytest.skip("a CUDA driver is present on this machine")
    with pytest.raises(ModelLoadError, match="cuda"):
        load_prm(model_dir, device="cuda")
    assert load_prm(model_dir, device="auto").provider == "CPUExecutionProvider"


def test_bad_options_are_rejected(model_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match="device must be"):
        load_prm(model_dir, device="tpu")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="long_chains must be"):
        load_prm(model_dir, long_chains="truncate")  # type: ignore[arg-type]


def test_graph_contract_names_come_from_the_manifest_module(prm: OnnxPRM) -> None:
    from prm_plugins.manifest import GRAPH_INPUTS, GRAPH_OUTPUT

    assert GRAPH_INPUTS == ("input_ids", "attention_mask") and GRAPH_OUTPUT == "step_probs"
    assert [i.name for i in prm._session.get_inputs()] == list(GRAPH_INPUTS)
    assert [o.name for o in prm._session.get_outputs()] == [GRAPH_OUTPUT]


def test_graph_contract_names_are_written_once_in_the_library() -> None:
    # The contract's names are string constants in prm_plugins/manifest.py only: the output
    # name appears nowhere else in the library, the input names nowhere in the runtime (a
    # transformers tokenizer's "input_ids" key elsewhere is not the graph's).
    import ast

    import prm_plugins

    root = Path(prm_plugins.__path__[0])
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "manifest.py":
            continue
        names = {"step_probs"}
        if path.relative_to(root).parts[0] == "runtime":
            names |= {"input_ids", "attention_mask"}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.value!r}")
    assert found == []


@pytest.mark.parametrize("module", ["outputs", "buckets", "windows"])
def test_runtime_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    mod = importlib.import_module(f"prm_plugins.runtime.{module}")
    result = doctest.testmod(mod)
    assert result.attempted > 0 and result.failed == 0
