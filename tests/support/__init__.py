"""Test support code: fakes, tiny models and graph builders shared by the tests.

Not tests themselves. ``tests/conftest.py`` puts ``tests/`` on ``sys.path``, so tests (and
the Ray workers they start, through ``PYTHONPATH``) import these modules as
``from support.graph_models import ...``.
"""
