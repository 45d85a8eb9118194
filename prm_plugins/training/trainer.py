"""Train a token-classification PRM (BERT trunk, 2 labels) on TRL stepwise data.

The data path is the runtime's: every chain goes through
:meth:`TokenClassificationFormat.render`, the one token/step mapping shared with export and
scoring, and :func:`token_labels` puts each step's label at the position ``render`` says the
step is scored at (-100, ignored by the loss, everywhere else).

Needs the ``train`` extra: ``pip install "prm-plugins[train]"``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, PRMError, require
from prm_plugins.evaluation.metrics import step_auroc_report
from prm_plugins.formats.base import Rendered
from prm_plugins.formats.token_classification import TokenClassificationFormat
from prm_plugins.training.config import POSITION_BUCKETS, TrainConfig
from prm_plugins.training.tokenizer import (
    digit_splitting_tokenizer,
    minilm_dir,
    prune_vocabulary,
    select_vocabulary,
    to_hf_tokenizer,
)

__all__ = [
    "FORMAT_FILE",
    "IGNORE_INDEX",
    "TRAINING_FILE",
    "EncodedChain",
    "StepwiseRow",
    "TrainResult",
    "build_format",
    "encode_rows",
    "length_bucketed_batches",
    "load_stepwise",
    "position_class_weights",
    "question_batches",
    "question_pairs",
    "lr_factor",
    "outcome_rows",
    "token_labels",
    "train",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
FORMAT_FILE = "prm_format.json"
TRAINING_FILE = "training.json"


# -- data -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepwiseRow:
    """One row of TRL stepwise data: a question, its steps and one label per step."""

    prompt: str
    completions: list[str]
    labels: list[bool]
    perturbation: str | None = None


def load_stepwise(path: str | Path) -> list[StepwiseRow]:
    """Read a TRL stepwise JSONL file (``{"prompt", "completions", "labels"}`` per line).

    Rows are checked by :func:`prm_plugins.labeling.stepwise.iter_stepwise_jsonl` (strict):
    training stops at the first bad line rather than silently training on less data. An
    optional ``perturbation`` key (the kind of injected error) is kept for reports.

    Raises:
        InvalidInputError: the file is missing or empty, or a line is not valid UTF-8, not
            JSON, or not such a row; the message names the file and line.
    """
    from prm_plugins.labeling.stepwise import iter_stepwise_jsonl

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"training data {str(path)!r} does not exist")
    try:
        rows = [
            StepwiseRow(row["prompt"], list(row["completions"]), list(row["labels"]),
                        row.get("perturbation"))
            for row in iter_stepwise_jsonl(path, strict=True)
        ]
    except PRMError:
        raise
    except (ValueError, RecursionError) as exc:  # a hostile line the reader let through
        raise InvalidInputError(
            f"{path}: a line cannot be read as a stepwise row ({type(exc).__name__}: "
            f"{str(exc)[:200]}); fix or remove that line") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read training data {str(path)!r}: "
                                f"{exc.strerror or exc}") from None
    if not rows:
        raise InvalidInputError(f"{path} holds no rows")
    return rows


def outcome_rows(rows: Sequence[StepwiseRow]) -> list[StepwiseRow]:
    """Rows relabelled for outcome supervision: every step gets the chain's outcome.

    The outcome of a chain is whether all of its steps are correct (with the labelling
    convention of :mod:`prm_plugins.labeling`, whether its final answer is right).

    Examples:
        >>> r = StepwiseRow("q", ["a", "b", "c"], [True, False, False])
        >>> outcome_rows([r])[0].labels
        [False, False, False]
    """
    return [StepwiseRow(r.prompt, r.completions, [all(r.labels)] * len(r.labels),
                        r.perturbation) for r in rows]


def build_format(tokenizer: Any, config: TrainConfig) -> TokenClassificationFormat:
    """The ``token-classification`` format the model is trained, exported and scored with."""
    cls_id = tokenizer.token_to_id("[CLS]")
    return TokenClassificationFormat(tokenizer, {
        "separator": config.separator,
        "prompt_suffix": config.prompt_suffix,
        "bos_token_id": None if cls_id is None else int(cls_id),
    })


def token_labels(rendered: Rendered, step_labels: Sequence[bool | int]) -> list[int]:
    """Per-token labels: each step's label at its score position, ``-100`` elsewhere.

    Args:
        rendered: the chain as :meth:`PRMFormat.render` gives it.
        step_labels: one label per step (truthy = correct).

    Examples:
        >>> token_labels(Rendered([5, 6, 7, 8, 9], [2, 4]), [True, False])
        [-100, -100, 1, -100, 0]
    """
    if len(step_labels) != len(rendered.step_positions):
        raise InvalidInputError(
            f"{len(step_labels)} labels for {len(rendered.step_positions)} steps")
    out = [IGNORE_INDEX] * len(rendered.input_ids)
    for pos, lab in zip(rendered.step_positions, step_labels, strict=True):
        out[pos] = int(bool(lab))
    return out


@dataclass(frozen=True)
class EncodedChain:
    """A rendered chain with its per-token labels."""

    input_ids: list[int]
    labels: list[int]
    step_positions: list[int]
    step_labels: list[int]
    kind: str | None = None
    group: str | None = None  # the question; chains of one question form pairs

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_rows(
    fmt: TokenClassificationFormat, rows: Sequence[StepwiseRow], max_length: int
) -> tuple[list[EncodedChain], dict[str, int]]:
    """Render and label rows; a chain over ``max_length`` keeps the steps that fit.

    Returns:
        The encoded chains, and counts ``{"cut": chains shortened, "dropped": chains with not
        even one step fitting, "steps_dropped": steps lost}``.
    """
    chains: list[EncodedChain] = []
    stats = {"cut": 0, "dropped": 0, "steps_dropped": 0}
    for row in rows:
        rendered = fmt.render(row.prompt, row.completions)
        n = len(row.completions)
        if len(rendered) > max_length:
            keep = sum(1 for p in rendered.step_positions if p < max_length)
            stats["steps_dropped"] += n - keep
            if keep == 0:
                stats["dropped"] += 1
                continue
            stats["cut"] += 1
            n = keep
            rendered = fmt.render(row.prompt, row.completions[:n])
        labels = [int(v) for v in row.labels[:n]]
        chains.append(EncodedChain(rendered.input_ids, token_labels(rendered, labels),
                                   list(rendered.step_positions), labels, row.perturbation,
                                   row.prompt))
    return chains, stats


def split_by_question(
    rows: Sequence[StepwiseRow], fraction: float, seed: int
) -> tuple[list[StepwiseRow], list[StepwiseRow]]:
    """Hold out ``fraction`` of the distinct questions (all their rows) for validation."""
    questions = sorted({r.prompt for r in rows})
    rng = random.Random(seed)
    rng.shuffle(questions)
    n_val = max(1, round(len(questions) * fraction))
    held = set(questions[:n_val])
    train_rows = [r for r in rows if r.prompt not in held]
    val_rows = [r for r in rows if r.prompt in held]
    return train_rows, val_rows


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, *, pool: int = 50
) -> list[list[int]]:
    """Shuffled batches of indices of similar length (little padding).

    Indices are shuffled, cut into pools of ``pool * batch_size``, each pool sorted by length
    and cut into batches, and the batches shuffled.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    step = max(1, pool * batch_size)
    for start in range(0, len(order), step):
        chunk = sorted(order[start:start + step], key=lambda i: lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def question_pairs(chains: Sequence[EncodedChain]) -> dict[int, tuple[int, int, int]]:
    """Pairs for the pairwise loss: each flawed chain with its question's correct chain.

    Returns:
        ``{flawed index: (correct index, token position of the correct chain's step k,
        token position of the flawed chain's step k)}``, where k is the flawed chain's first
        wrong step; flawed chains whose question has no correct chain with more than k steps
        get no pair.

    Examples:
        >>> good = EncodedChain([1, 2, 3, 4], [-100] * 4, [1, 3], [1, 1], None, "q")
        >>> bad = EncodedChain([1, 2, 5, 6], [-100] * 4, [1, 3], [1, 0], "slip", "q")
        >>> question_pairs([good, bad])
        {1: (0, 3, 3)}
    """
    correct: dict[str, list[int]] = {}
    for i, c in enumerate(chains):
        if c.group is not None and all(c.step_labels):
            correct.setdefault(c.group, []).append(i)
    pairs: dict[int, tuple[int, int, int]] = {}
    for i, c in enumerate(chains):
        if c.group is None or all(c.step_labels):
            continue
        k = c.step_labels.index(0)
        for j in correct.get(c.group, []):
            if len(chains[j].step_positions) > k:
                pairs[i] = (j, chains[j].step_positions[k], c.step_positions[k])
                break
    return pairs


def question_batches(
    chains: Sequence[EncodedChain], batch_size: int, rng: random.Random, *, pool: int = 50
) -> list[list[int]]:
    """Like :func:`length_bucketed_batches`, but a question's chains stay in one batch.

    Questions are shuffled, cut into pools of about ``pool * batch_size`` chains, each pool
    sorted by its questions' longest chain and packed into batches of at least
    ``batch_size`` chains (a batch closes once it is full), and the batches shuffled.
    """
    groups: dict[str | None, list[int]] = {}
    singles: list[list[int]] = []
    for i, c in enumerate(chains):
        if c.group is None:
            singles.append([i])
        else:
            groups.setdefault(c.group, []).append(i)
    units = list(groups.values()) + singles
    rng.shuffle(units)
    batches: list[list[int]] = []
    start = 0
    while start < len(units):
        chunk, count = [], 0
        while start < len(units) and count < pool * batch_size:
            chunk.append(units[start])
            count += len(units[start])
            start += 1
        chunk.sort(key=lambda u: max(len(chains[i]) for i in u))
        current: list[int] = []
        for unit in chunk:
            current.extend(unit)
            if len(current) >= batch_size:
                batches.append(current)
                current = []
        if current:
            batches.append(current)
    rng.shuffle(batches)
    return batches


def _collate(chains: Sequence[EncodedChain], pad_id: int, torch: Any,
             position_weights: Sequence[Sequence[float]] | None = None) -> dict[str, Any]:
    t = max(len(c) for c in chains)
    ids = torch.full((len(chains), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(chains), t), dtype=torch.long)
    labels = torch.full((len(chains), t), IGNORE_INDEX, dtype=torch.long)
    weights = torch.zeros((len(chains), t), dtype=torch.float)
    for i, c in enumerate(chains):
        n = len(c)
        ids[i, :n] = torch.tensor(c.input_ids, dtype=torch.long)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(c.labels, dtype=torch.long)
        if position_weights is not None:
            last = len(position_weights) - 1
            for k, (pos, lab) in enumerate(zip(c.step_positions, c.step_labels, strict=True)):
                weights[i, pos] = position_weights[min(k, last)][int(lab)]
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if position_weights is not None:
        out["weights"] = weights
    return out


def position_class_weights(chains: Sequence[EncodedChain],
                           n_buckets: int = 8) -> list[list[float]]:
    """Loss weight per (step position, label): ``n_k / (2 * n_k,label)``.

    ``k`` is the step's index, with steps from ``n_buckets - 1`` on pooled. Within each
    position both labels then carry the same total weight, so the position of a step is no
    evidence of its label (verifier-labelled chains are bad from the first error on, so later
    steps are bad far more often: 9% at step 1 against 40% at step 4 in GSM8K train). A
    position with one label only gets weight 1 for it.

    Examples:
        >>> c = EncodedChain([0] * 4, [0] * 4, [1, 3], [1, 0])
        >>> d = EncodedChain([0] * 4, [0] * 4, [1, 3], [1, 1])
        >>> position_class_weights([c, d], n_buckets=2)
        [[1.0, 1.0], [1.0, 1.0]]
    """
    counts = [[0, 0] for _ in range(n_buckets)]
    for c in chains:
        for k, lab in enumerate(c.step_labels):
            counts[min(k, n_buckets - 1)][int(lab)] += 1
    table = []
    for neg, pos in counts:
        total = neg + pos
        if neg and pos:
            table.append([total / (2 * neg), total / (2 * pos)])
        else:
            table.append([1.0, 1.0])
    return table


# -- model ----------------------------------------------------------------------------------
def build_model(
    config: TrainConfig, vocab_size: int, old_ids: Sequence[int] | None = None
) -> Any:
    """BertForTokenClassification (2 labels) with its trunk from ``config.base_model``.

    Args:
        config: the run's config (base model, layers, dropout).
        vocab_size: the tokenizer's vocabulary size.
        old_ids: after :func:`prune_vocabulary`, the base-model id of every new id; the word
            embedding keeps those rows only.
    """
    transformers: Any = require("transformers", "train")
    base = Path(config.base_model) if config.base_model else minilm_dir()
    overrides: dict[str, Any] = {
        "num_labels": 2,
        "id2label": {0: "incorrect", 1: "correct"},
        "label2id": {"incorrect": 0, "correct": 1},
    }
    if config.layers is not None:
        overrides["num_hidden_layers"] = config.layers
    if config.dropout is not None:
        overrides["hidden_dropout_prob"] = config.dropout
        overrides["attention_probs_dropout_prob"] = config.dropout
    hf_config = transformers.AutoConfig.from_pretrained(str(base), local_files_only=True,
                                                        **overrides)
    if config.layers is not None and config.layers > getattr(hf_config, "num_hidden_layers", 0):
        raise InvalidInputError(f"--layers {config.layers} is more than the base model has")
    hf_config.architectures = ["BertForTokenClassification"]
    # The load report would list the dropped layers, the pooler and the new head as
    # "UNEXPECTED"/"MISSING": all intended here, so say it once in our own words.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = transformers.BertForTokenClassification.from_pretrained(
            str(base), config=hf_config, local_files_only=True)
        model = model.float()  # train in fp32 whatever dtype the base checkpoint was saved in
    finally:
        transformers.logging.set_verbosity(verbosity)
    logger.info("trunk from %s (first %d layers); new 2-label classification head", base,
                hf_config.num_hidden_layers)
    if old_ids is not None:
        torch: Any = require("torch", "train")
        emb = model.get_input_embeddings()
        index = torch.tensor(list(old_ids), dtype=torch.long)
        new = torch.nn.Embedding(len(old_ids), emb.embedding_dim,
                                 padding_idx=emb.padding_idx)
        with torch.no_grad():
            new.weight.copy_(emb.weight[index])
        model.set_input_embeddings(new)
        model.config.vocab_size = len(old_ids)
    if model.config.vocab_size != vocab_size:
        raise InvalidInputError(
            f"tokenizer has {vocab_size} tokens but {base} has a vocabulary of "
            f"{model.config.vocab_size}; use the base model's own tokenizer")
    return model


