"""Scorers other than the ONNX one, each behind the same :class:`~prm_plugins.StepScorer`
contract, so strategies and adapters never know which one they hold.

* :class:`~prm_plugins.backends.vllm.VLLMPRM`: a process reward model served by vLLM's
  Pooling API (or by this project's Ray Serve deployment, which speaks the same protocol);
  needs ``httpx`` (the ``[remote]`` extra).
* :class:`~prm_plugins.backends.judge.JudgePRM`: an LLM judge (any chat model judges every
  step in one structured answer); the LangChain and LlamaIndex ``LLMJudgePRM`` build it.

The HTTP scorers (this one and the Ray adapter's ``RemotePRM``) share one retry policy,
:class:`~prm_plugins.backends.http.HTTPRetry`.

Names are imported on first use, so ``import prm_plugins.backends`` loads no HTTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prm_plugins.lazy import lazy_exports

if TYPE_CHECKING:
    from prm_plugins.backends.judge import JudgePRM
    from prm_plugins.backends.vllm import VLLMPRM

__all__ = ["JudgePRM", "VLLMPRM"]

__getattr__, __dir__ = lazy_exports(__name__, {"JudgePRM": "prm_plugins.backends.judge",
                                               "VLLMPRM": "prm_plugins.backends.vllm"})
