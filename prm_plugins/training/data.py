"""Training data: stepwise rows in, labelled token sequences and batches out.

The data path is the runtime's: every chain goes through
:meth:`TokenClassificationFormat.render`, the one token/step mapping shared with export and
scoring, and :func:`token_labels` puts each step's label at the position ``render`` says the
step is scored at (-100, ignored by the loss, everywhere else). :func:`prepare_data` is the
first stage of :func:`prm_plugins.training.train`: tokenizer, rows, split, encoding.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, PRMError
from prm_plugins.formats.base import Rendered
from prm_plugins.formats.token_classification import TokenClassificationFormat
from prm_plugins.training.config import TrainConfig
from prm_plugins.training.tokenizer import (
    digit_splitting_tokenizer,
    minilm_dir,
    prune_vocabulary,
    select_vocabulary,
)

__all__ = [
    "IGNORE_INDEX",
    "EncodedChain",
    "StepwiseRow",
    "TrainData",
    "build_format",
    "collate",
    "encode_rows",
    "length_bucketed_batches",
    "load_stepwise",
    "outcome_rows",
    "prepare_data",
    "split_by_question",
    "token_labels",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


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


def collate(chains: Sequence[EncodedChain], pad_id: int, torch: Any) -> dict[str, Any]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` tensors of a batch."""
    t = max(len(c) for c in chains)
    ids = torch.full((len(chains), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(chains), t), dtype=torch.long)
    labels = torch.full((len(chains), t), IGNORE_INDEX, dtype=torch.long)
    for i, c in enumerate(chains):
        n = len(c)
        ids[i, :n] = torch.tensor(c.input_ids, dtype=torch.long)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(c.labels, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# -- the data stage of train() ------------------------------------------------------------------
@dataclass
class TrainData:
    """Everything :func:`prepare_data` made: the tokenizer, the format and the encoded chains.

    ``order_rng`` is the seeded generator that drew the ``--max-train-rows`` sample and then
    draws the batch order, epoch after epoch.
    """

    base: Path
    tokenizer: Any
    fmt: TokenClassificationFormat
    pad_id: int
    full_vocab: int
    old_ids: list[int] | None
    train_chains: list[EncodedChain]
    val_chains: list[EncodedChain]
    train_stats: dict[str, int]
    val_stats: dict[str, int]
    order_rng: random.Random

    @property
    def n_steps(self) -> int:
        """Training steps (labels), correct and incorrect."""
        return sum(len(c.step_labels) for c in self.train_chains)

    @property
    def n_correct(self) -> int:
        """Training steps labelled correct."""
        return sum(sum(c.step_labels) for c in self.train_chains)


def _base_tokenizer(config: TrainConfig, base: Path) -> Any:
    tokenizer = digit_splitting_tokenizer(base) if config.digit_split else None
    if tokenizer is None:
        from tokenizers import Tokenizer
        tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
    return tokenizer


def _read_rows(config: TrainConfig) -> tuple[list[StepwiseRow], list[StepwiseRow]]:
    rows = load_stepwise(config.data)
    if config.val_data:
        train_rows, val_rows = rows, load_stepwise(config.val_data)
    else:
        train_rows, val_rows = split_by_question(rows, config.val_fraction, config.seed)
    if config.supervision == "outcome":
        train_rows, val_rows = outcome_rows(train_rows), outcome_rows(val_rows)
    return train_rows, val_rows


def _pruned(config: TrainConfig, tokenizer: Any,
            train_rows: Sequence[StepwiseRow]) -> tuple[Any, list[int] | None]:
    if not config.prune_vocab:
        return tokenizer, None
    full_vocab = tokenizer.get_vocab_size()
    corpus = (text for r in train_rows for text in (r.prompt, *r.completions))
    keep = select_vocabulary(tokenizer, corpus, keep_top=config.vocab_keep_top)
    keep.update(t for t in (config.separator, config.prompt_suffix)
                if t in tokenizer.get_vocab())
    tokenizer, old_ids = prune_vocabulary(tokenizer, keep)
    logger.info("vocabulary pruned from %d to %d tokens", full_vocab, tokenizer.get_vocab_size())
    return tokenizer, old_ids


def prepare_data(config: TrainConfig) -> TrainData:
    """The data stage: tokenizer, rows, validation split, vocabulary pruning, encoding.

    Raises:
        InvalidInputError: unreadable data, no chain fitting ``max_length``, or training
            steps of one label only.
    """
    base = Path(config.base_model) if config.base_model else minilm_dir()
    tokenizer = _base_tokenizer(config, base)
    train_rows, val_rows = _read_rows(config)
    rng = random.Random(config.seed)
    if config.max_train_rows is not None and len(train_rows) > config.max_train_rows:
        train_rows = rng.sample(train_rows, config.max_train_rows)
    full_vocab = tokenizer.get_vocab_size()
    tokenizer, old_ids = _pruned(config, tokenizer, train_rows)
    fmt = build_format(tokenizer, config)
    pad_id = tokenizer.token_to_id("[PAD]") or 0
    if len(val_rows) > config.max_val_rows:
        val_rows = random.Random(config.seed + 1).sample(val_rows, config.max_val_rows)
    train_chains, train_stats = encode_rows(fmt, train_rows, config.max_length)
    val_chains, val_stats = encode_rows(fmt, val_rows, config.max_length)
    if not train_chains or not val_chains:
        raise InvalidInputError("no training or validation chain fits --max-length")
    data = TrainData(base, tokenizer, fmt, pad_id, full_vocab, old_ids, train_chains,
                     val_chains, train_stats, val_stats, rng)
    n_pos, n_steps = data.n_correct, data.n_steps
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
    return data
