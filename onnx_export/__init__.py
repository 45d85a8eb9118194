"""Export PRM checkpoints to ONNX graphs that output ``step_probs [B, T]``, with parity.

Needs the ``export`` extra: ``pip install "prm-plugins[export]"``.

Layout: ``export`` (:func:`~prm_plugins.onnx_export.export.export_prm`, the stages of one
export) over ``config`` (:class:`~prm_plugins.onnx_export.config.ExportConfig`),
``checkpoint`` and ``detect`` (reading a checkpoint as downloaded, and its format),
``wrappers/`` (one torch wrapper per family, heads beside their family), ``graph``
(torch -> ONNX and the graph contract), ``fuse``, ``bf16``, ``quantize``, ``parity`` (the
measurement), ``parity_gate`` (the checks one export enforces) and ``publish`` (the model
directory: files, hashes, manifest).
"""
