"""Errors raised by prm-plugins.

Every error says what was wrong, what was received, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prm_plugins.strategies.verify import Verdict

__all__ = [
    "PRMError",
    "InvalidInputError",
    "ChainTooLongError",
    "ModelLoadError",
    "ModelIntegrityError",
    "ManifestVersionError",
    "ManifestError",
    "ModelOutputError",
    "UnknownFormatError",
    "ParityError",
    "MissingExtraError",
    # generator calls and strategies (prm_plugins.plans)
    "TransientGeneratorError",
    "GeneratorTimeoutError",
    "AllCandidatesFailedError",
    "EmptyGenerationsError",
    "BudgetExhaustedError",
    # the micro-batcher (prm_plugins.microbatch)
    "ScorerOutputError",
    "ScorerTimeoutError",
    "MicroBatcherClosedError",
    "MicroBatcherLoopError",
    # input files and LLM answers
    "JSONLineError",
    "StepwiseFormatError",
    "GraderAnswerError",
    # adapters and export (defined here so that every error has one home)
    "AnswersTooLongError",
    "RemotePRMError",
    "JudgeError",
    "RemoteScorerError",
    "RemoteRequestError",
    "RemoteServerError",
    "RemoteResponseError",
    "VerificationFailedError",
    "FusionError",
]


class PRMError(Exception):
    """Base class of every error prm-plugins raises on purpose."""


class InvalidInputError(PRMError, ValueError):
    """A question or a step list is not what the scorer accepts."""


class ChainTooLongError(PRMError, ValueError):
    """A rendered chain is longer than the model's ``max_length``.

    Attributes:
        n_tokens: length of the rendered chain in tokens.
        max_length: the model's limit.
    """

    def __init__(self, message: str, *, n_tokens: int, max_length: int) -> None:
        super().__init__(message)
        self.n_tokens = n_tokens
        self.max_length = max_length


class ModelLoadError(PRMError, OSError):
    """A model directory is missing files or cannot be read."""


class ModelIntegrityError(ModelLoadError):
    """A model file's sha256 does not match the one written in ``prm.json``."""


class ManifestVersionError(ModelLoadError):
    """``prm.json`` was written by a newer, incompatible manifest version."""


class ManifestError(ModelLoadError):
    """``prm.json`` holds a field of the wrong type or value (the message names each one)."""


class ModelOutputError(PRMError, RuntimeError):
    """The graph's ``step_probs`` broke the contract on a run: wrong shape, rank or dtype,
    NaN or infinite values, or probabilities outside [0, 1]; the message names the model."""


class UnknownFormatError(PRMError, KeyError):
    """No PRM format is registered under the requested name."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0]) if self.args else ""


class ParityError(PRMError, RuntimeError):
    """The exported graph does not match the source model within tolerance."""


class MissingExtraError(PRMError, ImportError):
    """An optional dependency is missing; the message names the pip extra."""


# -- generator calls and strategies (prm_plugins.plans) ---------------------------------


class TransientGeneratorError(PRMError, RuntimeError):
    """A generator failure worth retrying (rate limit, overloaded server, dropped stream).

    Raise it (or :class:`TimeoutError` / :class:`ConnectionError`, which count as transient
    too) from a generator method; strategies retry the call under their
    :class:`~prm_plugins.plans.RetryPolicy`. Any other exception fails the call at once.
    """


class GeneratorTimeoutError(PRMError, TimeoutError):
    """A generator call did not answer within :attr:`RetryPolicy.timeout` seconds.

    It is a :class:`TimeoutError`, so the default policy retries it.
    """


class AllCandidatesFailedError(PRMError, RuntimeError):
    """Every generator call of a strategy failed, so there is nothing to choose from.

    Attributes:
        causes: the exceptions behind the failures, one per failed candidate or call.
        candidates: the failed candidates (best-of-N), when there are any.
    """

    def __init__(
        self,
        message: str,
        *,
        causes: Sequence[BaseException] = (),
        candidates: Sequence[Any] = (),
    ) -> None:
        super().__init__(message)
        self.causes = list(causes)
        self.candidates = list(candidates)


class EmptyGenerationsError(InvalidInputError, AllCandidatesFailedError):
    """Every generator call returned empty text (no steps to score).

    It is both an :class:`InvalidInputError` (the generator gives unusable input) and an
    :class:`AllCandidatesFailedError`.
    """


class BudgetExhaustedError(AllCandidatesFailedError):
    """A strategy's :class:`~prm_plugins.budget.Budget` ran out before it produced anything.

    Raised only when there is nothing at all to return (no candidate, no scored chain);
    a strategy that has produced something returns its best so far instead, with
    ``result.budget.exhausted`` naming the limit. It is an
    :class:`AllCandidatesFailedError`, so code that catches that one catches this too.

    Attributes:
        limit: the limit that ran out: ``"generated_tokens"``, ``"generator_calls"``,
            ``"prm_calls"`` or ``"seconds"``.
        spent: the :class:`~prm_plugins.budget.BudgetSpent` at the time, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        limit: str | None = None,
        spent: Any = None,
        causes: Sequence[BaseException] = (),
        candidates: Sequence[Any] = (),
    ) -> None:
        super().__init__(message, causes=causes, candidates=candidates)
        self.limit = limit
        self.spent = spent


