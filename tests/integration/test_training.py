"""Tests of the PRM training pipeline (``prm_plugins.training``, ``prm train``).

Offline and fast: a WordPiece tokenizer trained here, a BERT trunk with hidden size 32 made
from a config here, a few dozen optimiser steps on a separable toy task.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest

try:
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer
except ImportError:
    pytest.skip("the training tests need the train extra: pip install 'prm-plugins[train]'",
                allow_module_level=True)

from prm_plugins.formats.token_classification import TokenClassificationFormat
from prm_plugins.training import (
    TrainConfig,
    add_config_arguments,
    auroc,
    build_format,
    config_from_args,
    digit_splitting_tokenizer,
    encode_rows,
    load_stepwise,
    step_auroc_report,
    token_labels,
    train,
)
from prm_plugins.training.data import (
    IGNORE_INDEX,
    StepwiseRow,
    length_bucketed_batches,
    split_by_question,
)
from prm_plugins.training.tokenizer import prune_vocabulary, select_vocabulary

from support.training_toys import toy_config, toy_rows, write_rows


@pytest.fixture(scope="session")
def trained(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Run ``train`` once on the toy task; return the checkpoint dir and training.json."""
    tmp = tmp_path_factory.mktemp("train_run")
    data = write_rows(tmp / "train.jsonl", toy_rows(160, 0))
    test = write_rows(tmp / "test.jsonl", toy_rows(40, 1))
    out = tmp / "ckpt"
    cfg = TrainConfig(data=str(data), out=str(out), base_model=str(base_dir), max_steps=100,
                      batch_size=16, lr=1e-2, warmup_ratio=0.1, eval_every=50, log_every=10,
                      val_fraction=0.2, eval_data=str(test), device="cpu", progress=False,
                      vocab_keep_top=50, max_length=128, seed=0,
                      threads=1)  # one thread: tiny matrices, and no spinning on a busy CPU
    train(cfg)
    return out, json.loads((out / "training.json").read_text())


# -- the token/step mapping -------------------------------------------------------------------
def test_digit_splitting_tokenizer_reads_digits_one_by_one(base_dir: Path) -> None:
    tok = digit_splitting_tokenizer(base_dir)
    tokens = tok.encode("he has 1234 apples", add_special_tokens=False).tokens
    assert tokens[2:6] == ["1", "2", "3", "4"]
    assert tok.padding is None and tok.truncation is None


def test_label_positions_are_render_step_positions(base_dir: Path) -> None:
    tok = digit_splitting_tokenizer(base_dir)
    fmt = build_format(tok, TrainConfig(data="x", out="y"))
    assert isinstance(fmt, TokenClassificationFormat)
    assert fmt.options == {"separator": "[SEP]", "prompt_suffix": "[SEP]",
                           "bos_token_id": tok.token_to_id("[CLS]")}
    rows = [StepwiseRow(r["prompt"], r["completions"], r["labels"])  # type: ignore[arg-type]
            for r in toy_rows(20, 3)]
    chains, stats = encode_rows(fmt, rows, max_length=512)
    assert stats == {"cut": 0, "dropped": 0, "steps_dropped": 0}
    sep = tok.token_to_id("[SEP]")
    for row, chain in zip(rows, chains, strict=True):
        rendered = fmt.render(row.prompt, row.completions)
        assert chain.input_ids == rendered.input_ids
        labelled = [i for i, v in enumerate(chain.labels) if v != IGNORE_INDEX]
        assert labelled == rendered.step_positions
        assert [chain.labels[p] for p in labelled] == [int(v) for v in row.labels]
        assert chain.input_ids[0] == tok.token_to_id("[CLS]")
        assert all(chain.input_ids[p] == sep for p in labelled)


def test_token_labels_small_example() -> None:
    from prm_plugins.formats.base import Rendered

    assert token_labels(Rendered([1, 2, 3, 4], [1, 3]), [False, True]) == [-100, 0, -100, 1]


