"""Search under a compute budget: particle filtering, beam search and adaptive best-of-N.

Run: python examples/search_under_budget.py

Three strategies answer one question under the *same* :class:`~prm_plugins.budget.Budget`
(generated tokens: what 8 whole solutions cost), each sized to it as
``benchmarks/search_budget.py`` sizes them (8 particles; beam search scoring 8 chains per
iteration, 4 beams x 2 proposals; at most 8 samples for adaptive best-of-N), with the shipped
default PRM (``load_prm()``) as the judge. For each one the example prints the answer and
what the run spent, read from ``result.budget`` (tokens, generator calls, PRM calls, the
limit that stopped it, the token overshoot), and for adaptive best-of-N how many samples it
saved by stopping once more samples could not change the answer. Last, a particle filter
with more particles than the budget pays for shows a budget running out: it stops after a
whole iteration, past the limit by at most that iteration's tokens, before any particle
finishes.

A scripted step-level model stands in for your LLM: no LLM is called. It writes the solution
of GSM8K test item 0 (MIT licence, (c) 2021 OpenAI) one step at a time, and at each of the
first three steps it slips in its arithmetic with probability 0.2 (``3 + 4 = 8``,
``16 - 7 = 8``, ``9 * 2 = $19``), then carries the wrong value on to a wrong answer (16 or
19), so about half of its whole solutions are wrong. Its draws come from
``random.Random(SEED)`` and every strategy runs with ``max_concurrency=1`` and its own copy
of the model, so a run prints the same thing every time. The shipped PRM catches written
arithmetic slips for certain (such a step, and every later one, scores 0.05); it does not see
reasoning errors.

What the output shows, with ``SEED = 5`` (chosen so that every strategy meets slips and
adaptive best-of-N stops early): all three answer 18. Particle filtering spends the whole
budget; slipped particles weigh little and are mostly dropped at each resampling. Beam search
spends less: it expands identical prefixes once, and a scripted model repeats itself more
than an LLM sampling at a temperature. (With seeds 1 to 15, particle filtering answered 18
every time and beam search answered 16 or 19 twice: it prunes the prefixes it does not keep,
where the filter resamples them.) Adaptive best-of-N stops after 6 of 8 samples,
when the leader's vote is ahead by more than the samples left could add. That rule is exact,
and with the shipped PRM, whose correct chains score about 0.55, it fires only when most
samples agree: with seeds 1 to 15 it stopped early in 4 runs and drew all 8 in the others
(always with the right answer).

To use a real model, implement the two methods of ``ScriptedStepModel``
(``propose_next_steps`` for the searches, ``sample`` for best-of-N) over your LLM, or use the
LangChain or LlamaIndex adapters (docs/adapters.md).
"""

from __future__ import annotations

import random
import threading

from prm_plugins import load_prm
from prm_plugins.answers import extract_answer
from prm_plugins.budget import Budget, BudgetSpent, estimate_tokens
from prm_plugins.strategies import AdaptiveBestOfN, ParticleFilter, StepBeamSearch
from prm_plugins.wording import SHIPPED_PRM_NOTE

QUESTION = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' "
    "market daily for $2 per fresh duck egg. How much in dollars does she make every day at "
    "the farmers' market?"
)
RIGHT = [
    "She eats 3 and bakes with 4, so she uses 3 + 4 = 7 eggs a day.",
    "She sells 16 - 7 = 9 eggs a day.",
    "She makes 9 * 2 = $18 every day.",
    "The answer is 18.",
]
#: The wrong solutions: SLIPS[k] slips at step k + 1 and carries the wrong value on.
SLIPS = [
    ["She eats 3 and bakes with 4, so she uses 3 + 4 = 8 eggs a day.",
     "She sells 16 - 8 = 8 eggs a day.",
     "She makes 8 * 2 = $16 every day.",
     "The answer is 16."],
    [RIGHT[0],
     "She sells 16 - 7 = 8 eggs a day.",
     "She makes 8 * 2 = $16 every day.",
     "The answer is 16."],
    [RIGHT[0], RIGHT[1],
     "She makes 9 * 2 = $19 every day.",
     "The answer is 19."],
]
SLIP_RATE = 0.2
SEED = 5
#: The budget, in whole solutions; every strategy gets the same Budget.
SOLUTIONS = 8
#: A step scoring under this counts as caught (the shipped PRM scores a slip 0.05).
STEP_PASS_MARK = 0.3