# -- the micro-batcher (prm_plugins.microbatch) -----------------------------------------


class ScorerOutputError(PRMError, RuntimeError):
    """The scorer's ``score_batch`` returned something that breaks the scorer contract.

    The wrong number of results, a container that is not a list, a result that is not a
    :class:`~prm_plugins.StepScores`, the wrong number of step scores, or a score that is not
    a finite probability in [0, 1]. Only the callers whose results are wrong get it.
    """


class ScorerTimeoutError(PRMError, TimeoutError):
    """A ``score_batch`` call did not return within the batcher's ``batch_timeout_s``."""


class MicroBatcherClosedError(PRMError, RuntimeError):
    """The batcher was closed (by :meth:`MicroBatcher.aclose`, or because its scorer hung)."""


class MicroBatcherLoopError(PRMError, RuntimeError):
    """The batcher was used from an event loop other than the running one it belongs to."""


# -- input files and LLM answers --------------------------------------------------------


class JSONLineError(InvalidInputError):
    """One input line cannot be read as a JSON value; the message says why."""


class StepwiseFormatError(InvalidInputError):
    """A row is not valid TRL stepwise data.

    Attributes:
        line: 1-based line number in the file, or None for an in-memory row.
        path: the file, or None.
    """

    def __init__(self, message: str, *, line: int | None = None,
                 path: str | Path | None = None) -> None:
        where = ""
        if path is not None and line is not None:
            where = f"{path}:{line}: "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)
        self.line = line
        self.path = None if path is None else Path(path)


class GraderAnswerError(InvalidInputError):
    """The grader model's answer is not one valid verdict line per step.

    Attributes:
        answer: the text that was refused.
        n_steps: how many steps the chain has.
    """

    def __init__(self, message: str, *, answer: str, n_steps: int) -> None:
        super().__init__(message)
        self.answer = answer
        self.n_steps = n_steps


# -- adapters and export ----------------------------------------------------------------


class AnswersTooLongError(AllCandidatesFailedError):
    """Every answer of a ``PRMBestOfNLLM`` call is too long for the PRM to score.

    A length limit (the question and an answer together render to more than the PRM's
    ``max_length`` tokens), not a transient error: nothing is retried. It is deliberately
    not a ``ValueError`` (unlike :class:`ChainTooLongError`, which is each candidate's
    cause): LlamaIndex's response synthesizers turn a ``ValueError`` from the LLM into an
    "Empty Response", and this must reach the caller.

    Attributes:
        n_tokens: how many tokens the first answer rendered to, with the question.
        max_length: the PRM's limit.
    """

    def __init__(self, message: str, *, n_tokens: int, max_length: int,
                 causes: Sequence[BaseException] = (), candidates: Sequence[Any] = ()) -> None:
        super().__init__(message, causes=causes, candidates=candidates)
        self.n_tokens = n_tokens
        self.max_length = max_length


class RemotePRMError(PRMError, ConnectionError):
    """The PRM server could not be reached, or kept failing, after every retry.

    Attributes:
        url: the endpoint that was called.
        attempts: how many attempts were made.
    """

    def __init__(self, message: str, *, url: str, attempts: int) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts


