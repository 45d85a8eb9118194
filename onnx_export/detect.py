"""Which PRM format a downloaded checkpoint is, from its config, head tensors and tokenizer.

``prm export CKPT OUT`` without ``--format`` uses :func:`detect_format`. The evidence, per
published family:

==========================  ===============================================================
format                      evidence
==========================  ===============================================================
``qwen-prm``                ``config.architectures`` has ``Qwen2ForProcessRewardModel``, or
                            the weights hold the ``score.0``/``score.2`` MLP head
``skywork``                 the weights hold ``v_head.summary.weight`` (Skywork's value
                            head), or the architecture is ``Qwen2ForPrmModel``
``token-classification``    the architecture ends in ``ForTokenClassification`` (TRL
                            ``PRMTrainer`` models)
``math-shepherd``           a causal LM whose vocabulary has ``ки`` as one token
                            (Math-Shepherd's step tag) and no chat-turn special tokens
                            (``<|start_header_id|>``, ``<|eot_id|>``, ``<|im_start|>``)
==========================  ===============================================================

RLHFlow's PRMs (``Llama3.1-8B-PRM-*``) are plain Llama causal LMs with the Llama 3.1 chat
tokens: nothing in the checkpoint says they are PRMs (Llama 3's vocabulary may well hold
``ки``), so they need ``--format rlhflow`` and the error says so. No evidence, or evidence
for two formats, is an error that lists the candidates; detection never guesses. A plugin
format takes part by giving its class a
``detect_checkpoint(model_dir, hf_config, hf_tokenizer, tensor_names) -> bool`` classmethod.

Examples:
    >>> detect_format(Path("Skywork-o1-Open-PRM-1.5B"), hf_config, hf_tok)  # doctest: +SKIP
    'skywork'
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prm_plugins.errors import InvalidInputError
from prm_plugins.formats import available_formats, get_format

__all__ = [
    "BUILTIN_DETECTORS",
    "CHAT_TURN_TOKENS",
    "MATH_SHEPHERD_TAG",
    "detect_format",
    "detect_format_with_evidence",
    "explain_detected",
    "format_evidence",
]

logger = logging.getLogger(__name__)

#: Math-Shepherd's step tag, a single token in the vocabularies of its checkpoints.
MATH_SHEPHERD_TAG = "ки"
#: Special tokens of chat-turn tokenizers (Llama 3, Qwen): a causal LM holding them is a chat
#: model (RLHFlow's PRMs are), never taken for Math-Shepherd.
CHAT_TURN_TOKENS = ("<|start_header_id|>", "<|eot_id|>", "<|im_start|>")
_QWEN_PRM_HEAD = ("score.0.weight", "score.2.weight")
_SKYWORK_HEAD = "v_head.summary.weight"

Detector = Callable[[list[str], set[str], Any], "str | None"]


def _qwen_prm(archs: list[str], names: set[str], hf_tok: Any) -> str | None:
    if "Qwen2ForProcessRewardModel" in archs:
        return "config.architectures has Qwen2ForProcessRewardModel"
    if all(n in names for n in _QWEN_PRM_HEAD):
        return "the weights hold the score.0/score.2 head of Qwen2.5-Math-PRM"
    return None


def _skywork(archs: list[str], names: set[str], hf_tok: Any) -> str | None:
    if _SKYWORK_HEAD in names:
        return f"the weights hold Skywork's value head ({_SKYWORK_HEAD})"
    if "Qwen2ForPrmModel" in archs:
        return "config.architectures has Qwen2ForPrmModel"
    return None


def _token_classification(archs: list[str], names: set[str], hf_tok: Any) -> str | None:
    hit = next((a for a in archs if a.endswith("ForTokenClassification")), None)
    return f"config.architectures has {hit}" if hit else None


def _is_causal_lm(archs: list[str]) -> bool:
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def _has_tag_token(hf_tok: Any, tag: str = MATH_SHEPHERD_TAG) -> bool:
    """Whether some single vocabulary token is the tag (with or without its leading space)."""
    for text in (tag, " " + tag, "\n" + tag):
        try:
            ids = hf_tok.encode(text, add_special_tokens=False)
        except Exception:  # an odd tokenizer: no evidence, not a crash
            return False
        if any(hf_tok.decode([i]).strip() == tag for i in ids):
            return True
    return False


def _chat_turn_tokens(hf_tok: Any) -> list[str]:
    try:
        vocab = hf_tok.get_vocab()
    except Exception:  # an odd tokenizer: no evidence either way
        return []
    return [t for t in CHAT_TURN_TOKENS if t in vocab]


def _math_shepherd(archs: list[str], names: set[str], hf_tok: Any) -> str | None:
    if not _is_causal_lm(archs) or _chat_turn_tokens(hf_tok):
        return None
    if _has_tag_token(hf_tok):
        return (f"a causal LM ({archs[0]}) whose vocabulary has {MATH_SHEPHERD_TAG!r} as one "
                "token (Math-Shepherd's step tag) and no chat-turn tokens")
    return None


#: Built-in format -> detector returning the evidence found, or ``None``.
BUILTIN_DETECTORS: dict[str, Detector] = {
    "qwen-prm": _qwen_prm,
    "skywork": _skywork,
    "token-classification": _token_classification,
    "math-shepherd": _math_shepherd,
}


def format_evidence(model_dir: Path, hf_config: Any, hf_tok: Any) -> dict[str, str]:
    """Every format the checkpoint looks like, with the evidence for each.

    Args:
        model_dir: the checkpoint directory (its weight names are read, not its tensors).
        hf_config: the checkpoint's transformers config.
        hf_tok: the checkpoint's transformers tokenizer.
    """
    from prm_plugins.onnx_export.checkpoint import tensor_names

    archs = [str(a) for a in (getattr(hf_config, "architectures", None) or [])]
    names = tensor_names(model_dir)
    found: dict[str, str] = {}
    for name, detector in BUILTIN_DETECTORS.items():
        evidence = detector(archs, names, hf_tok)
        if evidence:
            found[name] = evidence
    for name in available_formats():
        if name in BUILTIN_DETECTORS:
            continue
        try:
            hook = getattr(get_format(name), "detect_checkpoint", None)
        except Exception:  # a broken plugin must not break detection of the others
            logger.warning("format plugin %r could not be loaded for detection", name)
            continue
        if callable(hook) and hook(model_dir, hf_config, hf_tok, names):
            found[name] = f"the {name} plugin recognises it"
    return found


def detect_format(model_dir: Path, hf_config: Any, hf_tok: Any) -> str:
    """The one format the checkpoint's config, weights and tokenizer point to.

    Raises:
        InvalidInputError: see :func:`detect_format_with_evidence`.
    """
    return detect_format_with_evidence(model_dir, hf_config, hf_tok)[0]


def detect_format_with_evidence(model_dir: Path, hf_config: Any, hf_tok: Any
                                ) -> tuple[str, str]:
    """``(format, evidence)``: the one format that fits, and why (for ``prm.json``).

    Raises:
        InvalidInputError: no format, or more than one, fits; the message lists the
            candidates with their evidence and the ``--format`` to pass. A plain causal LM
            gets the RLHFlow note (its checkpoints cannot be told from any Llama).
    """
    found = format_evidence(model_dir, hf_config, hf_tok)
    archs = [str(a) for a in (getattr(hf_config, "architectures", None) or [])]
    if len(found) == 1:
        (name, evidence), = found.items()
        logger.info("detected format %s: %s", name, evidence)
        return name, evidence
    if found:
        listed = "; ".join(f"{n} ({e})" for n, e in found.items())
        raise InvalidInputError(
            f"cannot tell the format of {model_dir}: it looks like more than one PRM family: "
            f"{listed}. Pass --format with one of {sorted(found)}"
        )
    what = f"config.architectures {archs}" if archs else "no config.architectures"
    if _is_causal_lm(archs):
        chat = _chat_turn_tokens(hf_tok)
        template = f"chat tokens {chat}" if chat else f"no {MATH_SHEPHERD_TAG!r} token"
        raise InvalidInputError(
            f"cannot tell the format of {model_dir}: it is a plain causal LM ({what}, "
            f"{template}). RLHFlow PRMs (Llama3.1-8B-PRM-*) are plain Llama checkpoints: "
            "export them with --format rlhflow. A Math-Shepherd-style PRM with its own tag "
            "needs --format math-shepherd --option 'step_tag= TAG'. Candidates: rlhflow, "
            "math-shepherd"
        )
    raise InvalidInputError(
        f"cannot tell the format of {model_dir} ({what}; no PRM head tensor such as "
        f"{_SKYWORK_HEAD} or score.0.weight). Pass --format, one of "
        f"{available_formats()}"
    )


@contextlib.contextmanager
def explain_detected(format_source: str) -> Iterator[None]:
    """Say, in a format's own error, that the format was detected and its options defaulted.

    Args:
        format_source: where the format came from (``"detected: <evidence>"``,
            ``"--format"`` or ``"prm_format.json"``); only detected formats get the note.
    """
    try:
        yield
    except InvalidInputError as exc:
        if not format_source.startswith("detected"):
            raise
        raise InvalidInputError(
            f"{exc} (the format was {format_source}; it takes the family's default options: "
            "pass --option KEY=VALUE for a checkpoint trained with others, or --format)"
        ) from exc
