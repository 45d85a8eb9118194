"""Torch wrappers: a family's checkpoint as ``(input_ids, attention_mask) -> step_probs``.

Each family has a module ``prm_plugins.onnx_export.wrap_<family>`` with a function
``build(model_dir: Path, options: dict, dtype: torch.dtype) -> torch.nn.Module`` whose
``forward(input_ids [B,T] int64, attention_mask [B,T] int64)`` returns ``step_probs [B,T]``
float32 and derives position ids from the mask (``cumsum - 1``) so both paddings score right.
A third-party format can provide the same as a ``build_torch_model`` classmethod.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from prm_plugins.errors import ModelLoadError, UnknownFormatError, require
from prm_plugins.formats import get_format

__all__ = ["build_step_prob_model", "load_hf_tokenizer", "position_ids_from_mask"]

logger = logging.getLogger(__name__)

_BUILDERS: dict[str, str] = {
    "token-classification": "prm_plugins.onnx_export.wrap_token_classification",
    "math-shepherd": "prm_plugins.onnx_export.wrap_math_shepherd",
    "qwen-prm": "prm_plugins.onnx_export.wrap_qwen_prm",
    "rlhflow": "prm_plugins.onnx_export.wrap_rlhflow",
    "skywork": "prm_plugins.onnx_export.wrap_skywork",
}


def position_ids_from_mask(attention_mask: Any) -> Any:
    """``cumsum(mask) - 1`` clamped at 0: positions that ignore left padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def load_hf_tokenizer(model_dir: str | Path) -> Any:
    """The checkpoint's fast tokenizer, from local files only, never remote code.

    A checkpoint with ``tokenizer.json`` loads as it is. One with only a sentencepiece
    ``tokenizer.model`` (Mistral and Llama 2 checkpoints such as math-shepherd-mistral-7b-prm)
    is converted to a fast tokenizer with transformers' converter (needs ``sentencepiece``
    and ``protobuf``, both in the export extra), and the conversion is checked against
    sentencepiece itself on probe texts: the exported ``tokenizer.json`` must split text
    exactly as the model's own tokenizer does.

    Raises:
        MissingExtraError: ``tokenizer.model`` only and sentencepiece/protobuf missing.
        ModelLoadError: no tokenizer files, transformers cannot load them, the result is not
            a fast tokenizer, or the conversion splits text differently from sentencepiece.
    """
    from prm_plugins.onnx_export.checkpoint import first_line

    transformers = require("transformers", "export")
    model_dir = Path(model_dir)
    has_json = (model_dir / "tokenizer.json").is_file()
    spm_file = model_dir / "tokenizer.model"
    if not has_json and not spm_file.is_file():
        found = sorted(p.name for p in model_dir.iterdir() if "token" in p.name.lower())
        raise ModelLoadError(
            f"{model_dir} has no tokenizer.json or sentencepiece tokenizer.model (found "
            f"{found or 'no tokenizer files'}); copy the checkpoint's tokenizer files into it"
        )
    if not has_json:
        require("sentencepiece", "export")
        require("google.protobuf", "export")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(
            str(model_dir), local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:
        what = "tokenizer.json" if has_json else "the sentencepiece tokenizer.model"
        raise ModelLoadError(
            f"transformers could not load {what} of {model_dir} ({type(exc).__name__}: "
            f"{first_line(str(exc))}); check the tokenizer files are complete and that "
            "tokenizer_config.json names a tokenizer class transformers has"
        ) from exc
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise ModelLoadError(
            f"the tokenizer in {model_dir} ({type(tok).__name__}) is not a fast tokenizer; "
            "prm export needs tokenizer.json, or a sentencepiece tokenizer.model it can convert"
        )
    if not has_json:
        _check_spm_conversion(tok, spm_file)
        logger.info("converted %s (sentencepiece) to a fast tokenizer", spm_file)
    return tok


#: Texts the converted tokenizer must split exactly as sentencepiece does. None starts with
#: a space: there Llama tokenizers with ``legacy: false`` differ from raw sentencepiece by
#: design (and the rendered chains start with the question's first word).
_SPM_PROBES = (
    "Step 1: Tom has 3 apples and buys 12 more, so 3 + 12 = 15. ки",
    "Step 2:  two  spaces,\ttab\nand a new line ки\nStep 3: 48 / 6 = 8 ки",
    "spaces:  inside,   and trailing ",
    "café × ÷ √2 ≈ 1.414, 😀 ки + -",
)


def _check_spm_conversion(tok: Any, spm_file: Path) -> None:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_file))
    for text in _SPM_PROBES:
        want = list(sp.encode(text))
        got = list(tok.encode(text, add_special_tokens=False))
        if got != want:
            raise ModelLoadError(
                f"the fast tokenizer converted from {spm_file} splits {text!r} into {got[:24]} "
                f"but sentencepiece gives {want[:24]}; the converted tokenizer.json would "
                "score different tokens than the model saw. Provide the checkpoint's "
                "tokenizer.json, or report this with the tokenizer files"
            )


def build_step_prob_model(
    format_name: str, model_dir: str | Path, options: dict[str, Any], dtype: Any
) -> Any:
    """The torch module for ``format_name`` loaded from ``model_dir``, in eval mode."""
    fmt_cls = get_format(format_name)
    custom = getattr(fmt_cls, "build_torch_model", None)
    if callable(custom):
        model = custom(Path(model_dir), options, dtype)
    elif format_name in _BUILDERS:
        model = importlib.import_module(_BUILDERS[format_name]).build(
            Path(model_dir), options, dtype
        )
    else:
        raise UnknownFormatError(
            f"format {format_name!r} has no torch wrapper; give its PRMFormat class a "
            "build_torch_model(model_dir, options, dtype) classmethod"
        )
    return model.eval()
