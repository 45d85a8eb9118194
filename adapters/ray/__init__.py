"""Scale-out on Ray: the PRM as a Ray Serve deployment, batch scoring and labelling with Ray Data.

Install with ``pip install "prm-plugins[ray]"`` (a client machine that only calls a served PRM
needs ``pip install "prm-plugins[remote]"``: :class:`RemotePRM` imports no Ray).

==============================  =============================================================
entry point                     what it does
==============================  =============================================================
:class:`RemotePRM`              the scorer contract over HTTP (retries, timeouts); no Ray
:func:`build_app`               the Serve deployment (``@serve.batch``, replicas, GPUs)
:func:`serve_prm`               start it on the connected cluster; returns the URL
:func:`score_dataset`           add ``step_scores`` to a Ray Dataset with an actor pool
:func:`score_file`              ``prm score --ray``: JSONL/Parquet in and out, order kept
:func:`label_chains`            Monte Carlo rollout labels spread over actors
==============================  =============================================================

Only :mod:`~prm_plugins.adapters.ray.client` is imported eagerly; the Ray-backed names load
Ray on first use.

Examples:
    >>> import ray
    >>> from prm_plugins.adapters.ray import RemotePRM, serve_prm
    >>> ray.init(num_cpus=2)  # doctest: +SKIP
    >>> prm = RemotePRM(serve_prm(num_replicas=2))  # doctest: +SKIP
    >>> prm.score("2 + 3 = ?", ["2 + 3 = 5"]).min  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prm_plugins.adapters.ray.client import RemotePRM, RemotePRMError
from prm_plugins.lazy import lazy_exports

if TYPE_CHECKING:
    from prm_plugins.adapters.ray.data import (
        MonteCarloActor,
        PRMScoreActor,
        label_chains,
        score_dataset,
        score_file,
    )
    from prm_plugins.adapters.ray.serve import PRMServer, app_builder, build_app, serve_prm

__all__ = [
    "MonteCarloActor",
    "PRMScoreActor",
    "PRMServer",
    "RemotePRM",
    "RemotePRMError",
    "app_builder",
    "build_app",
    "label_chains",
    "score_dataset",
    "score_file",
    "serve_prm",
]

#: Ray-backed names, imported (with Ray) on first use.
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["MonteCarloActor", "PRMScoreActor", "label_chains", "score_dataset",
                     "score_file"], "prm_plugins.adapters.ray.data"),
    **dict.fromkeys(["PRMServer", "app_builder", "build_app", "serve_prm"],
                   "prm_plugins.adapters.ray.serve"),
})