def test_over_long_chain_is_cut_at_a_step_boundary(base_dir: Path) -> None:
    tok = digit_splitting_tokenizer(base_dir)
    fmt = build_format(tok, TrainConfig(data="x", out="y"))
    row = StepwiseRow("tom has 3 apples", ["then add 1 so he has 4"] * 6, [True] * 6)
    full = fmt.render(row.prompt, row.completions)
    limit = full.step_positions[2] + 2  # room for 3 steps, not 4
    chains, stats = encode_rows(fmt, [row], max_length=limit)
    assert stats == {"cut": 1, "dropped": 0, "steps_dropped": 3}
    assert chains[0].step_positions == full.step_positions[:3]
    assert len(chains[0]) <= limit


def test_pruned_vocabulary_tokenises_the_same_text_the_same_way(base_dir: Path) -> None:
    tok = digit_splitting_tokenizer(base_dir)
    keep = select_vocabulary(tok, ["tom has 12 apples"], keep_top=0)
    small, old_ids = prune_vocabulary(tok, keep)
    assert small.get_vocab_size() < tok.get_vocab_size()
    text = "[CLS] tom has 12 apples [SEP]"
    a, b = tok.encode(text, add_special_tokens=False), small.encode(text, add_special_tokens=False)
    assert a.tokens == b.tokens
    assert [old_ids[i] for i in b.ids] == a.ids
    # A word outside the kept corpus still tokenises into kept pieces, not [UNK].
    assert "[UNK]" not in small.encode("subtract", add_special_tokens=False).tokens


# -- metrics ------------------------------------------------------------------------------------
def test_auroc_matches_hand_computed_values() -> None:
    # 4 positive-negative pairs: (0.35 > 0.1), (0.35 < 0.4), (0.8 > 0.1), (0.8 > 0.4) -> 3/4.
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # Ties count one half: pos {0.5, 0.9}, neg {0.5, 0.2}: pairs 0.5, 1, 1, 1 -> 3.5/4.
    assert auroc([0.5, 0.9, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert auroc([0.3, 0.3, 0.3], [1, 0, 1]) == pytest.approx(0.5)
    assert auroc([0.9, 0.8, 0.1], [1, 1, 0]) == pytest.approx(1.0)
    assert auroc([0.1, 0.8, 0.9], [1, 1, 0]) == pytest.approx(0.0)
    # one class only: undefined. Training now shares evaluation's contract (one metrics
    # module): a clear error, and auroc_or_none() for None (was nan here before)
    from prm_plugins.errors import InvalidInputError
    from prm_plugins.evaluation.metrics import auroc_or_none

    with pytest.raises(InvalidInputError, match="one class only"):
        auroc([0.1, 0.2], [1, 1])
    assert auroc_or_none([0.1, 0.2], [1, 1]) is None


def test_step_auroc_report_per_kind() -> None:
    report = step_auroc_report(
        [[0.9, 0.8], [0.7, 0.2], [0.6, 0.65]],
        [[1, 1], [1, 0], [1, 0]],
        [None, "a", "b"],
    )
    assert report["n_pos"] == 4 and report["n_neg"] == 2
    # kind a: its negative 0.2 is below every positive (0.9, 0.8, 0.7, 0.6).
    assert report["per_kind"]["a"]["auroc"] == pytest.approx(1.0)
    # kind b: its negative 0.65 is above 0.6 only -> 3/4; within its own row, 0.65 > 0.6 -> 0.
    assert report["per_kind"]["b"]["auroc"] == pytest.approx(0.75)
    assert report["per_kind"]["b"]["within_rows"] == pytest.approx(0.0)
    # first-error AUROC: each flawed row's first bad step (0.2, 0.65) against the 4 positives:
    # 0.2 is below all 4, 0.65 below 3 of them
    assert report["first_error_auroc"] == pytest.approx((4 + 3) / 8)
    assert report["per_kind"]["b"]["first_error_auroc"] == pytest.approx(0.75)
    # undefined figures are None, not NaN (training.json stays strict JSON)
    assert report["per_kind"]["none"]["auroc"] is None
    assert report["per_kind"]["none"]["first_error_auroc"] is None
    assert report["per_kind"]["none"]["within_rows"] is None
    carried = step_auroc_report([[0.9, 0.5, 0.1]], [[1, 0, 0]])  # error, then carried on
    assert carried["auroc"] == 1.0 and carried["first_error_auroc"] == 1.0
    late = step_auroc_report([[0.9, 0.95, 0.1], [0.8]], [[1, 0, 0], [1]])
    assert late["first_error_auroc"] == 0.0 and late["auroc"] == pytest.approx(0.5)


# -- config and CLI -----------------------------------------------------------------------------
def test_train_config_round_trips_through_argparse() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args([
        "--data", "d.jsonl", "--out", "o", "--layers", "3", "--max-steps", "7", "--lr", "2e-5",
        "--device", "cpu", "--no-keep-best", "--val-data", "none", "--epochs", "1.5",
        "--separator", "[SEP]", "--max-minutes", "12.5",
    ])
    cfg = config_from_args(args)
    assert cfg == TrainConfig(data="d.jsonl", out="o", layers=3, max_steps=7, lr=2e-5,
                              device="cpu", keep_best=False, val_data=None, epochs=1.5,
                              max_minutes=12.5)
    # Every field has help text and a flag, and the defaults parse back to the defaults.
    defaults = config_from_args(parser.parse_args(["--data", "d.jsonl", "--out", "o"]))
    assert defaults == TrainConfig(data="d.jsonl", out="o")
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "o"])  # --data is required