# -- training -------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` did: where it wrote, and the figures it measured."""

    out_dir: Path
    steps: int
    seconds: float
    best_val_auroc: float
    history: list[dict[str, Any]] = field(default_factory=list)
    test: dict[str, Any] | None = None


def _pick_device(name: str, torch: Any) -> Any:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InvalidInputError("--device cuda was asked for but torch sees no GPU")
        return torch.device("cuda")
    return torch.device("cpu")


def lr_factor(progress: float, warmup_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup_ratio`` of the run, then linear decay to 0.

    ``progress`` is the fraction of the run done: steps done / planned steps, or, under
    ``--max-minutes``, the larger of that and time spent / time budget, so a time-budgeted run
    still decays to 0 by its end.

    Examples:
        >>> [round(lr_factor(p, 0.1), 2) for p in (0.0, 0.05, 0.1, 0.55, 1.0)]
        [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup_ratio > 0 and progress < warmup_ratio:
        return progress / warmup_ratio
    return max(0.0, (1.0 - progress) / max(1e-12, 1.0 - warmup_ratio))


def predict_steps(
    model: Any, chains: Sequence[EncodedChain], pad_id: int, device: Any,
    *, batch_size: int = 32,
) -> list[list[float]]:
    """P(correct) at every step position of every chain (eval mode, no grad)."""
    torch: Any = require("torch", "train")
    was_training = model.training
    model.eval()
    out: list[list[float]] = [[] for _ in chains]
    order = sorted(range(len(chains)), key=lambda i: len(chains[i]))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = _collate([chains[i] for i in idx], pad_id, torch)
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
            probs = torch.softmax(logits.float(), dim=-1)[..., 1].cpu()
            for row, i in enumerate(idx):
                out[i] = [float(probs[row, p]) for p in chains[i].step_positions]
    model.train(was_training)
    return out


def _evaluate(
    model: Any, chains: Sequence[EncodedChain], pad_id: int, device: Any
) -> dict[str, Any]:
    scores = predict_steps(model, chains, pad_id, device)
    return step_auroc_report(scores, [c.step_labels for c in chains], [c.kind for c in chains])


def _count_params(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


class _BatchCursor:
    """The training batches, epoch after epoch, with a position that can be saved.

    Each epoch's batches are drawn from ``rng`` when the previous epoch is used up. The saved
    position is (epoch, batches used, ``rng`` state at the epoch's start): restoring it draws
    that epoch's batches again, identically, and skips the used ones, so a resumed run sees
    the same batches in the same order as an uninterrupted one.
    """

    def __init__(self, make: Callable[[], list[list[int]]], rng: random.Random) -> None:
        self._make, self._rng = make, rng
        self._batches: list[list[int]] = []
        self._epoch_start: Any = None
        self.epoch, self.pos = -1, 0

    def next(self) -> list[int]:
        while self.pos >= len(self._batches):
            self._epoch_start = self._rng.getstate()
            self._batches = self._make()
            self.epoch, self.pos = self.epoch + 1, 0
        self.pos += 1
        return self._batches[self.pos - 1]

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.pos,
                "batches_in_epoch": len(self._batches),
                "rng_at_epoch_start": _rng_to_json(self._epoch_start)}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("rng_at_epoch_start") is None:  # saved before the first batch
            return
        self._rng.setstate(_rng_from_json(state["rng_at_epoch_start"]))
        self._epoch_start = self._rng.getstate()
        self._batches = self._make()
        if len(self._batches) != state.get("batches_in_epoch"):
            raise InvalidInputError(
                "--resume: the training batches differ from the saved run's "
                f"({len(self._batches)} against {state.get('batches_in_epoch')} in the epoch); "
                "resume with the same data and settings")
        self.epoch, self.pos = int(state["epoch"]), int(state["batch"])


def _rng_to_json(state: Any) -> Any:
    """A ``random.Random`` state as JSON (tuples become lists)."""
    if state is None:
        return None
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(value: Any) -> Any:
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


#: Config fields a resumed run may change: they do not change what is computed.
RESUME_FREE_FIELDS = frozenset({"resume", "progress", "threads", "device", "log_every",
                                "save_every", "eval_data", "out", "data", "val_data"})


def _data_fingerprint(config: TrainConfig) -> dict[str, str | None]:
    """sha256 of the training and validation files (None where there is no such file)."""
    from prm_plugins.training.checkpoint import sha256_file

    out: dict[str, str | None] = {}
    for name in ("data", "val_data"):
        value = getattr(config, name)
        out[name] = sha256_file(value) if value and Path(value).is_file() else None
    return out


def _check_resumable(saved: dict[str, Any], config: TrainConfig,
                     fingerprint: dict[str, str | None]) -> None:
    """Refuse to resume a run with other settings or other data."""
    old = saved["info"].get("config", {})
    new = config.to_dict()
    changed = [f"--{k.replace('_', '-')} {old.get(k)!r} -> {new[k]!r}" for k in sorted(new)
               if k not in RESUME_FREE_FIELDS and old.get(k) != new[k]]
    if changed:
        raise InvalidInputError(
            f"--resume: settings differ from the run in {config.out!r}: {'; '.join(changed)}. "
            f"Resume with the settings it was started with (its {TRAINING_FILE} lists them) "
            "or start a new run in another --out")
    was = saved["state"].get("data_sha256", {})
    for name, digest in fingerprint.items():
        if was.get(name) != digest:
            raise InvalidInputError(
                f"--resume: the --{name.replace('_', '-')} file is not the one the run in "
                f"{config.out!r} was trained on (its sha256 differs); resume with the same data")


def train(config: TrainConfig) -> TrainResult:
    """Train a PRM as ``config`` says and write its checkpoint directory.

    The directory holds ``config.json``, ``model.safetensors``, the fast tokenizer,
    ``prm_format.json`` (``{"format": "token-classification", "options": {...}}``) and
    ``training.json`` (the config, the figures measured, the time taken, the sha256 of every
    file, ``"complete": true``).

    While the run is in progress a checkpoint is saved every ``save_every`` steps (default:
    at each validation): the same files with the best weights so far and
    ``"complete": false``, plus ``resume/`` for ``resume=True`` (``--resume``). Every save is
    atomic (see :mod:`prm_plugins.training.checkpoint`): a run killed at any moment leaves
    the previous complete checkpoint or the new one. ``--out`` is checked before anything is
    loaded.

    Examples:
        >>> from prm_plugins.training import TrainConfig, train
        >>> result = train(TrainConfig(data="data/gsm8k_train_stepwise.jsonl",
        ...                            out="runs/prm", layers=3, max_steps=100))  # doctest: +SKIP
        >>> result.best_val_auroc  # doctest: +SKIP
        0.93
    """
    from prm_plugins.training.checkpoint import load_resume_state, prepare_out_dir

    config.validate()
    out = prepare_out_dir(config.out, resume=config.resume)  # before any loading
    torch: Any = require("torch", "train")
    tqdm_mod: Any = require("tqdm", "train")
    t_start = time.monotonic()
    fingerprint = _data_fingerprint(config)
    resumed = load_resume_state(out) if config.resume else None
    if resumed is not None:
        _check_resumable(resumed, config, fingerprint)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _pick_device(config.device, torch)

    # Data, through the shared render().
    base = Path(config.base_model) if config.base_model else minilm_dir()
    tokenizer = digit_splitting_tokenizer(base) if config.digit_split else None
    if tokenizer is None:
        from tokenizers import Tokenizer
        tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()

    rows = load_stepwise(config.data)
    if config.val_data:
        train_rows, val_rows = rows, load_stepwise(config.val_data)
    else:
        train_rows, val_rows = split_by_question(rows, config.val_fraction, config.seed)
    if config.supervision == "outcome":
        train_rows, val_rows = outcome_rows(train_rows), outcome_rows(val_rows)
    rng = random.Random(config.seed)
    if config.max_train_rows is not None and len(train_rows) > config.max_train_rows:
        train_rows = rng.sample(train_rows, config.max_train_rows)
    old_ids: list[int] | None = None
    full_vocab = tokenizer.get_vocab_size()
    if config.prune_vocab:
        corpus = (text for r in train_rows for text in (r.prompt, *r.completions))
        keep = select_vocabulary(tokenizer, corpus, keep_top=config.vocab_keep_top)
        keep.update(t for t in (config.separator, config.prompt_suffix)
                    if t in tokenizer.get_vocab())
        tokenizer, old_ids = prune_vocabulary(tokenizer, keep)
        logger.info("vocabulary pruned from %d to %d tokens", full_vocab,
                    tokenizer.get_vocab_size())
    fmt = build_format(tokenizer, config)
    pad_id = tokenizer.token_to_id("[PAD]") or 0
    if len(val_rows) > config.max_val_rows:
        val_rows = random.Random(config.seed + 1).sample(val_rows, config.max_val_rows)
    train_chains, train_stats = encode_rows(fmt, train_rows, config.max_length)
    val_chains, val_stats = encode_rows(fmt, val_rows, config.max_length)
    if not train_chains or not val_chains:
        raise InvalidInputError("no training or validation chain fits --max-length")
    n_pos = sum(sum(c.step_labels) for c in train_chains)
    n_steps = sum(len(c.step_labels) for c in train_chains)
    n_neg = n_steps - n_pos
    logger.info("train: %d chains, %d steps (%d correct, %d incorrect), mean %.0f tokens; "
                "cut %d, dropped %d over max_length %d", len(train_chains), n_steps, n_pos,
                n_neg, sum(map(len, train_chains)) / len(train_chains), train_stats["cut"],
                train_stats["dropped"], config.max_length)
    logger.info("validation: %d chains, %d steps", len(val_chains),
                sum(len(c.step_labels) for c in val_chains))
    if n_pos == 0 or n_neg == 0:
        raise InvalidInputError(
            f"training data has {n_pos} correct and {n_neg} incorrect steps; need both")

    # Model and optimiser.
    model = build_model(config, tokenizer.get_vocab_size(), old_ids).to(device)
    model.train()
    logger.info("model: %s, %d layers, %.1f M parameters, device %s",
                type(model).__name__, model.config.num_hidden_layers,
                _count_params(model) / 1e6, device)
    position_weights = None
    if config.class_weight == "balanced":
        weight = torch.tensor([n_steps / (2 * n_neg), n_steps / (2 * n_pos)], dtype=torch.float)
    else:
        weight = torch.ones(2)
    if config.class_weight == "position-balanced":
        position_weights = position_class_weights(train_chains, POSITION_BUCKETS)
        logger.info("position-balanced loss weights (bad, good) by step: %s",
                    [[round(w, 2) for w in row] for row in position_weights])
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight.to(device), ignore_index=IGNORE_INDEX)

    head_names = {n for n, _ in model.named_parameters() if n.startswith("classifier.")}
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups: list[dict[str, Any]] = []
    for is_head in (False, True):
        lr = (config.head_lr or config.lr) if is_head else config.lr
        for decay in (True, False):
            params = [p for n, p in model.named_parameters()
                      if (n in head_names) == is_head and (not n.endswith(no_decay)) == decay]
            if params:
                groups.append({"params": params, "lr": lr,
                               "weight_decay": config.weight_decay if decay else 0.0})
    optimizer = torch.optim.AdamW(groups, lr=config.lr)

    batches_per_epoch = math.ceil(len(train_chains) / config.batch_size)
    total = config.max_steps or max(1, math.ceil(batches_per_epoch * config.epochs))
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    budget_s = None if config.max_minutes is None else 60.0 * config.max_minutes
    save_every = config.save_every or config.eval_every
    lengths = [len(c) for c in train_chains]
    pairs = question_pairs(train_chains) if config.pair_weight > 0 else {}
    if config.pair_weight > 0:
        logger.info("pairwise loss (weight %g): %d flawed chains paired with their "
                    "question's correct chain", config.pair_weight, len(pairs))
        if not pairs:
            raise InvalidInputError(
                "--pair-weight needs questions with both a correct chain (all labels true) and "
                "a flawed one in the training data; none were found")

    def make_batches() -> list[list[int]]:
        if pairs:
            return question_batches(train_chains, config.batch_size, rng)
        return length_bucketed_batches(lengths, config.batch_size, rng)

    cursor = _BatchCursor(make_batches, rng)
    history: list[dict[str, Any]] = []
    best_auroc, best_state, best_step = -1.0, None, 0
    running, running_n = 0.0, 0
    step = 0
    spent_before = 0.0  # training seconds of the run before it was resumed
    resumed_at: list[int] = []
    if resumed is not None:
        state = resumed["state"]
        try:
            model.load_state_dict(resumed["weights"])
            optimizer.load_state_dict(resumed["tensors"]["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise InvalidInputError(
                f"--resume: the checkpoint in {config.out!r} does not fit this model or "
                f"optimiser ({str(exc).splitlines()[0]}); resume with the same settings and "
                "base model") from None
        cursor.restore(state["data"])
        step, history = int(state["step"]), list(state["history"])
        best_auroc, best_step = float(state["best_auroc"]), int(state["best_step"])
        running, running_n = float(state["running_loss"]), int(state["running_n"])
        spent_before = float(state["train_seconds"])
        resumed_at = [*state.get("resumed_at", []), step]
        if state["best_weights"] == "file":
            best_state = dict(resumed["best"])
        elif state["best_weights"] == "current":
            best_state = {k: v.detach().to("cpu", copy=True)
                          for k, v in model.state_dict().items()}
        random.setstate(_rng_from_json(state["python_rng"]))
        torch.set_rng_state(resumed["tensors"]["torch_rng"])
        cuda_rng = resumed["tensors"].get("cuda_rng")
        if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_rng)
        logger.info("resuming %s at step %d of %d (epoch %d, batch %d)", out, step, total,
                    cursor.epoch, cursor.pos)
        if step >= total:
            raise InvalidInputError(
                f"--resume: the run in {config.out!r} is at step {step} of {total}; "
                "nothing left to train")

    def make_info(complete: bool, steps: int, train_seconds: float,
                  stopped_early: bool, test: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "complete": complete,
            "config": config.to_dict(),
            "format": {"format": fmt.name, "options": fmt.options},
            "data": {"train_chains": len(train_chains), "train_steps": n_steps,
                     "train_correct": n_pos, "train_incorrect": n_neg,
                     "val_chains": len(val_chains), "train_encode": train_stats,
                     "val_encode": val_stats, "pairs": len(pairs), "sha256": fingerprint},
            "model": {"architecture": type(model).__name__,
                      "layers": int(model.config.num_hidden_layers),
                      "hidden_size": int(model.config.hidden_size),
                      "parameters": _count_params(model),
                      "vocab_size": tokenizer.get_vocab_size(), "base_vocab_size": full_vocab,
                      "base_model": str(base)},
            "steps": steps, "planned_steps": total, "stopped_early": stopped_early,
            "resumed_at": resumed_at,
            "best_step": best_step, "best_val_auroc": best_auroc, "history": history,
            "train_seconds": train_seconds, "total_seconds": time.monotonic() - t_start,
            "device": str(device), "threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__,
                         "transformers": _version("transformers")},
            "test": test,
        }

    def save_periodic() -> None:
        current = model.state_dict()
        keep = config.keep_best and best_state is not None
        export = copy.deepcopy(model).to("cpu")
        if keep:
            export.load_state_dict(best_state)
        state = {
            "step": step, "data": cursor.state(), "history": history,
            "best_auroc": best_auroc, "best_step": best_step,
            "best_weights": ("none" if best_state is None else
                             "current" if best_step == step else "file"),
            "running_loss": running, "running_n": running_n,
            "train_seconds": time.monotonic() - t_train, "resumed_at": resumed_at,
            "python_rng": _rng_to_json(random.getstate()), "data_sha256": fingerprint,
        }
        tensors = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                   "cuda_rng": (torch.cuda.get_rng_state_all()
                                if torch.cuda.is_available() else [])}
        resume = {"weights": current, "tensors": tensors, "state": state,
                  "best": best_state if state["best_weights"] == "file" else None}
        save_checkpoint(export, tokenizer, fmt, out,
                        make_info(False, step, state["train_seconds"], False, None),
                        max_length=config.max_length, resume=resume)
        logger.info("checkpoint at step %d written to %s", step, out)

    t_train = time.monotonic() - spent_before
    bar = tqdm_mod.tqdm(total=total, initial=step, disable=not config.progress, desc="train",
                        unit="step", dynamic_ncols=True)
    stopped_early = False
    progress = 0.0
    while progress < 1.0:
        # Learning rate for this step, from the fraction of the run done (steps or time).
        progress = step / total
        if budget_s is not None:
            progress = max(progress, (time.monotonic() - t_train) / budget_s)
        factor = lr_factor(progress + 0.5 / total, config.warmup_ratio)
        for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base_lr * factor
        idx = cursor.next()
        batch = _collate([train_chains[i] for i in idx], pad_id, torch, position_weights)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits
        if position_weights is None:
            loss = loss_fn(logits.float().view(-1, 2), batch["labels"].view(-1))
        else:  # weighted mean over the labelled tokens, as CrossEntropyLoss(weight=...) does
            per_token = torch.nn.functional.cross_entropy(
                logits.float().view(-1, 2), batch["labels"].view(-1),
                ignore_index=IGNORE_INDEX, reduction="none")
            w = batch["weights"].view(-1)
            loss = (per_token * w).sum() / w.sum().clamp_min(1e-8)
        if pairs:
            local = {g: n for n, g in enumerate(idx)}
            sel = [(local[pairs[i][0]], pairs[i][1], local[i], pairs[i][2])
                   for i in idx if i in pairs and pairs[i][0] in local]
            if sel:
                rows_g, pos_g, rows_b, pos_b = (torch.tensor(v, device=device)
                                                for v in zip(*sel, strict=True))
                margin = logits.float()[..., 1] - logits.float()[..., 0]
                # the correct chain's step k should score above the flawed chain's step k
                pair_loss = torch.nn.functional.softplus(
                    margin[rows_b, pos_b] - margin[rows_g, pos_g]).mean()
                loss = loss + config.pair_weight * pair_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        running += float(loss.detach())
        running_n += 1
        bar.update(1)
        bar.set_postfix(loss=f"{running / running_n:.4f}")
        if step % config.log_every == 0:
            logger.info("step %d/%d loss %.4f lr %.2e (%.1f s)", step, total,
                        running / running_n, optimizer.param_groups[0]["lr"],
                        time.monotonic() - t_train)
        progress = step / total
        out_of_time = budget_s is not None and time.monotonic() - t_train >= budget_s
        if out_of_time:
            progress = 1.0
        if step % config.eval_every == 0 or progress >= 1.0:
            report = _evaluate(model, val_chains, pad_id, device)
            # None (one class absent from the validation steps) never counts as the best
            val = float("nan") if report["auroc"] is None else float(report["auroc"])
            per_kind = {k: round(v["auroc"], 4) for k, v in report["per_kind"].items()
                        if v["auroc"] is not None}
            first = report["first_error_auroc"]
            history.append({"step": step, "train_loss": running / max(1, running_n),
                            "val_auroc": report["auroc"], "val_first_error_auroc": first,
                            "val_per_kind": per_kind, "seconds": time.monotonic() - t_train})
            logger.info("step %d: validation step AUROC %.4f, first-error AUROC %s (train loss "
                        "%.4f); per kind %s", step, val,
                        "-" if first is None else f"{first:.4f}", running / max(1, running_n),
                        ", ".join(f"{k} {v:.3f}" for k, v in per_kind.items()))
            bar.set_postfix(loss=f"{running / max(1, running_n):.4f}", val_auroc=f"{val:.4f}")
            running, running_n = 0.0, 0
            if val > best_auroc:
                best_auroc, best_step = val, step
                if config.keep_best:
                    best_state = {k: v.detach().to("cpu", copy=True)
                                  for k, v in model.state_dict().items()}
        if progress < 1.0 and step % save_every == 0:
            save_periodic()
        if out_of_time and step < total:
            logger.info("stopping at step %d of %d: the --max-minutes %.1f budget is spent "
                        "(the learning rate has decayed to 0 with it)", step, total,
                        config.max_minutes)
            stopped_early = True
    bar.close()
    train_seconds = time.monotonic() - t_train
    if config.keep_best and best_state is not None:
        model.load_state_dict(best_state)
        logger.info("keeping the weights of step %d (validation AUROC %.4f)", best_step,
                    best_auroc)

    test_report: dict[str, Any] | None = None
    if config.eval_data:
        test_rows = load_stepwise(config.eval_data)
        test_chains, test_stats = encode_rows(fmt, test_rows, config.max_length)
        scores = predict_steps(model, test_chains, pad_id, device)
        test_report = step_auroc_report(scores, [c.step_labels for c in test_chains],
                                        [c.kind for c in test_chains])
        test_report["data"] = config.eval_data
        test_report["encode"] = test_stats
        logger.info("test %s: step AUROC %s, first-error AUROC %s", config.eval_data,
                    *("-" if v is None else f"{v:.4f}"
                      for v in (test_report["auroc"], test_report["first_error_auroc"])))

    info = make_info(True, step, train_seconds, stopped_early, test_report)
    save_checkpoint(model, tokenizer, fmt, out, info, max_length=config.max_length)
    logger.info("wrote %s in %.1f min", out, info["total_seconds"] / 60)
    return TrainResult(out, step, train_seconds, best_auroc, history, test_report)


