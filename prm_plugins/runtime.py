"""The ONNX Runtime scorer: :class:`OnnxPRM` and :func:`load_prm`.

Imports only onnxruntime, tokenizers and numpy (inside the functions that need them), so
``import prm_plugins`` stays light.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from prm_plugins.batching import pad_batch, plan_batches
from prm_plugins.errors import (
    ChainTooLongError,
    InvalidInputError,
    ManifestError,
    ModelLoadError,
    ModelOutputError,
    PRMError,
)
from prm_plugins.formats import PRMFormat, Rendered, get_format
from prm_plugins.manifest import (
    MANIFEST_NAME,
    Manifest,
    external_data_files,
    normalise_location,
    read_verified,
    verify_files,
)
from prm_plugins.steps import validate_chain
from prm_plugins.types import StepScores
from prm_plugins.windows import plan_windows

__all__ = ["OnnxPRM", "default_model_dir", "load_prm"]

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
LongChains = Literal["error", "window"]
OUTPUT_NAME = "step_probs"
#: How far outside [0, 1] a probability may stray through float rounding (softmax/sigmoid in
#: fp32 or fp16 can give 1.0000001) before the output counts as broken; values within it are
#: clipped to [0, 1], values past it raise :class:`ModelOutputError`.
PROB_TOLERANCE = 1e-4
#: Default most attention cells (``rows x length^2``) per batch on the CPU: 64 rows of 128
#: tokens, 16 of 256, 4 of 512. See ``benchmarks/results/memory_prm_score.md``.
CPU_ATTENTION_BUDGET = 1 << 20


def default_model_dir() -> Path:
    """Directory of the default PRM shipped inside the package."""
    return Path(__file__).resolve().parent / "models" / "default"


def _cuda_driver_present() -> bool:
    """True when a CUDA driver library can be loaded (so a GPU may be there)."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


