"""Checks that are the same for every chat-family PRM (qwen-prm, rlhflow, skywork).

Each family's test file builds its own tiny checkpoint, format and upstream reference; the
assertions that do not depend on the family live here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from support.tiny_chat_models import pad_rendered


def assert_torch_wrapper_equals_reference(
    family: str, model_dir: Path, fmt: Any, reference: Any,
    chains: Sequence[tuple[str, list[str]]], padding_side: str,
) -> None:
    """The torch step-probability wrapper (what gets exported) scores ``chains``, padded
    together on ``padding_side``, as ``reference.score(question, steps)`` does (1e-5), and
    the first chain's scores differ between steps (they depend on the context)."""
    import torch

    from prm_plugins.onnx_export.wrappers import build_step_prob_model

    wrapper = build_step_prob_model(family, model_dir, dict(fmt.options), torch.float32)
    rendered = [fmt.render(q, s) for q, s in chains]
    ids, mask, offsets = pad_rendered([r.input_ids for r in rendered], padding_side)
    with torch.no_grad():
        probs = wrapper(ids, mask)
    assert probs.dtype == torch.float32 and probs.shape == ids.shape
    for row, ((q, steps), r) in enumerate(zip(chains, rendered, strict=True)):
        ours = [float(probs[row, offsets[row] + p]) for p in r.step_positions]
        ref = reference.score(q, steps)
        assert len(ours) == len(ref) == len(steps)
        assert max(abs(a - b) for a, b in zip(ours, ref, strict=True)) < 1e-5
    spread = [float(probs[0, p]) for p in rendered[0].step_positions]
    assert max(spread) - min(spread) > 0.01  # scores depend on the context
