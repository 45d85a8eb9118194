"""Parity between an exported graph (run by ONNX Runtime) and its torch source model.

Export is not done until the graph matches the torch wrapper within a stated tolerance on
dynamic shapes. :func:`random_chains` makes fresh chains from the tokenizer's vocabulary,
rendered by the model's format so that step positions are real; :func:`measure_parity`
runs them in several batch sizes and lengths, right-padded and left-padded, through both
models and compares ``step_probs`` at every step position.

Examples:
    >>> chains = random_chains(fmt, 8, seed=0, max_tokens=128)  # doctest: +SKIP
    >>> report = measure_parity("out/model.onnx", torch_model, fmt, chains,
    ...                         tolerance=1e-4, pad_token_id=0)  # doctest: +SKIP
    >>> report.check("fp32 graph")  # raises ParityError past the tolerance  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prm_plugins.errors import InvalidInputError, ParityError
from prm_plugins.formats import PRMFormat, Rendered
from prm_plugins.manifest import ATTENTION_MASK, GRAPH_OUTPUT, INPUT_IDS

__all__ = [
    "DEFAULT_MEAN_TOLERANCES",
    "DEFAULT_TOLERANCES",
    "ParityReport",
    "measure_parity",
    "onnx_session",
    "random_chains",
    "run_session",
]

logger = logging.getLogger(__name__)

#: Default max |Δp| at step positions, per dtype of the exported graph. int8 is looser:
#: dynamic quantisation scales activations per batch, so a probability moves with what else
#: is in the batch; on a trained MiniLM-sized PRM max |Δp| was 0.04-0.06, mean 0.011.
#: bf16 (8 mantissa bits against fp16's 11) gets 5e-2 against torch in bf16; bf16-weights
#: computes in fp32 and is held to fp32's bound against torch in fp32 on the same weights.
DEFAULT_TOLERANCES: dict[str, float] = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 5e-2,
                                        "bf16-weights": 1e-4, "int8": 1e-1}
#: Default mean |Δp| bound, per dtype (``None``: only the max is bounded).
DEFAULT_MEAN_TOLERANCES: dict[str, float | None] = {"fp32": None, "fp16": None, "bf16": None,
                                                    "bf16-weights": None, "int8": 2e-2}

#: Words mixed into the vocabulary-made chains, so chains look like worked solutions.
_BASE_WORDS: tuple[str, ...] = (
    "so", "then", "the", "total", "is", "each", "of", "and", "we", "get", "answer", "step",
    "add", "subtract", "multiply", "divide", "=", "+", "-", "*", "/", "(", ")", ".", ",",
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "12", "24", "100", "x", "y",
)


@dataclass
class ParityReport:
    """Parity figures of one graph against the torch model, as written into ``prm.json``.

    Attributes:
        max_abs_diff: max |Δp| over every step position, both paddings.
        mean_abs_diff: mean |Δp| over the same positions.
        tolerance: the max |Δp| allowed.
        mean_tolerance: the mean |Δp| allowed, or ``None`` for no bound on the mean.
        n_chains: chains compared.
        n_steps: step positions compared per padding side.
        shapes: ``[batch, tokens]`` of every batch run.
        padding_sides: paddings checked (``"right"``, ``"left"``).
        by_padding: ``{side: {"max_abs_diff", "mean_abs_diff"}}``.
        left_right_max_abs_diff: max |Δp| of the graph between left and right padding.
        reference: what the graph was compared against.
        backend: the ONNX Runtime execution provider that ran the graph.
        seed: seed of the random chains.
    """

    max_abs_diff: float
    mean_abs_diff: float
    tolerance: float
    n_chains: int
    n_steps: int
    shapes: list[list[int]]
    padding_sides: list[str]
    mean_tolerance: float | None = None
    by_padding: dict[str, dict[str, float]] = field(default_factory=dict)
    left_right_max_abs_diff: float = 0.0
    reference: str = ""
    backend: str = ""
    seed: int | None = None
    #: Per chain, the torch model's probabilities at its step positions (not serialised).
    reference_probs: list[list[float]] = field(default_factory=list, repr=False)

    @property
    def passed(self) -> bool:
        """True when every figure is finite and within the tolerances."""
        if not (math.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance):
            return False
        return self.mean_tolerance is None or self.mean_abs_diff <= self.mean_tolerance

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures, with ``passed`` added."""
        data = asdict(self)
        del data["reference_probs"]
        data["passed"] = self.passed
        return data

    def check(self, what: str, hint: str | None = None) -> None:
        """Raise :class:`ParityError` unless :attr:`passed`.

        Args:
            what: the graph checked, named in the message (e.g. ``"fp32 graph"``).
            hint: how to fix it, replacing the generic advice.
        """
        if self.passed:
            return
        raise ParityError(
            f"{what} fails parity with the torch model: max |Δp| = {self.max_abs_diff:.3g} at "
            f"step positions (mean {self.mean_abs_diff:.3g}; right padding "
            f"{self.by_padding.get('right', {}).get('max_abs_diff', float('nan')):.3g}, left "
            f"{self.by_padding.get('left', {}).get('max_abs_diff', float('nan')):.3g}) over "
            f"{self.n_chains} chains, tolerance {self.tolerance:g}"
            f"{'' if self.mean_tolerance is None else f' (mean {self.mean_tolerance:g})'}. "
            + (hint or "Causes: an op the exporter translates differently, NaN from fully "
               "masked padding rows, or a precision the CPU provider handles poorly (fp16 "
               "needs device cuda). Try --exporter legacy, another --opset, or fp32; raise "
               "--tolerance only if you accept the measured difference")
        )


