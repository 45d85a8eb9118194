"""TRL adapter: the PRM as a reward function for ``trl.GRPOTrainer`` and per-token rewards.

:class:`PRMRewardFunction` is a plain callable with TRL's reward-function signature
(``func(prompts=..., completions=..., completion_ids=..., **kwargs) -> list[float]``), so it
goes straight into ``GRPOTrainer(reward_funcs=[...])``; importing it does not import TRL.
:meth:`PRMRewardFunction.token_rewards` gives the per-token reward tensor (torch) for
trainers that take token-level rewards. All scoring and shaping is
:mod:`prm_plugins.rewards`. Install TRL with ``pip install "prm-plugins[trl]"``.

Examples:
    >>> from trl import GRPOConfig, GRPOTrainer  # doctest: +SKIP
    >>> from prm_plugins import load_prm  # doctest: +SKIP
    >>> from prm_plugins.adapters.trl import PRMRewardFunction  # doctest: +SKIP
    >>> reward = PRMRewardFunction(load_prm(), aggregate="min")  # doctest: +SKIP
    >>> trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=GRPOConfig(...),
    ...                       train_dataset=dataset)  # doctest: +SKIP
"""

from __future__ import annotations

from prm_plugins.adapters.trl.reward_function import (
    PRMRewardFunction,
    completion_text,
    prompt_question,
)

__all__ = ["PRMRewardFunction", "completion_text", "prompt_question"]
