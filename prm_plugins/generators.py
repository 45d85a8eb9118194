"""The generator protocols that strategies and labelling pipelines sample from.

Adapters implement them with LangChain runnables or LlamaIndex LLMs; tests use a seeded fake.
A generator needs only the methods the strategy in use calls:

=====================================  ==============================================
strategy                               generator methods
=====================================  ==============================================
``best_of_n``, votes                   ``sample`` (or ``asample``)
``StepBeamSearch``, ``DVTS``           ``propose_next_steps`` (or ``apropose_next_steps``)
``SelfCritique``                       ``sample``, and ``revise`` when it has one
=====================================  ==============================================

The strategies' ``generator`` arguments are annotated with those needs:
:data:`SamplingGenerator`, :data:`StepGenerator` and :data:`CritiqueGenerator`, unions of
the one-method protocols :class:`Sampler`, :class:`StepProposer`, :class:`Reviser` and
their async twins (:class:`Generator` has both sync methods).

Sync strategy forms call the sync methods; async forms prefer the ``a``-prefixed methods
and run sync ones in worker threads. Raise
:class:`prm_plugins.strategies.TransientGeneratorError`, :class:`TimeoutError` or
:class:`ConnectionError` for failures worth retrying; strategies retry those.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = [
    "AsyncGenerator",
    "AsyncReviser",
    "AsyncSampler",
    "AsyncStepProposer",
    "CritiqueGenerator",
    "Generator",
    "Reviser",
    "Sampler",
    "SamplingGenerator",
    "StepProposer",
    "StepGenerator",
]


@runtime_checkable
class Sampler(Protocol):
    """Samples whole solutions (what best-of-N, votes and self-critique call)."""

    def sample(self, prompt: str, n: int) -> list[str]:
        """Return ``n`` independent completions of ``prompt`` (whole solutions)."""
        ...


@runtime_checkable
class StepProposer(Protocol):
    """Proposes next steps (what the step-level searches call)."""

    def propose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        """Return ``n`` candidate next steps after ``prefix`` (generation stops at a step end).

        Each item is one step's text; an empty item means the model had nothing to add.
        """
        ...


@runtime_checkable
class Generator(Sampler, StepProposer, Protocol):
    """Samples whole solutions or next steps from a language model (both methods)."""


@runtime_checkable
class AsyncSampler(Protocol):
    """Async form of :class:`Sampler`."""

    async def asample(self, prompt: str, n: int) -> list[str]: ...


@runtime_checkable
class AsyncStepProposer(Protocol):
    """Async form of :class:`StepProposer`."""

    async def apropose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]: ...


@runtime_checkable
class AsyncGenerator(AsyncSampler, AsyncStepProposer, Protocol):
    """Async form of :class:`Generator`."""


@runtime_checkable
class Reviser(Protocol):
    """Optional: redo a solution from a step that a verifier flagged.

    :class:`prm_plugins.strategies.SelfCritique` calls ``revise`` when the generator has it.
    Without it, SelfCritique sends the prompt of
    :func:`prm_plugins.strategies.critique.build_revision_prompt` to ``sample`` and reads the
    completion the same way.
    """

    def revise(self, question: str, prefix: list[str], feedback: str) -> str:
        """Continue ``prefix`` (the steps kept) with a new version of the flagged step.

        Args:
            question: the problem.
            prefix: the steps before the flagged one; they are kept as they are.
            feedback: what was wrong, naming the step (1-based) and its score.

        Returns:
            The text of the steps that follow ``prefix`` (the flagged step rewritten and
            the rest of the solution), not the prefix again.
        """
        ...


@runtime_checkable
class AsyncReviser(Protocol):
    """Async form of :class:`Reviser`."""

    async def arevise(self, question: str, prefix: list[str], feedback: str) -> str: ...


#: What :class:`~prm_plugins.strategies.BestOfN` and the votes sample from.
SamplingGenerator = Sampler | AsyncSampler
#: What :class:`~prm_plugins.strategies.StepBeamSearch` and ``DVTS`` propose steps with.
StepGenerator = StepProposer | AsyncStepProposer
#: What :class:`~prm_plugins.strategies.SelfCritique` calls (``revise`` is optional).
CritiqueGenerator = Sampler | AsyncSampler | Reviser | AsyncReviser
