"""Evaluation of PRMs: step-level (ProcessBench, PRMBench, stepwise) and best-of-N."""