def test_train_config_rejects_bad_values() -> None:
    from prm_plugins.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="class_weight"):
        TrainConfig(data="d", out="o", class_weight="sqrt").validate()
    with pytest.raises(InvalidInputError, match="--data"):
        TrainConfig(out="o").validate()
    # each of these crashed mid-run (a modulo by zero) or trained nonsense before
    for field_name, value, message in [
        ("eval_every", 0, "--eval-every"), ("log_every", -1, "--log-every"),
        ("max_val_rows", 0, "max_val_rows"), ("max_train_rows", 0, "max_train_rows"),
        ("max_minutes", 0.0, "max_minutes"), ("threads", 0, "threads"), ("lr", 0.0, "lr"),
        ("head_lr", -1e-3, "head_lr"), ("grad_clip", -1.0, "grad_clip"),
        ("dropout", 1.0, "dropout"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            TrainConfig(data="d", out="o", **{field_name: value}).validate()
    TrainConfig(data="d", out="o", eval_every=1, log_every=1, threads=1).validate()


def test_cli_train_parser_is_pluggable() -> None:
    from prm_plugins.cli import train as cli_train

    parser = argparse.ArgumentParser(prog="prm")
    sub = parser.add_subparsers(dest="verb")
    cli_train.add_parser(sub)
    args = parser.parse_args(["train", "--data", "a.jsonl", "--out", "b", "--layers", "2"])
    assert args.verb == "train" and args.layers == 2 and callable(cli_train.run)


# -- data ---------------------------------------------------------------------------------------
def test_load_stepwise_rejects_mismatched_labels(tmp_path: Path) -> None:
    from prm_plugins.errors import InvalidInputError

    path = write_rows(tmp_path / "bad.jsonl", [{"prompt": "q", "completions": ["a", "b"],
                                            "labels": [True]}])
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:1: 2 completions but 1 labels"):
        load_stepwise(path)


def test_split_by_question_keeps_questions_apart() -> None:
    rows = [StepwiseRow(f"q{i % 10}", ["s"], [True]) for i in range(40)]
    train_rows, val_rows = split_by_question(rows, 0.2, seed=0)
    assert len(val_rows) == 8 and len(train_rows) == 32
    assert not {r.prompt for r in train_rows} & {r.prompt for r in val_rows}


def test_length_bucketed_batches_cover_every_index_once() -> None:
    lengths = [random.Random(1).randint(5, 100) for _ in range(103)]
    batches = length_bucketed_batches(lengths, 8, random.Random(0), pool=4)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(103))
    assert all(len(b) <= 8 for b in batches)
    spread = max(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread < 60  # sorted within pools: batches are much tighter than the 95 range


# -- training -----------------------------------------------------------------------------------
def test_training_reduces_the_loss_and_separates_steps(trained: tuple[Path, dict]) -> None:
    _, info = trained
    history = info["history"]
    assert [h["step"] for h in history] == [50, 100]
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert info["best_val_auroc"] > 0.85
    assert info["test"]["auroc"] > 0.85
    assert set(info["test"]["per_kind"]) == {"none", "toy"}
    assert info["steps"] == 100


def test_checkpoint_has_what_export_needs(trained: tuple[Path, dict]) -> None:
    out, info = trained
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "prm_format.json", "training.json"):
        assert (out / name).is_file(), name
    fmt_spec = json.loads((out / "prm_format.json").read_text())
    assert fmt_spec["format"] == "token-classification"
    assert set(fmt_spec["options"]) == {"separator", "prompt_suffix", "bos_token_id"}

    model = AutoModelForTokenClassification.from_pretrained(out, local_files_only=True).eval()
    hf_tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert model.config.num_labels == 2
    assert model.config.vocab_size == len(hf_tok) == info["model"]["vocab_size"]
    assert hf_tok.bos_token_id == hf_tok.cls_token_id == fmt_spec["options"]["bos_token_id"]

    # The saved tokenizer renders exactly as in training, and the model scores it.
    from tokenizers import Tokenizer

    fmt = TokenClassificationFormat(Tokenizer.from_file(str(out / "tokenizer.json")),
                                    fmt_spec["options"])
    good = fmt.render("tom has 5 apples and buys 2 more. q1", ["then add 2"])
    bad = fmt.render("tom has 5 apples and buys 2 more. q1", ["then subtract 2"])
    with torch.no_grad():
        p = [model(input_ids=torch.tensor([r.input_ids])).logits.softmax(-1)[0, r.step_positions[0],
                                                                              1].item()
             for r in (good, bad)]
    assert p[0] > p[1]


def test_export_takes_format_and_options_from_the_checkpoint(
        trained: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from prm_plugins import load_prm
    from prm_plugins.cli import main
    from prm_plugins.manifest import Manifest

    ckpt, _ = trained
    saved = json.loads((ckpt / "prm_format.json").read_text())
    parity = ["--exporter", "legacy", "--parity-chains", "2", "--parity-batch-sizes", "1",
              "--parity-max-tokens", "48"]
    # No --format: prm_format.json supplies it and its options (a [SEP] separator here,
    # which the format's own default "\n" would not reproduce).
    assert main(["export", str(ckpt), str(tmp_path / "a"), *parity]) == 0
    man = Manifest.read(tmp_path / "a")
    assert man.format == saved["format"] == "token-classification"
    assert man.format_options == saved["options"]
    assert man.format_options["separator"] == "[SEP]"
    prm = load_prm(tmp_path / "a", device="cpu")
    assert len(prm.score("tom has 5 apples. q1", ["then add 2", "so 7"]).scores) == 2
    # --option still overrides a saved option.
    assert main(["export", str(ckpt), str(tmp_path / "b"), *parity,
                 "--option", "prompt_suffix=[SEP] [SEP]"]) == 0
    assert Manifest.read(tmp_path / "b").format_options["prompt_suffix"] == "[SEP] [SEP]"
    capsys.readouterr()
    # A --format that contradicts the checkpoint is refused, and nothing is written.
    assert main(["export", str(ckpt), str(tmp_path / "c"), "--format", "math-shepherd"]) == 2
    assert "trained for format 'token-classification'" in capsys.readouterr().err
    assert not (tmp_path / "c" / "prm.json").exists()
    # Without prm_format.json the format is detected (BertForTokenClassification), with the
    # family's default options: the "\n" separator, which this tokenizer drops, is refused
    # and the error says the format was detected and how to pass the right options.
    bare = tmp_path / "bare"
    shutil.copytree(ckpt, bare)
    (bare / "prm_format.json").unlink()
    assert main(["export", str(bare), str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "format was detected" in err and "--option KEY=VALUE" in err and "[SEP]" in err
    assert not (tmp_path / "d" / "prm.json").exists()


def test_position_class_weights_balance_each_position() -> None:
    from prm_plugins.experimental.training import position_class_weights, token_weights
    from prm_plugins.training.data import EncodedChain

    # step 0: 3 good, 1 bad; step 1: 1 good, 3 bad; steps 2 and 3 pooled: 3 good, 5 bad
    chains = [EncodedChain([5] * 9, [-100] * 9, [2, 4, 6, 8], labels)
              for labels in ([1, 1, 1, 1], [1, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0])]
    table = position_class_weights(chains, n_buckets=3)
    assert [w for row in table for w in row] == pytest.approx([2.0, 4 / 6, 4 / 6, 2.0, 0.8, 8 / 6])
    for k, row in enumerate(table[:2]):  # each position: both labels carry the same weight
        good = sum(c.step_labels[k] for c in chains)
        assert row[1] * good == pytest.approx(row[0] * (4 - good))
    weights = token_weights(chains[1:2], table, torch)
    assert weights[0].tolist() == pytest.approx([0, 0, 4 / 6, 0, 4 / 6, 0, 0.8, 0, 0.8])


def test_position_balanced_training_learns_the_toy_task(base_dir: Path,
                                                        tmp_path: Path) -> None:
    data = write_rows(tmp_path / "train.jsonl", toy_rows(160, 0))
    train(toy_config(base_dir, data, tmp_path / "ckpt", class_weight="none",
                      experimental_position_balanced=True))
    info = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert info["best_val_auroc"] > 0.85


def test_outcome_supervision_labels_every_step_with_the_chain_outcome(
        base_dir: Path, tmp_path: Path) -> None:
    from prm_plugins.errors import InvalidInputError
    from prm_plugins.training import StepwiseRow, outcome_rows

    rows = outcome_rows([StepwiseRow("q", ["a", "b"], [True, True]),
                         StepwiseRow("q", ["a", "b", "c"], [True, False, True])])
    assert [r.labels for r in rows] == [[True, True], [False, False, False]]
    with pytest.raises(InvalidInputError, match="supervision"):
        TrainConfig(data="d", out="o", supervision="final").validate()
    # An ORM on the toy task: a chain is bad when any step says 'subtract'. The encoder sees
    # the whole chain, so even a first step is scored by the chain's outcome.
    data = write_rows(tmp_path / "train.jsonl", toy_rows(160, 0))
    train(toy_config(base_dir, data, tmp_path / "orm", supervision="outcome"))
    info = json.loads((tmp_path / "orm" / "training.json").read_text())
    assert info["config"]["supervision"] == "outcome"
    assert info["best_val_auroc"] > 0.85


def test_question_batches_keep_a_question_together_and_cover_every_chain() -> None:
    from prm_plugins.experimental.training import question_batches
    from prm_plugins.training.data import EncodedChain

    chains = [EncodedChain([0] * (5 + i % 7), [-100] * (5 + i % 7), [1], [1], None,
                           f"q{i // 3}" if i < 60 else None) for i in range(70)]
    batches = question_batches(chains, 8, random.Random(0), pool=2)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(70))
    where = {i: n for n, b in enumerate(batches) for i in b}
    for q in range(20):
        assert len({where[3 * q + k] for k in range(3)}) == 1
    assert all(len(b) >= 8 for b in batches[:-1]) or len(batches) > 1


def test_pairwise_loss_trains_on_question_pairs(base_dir: Path, tmp_path: Path) -> None:
    from prm_plugins.errors import InvalidInputError

    rng = random.Random(0)
    rows = []
    for i in range(80):  # each question: a correct chain and one with a 'subtract' step
        q = f"tom has {rng.randint(1, 99)} apples. q{i}"
        steps = [f"then add {rng.randint(1, 99)}" for _ in range(3)]
        k = rng.randint(0, 2)
        bad = [*steps[:k], f"then subtract {rng.randint(1, 99)}", *steps[k + 1:]]
        rows.append({"prompt": q, "completions": steps, "labels": [True] * 3})
        rows.append({"prompt": q, "completions": bad,
                     "labels": [j < k for j in range(3)], "perturbation": "toy"})
    data = write_rows(tmp_path / "pairs.jsonl", rows)
    train(toy_config(base_dir, data, tmp_path / "pw", steps=40, experimental_pair_weight=1.0))
    info = json.loads((tmp_path / "pw" / "training.json").read_text())
    assert info["config"]["experimental_pair_weight"] == 1.0
    assert info["data"]["pairs"] == info["data"]["train_chains"] // 2  # every flawed chain
    assert info["best_val_auroc"] > 0.85
    # without any question that has both a correct and a flawed chain it says so
    lone = write_rows(tmp_path / "lone.jsonl", toy_rows(40, 1))
    with pytest.raises(InvalidInputError, match="--experimental-pair-weight"):
        train(TrainConfig(data=str(lone), out=str(tmp_path / "x"), base_model=str(base_dir),
                          max_steps=2, device="cpu", progress=False, vocab_keep_top=50,
                          max_length=128, threads=1, experimental_pair_weight=1.0,
                          val_fraction=0.2))
    with pytest.raises(InvalidInputError, match="experimental_pair_weight"):
        TrainConfig(data="d", out="o", experimental_pair_weight=-1).validate()


def test_experimental_knobs_have_their_own_flags_and_clear_errors() -> None:
    from prm_plugins.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"--class-weight none "
                       r"--experimental-position-balanced"):
        TrainConfig(data="d", out="o", class_weight="position-balanced").validate()
    with pytest.raises(InvalidInputError, match="replaces the class weighting.*balanced"):
        TrainConfig(data="d", out="o", experimental_position_balanced=True).validate()
    cfg = TrainConfig(data="d", out="o", class_weight="none",
                      experimental_position_balanced=True)
    cfg.validate()
    assert cfg.uses_experimental() and not TrainConfig(data="d", out="o").uses_experimental()
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--data", "d", "--out", "o", "--class-weight", "none",
                              "--experimental-position-balanced",
                              "--experimental-pair-weight", "0.5"])
    assert config_from_args(args) == TrainConfig(
        data="d", out="o", class_weight="none", experimental_position_balanced=True,
        experimental_pair_weight=0.5)


