"""The ONNX Runtime scorer: :class:`OnnxPRM` and :func:`load_prm`.

:class:`OnnxPRM` ties the mechanics of this package together: the model directory read once
and verified (:mod:`~prm_plugins.runtime.model_files`), the session and its provider
(:mod:`~prm_plugins.runtime.session`), chains rendered by the format into jobs (windows for
long chains, :mod:`~prm_plugins.runtime.windows`), jobs packed into batches
(:mod:`~prm_plugins.runtime.batching`, :mod:`~prm_plugins.runtime.buckets`), run plainly or
through IO binding (:mod:`~prm_plugins.runtime.iobinding`), and every output checked
(:mod:`~prm_plugins.runtime.outputs`) before a score is read.

Imports only onnxruntime, tokenizers and numpy (inside the functions that need them), so
``import prm_plugins`` stays light.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from prm_plugins.errors import (
    ChainTooLongError,
    InvalidInputError,
    ManifestError,
    ModelLoadError,
    ModelOutputError,
    PRMError,
)
from prm_plugins.formats import PRMFormat, Rendered, get_format
from prm_plugins.manifest import GRAPH_INPUTS, GRAPH_OUTPUT, MANIFEST_NAME, Manifest
from prm_plugins.runtime.batching import Batch, pad_batch, plan_batches
from prm_plugins.runtime.buckets import (
    plan_bucketed_batches,
    resolve_length_buckets,
    row_bucket,
    rows_cap,
)
from prm_plugins.runtime.model_files import (
    check_token_ids,
    find_pad_id,
    load_tokenizer,
    read_model_files,
)
from prm_plugins.runtime.outputs import check_graph_contract, check_step_probs
from prm_plugins.runtime.session import CPU, CUDA, Device, create_session
from prm_plugins.runtime.windows import plan_windows
from prm_plugins.steps import validate_chain
from prm_plugins.types import StepScores

if TYPE_CHECKING:
    from prm_plugins.backends.vllm import VLLMPRM
    from prm_plugins.calibration import PlattCalibration

__all__ = ["CPU_ATTENTION_BUDGET", "Job", "LongChains", "OnnxPRM", "default_model_dir",
           "load_prm"]

logger = logging.getLogger(__name__)

LongChains = Literal["error", "window"]
#: Default most attention cells (``rows x length^2``) per batch on the CPU: 64 rows of 128
#: tokens, 16 of 256, 4 of 512. See ``benchmarks/results/memory_prm_score.md``.
CPU_ATTENTION_BUDGET = 1 << 20


def default_model_dir() -> Path:
    """Directory of the default PRM shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "models" / "default"