class RemoteScorerError(RemotePRMError):
    """A scoring server answered, but not with scores; never retried.

    The family of a served scorer's failures other than "unreachable" (which is the plain
    :class:`RemotePRMError`): the subclasses say whose fault it was.

    Attributes:
        url: the endpoint that was called.
        attempts: how many attempts were made (1: a refused or broken answer is final).
        status: the HTTP status of the answer, when there was one.
        item: index of the chain (in the caller's ``score_batch`` list) the error is
            about, or ``None`` when it concerns the whole request.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None,
                 item: int | None = None, attempts: int = 1) -> None:
        super().__init__(message, url=url, attempts=attempts)
        self.status = status
        self.item = item


class RemoteRequestError(RemoteScorerError):
    """The server refused the request (HTTP 4xx other than 429): an unknown model name, a
    wrong route, an input it does not take (e.g. longer than its ``max_model_len``). The
    message carries the server's own; sending it again would fail again."""


class RemoteServerError(RemoteScorerError):
    """The server failed on the request (HTTP 500, 501, 505...; 502, 503 and 504 are
    retried). The message carries the server's own; the same request fails the same way."""


class RemoteResponseError(RemoteScorerError):
    """The server's answer breaks the protocol: a body that is not JSON, the wrong number of
    results or of per-token rows, rows of the wrong width, a value that is not a finite
    probability in [0, 1]. The message names the chain and what was received."""


class JudgeError(PRMError, RuntimeError):
    """The LLM judge could not score a chain: the model call failed, or none of its answers
    could be read after every re-ask (``prm_plugins.backends.judge``).

    Attributes:
        answers: every answer the model gave for the chain, refused ones included.
        failed: for an error of a batch, the failed chains by position (each its own
            ``JudgeError``); empty for one chain's error.
    """

    def __init__(self, message: str, *, answers: Sequence[str] = (),
                 failed: dict[int, BaseException] | None = None) -> None:
        super().__init__(message)
        self.answers = list(answers)
        self.failed = dict(failed or {})


class VerificationFailedError(PRMError, RuntimeError):
    """An agent's answer failed PRM verification (``on_failure="error"``).

    Attributes:
        verdict: the core :class:`~prm_plugins.strategies.Verdict`.
        answer: the answer text that failed.
    """

    def __init__(self, verdict: Verdict, answer: str) -> None:
        super().__init__(
            f"the agent's answer failed step verification (score {verdict.score:.2f} < "
            f"threshold {verdict.threshold:.2f}): {verdict.feedback}"
        )
        self.verdict = verdict
        self.answer = answer


class FusionError(InvalidInputError):
    """A requested fusion found nothing to fuse (e.g. an encoder given ``--optimize fused``)."""


def install_hint(extra: str) -> str:
    """The command that installs a prm-plugins extra, from a source checkout and once published.

    Args:
        extra: the extra's name, e.g. ``"langchain"``.

    Returns:
        E.g. ``pip install ".[langchain]" (from a prm-plugins checkout; once the package is
        published: pip install "prm-plugins[langchain]")``.
    """
    return (f'pip install ".[{extra}]" (from a prm-plugins checkout; once the package is '
            f'published: pip install "prm-plugins[{extra}]")')


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra.

    Args:
        module: importable module name, e.g. ``"torch"``.
        extra: the prm-plugins extra that installs it, e.g. ``"export"``.

    Returns:
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise missing_extra(module, extra) from exc


def missing_extra(module: str, extra: str) -> MissingExtraError:
    """The error for a missing optional package, naming the extra that installs it.

    For a module whose imports need an extra: import at the top, in ``try:``, and raise this
    from the :class:`ImportError` (:func:`require` raises the same error for one module).

    Args:
        module: the module that could not be imported, e.g. ``"langchain_core"``.
        extra: the prm-plugins extra that installs it, e.g. ``"langchain"``.

    Returns:
        The :class:`MissingExtraError` to raise.

    Examples:
        >>> try:  # doctest: +SKIP
        ...     from langchain_core.messages import AIMessage
        ... except ImportError as exc:
        ...     raise missing_extra("langchain_core", "langchain") from exc
    """
    return MissingExtraError(f"{module!r} is not installed; it is needed here. "
                             f"Install it with: {install_hint(extra)}")
