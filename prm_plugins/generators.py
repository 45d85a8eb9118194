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

Sync strategy forms call the sync methods; async forms prefer the ``a``-prefixed methods
and run sync ones in worker threads. Raise
:class:`prm_plugins.strategies.TransientGeneratorError`, :class:`TimeoutError` or
:class:`ConnectionError` for failures worth retrying; strategies retry those.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["AsyncGenerator", "AsyncReviser", "Generator", "Reviser"]


@runtime_checkable
class Generator(Protocol):
    """Samples whole solutions or next steps from a language model."""

    def sample(self, prompt: str, n: int) -> list[str]:
        """Return ``n`` independent completions of ``prompt`` (whole solutions)."""
        ...

    def propose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        """Return ``n`` candidate next steps after ``prefix`` (generation stops at a step end).

        Each item is one step's text; an empty item means the model had nothing to add.
        """
        ...


@runtime_checkable
class AsyncGenerator(Protocol):
    """Async form of :class:`Generator`."""

    async def asample(self, prompt: str, n: int) -> list[str]: ...

    async def apropose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]: ...


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