def onnx_session(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> Any:
    """An ONNX Runtime session with the settings the runtime scorer uses."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=list(providers))


def run_session(session: Any, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """``step_probs`` of a graph for int64 ``[B, T]`` inputs, as float64."""
    (probs,) = session.run([GRAPH_OUTPUT], {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask})
    return np.asarray(probs, dtype=np.float64)


def _word_pool(fmt: PRMFormat, rng: random.Random, size: int = 1500) -> list[str]:
    """Printable words decoded from random vocabulary ids, plus math words.

    Words that encode to a special or unknown token are left out: chains stay plain text.
    """
    tok = fmt.tokenizer
    vocab = tok.get_vocab_size(with_added_tokens=False)
    unk = getattr(tok.model, "unk_token", None)
    avoid = set(fmt.special_ids) | ({tok.token_to_id(unk)} if isinstance(unk, str) else set())
    candidates: set[str] = set()
    for tid in rng.sample(range(vocab), min(size, vocab)):
        if tid in avoid:
            continue
        text = tok.decode([tid]).strip().removeprefix("##")
        if text and text.isprintable() and "\ufffd" not in text and len(text) <= 16:
            candidates.add(text)
    words = sorted(candidates) + list(_BASE_WORDS)
    encodings = tok.encode_batch(words, add_special_tokens=False)
    return [w for w, e in zip(words, encodings, strict=True)
            if e.ids and not avoid.intersection(e.ids)]


def random_chains(
    fmt: PRMFormat,
    n_chains: int,
    *,
    seed: int = 0,
    max_tokens: int = 256,
    max_steps: int = 6,
    max_step_words: int = 14,
) -> list[tuple[str, list[str]]]:
    """Fresh random ``(question, steps)`` chains that render to at most ``max_tokens``.

    Words come from the tokenizer's vocabulary and a few math words; chain lengths and step
    counts vary so that batches mix lengths and padding.

    Args:
        fmt: the model's format (its tokenizer and :meth:`PRMFormat.render`).
        n_chains: chains to make.
        seed: random seed.
        max_tokens: longest rendered chain.
        max_steps: most steps per chain.
        max_step_words: most words per step.

    Raises:
        InvalidInputError: ``max_tokens`` too small to hold even a one-step chain.
    """
    if n_chains < 1:
        raise InvalidInputError(f"n_chains must be at least 1, got {n_chains}")
    rng = random.Random(seed)
    pool = _word_pool(fmt, rng)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(pool) for _ in range(rng.randint(lo, hi)))

    chains: list[tuple[str, list[str]]] = []
    for i in range(n_chains):
        question = words(3, 20) + "?"
        # Every other chain is long, so batches mix short and long rows.
        n_steps = rng.randint(1, max_steps) if i % 2 else max_steps
        steps = [words(1, max_step_words) for _ in range(n_steps)]
        while len(fmt.render(question, steps)) > max_tokens:
            if len(steps) > 1:
                steps.pop()
            elif len(steps[0].split()) > 1:
                steps[0] = " ".join(steps[0].split()[:-1])
            elif len(question.split()) > 1:
                question = " ".join(question.split()[1:])
            else:
                raise InvalidInputError(
                    f"parity max_tokens={max_tokens} cannot hold even a one-word, one-step "
                    "chain with this format; raise it"
                )
        chains.append((question, steps))
    return chains


def _pad(rows: Sequence[Rendered], length: int, pad_id: int, side: str
         ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    shifts = []
    for r, row in enumerate(rows):
        n = len(row.input_ids)
        start = length - n if side == "left" else 0
        ids[r, start:start + n] = row.input_ids
        mask[r, start:start + n] = 1
        shifts.append(start)
    return ids, mask, shifts


def _torch_probs(model: Any, ids: np.ndarray, mask: np.ndarray, device: str) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
    return out.float().cpu().numpy().astype(np.float64)


def measure_parity(
    onnx_model: str | Path | Any,
    torch_model: Any,
    fmt: PRMFormat,
    chains: Sequence[tuple[str, Sequence[str]]],
    *,
    tolerance: float,
    pad_token_id: int,
    mean_tolerance: float | None = None,
    batch_sizes: Sequence[int] = (1, 3, 4),
    extra_padding: int = 3,
    max_length: int | None = None,
    device: str = "cpu",
    providers: Sequence[str] = ("CPUExecutionProvider",),
    reference: str = "torch wrapper",
    seed: int | None = None,
    run: Callable[[Any, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> ParityReport:
    """Compare the graph's ``step_probs`` with the torch model's at every step position.

    Chains are taken in order into batches whose sizes cycle through ``batch_sizes``. Each
    batch is padded ``extra_padding`` tokens past its longest row (capped at ``max_length``)
    and run right-padded through torch and the graph, then left-padded through the graph;
    both graph runs are compared with torch at each chain's step positions.

    Args:
        onnx_model: path of the ``.onnx`` file, or an ONNX Runtime session.
        torch_model: the torch wrapper, ``(input_ids, attention_mask) -> step_probs``.
        fmt: the model's format, used to render ``chains``.
        chains: ``(question, steps)`` pairs, e.g. from :func:`random_chains`.
        tolerance: max |Δp| allowed.
        mean_tolerance: mean |Δp| allowed (``None``: no bound).
        pad_token_id: id written at padded positions.
        batch_sizes: batch sizes to cycle through.
        extra_padding: pad tokens added past each batch's longest row.
        max_length: never pad past this many tokens.
        device: torch device of ``torch_model`` (``"cpu"`` or ``"cuda"``).
        providers: ONNX Runtime providers, when ``onnx_model`` is a path.
        reference: description of the torch model, written into the report.
        seed: seed the chains were made with, written into the report.
        run: ``(session, ids, mask) -> probs``; default :func:`run_session`.

    Returns:
        The figures; call :meth:`ParityReport.check` to enforce the tolerance.
    """
    if not chains:
        raise InvalidInputError("measure_parity needs at least one chain")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise InvalidInputError(f"batch_sizes must be positive ints, got {list(batch_sizes)}")
    session = onnx_model if hasattr(onnx_model, "run") else onnx_session(onnx_model, providers)
    rendered = [fmt.render(q, list(s)) for q, s in chains]
    comparison = _Comparison(torch_model, session, run or run_session, pad_token_id, device)
    for rows, length in _batches(rendered, batch_sizes, extra_padding, max_length):
        comparison.add(rows, length)
    report = comparison.report(tolerance, mean_tolerance, reference=reference, seed=seed)
    logger.info("parity: max |Δp| %.3g, mean %.3g over %d chains (%d steps), tolerance %g",
                report.max_abs_diff, report.mean_abs_diff, report.n_chains, report.n_steps,
                report.tolerance)
    return report


def _batches(rendered: Sequence[Rendered], batch_sizes: Sequence[int], extra_padding: int,
             max_length: int | None) -> Iterator[tuple[Sequence[Rendered], int]]:
    """Rows taken in order in batches of cycling sizes, with each batch's padded length."""
    start, k = 0, 0
    while start < len(rendered):
        rows = rendered[start:start + batch_sizes[k % len(batch_sizes)]]
        start, k = start + len(rows), k + 1
        longest = max(len(r) for r in rows)
        length = longest + extra_padding
        if max_length is not None:
            length = max(longest, min(length, max_length))
        yield rows, length


@dataclass
class _Comparison:
    """The graph against torch, batch by batch: |Δp| at step positions, both paddings."""

    torch_model: Any
    session: Any
    run: Callable[[Any, np.ndarray, np.ndarray], np.ndarray]
    pad_token_id: int
    device: str
    diffs: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {"right": [], "left": []})
    left_right: list[float] = field(default_factory=list)
    reference_probs: list[list[float]] = field(default_factory=list)
    shapes: list[list[int]] = field(default_factory=list)

    def add(self, rows: Sequence[Rendered], length: int) -> None:
        """Run one batch right-padded through torch and the graph, left-padded through the
        graph, and record the differences at each row's step positions."""
        ids, mask, _ = _pad(rows, length, self.pad_token_id, "right")
        ref = _torch_probs(self.torch_model, ids, mask, self.device)
        got_right = self.run(self.session, ids, mask)
        lids, lmask, shifts = _pad(rows, length, self.pad_token_id, "left")
        got_left = self.run(self.session, lids, lmask)
        self.shapes.append([len(rows), length])
        for r, row in enumerate(rows):
            pos = np.asarray(row.step_positions)
            want = ref[r, pos]
            self.reference_probs.append([float(p) for p in want])
            right = got_right[r, pos]
            left = got_left[r, pos + shifts[r]]
            self.diffs["right"].append(_abs_diff(right, want))
            self.diffs["left"].append(_abs_diff(left, want))
            self.left_right.append(float(_abs_diff(left, right).max()))

    def report(self, tolerance: float, mean_tolerance: float | None, *, reference: str,
               seed: int | None) -> ParityReport:
        """The figures over every batch added."""
        by_side = {side: np.concatenate(d) for side, d in self.diffs.items()}
        every = np.concatenate(list(by_side.values()))
        session = self.session
        return ParityReport(
            max_abs_diff=float(every.max()),
            mean_abs_diff=float(every.mean()),
            tolerance=float(tolerance),
            mean_tolerance=None if mean_tolerance is None else float(mean_tolerance),
            n_chains=len(self.reference_probs),
            n_steps=int(by_side["right"].size),
            shapes=self.shapes,
            padding_sides=list(by_side),
            by_padding={side: {"max_abs_diff": float(d.max()),
                               "mean_abs_diff": float(d.mean())}
                        for side, d in by_side.items()},
            left_right_max_abs_diff=max(self.left_right),
            reference=reference,
            backend=str(session.get_providers()[0]) if hasattr(session, "get_providers")
            else "",
            seed=seed,
            reference_probs=self.reference_probs,
        )


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b|, with NaN or inf on either side counted as an infinite difference."""
    d = np.abs(a - b)
    return np.where(np.isfinite(d), d, np.inf)

