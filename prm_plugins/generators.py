"""The generator protocol that strategies and labelling pipelines sample from.

Adapters implement it with LangChain runnables or LlamaIndex LLMs; tests use a seeded fake.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Generator", "AsyncGenerator"]


@runtime_checkable
class Generator(Protocol):
    """Samples whole solutions or next steps from a language model."""

    def sample(self, prompt: str, n: int) -> list[str]:
        """Return ``n`` independent completions of ``prompt``."""
        ...

    def propose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        """Return ``n`` candidate next steps after ``prefix`` (generation stops at a step end)."""
        ...


@runtime_checkable
class AsyncGenerator(Protocol):
    """Async form of :class:`Generator`."""

    async def asample(self, prompt: str, n: int) -> list[str]: ...

    async def apropose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]: ...