def test_shipped_objective_is_core_and_experimental_ones_come_from_their_namespace() -> None:
    from prm_plugins.experimental.training import ExperimentalLoss
    from prm_plugins.training.data import EncodedChain
    from prm_plugins.training.objective import ClassWeightedLoss, objective_for

    chains = [EncodedChain([5] * 5, [-100] * 5, [2, 4], labels, None, f"q{i // 2}")
              for i, labels in enumerate(([1, 1], [1, 0], [1, 1], [0, 0]))]
    shipped = objective_for(TrainConfig(data="d", out="o"), chains, "cpu", torch)
    assert type(shipped) is ClassWeightedLoss and shipped.data_info() == {"pairs": 0}
    # inverse-frequency class weights: 3 bad and 5 good of 8 steps
    assert shipped.loss_fn.weight.tolist() == pytest.approx([8 / 6, 8 / 10])
    paired = objective_for(TrainConfig(data="d", out="o", experimental_pair_weight=1.0),
                           chains, "cpu", torch)
    assert isinstance(paired, ExperimentalLoss) and paired.data_info() == {"pairs": 2}
    batches = paired.batches(random.Random(0))
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3]


def test_old_trainer_names_of_experimental_helpers_warn_and_forward() -> None:
    from prm_plugins.experimental import training as experimental
    from prm_plugins.training import trainer

    with pytest.warns(FutureWarning, match=r"trainer\.question_pairs moved to "
                      r"prm_plugins\.experimental\.training"):
        assert trainer.question_pairs is experimental.question_pairs
    with pytest.raises(AttributeError, match="no_such_name"):
        trainer.no_such_name  # noqa: B018


def test_resume_reads_the_experimental_knobs_under_their_old_names() -> None:
    from prm_plugins.errors import InvalidInputError
    from prm_plugins.training.resume import check_resumable

    old = TrainConfig(data="d", out="o").to_dict()
    del old["experimental_pair_weight"], old["experimental_position_balanced"]
    saved = {"info": {"config": {**old, "pair_weight": 0.0}},
             "state": {"data_sha256": {"data": None, "val_data": None}}}
    fingerprint: dict[str, str | None] = {"data": None, "val_data": None}
    check_resumable(saved, TrainConfig(data="d", out="o"), fingerprint)
    posbal = {"info": {"config": {**old, "pair_weight": 0.0,
                                  "class_weight": "position-balanced"}},
              "state": saved["state"]}
    check_resumable(posbal, TrainConfig(data="d", out="o", class_weight="none",
                                        experimental_position_balanced=True), fingerprint)
    with pytest.raises(InvalidInputError, match="--experimental-position-balanced"):
        check_resumable(posbal, TrainConfig(data="d", out="o"), fingerprint)
