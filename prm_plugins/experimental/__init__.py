"""Experiments that were tried and not shipped, kept importable but outside the stable API.

- :mod:`prm_plugins.experimental.coverage`: the opt-in ``coverage`` step check.

Anything here may change or go without a deprecation period.
"""
