"""Serve the default PRM with Ray Serve and score through :class:`RemotePRM`.

Starts a local Ray cluster (or joins ``RAY_ADDRESS``), deploys the shipped default PRM with
two replicas and dynamic batching, then scores a correct and a wrong GSM8K-style chain over
HTTP, runs ``verify`` and ``best_of_n`` against the served model exactly as against a local
one, and checks that the served scores equal the local scorer's. The wrong chain has an
arithmetic slip, which the shipped PRM catches: ``verify`` fails it at step 2 and
``best_of_n`` (its default, the PRM-weighted vote) picks the right answer, 18, by a margin
it prints. Needs ``pip install ".[ray]"`` from a checkout::

    python examples/ray_serve_prm.py            # local cluster, 2 replicas
    python examples/ray_serve_prm.py --keep     # leave it running; Ctrl-C to stop
"""

from __future__ import annotations

import argparse
import itertools
import time

import ray
from ray import serve

from prm_plugins import load_prm
from prm_plugins.adapters.ray import RemotePRM, serve_prm
from prm_plugins.strategies import best_of_n, verify

QUESTION = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes "
            "muffins with four. She sells the rest at $2 per egg. How much does she make?")
GOOD = ["Janet sells 16 - 3 - 4 = 9 eggs a day.", "She makes 9 * 2 = $18 a day.",
        "The answer is 18."]
# an arithmetic slip in step 2 (the default PRM's calculator check catches these; see its
# model card for what it can and cannot catch)
BAD = ["Janet sells 16 - 3 - 4 = 9 eggs a day.", "She makes 9 * 2 = $16 a day.",
       "The answer is 16."]


class TwoAnswers:
    """A scripted stand-in generator for the best-of-N demo (no LLM in this example): it
    answers the wrong and the right solution in turn."""

    def __init__(self) -> None:
        self._next = itertools.cycle(["\n".join(BAD), "\n".join(GOOD)])

    def sample(self, prompt: str, n: int) -> list[str]:
        return [next(self._next) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--keep", action="store_true", help="keep serving until Ctrl-C")
    args = parser.parse_args()

    ray.init(include_dashboard=False)
    url = serve_prm(num_replicas=args.replicas, num_cpus=1, port=args.port,
                    max_batch_size=16, batch_wait_timeout_s=0.005)
    print(f"serving at {url}")
    prm = RemotePRM(url, timeout=30, max_attempts=4)
    print("health:", prm.health())

    for name, steps in (("correct", GOOD), ("wrong", BAD)):
        scores = prm.score(QUESTION, steps)
        print(f"{name:8s} chain: step scores {[round(s, 3) for s in scores.scores]}, "
              f"min {scores.min:.3f}")
    local = load_prm(device="cpu")
    served = [s.scores for s in prm.score_batch([(QUESTION, GOOD), (QUESTION, BAD)])]
    here = [s.scores for s in local.score_batch([(QUESTION, GOOD), (QUESTION, BAD)])]
    print("max |served - local|:",
          max(abs(a - b) for x, y in zip(served, here, strict=True)
              for a, b in zip(x, y, strict=True)))

    verdict = verify(QUESTION, BAD, prm, threshold=0.3)
    print("verify(wrong chain):", verdict.passed, "-", verdict.feedback)
    best = best_of_n(QUESTION, TwoAnswers(), prm, n=2)
    votes = sorted(best.votes.values(), reverse=True)
    print(f"best_of_n picked: {best.text.splitlines()[-1]} (selection {best.selection}, "
          f"ahead by {votes[0] - votes[1]:.3f})")

    if args.keep:
        print("serving; Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