class ScriptedStepModel:
    """Stands in for an LLM: writes the solution a step at a time, slipping at random.

    Args:
        seed: seeds the ``random.Random`` that decides each slip.
        slip_rate: probability that a step of a so-far-correct solution is a slip.
    """

    def __init__(self, seed: int, slip_rate: float = SLIP_RATE) -> None:
        self._rng = random.Random(seed)
        self._slip_rate = slip_rate
        self._lock = threading.Lock()

    def _next_step(self, prefix: list[str]) -> str:
        k = len(prefix)
        if prefix == RIGHT[:k]:
            if k == len(RIGHT):
                return ""  # nothing left to add
            if k < len(SLIPS) and self._rng.random() < self._slip_rate:
                return SLIPS[k][k]
            return RIGHT[k]
        for wrong in SLIPS:  # gone wrong: carry the wrong value on
            if prefix == wrong[:k]:
                return wrong[k] if k < len(wrong) else ""
        return ""

    def propose_next_steps(self, question: str, prefix: list[str], n: int) -> list[str]:
        """``n`` proposals for the step after ``prefix`` (what the searches call)."""
        with self._lock:
            return [self._next_step(list(prefix)) for _ in range(n)]

    def sample(self, prompt: str, n: int) -> list[str]:
        """``n`` whole solutions, one step per line (what best-of-N calls)."""
        with self._lock:
            solutions = []
            for _ in range(n):
                steps: list[str] = []
                while step := self._next_step(steps):
                    steps.append(step)
                solutions.append("\n".join(steps))
            return solutions


def spent(b: BudgetSpent | None) -> str:
    """One line of what ``result.budget`` reports."""
    assert b is not None  # every run here has a budget
    return (f"  spent: {b.generated_tokens} tokens, {b.generator_calls} generator calls, "
            f"{b.prm_calls} PRM calls; exhausted: {b.exhausted or 'none'}, "
            f"overshoot: {b.token_overshoot}")


def main() -> None:
    prm = load_prm()  # the shipped default PRM, CPU
    right, slip = prm.score(QUESTION, RIGHT[:1]).scores[0], prm.score(QUESTION, SLIPS[0][:1])
    print("A scripted step-level model stands in for your LLM (seeded; each of the first "
          f"three steps slips with probability {SLIP_RATE}).")
    print(f"The shipped PRM on step 1: right {right:.3f}, with the slip 3 + 4 = 8 "
          f"{slip.scores[0]:.3f}.")
    per_solution = estimate_tokens("\n".join(RIGHT))
    budget = Budget(generated_tokens=SOLUTIONS * per_solution)
    print(f"Budget: generated_tokens={budget.generated_tokens} ({SOLUTIONS} whole solutions "
          f"of {per_solution} tokens), the same for every strategy.\n")

    pf = ParticleFilter(ScriptedStepModel(SEED), prm, n=SOLUTIONS, seed=SEED,
                        max_concurrency=1, budget=budget).run(QUESTION)
    slipped = [sum(lik < STEP_PASS_MARK for lik in h["likelihoods"]) for h in pf.history]
    wrong = [p.weight for p in pf.particles if p.answer != pf.answer]
    print(f"particle filtering ({SOLUTIONS} particles): answer {pf.answer}, weight "
          f"{pf.best.weight:.3f}; the best particle with another answer weighs "
          f"{max(wrong, default=0.0):.3f}")
    print(f"  particles whose newest step scored under {STEP_PASS_MARK}, per iteration: "
          f"{slipped}")
    print(spent(pf.budget))

    beam = StepBeamSearch(ScriptedStepModel(SEED), prm, n=SOLUTIONS, beam_width=2,
                          max_concurrency=1, budget=budget).run(QUESTION)
    finished = ", ".join(f"{extract_answer(c.text)} ({c.score:.3f})" for c in beam.finished)
    print(f"beam search ({SOLUTIONS // 2} beams x 2 proposals): answer "
          f"{extract_answer(beam.text)}; finished chains (value): {finished}")
    print(spent(beam.budget))

    ada = AdaptiveBestOfN(ScriptedStepModel(SEED), prm, max_n=SOLUTIONS, round_size=2,
                          max_concurrency=1, budget=budget).run(QUESTION)
    last = ada.rounds[-1]
    print(f"adaptive best-of-N (at most {SOLUTIONS}, rounds of 2): answer {ada.answer}, "
          f"{ada.samples_used} of {ada.max_n} samples drawn, {ada.samples_saved} saved "
          f"(stopped by: {ada.stopped_by})")
    votes = ", ".join(f"{k}: {w:.3f}" for k, w in last.weights.items())
    print(f"  PRM-weighted votes {{{votes}}}: the leader is ahead by {last.margin:.3f} with "
          f"{last.remaining} samples left, each worth at most 1")
    print(spent(ada.budget))

    crowded = ParticleFilter(ScriptedStepModel(SEED), prm, n=2 * SOLUTIONS, seed=SEED,
                             max_concurrency=1, budget=budget).run(QUESTION)
    assert crowded.budget is not None
    last_round = sum(estimate_tokens(p.steps[-1]) for p in crowded.particles)
    print(f"\nparticle filtering with {2 * SOLUTIONS} particles, same budget: stopped after "
          f"iteration {crowded.iterations} by {crowded.budget.exhausted}, overshoot "
          f"{crowded.budget.token_overshoot} tokens (that iteration generated {last_round}); "
          f"particles finished: {sum(p.finished for p in crowded.particles)} of "
          f"{2 * SOLUTIONS}.")
    print("A particle filter needs about n whole solutions' tokens to finish: size n to the "
          "budget.\n")
    print(SHIPPED_PRM_NOTE)


if __name__ == "__main__":
    main()