@dataclass(frozen=True)
class _Job:
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
            fine-grained length ladder of :func:`prm_plugins.batching.plan_batches`. Scores
            are the same either way; buckets keep the set of shapes small, so memory stops
            growing after warm-up and CUDA graphs can be captured.
        io_binding: run through ONNX Runtime IO binding with device buffers
            (:class:`prm_plugins.iobinding.BoundRunner`); ``None`` (default) uses it on CUDA.
        cuda_graph: capture one CUDA graph per bucketed shape of at most
            :data:`prm_plugins.iobinding.CUDA_GRAPH_MAX_TOKENS` tokens (rows padded to a power
            of two) and replay it; needs the CUDA provider with every node on the GPU (the
            session is created with ``enable_cuda_graph``; if ONNX Runtime refuses, a warning
            says why and the model runs without graphs). Implies ``buckets="auto"`` unless
            buckets are given.

    Every run's ``step_probs`` is checked (shape ``[B, T]`` of the inputs, a float dtype,
    finite and within [0, 1] where the attention mask is 1, up to :data:`PROB_TOLERANCE` of
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
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise ModelLoadError(
                f"model directory {str(self.model_dir)!r} does not exist or is not a directory"
            )
        self.manifest = Manifest.read(self.model_dir)
        self._model_path = self.model_dir / self.manifest.model_file
        # Read once, verify those bytes, build from them: nothing is re-read from disk.
        model_bytes = read_verified(self.model_dir, self.manifest, self.manifest.model_file,
                                    verify=verify)
        external = self._read_external_data(model_bytes, verify)
        tokenizer_bytes = read_verified(self.model_dir, self.manifest,
                                        self.manifest.tokenizer_file, verify=verify)
        if verify:
            verify_files(self.model_dir, self.manifest,
                         skip={self.manifest.model_file, self.manifest.tokenizer_file, *external})
        self.checks = self._resolve_checks(checks)
        self.calibration = None
        if calibrate and "calibration" in self.manifest.extra:
            from prm_plugins.calibration import PlattCalibration

            try:
                self.calibration = PlattCalibration.from_manifest(
                    self.manifest.extra["calibration"])
            except InvalidInputError as exc:
                raise ManifestError(f"{self.model_dir / MANIFEST_NAME}: {exc}") from exc
        self.long_chains: LongChains = long_chains
        self.token_budget = token_budget
        self.max_batch_size = max_batch_size
        self.max_length = int(self.manifest.max_length)
        self.tokenizer = self._load_tokenizer(tokenizer_bytes)
        del tokenizer_bytes
        self._check_token_ids()
        fmt_cls = get_format(self.manifest.format)
        try:
            self.format: PRMFormat = fmt_cls(self.tokenizer, self.manifest.format_options)
        except InvalidInputError as exc:
            raise ManifestError(
                f"{self.model_dir / MANIFEST_NAME}: format_options do not fit format "
                f"{self.manifest.format!r} and this tokenizer: {exc}"
            ) from exc
        self._pad_id = self._find_pad_id()
        if cuda_graph and buckets is None:
            buckets = "auto"
        from prm_plugins.buckets import resolve_length_buckets

        self.buckets: tuple[int, ...] | None = (
            None if buckets is None else resolve_length_buckets(buckets, self.max_length))
        self._session, self.provider = self._create_session(
            device, intra_op_num_threads, model_bytes, external, cuda_graph=cuda_graph)
        del model_bytes, external
        self.cuda_graph = cuda_graph and self._cuda_graph_session
        if attention_budget is None:
            attention_budget = (CPU_ATTENTION_BUDGET if self.provider == "CPUExecutionProvider"
                                else 0)
        #: most ``rows x length^2`` per batch; ``None`` when uncapped.
        self.attention_budget: int | None = attention_budget or None
        self._runner = self._make_runner(io_binding)
        self._input_names = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._input_names
        outputs = {o.name: o for o in self._session.get_outputs()}
        if missing or OUTPUT_NAME not in outputs:
            raise ModelLoadError(
                f"{self._model_path} does not follow the graph contract "
                f"(inputs input_ids, attention_mask; output {OUTPUT_NAME}): inputs "
                f"{sorted(self._input_names)}, outputs {list(outputs)}. Re-export with "
                "`prm export`"
            )
        self._check_declared_output(outputs[OUTPUT_NAME])

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

    def _read_external_data(self, model_bytes: Any, verify: bool) -> dict[str, Any]:
        """Location -> verified contents of every external-data file the graph reads.

        Raises:
            ModelLoadError: a location outside the directory, or (with ``verify``) one that
                ``prm.json`` does not list, so its hash could not be checked.
        """
        external: dict[str, Any] = {}
        for location in sorted(external_data_files(model_bytes)):
            name = normalise_location(location)
            listed = name in self.manifest.files
            if verify and not listed:
                raise ModelLoadError(
                    f"{self._model_path} reads external data file {location!r}, which is not "
                    f"listed in {self.model_dir / MANIFEST_NAME} 'files': its sha256 cannot be "
                    "checked, so it could be replaced unseen. Re-export the model (prm export "
                    "hashes every file), or add the file's sha256 to 'files'"
                )
            try:
                external[location] = read_verified(self.model_dir, self.manifest, name,
                                                   verify=verify)
            except ModelLoadError as exc:
                if type(exc) is not ModelLoadError:
                    raise
                raise ModelLoadError(
                    f"{self._model_path} reads external data from {location!r}: {exc}"
                ) from exc
        return external

    def _load_tokenizer(self, data: bytes | Any) -> Any:
        from tokenizers import Tokenizer

        path = self.model_dir / self.manifest.tokenizer_file
        try:
            tok = Tokenizer.from_str(bytes(data).decode("utf-8"))
        except Exception as exc:
            raise ModelLoadError(f"cannot read tokenizer {path}: {exc}") from exc
        tok.no_truncation()  # never truncate silently; length is checked here
        tok.no_padding()
        return tok

    def _check_token_ids(self) -> None:
        """Token ids written in ``prm.json`` must exist in the tokenizer's vocabulary."""
        vocab = int(self.tokenizer.get_vocab_size(with_added_tokens=True))
        named = [(f"format_options.{k}", v) for k, v in self.manifest.format_options.items()
                 if k.endswith("token_id")]
        named.append(("extra.pad_token_id", self.manifest.extra.get("pad_token_id")))
        bad = [f"{field} is {value!r}" for field, value in named
               if value is not None and not 0 <= value < vocab]
        if bad:
            raise ManifestError(
                f"{self.model_dir / MANIFEST_NAME}: {'; '.join(bad)}, outside the tokenizer's "
                f"vocabulary of {vocab} ids (0..{vocab - 1}); fix the id(s) in prm.json or "
                "re-export the model"
            )

    def _check_declared_output(self, output: Any) -> None:
        """Refuse a graph whose declared ``step_probs`` is not a float ``[B, T]`` tensor."""
        shape, kind = getattr(output, "shape", None), str(getattr(output, "type", ""))
        problems = []
        if isinstance(shape, (list, tuple)) and len(shape) != 2:
            problems.append(f"rank {len(shape)} (shape {list(shape)})")
        if kind and kind not in ("tensor(float)", "tensor(float16)", "tensor(double)",
                                 "tensor(bfloat16)"):
            problems.append(f"type {kind}")
        if problems:
            raise ModelLoadError(
                f"{self._model_path} declares {OUTPUT_NAME} with {' and '.join(problems)}; "
                f"the graph contract is a float32 [B, T] tensor, one probability per token. "
                "Re-export with `prm export`"
            )

    def _find_pad_id(self) -> int:
        pad = self.manifest.extra.get("pad_token_id")
        if isinstance(pad, int):
            return pad
        for name in ("<pad>", "[PAD]", "<|endoftext|>", "<|finetune_right_pad_id|>"):
            tid = self.tokenizer.token_to_id(name)
            if tid is not None:
                return int(tid)
        return 0  # masked out anyway

    def _make_runner(self, io_binding: bool | None) -> Any:
        """The IO-binding runner: on CUDA by default, on CPU when asked (tests, profiling)."""
        on_cuda = self.provider == "CUDAExecutionProvider"
        if io_binding is False or (io_binding is None and not on_cuda):
            return None
        from prm_plugins.iobinding import BoundRunner

        return BoundRunner(self._session, device="cuda" if on_cuda else "cpu",
                           cuda_graph=self.cuda_graph)

    def _create_session(self, device: Device, threads: int | None, model: Any,
                        external: dict[str, Any], *,
                        cuda_graph: bool = False) -> tuple[Any, str]:
        """The ONNX Runtime session, built from the verified bytes (never from the path)."""
        import onnxruntime as ort

        self._cuda_graph_session = False

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        if external:
            names = list(external)
            opts.add_external_initializers_from_files_in_memory(
                names, [external[n] for n in names], [len(external[n]) for n in names])
        path = str(self._model_path)
        model = bytes(model) if not isinstance(model, bytes) else model
        available = ort.get_available_providers()
        want_cuda = device == "cuda" or (
            device == "auto" and "CUDAExecutionProvider" in available and _cuda_driver_present()
        )
        if want_cuda:
            if "CUDAExecutionProvider" not in available:
                raise ModelLoadError(
                    "device='cuda' was asked for but this onnxruntime has no CUDA provider "
                    f"(available: {available}). Install onnxruntime-gpu "
                    '(pip install "prm-plugins[cuda]") or use device="auto" / "cpu"'
                )
            sess = self._cuda_graph_session_or_none(model, opts) if cuda_graph else None
            try:
                sess = sess or ort.InferenceSession(
                    model, opts, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
                )
            except Exception as exc:  # CUDA libraries missing or the device failing
                if device == "cuda":
                    raise ModelLoadError(f"CUDA session could not start: {exc}") from exc
                warnings.warn(f"CUDA session could not start ({exc}); running on CPU",
                              RuntimeWarning, stacklevel=3)
            else:
                if sess.get_providers()[0] == "CUDAExecutionProvider":
                    return sess, "CUDAExecutionProvider"
                if device == "cuda":
                    raise ModelLoadError(
                        "device='cuda' was asked for but ONNX Runtime fell back to "
                        f"{sess.get_providers()[0]} (CUDA or cuDNN libraries not found); "
                        'install them with pip install "prm-plugins[cuda]"'
                    )
                warnings.warn("CUDA provider could not start; running on CPU",
                              RuntimeWarning, stacklevel=3)
        if self.manifest.dtype == "bf16":  # see prm_plugins.onnx_export.bf16
            raise ModelLoadError(
                f"{self.model_dir} holds a bf16-compute graph (prm export --dtype bf16), which "
                "only ONNX Runtime's CUDA provider runs (its CPU provider has no bf16 kernels). "
                "Load it with device='cuda' on a GPU, or export --dtype bf16-weights or fp32 "
                "for CPU"
            )
        if cuda_graph:
            warnings.warn("cuda_graph=True but the model runs on CPU; no CUDA graphs",
                          RuntimeWarning, stacklevel=3)
        # On the CPU, a memory pattern is planned and kept per input shape, and a scorer meets
        # many shapes: off, peak memory over a large file fell by ~0.7 GB at the same speed.
        opts.enable_mem_pattern = False
        try:
            sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        # A session built from bytes keeps them for a provider fallback the CPU never makes
        # (the whole graph, for as long as the scorer lives); let them go.
        if getattr(sess, "_model_bytes", None) is not None:
            sess._model_bytes = None
        return sess, "CPUExecutionProvider"

    def _cuda_graph_session_or_none(self, model: bytes, opts: Any) -> Any:
        from prm_plugins.iobinding import cuda_graph_session

        sess = cuda_graph_session(model, opts)
        self._cuda_graph_session = sess is not None
        return sess

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
        jobs: list[_Job] = []
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

    def _jobs_for(self, idx: int, question: str, steps: list[str]) -> list[_Job]:
        rendered = self.format.render(question, steps)
        if len(rendered) <= self.max_length:
            return [_Job(idx, rendered, list(range(len(steps))), rendered.step_positions)]
        if self.long_chains == "error":
            raise ChainTooLongError(
                f"item {idx}: the chain renders to {len(rendered)} tokens, over the model's "
                f"max_length of {self.max_length}. Shorten it, or score it in windows with "
                "load_prm(..., long_chains='window')",
                n_tokens=len(rendered), max_length=self.max_length,
            )
        return self._windows(idx, question, steps)

    def _windows(self, idx: int, question: str, steps: list[str]) -> list[_Job]:
        """Windows that keep the question and the preceding steps that fit in half a window.

        See :mod:`prm_plugins.windows` for the plan and why half a window.
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
            _Job(idx, w.rendered, list(range(w.first_new, w.end)),
                 [w.rendered.step_positions[i - w.start] for i in range(w.first_new, w.end)])
            for w in plan
        ]

    def _run(self, jobs: list[_Job]) -> list[np.ndarray]:
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

    def _plan(self, lengths: list[int]) -> list[Any]:
        if self.buckets is None:
            return plan_batches(lengths, token_budget=self.token_budget,
                                max_batch_size=self.max_batch_size, max_length=self.max_length,
                                attention_budget=self.attention_budget)
        from prm_plugins.buckets import plan_bucketed_batches

        return plan_bucketed_batches(lengths, self.buckets, token_budget=self.token_budget,
                                     max_batch_size=self.max_batch_size,
                                     attention_budget=self.attention_budget)

    def _pad_rows(self, ids: np.ndarray, mask: np.ndarray, length: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Add fully masked rows up to the batch's row bucket (their outputs are dropped)."""
        from prm_plugins.buckets import row_bucket, rows_cap

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
                (probs,) = self._session.run([OUTPUT_NAME],
                                             {"input_ids": ids, "attention_mask": mask})
        except (PRMError, MemoryError):
            raise
        except Exception as exc:  # the inputs are ours and well formed: the graph failed
            raise ModelOutputError(
                f"{self._model_path} failed on a batch of shape {ids.shape} (its {OUTPUT_NAME} "
                f"must be float32 of the input's shape [B, T]): ONNX Runtime says: "
                f"{str(exc)[:500]}"
            ) from exc
        return self._checked_output(probs, mask)

    def _checked_output(self, probs: Any, mask: np.ndarray) -> np.ndarray:
        """``probs`` as float32 after the contract checks (see :class:`OnnxPRM`)."""
        where = f"{self._model_path} (model directory {self.model_dir})"
        arr = np.asarray(probs)
        if arr.shape != mask.shape:
            raise ModelOutputError(
                f"{where} returned {OUTPUT_NAME} of shape {arr.shape} for inputs of shape "
                f"{mask.shape}; expected {mask.shape}, one probability per token ([B, T]). "
                "The graph does not follow the contract: re-export it with `prm export`"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise ModelOutputError(
                f"{where} returned {OUTPUT_NAME} of dtype {arr.dtype}; expected float32 "
                "probabilities. Re-export it with `prm export`"
            )
        real = arr[mask != 0].astype(np.float64)
        if real.size == 0:
            return arr.astype(np.float32, copy=False)
        finite = np.isfinite(real)
        if not finite.all():
            bad = real[~finite]
            raise ModelOutputError(
                f"{where} returned {bad.size} of {real.size} {OUTPUT_NAME} values that are "
                f"not finite (e.g. {bad[:3].tolist()}) on a batch of shape {mask.shape}; a "
                "PRM's output must be probabilities. The model is broken (overflow in fp16, "
                "a bad export or bad weights): re-export it, or check it with `prm info`"
            )
        low, high = float(real.min()), float(real.max())
        if low < -PROB_TOLERANCE or high > 1.0 + PROB_TOLERANCE:
            raise ModelOutputError(
                f"{where} returned {OUTPUT_NAME} values outside [0, 1] (min {low!r}, max "
                f"{high!r}) on a batch of shape {mask.shape}; the graph must output "
                "probabilities (softmax or sigmoid), not logits. Re-export it with `prm export`"
            )
        arr = arr.astype(np.float32, copy=False)
        if low < 0.0 or high > 1.0:  # rounding within the tolerance
            arr = np.clip(arr, 0.0, 1.0)
        return arr

    def run_graph(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Run the raw graph: ``step_probs [B, T]`` for padded ``int64`` inputs."""
        return self._forward(np.asarray(input_ids, dtype=np.int64),
                             np.asarray(attention_mask, dtype=np.int64), keep=False)


def load_prm(
    path: str | os.PathLike[str] | None = None, *, device: Device = "auto", **kwargs: Any
) -> OnnxPRM:
    """Load a PRM model directory, or the shipped default PRM when ``path`` is ``None``.

    Args:
        path: model directory made by ``prm export``; ``None`` for the default PRM.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        **kwargs: passed to :class:`OnnxPRM` (``long_chains``, ``token_budget``, ...).

    Examples:
        >>> from prm_plugins import load_prm
        >>> prm = load_prm()  # doctest: +SKIP
        >>> prm.score("2 + 3 * 4 = ?", ["3 * 4 = 12", "2 + 12 = 14"]).min  # doctest: +SKIP
        0.97
    """
    if path is None:
        path = default_model_dir()
        if not (Path(path) / "prm.json").is_file():
            raise ModelLoadError(
                f"the default PRM is not in this installation ({path} has no prm.json); "
                "reinstall prm-plugins or pass a model directory"
            )
    return OnnxPRM(path, device=device, **kwargs)