def check_options(device: object, long_chains: object, token_budget: object,
                  attention_budget: object, cuda_graph: bool) -> None:
    """Refuse scorer options of the wrong kind before anything is read.

    Raises:
        InvalidInputError: naming the option, what it holds and what it takes.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise InvalidInputError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if long_chains not in ("error", "window"):
        raise InvalidInputError(
            f"long_chains must be 'error' or 'window', got {long_chains!r}"
        )
    if not isinstance(token_budget, int) or token_budget < 1:
        raise InvalidInputError(f"token_budget must be a positive int, got {token_budget!r}")
    if attention_budget is not None and (not isinstance(attention_budget, int)
                                         or isinstance(attention_budget, bool)
                                         or attention_budget < 0):
        raise InvalidInputError(
            "attention_budget must be None (automatic), 0 (no cap) or a positive int of "
            f"rows x length^2 cells, got {attention_budget!r}"
        )
    if cuda_graph and device == "cpu":
        raise InvalidInputError(
            "cuda_graph=True needs device='cuda' (or 'auto' on a GPU machine); CUDA graphs "
            "do not exist on the CPU provider"
        )


@dataclass(frozen=True)
class Job:
    """One forward sequence: a whole chain or one window of it."""

    item: int
    rendered: Rendered
    #: indices (into the item's steps) scored by this job, aligned with ``positions``.
    step_indices: list[int]
    positions: list[int]


class OnnxPRM:
    """A process reward model run by ONNX Runtime.

    Args:
        model_dir: a model directory (``model.onnx``, ``tokenizer.json``, ``prm.json``).
        device: ``"auto"`` (CUDA when a GPU and the CUDA provider are there, else CPU),
            ``"cpu"``, or ``"cuda"`` (raises when CUDA cannot run).
        long_chains: ``"error"`` raises :class:`ChainTooLongError` for a chain longer than
            ``max_length``; ``"window"`` scores it in windows that keep the question and as
            many preceding steps as fit.
        token_budget: most padded tokens in one forward batch.
        attention_budget: most attention cells (``rows x length^2``) in one forward batch, so
            long chains run in smaller batches and the activations of attention (quadratic in
            the length) stay bounded. ``None`` (default): :data:`CPU_ATTENTION_BUDGET` on the
            CPU provider (peak memory of ``prm score`` over a large file fell from 2.2 GB to
            about 0.5 GB at the same speed), no cap on CUDA; ``0`` for no cap anywhere.
        max_batch_size: most sequences in one forward batch.
        intra_op_num_threads: ONNX Runtime threads (default: its own choice).
        verify: check every file's sha256 against ``prm.json`` (default ``True``). Each file
            the model reads (the graph, its external data, the tokenizer) is read once and
            built from those verified bytes, so a file swapped after the check is never used;
            a graph whose external data ``prm.json`` does not list is refused. Files that are
            symlinks out of the model directory are refused either way.
        checks: deterministic step checks applied after the model (``("arithmetic",)``
            caps steps whose written arithmetic is wrong, see :mod:`prm_plugins.checks`);
            ``None`` (default) takes the list the model's manifest recommends under
            ``extra.checks``, ``()`` turns them off.
        calibrate: apply the Platt calibration in the manifest's ``extra.calibration``
            (written by ``prm calibrate``; see :mod:`prm_plugins.calibration`) before the
            checks; ``False`` gives the model's raw probabilities.
        buckets: pad every batch to one of a few lengths: ``"auto"`` (powers of two from
            64, capped at ``max_length``) or a list of lengths; each batch holds chains of
            one bucket, at most ``token_budget`` padded tokens. ``None`` (default) keeps the
            fine-grained length ladder of :func:`prm_plugins.runtime.batching.plan_batches`. Scores
            are the same either way; buckets keep the set of shapes small, so memory stops
            growing after warm-up and CUDA graphs can be captured.
        io_binding: run through ONNX Runtime IO binding with device buffers
            (:class:`prm_plugins.runtime.iobinding.BoundRunner`); ``None`` (default) uses it
            on CUDA.
        cuda_graph: capture one CUDA graph per bucketed shape of at most
            :data:`prm_plugins.runtime.iobinding.CUDA_GRAPH_MAX_TOKENS` tokens (rows padded to
            a power of two) and replay it; needs the CUDA provider with every node on the GPU (the
            session is created with ``enable_cuda_graph``; if ONNX Runtime refuses, a warning
            says why and the model runs without graphs). Implies ``buckets="auto"`` unless
            buckets are given.

    Every run's ``step_probs`` is checked (shape ``[B, T]`` of the inputs, a float dtype,
    finite and within [0, 1] where the attention mask is 1, up to
    :data:`~prm_plugins.runtime.outputs.PROB_TOLERANCE` of
    rounding, which is clipped); a graph that breaks it raises :class:`ModelOutputError`
    naming the model instead of scoring silently.

    Examples:
        >>> from prm_plugins import load_prm
        >>> prm = load_prm()  # doctest: +SKIP
        >>> s = prm.score("Tom has 3 apples, buys 2. How many?", ["3 + 2 = 5"])  # doctest: +SKIP
        >>> len(s.scores)  # doctest: +SKIP
        1
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        device: Device = "auto",
        long_chains: LongChains = "error",
        token_budget: int = 8192,
        attention_budget: int | None = None,
        max_batch_size: int = 64,
        intra_op_num_threads: int | None = None,
        verify: bool = True,
        checks: Sequence[str] | None = None,
        calibrate: bool = True,
        buckets: str | Sequence[int] | None = None,
        io_binding: bool | None = None,
        cuda_graph: bool = False,
    ) -> None:
        check_options(device, long_chains, token_budget, attention_budget, cuda_graph)
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise ModelLoadError(
                f"model directory {str(self.model_dir)!r} does not exist or is not a directory"
            )
        self.manifest = Manifest.read(self.model_dir)
        self._model_path = self.model_dir / self.manifest.model_file
        # Read once, verify those bytes, build from them: nothing is re-read from disk.
        files = read_model_files(self.model_dir, self.manifest, verify=verify)
        self.checks = self._resolve_checks(checks)
        self.calibration = self._load_calibration() if calibrate else None
        self.long_chains: LongChains = long_chains
        self.token_budget = token_budget
        self.max_batch_size = max_batch_size
        self.max_length = int(self.manifest.max_length)
        self.tokenizer = load_tokenizer(files.tokenizer,
                                        self.model_dir / self.manifest.tokenizer_file)
        files.tokenizer = None
        check_token_ids(self.tokenizer, self.manifest, self.model_dir)
        self.format: PRMFormat = self._load_format()
        self._pad_id = find_pad_id(self.tokenizer, self.manifest)
        if cuda_graph and buckets is None:
            buckets = "auto"
        self.buckets: tuple[int, ...] | None = (
            None if buckets is None else resolve_length_buckets(buckets, self.max_length))
        opened = create_session(files.graph, files.external, model_dir=self.model_dir,
                                model_path=self._model_path, dtype=self.manifest.dtype,
                                device=device, threads=intra_op_num_threads,
                                cuda_graph=cuda_graph)
        del files
        self._session, self.provider = opened.session, opened.provider
        self.cuda_graph = cuda_graph and opened.cuda_graph
        if attention_budget is None:
            attention_budget = CPU_ATTENTION_BUDGET if self.provider == CPU else 0
        #: most ``rows x length^2`` per batch; ``None`` when uncapped.
        self.attention_budget: int | None = attention_budget or None
        self._runner = self._make_runner(io_binding)
        self._input_names = check_graph_contract(self._session, self._model_path)

    # -- loading --------------------------------------------------------------------------
    def _resolve_checks(self, checks: Sequence[str] | None) -> tuple[str, ...]:
        from prm_plugins.checks import KNOWN_CHECKS

        if checks is None:
            checks = self.manifest.extra.get("checks", [])
        if isinstance(checks, str) or not all(isinstance(c, str) for c in checks):
            raise InvalidInputError(
                f"checks must be a list of check names, got {checks!r}; known: {KNOWN_CHECKS}"
            )
        unknown = [c for c in checks if c not in KNOWN_CHECKS]
        if unknown:
            raise InvalidInputError(
                f"unknown step check(s) {unknown}; known checks: {', '.join(KNOWN_CHECKS)}"
            )
        return tuple(checks)

    def _load_calibration(self) -> PlattCalibration | None:
        """The manifest's Platt calibration (``extra.calibration``), or ``None``."""
        if "calibration" not in self.manifest.extra:
            return None
        from prm_plugins.calibration import PlattCalibration

        try:
            return PlattCalibration.from_manifest(self.manifest.extra["calibration"])
        except InvalidInputError as exc:
            raise ManifestError(f"{self.model_dir / MANIFEST_NAME}: {exc}") from exc

    def _load_format(self) -> PRMFormat:
        fmt_cls = get_format(self.manifest.format)
        try:
            return fmt_cls(self.tokenizer, self.manifest.format_options)
        except InvalidInputError as exc:
            raise ManifestError(
                f"{self.model_dir / MANIFEST_NAME}: format_options do not fit format "
                f"{self.manifest.format!r} and this tokenizer: {exc}"
            ) from exc

    def _make_runner(self, io_binding: bool | None) -> Any:
        """The IO-binding runner: on CUDA by default, on CPU when asked (tests, profiling)."""
        on_cuda = self.provider == CUDA
        if io_binding is False or (io_binding is None and not on_cuda):
            return None
        from prm_plugins.runtime.iobinding import BoundRunner

        return BoundRunner(self._session, device="cuda" if on_cuda else "cpu",
                           cuda_graph=self.cuda_graph)

    def __repr__(self) -> str:
        return (f"OnnxPRM(model_dir={str(self.model_dir)!r}, format={self.manifest.format!r}, "
                f"provider={self.provider!r}, max_length={self.max_length}, "
                f"checks={self.checks!r})")

    # -- scoring --------------------------------------------------------------------------
    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        """Score each step of one chain.

        Args:
            question: the problem the chain answers.
            steps: the chain's steps (see :func:`prm_plugins.split_steps` for raw text).

        Returns:
            :class:`StepScores` with exactly one probability per step.
        """
        return self.score_batch([(question, steps)])[0]

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        """Async :meth:`score`, run in a worker thread."""
        return await asyncio.to_thread(self.score, question, steps)

    async def ascore_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """Async :meth:`score_batch`, run in a worker thread."""
        return await asyncio.to_thread(self.score_batch, items)

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """Score many chains in token-budget batches.

        Args:
            items: ``(question, steps)`` pairs.

        Returns:
            One :class:`StepScores` per item, in input order.
        """
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise InvalidInputError(
                "score_batch takes a list of (question, steps) pairs, got "
                f"{type(items).__name__}"
            )
        checked = [self._check_item(i, item) for i, item in enumerate(items)]
        jobs: list[Job] = []
        for idx, (question, steps) in enumerate(checked):
            jobs.extend(self._jobs_for(idx, question, steps))
        probs = self._run(jobs)
        results: list[list[float | None]] = [[None] * len(steps) for _, steps in checked]
        for job, p in zip(jobs, probs, strict=True):
            for step_idx, pos in zip(job.step_indices, job.positions, strict=True):
                results[job.item][step_idx] = float(p[pos])
        out = []
        for (question, steps), scores in zip(checked, results, strict=True):
            if any(s is None for s in scores):  # pragma: no cover - would be a bug
                raise AssertionError("a step was left without a score")
            raw = [float(s) for s in scores]  # type: ignore[arg-type]
            if self.calibration is not None:
                raw = self.calibration.apply(raw)
            scored = StepScores(steps=list(steps), scores=raw, question=question,
                                meta=self.format.step_notes(question, steps))
            if self.checks:
                from prm_plugins.checks import apply_checks

                scored = apply_checks(scored, self.checks)
            out.append(scored)
        return out

    @staticmethod
    def _check_item(index: int, item: object) -> tuple[str, list[str]]:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InvalidInputError(
                f"item {index} must be a (question, steps) pair, got {type(item).__name__}"
                f"{'' if not isinstance(item, (tuple, list)) else f' of length {len(item)}'}"
            )
        question, steps = item
        try:
            return validate_chain(question, steps)
        except InvalidInputError as exc:
            raise InvalidInputError(f"item {index}: {exc}") from None

    def _jobs_for(self, idx: int, question: str, steps: list[str]) -> list[Job]:
        rendered = self.format.render(question, steps)
        if len(rendered) <= self.max_length:
            return [Job(idx, rendered, list(range(len(steps))), rendered.step_positions)]
        if self.long_chains == "error":
            raise ChainTooLongError(
                f"item {idx}: the chain renders to {len(rendered)} tokens, over the model's "
                f"max_length of {self.max_length}. Shorten it, or score it in windows with "
                "load_prm(..., long_chains='window')",
                n_tokens=len(rendered), max_length=self.max_length,
            )
        return self._windows(idx, question, steps)

    def _windows(self, idx: int, question: str, steps: list[str]) -> list[Job]:
        """Windows that keep the question and the preceding steps that fit in half a window.

        See :mod:`prm_plugins.runtime.windows` for the plan and why half a window.
        """

        def too_long(step: int, n_tokens: int) -> ChainTooLongError:
            return ChainTooLongError(
                f"item {idx}: step {step} with the question alone renders to {n_tokens} "
                f"tokens, over max_length {self.max_length}; no window can score it. "
                "Shorten that step or the question",
                n_tokens=n_tokens, max_length=self.max_length,
            )

        plan = plan_windows(lambda a, b: self.format.render(question, steps[a:b]), len(steps),
                            self.max_length, too_long)
        return [
            Job(idx, w.rendered, list(range(w.first_new, w.end)),
                 [w.rendered.step_positions[i - w.start] for i in range(w.first_new, w.end)])
            for w in plan
        ]

    def _run(self, jobs: list[Job]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(jobs)
        for batch in self._plan([len(j.rendered) for j in jobs]):
            ids, mask = pad_batch([jobs[i].rendered.input_ids for i in batch.indices],
                                  batch.length, self._pad_id)
            if self.cuda_graph:  # rows padded too: one captured graph per (rows, length)
                ids, mask = self._pad_rows(ids, mask, batch.length)
            probs = self._forward(ids, mask, keep=self.buckets is not None)
            for row, i in enumerate(batch.indices):
                out[i] = np.asarray(probs[row], dtype=np.float32)
        return out  # type: ignore[return-value]

    def _plan(self, lengths: list[int]) -> list[Batch]:
        if self.buckets is None:
            return plan_batches(lengths, token_budget=self.token_budget,
                                max_batch_size=self.max_batch_size, max_length=self.max_length,
                                attention_budget=self.attention_budget)
        return plan_bucketed_batches(lengths, self.buckets, token_budget=self.token_budget,
                                     max_batch_size=self.max_batch_size,
                                     attention_budget=self.attention_budget)

    def _pad_rows(self, ids: np.ndarray, mask: np.ndarray, length: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Add fully masked rows up to the batch's row bucket (their outputs are dropped)."""
        cap = rows_cap(length, token_budget=self.token_budget, max_batch_size=self.max_batch_size,
                       attention_budget=self.attention_budget)
        extra = row_bucket(len(ids), cap) - len(ids)
        if extra <= 0:
            return ids, mask
        return (np.concatenate([ids, np.full((extra, length), self._pad_id, np.int64)]),
                np.concatenate([mask, np.zeros((extra, length), np.int64)]))

    def _forward(self, ids: np.ndarray, mask: np.ndarray, *, keep: bool) -> np.ndarray:
        try:
            if self._runner is not None:
                probs = self._runner.run(ids, mask, keep=keep)
            else:
                (probs,) = self._session.run([GRAPH_OUTPUT],
                                             dict(zip(GRAPH_INPUTS, (ids, mask), strict=True)))
        except (PRMError, MemoryError):
            raise
        except Exception as exc:  # the inputs are ours and well formed: the graph failed
            raise ModelOutputError(
                f"{self._model_path} failed on a batch of shape {ids.shape} (its {GRAPH_OUTPUT} "
                f"must be float32 of the input's shape [B, T]): ONNX Runtime says: "
                f"{str(exc)[:500]}"
            ) from exc
        return check_step_probs(probs, mask, f"{self._model_path} (model directory "
                                             f"{self.model_dir})")

    def run_graph(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Run the raw graph: ``step_probs [B, T]`` for padded ``int64`` inputs."""
        return self._forward(np.asarray(input_ids, dtype=np.int64),
                             np.asarray(attention_mask, dtype=np.int64), keep=False)


def load_prm(
    path: str | os.PathLike[str] | None = None, *, device: Device = "auto", **kwargs: Any
) -> OnnxPRM | VLLMPRM:
    """Load a PRM model directory, or the shipped default PRM when ``path`` is ``None``.

    A ``vllm://host:port/model`` URL (``vllm+https://`` for TLS) gives a
    :class:`~prm_plugins.backends.vllm.VLLMPRM` instead: a PRM served by vLLM (or by the
    project's Ray Serve deployment), with the same scorer contract; ``format`` and
    ``tokenizer`` (a local path) then go in ``kwargs``.

    Args:
        path: model directory made by ``prm export``; ``None`` for the default PRM; or a
            served PRM's ``vllm://`` URL.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (the server decides for a URL).
        **kwargs: passed to :class:`OnnxPRM` (``long_chains``, ``token_budget``, ...) or
            to ``VLLMPRM`` (``tokenizer``, ``format``, ``batch_size``, ``timeout``, ...).

    Examples:
        >>> from prm_plugins import load_prm
        >>> prm = load_prm()  # doctest: +SKIP
        >>> prm.score("2 + 3 * 4 = ?", ["3 * 4 = 12", "2 + 12 = 14"]).min  # doctest: +SKIP
        0.97
        >>> served = load_prm("vllm://gpu-host:8000/Qwen/Qwen2.5-Math-PRM-7B", format="qwen-prm",
        ...                   tokenizer="/models/Qwen2.5-Math-PRM-7B")  # doctest: +SKIP
    """
    if isinstance(path, str) and path.startswith(("vllm://", "vllm+http://", "vllm+https://")):
        from prm_plugins.backends.vllm import VLLMPRM

        if device != "auto":
            raise InvalidInputError(f"device={device!r} does not apply to a served PRM "
                                    f"({path}): the server runs the model")
        return VLLMPRM.from_url(path, **kwargs)
    if isinstance(path, str) and path.startswith(("http://", "https://")):
        raise InvalidInputError(
            f"load_prm takes a model directory or a served PRM's vllm://host:port/model URL, got "
            f"{path!r}: write vllm://... (vllm+https://...) for vLLM's Pooling API, or use "
            "prm_plugins.adapters.ray.RemotePRM(url) for the Ray Serve deployment's /score")
    if path is None:
        path = default_model_dir()
        if not (Path(path) / "prm.json").is_file():
            raise ModelLoadError(
                f"the default PRM is not in this installation ({path} has no prm.json); "
                "reinstall prm-plugins or pass a model directory"
            )
    return OnnxPRM(path, device=device, **kwargs)
