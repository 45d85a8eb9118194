"""Experiments that were tried and not shipped, kept importable but outside the stable API.

- :mod:`prm_plugins.experimental.coverage`: the opt-in ``coverage`` step check.
- :mod:`prm_plugins.experimental.training`: the position-balanced and pairwise training
  objectives (``prm train --experimental-...``).

Anything here may change or go without a deprecation period.
"""