def save_checkpoint(
    model: Any, tokenizer: Any, fmt: TokenClassificationFormat, out: str | Path,
    info: dict[str, Any], *, max_length: int = 512, resume: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory that ``prm export`` takes, atomically.

    Files: ``config.json`` + ``model.safetensors`` (transformers), ``tokenizer.json`` +
    ``tokenizer_config.json`` (fast tokenizer), ``prm_format.json`` and ``training.json``
    (``info`` plus the sha256 of every other file), and with ``resume`` (the keyword
    arguments of :func:`~prm_plugins.training.checkpoint.save_resume_state`) ``resume/``.
    The directory is written as a hidden sibling and swapped into place, so ``out`` is
    always either the previous complete checkpoint or this one.
    """
    from prm_plugins.training.checkpoint import atomic_write_dir, save_resume_state

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).to("cpu") if _on_gpu(model) else model

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        to_hf_tokenizer(tokenizer, model_max_length=max_length).save_pretrained(str(tmp))
        (tmp / FORMAT_FILE).write_text(
            json.dumps({"format": fmt.name, "options": fmt.options}, indent=2) + "\n",
            encoding="utf-8")
        if resume is not None:
            save_resume_state(tmp, **resume)

    return atomic_write_dir(out, write, _finite(info))


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _on_gpu(model: Any) -> bool:
    try:
        return next(model.parameters()).device.type != "cpu"
    except StopIteration:  # pragma: no cover
        return False


def _version(module: str) -> str:
    mod: Any = require(module, "train")
    return str(mod.__version__)
