"""Export PRM checkpoints to ONNX graphs that output ``step_probs [B, T]``, with parity.

Needs the ``export`` extra: ``pip install "prm-plugins[export]"``.
"""
