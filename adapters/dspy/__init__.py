"""DSPy adapter: a PRM as the ``reward_fn`` of ``dspy.BestOfN`` and ``dspy.Refine``.

DSPy's ``BestOfN`` and ``Refine`` run a module up to ``N`` times and keep the prediction
with the highest ``reward_fn(args, pred)``, stopping early at ``threshold``; they have no
step scores of their own. :class:`PRMReward` is such a ``reward_fn``: it reads the question
from the module's inputs and the reasoning steps from the prediction (``ChainOfThought``'s
``reasoning`` field by default), scores each step with any
:class:`~prm_plugins.StepScorer`, and returns the aggregated chain score in [0, 1]. An
unscorable prediction (empty, over-long, or text the PRM refuses) gets 0.0 and a logged
warning instead of an exception: LLM output is untrusted.

Importing this package does not import DSPy; install it with
``pip install "prm-plugins[dspy]"``.

Examples:
    >>> import dspy  # doctest: +SKIP
    >>> from prm_plugins.adapters.dspy import PRMReward  # doctest: +SKIP
    >>> best = dspy.BestOfN(dspy.ChainOfThought("question -> answer"), N=4,
    ...                     reward_fn=PRMReward(), threshold=0.5)  # doctest: +SKIP
    >>> best(question="What is 2 + 3 * 4?").answer  # doctest: +SKIP
    '14'
"""

from __future__ import annotations

from prm_plugins.adapters.dspy.reward import (
    UNSCORABLE_REWARD,
    PRMReward,
    RewardRecord,
    prm_reward_fn,
)

__all__ = ["UNSCORABLE_REWARD", "PRMReward", "RewardRecord", "prm_reward_fn"]
