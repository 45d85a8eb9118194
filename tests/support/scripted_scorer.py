"""A StepScorer whose step score is looked up by the step's text (no model).

Used where a test needs round, context-free numbers chosen on purpose (a vote margin that
is exactly decided, a budget that cuts a search at a known chain), which a real model
cannot produce on demand. Every ``score_batch`` call's size is recorded in ``batches``; a
chain holding a step listed in ``too_long`` raises ``ChainTooLongError`` (a chain the scorer
refuses, as a real one refuses an over-long chain).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prm_plugins import ChainTooLongError, StepScores


class ScriptedScorer:
    """``table[step]`` per step (``default`` for steps not in the table)."""

    def __init__(self, table: Mapping[str, float], default: float = 1.0,
                 too_long: Sequence[str] = ()) -> None:
        self.table = dict(table)
        self.default = default
        self.too_long = set(too_long)
        self.batches: list[int] = []

    @property
    def chains_scored(self) -> int:
        """Chains sent to :meth:`score_batch` so far."""
        return sum(self.batches)

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        self.batches.append(len(items))
        out = []
        for question, steps in items:
            if self.too_long & set(steps):
                raise ChainTooLongError("chain too long for the test", n_tokens=99, max_length=9)
            out.append(StepScores(list(steps), [self.table.get(s, self.default) for s in steps],
                                  question))
        return out

    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score_batch([(question, steps)])[0]

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score(question, steps)
