"""``prm export``: a local checkpoint to an ONNX model directory, with measured parity.

The flags are derived from :class:`prm_plugins.onnx_export.export.ExportConfig`, so the
command line and the Python API cannot drift apart. Heavy packages (torch, transformers,
onnx) are imported only when the verb runs.

Examples:
    $ prm export Skywork-o1-Open-PRM-Qwen-2.5-1.5B/ out/          # format detected
    $ prm export Llama3.1-8B-PRM-Deepseek-Data/ out/ --format rlhflow
    $ prm export ckpt/ out/ --format math-shepherd
    $ prm export ckpt/ out-int8/ --format token-classification --quantize int8 \\
          --option separator=[SEP] --option bos_token_id=101
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from prm_plugins.cli.output import DATA, OK, error
from prm_plugins.cli.output import out as _write

__all__ = ["add_parser", "make_parser", "parse_option", "print_summary", "run"]

_EPILOG = (
    "VALUE of --option is read as JSON when it parses (1, null, true, \"1\"), else as a "
    "string with JSON escapes (\\n, \\u043a) decoded: --option separator=\\n, "
    "--option 'step_tag= ки', --option bos_token_id=1. Exit status: 0 written, 1 parity "
    "failed (nothing written), 2 bad arguments or checkpoint."
)


VERB = "export"


def _export_config() -> type:
    """The ``ExportConfig`` dataclass (imported on use: it lives in the export extra's code)."""
    from prm_plugins.onnx_export.config import ExportConfig

    return ExportConfig


def make_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` verb to the ``prm`` sub-command parsers.

    Args:
        subparsers: the object ``ArgumentParser.add_subparsers()`` returned.

    Returns:
        The ``export`` parser.
    """
    from prm_plugins.cli.options import add_dataclass_arguments

    config_cls = _export_config()
    parser: argparse.ArgumentParser = subparsers.add_parser(
        VERB,
        help="export a checkpoint to an ONNX model directory, with measured parity",
        description=(
            "Export a local transformers checkpoint as downloaded (safetensors or .bin read as "
            "tensors only, tokenizer.json or a sentencepiece tokenizer.model; never remote "
            "code) to a PRM model directory (model.onnx, tokenizer.json, prm.json). The format "
            "is detected when --format is not given. The graph is checked against the torch "
            "model on random chains before anything is written."
        ),
        epilog=_EPILOG,
    )
    parser.set_defaults(run=run)
    add_dataclass_arguments(parser, config_cls)
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON object")
    return parser


#: The name the verb modules had before ``prm_plugins.cli`` became a package.
add_parser = make_parser


def parse_option(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(KEY, value)``, the value read as JSON when it parses.

    Raises:
        InvalidInputError: no ``=`` or an empty key.

    Examples:
        >>> parse_option("bos_token_id=1")
        ('bos_token_id', 1)
        >>> parse_option("separator=[SEP]")
        ('separator', '[SEP]')
    """
    from prm_plugins.errors import InvalidInputError

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InvalidInputError(
            f"--option takes KEY=VALUE, got {text!r}; e.g. --option bos_token_id=1"
        )
    for candidate in (raw, '"' + raw.replace('"', '\\"') + '"'):
        try:
            return key, json.loads(candidate)
        except ValueError:
            continue
    return key, raw


def run(args: argparse.Namespace) -> int:
    """Run ``prm export`` for parsed ``args``; returns the exit status.

    Returns:
        0 when the model directory was written, 1 when parity failed (nothing written),
        2 for bad arguments or an unreadable checkpoint.
    """
    from dataclasses import fields

    from prm_plugins.errors import ParityError, PRMError

    config_cls = _export_config()
    try:
        options = dict(parse_option(o) for o in (args.format_options or []))
        config = config_cls(**{
            f.name: (options if f.name == "format_options" else getattr(args, f.name))
            for f in fields(config_cls)
        })
        if config.parity_batch_sizes is not None:
            config.parity_batch_sizes = tuple(config.parity_batch_sizes)
    except PRMError as exc:
        return error(VERB, exc)
    log = logging.getLogger("prm_plugins.onnx_export")
    saved = log.level, log.propagate
    handler = _progress_handler(log, quiet=bool(args.json))
    try:
        from prm_plugins.onnx_export.export import export_prm

        out_dir = export_prm(config)
    except ParityError as exc:
        return error(VERB, exc, DATA)
    except PRMError as exc:
        return error(VERB, exc)
    finally:
        if handler is not None:
            log.removeHandler(handler)
            log.setLevel(saved[0])
            log.propagate = saved[1]
    print_summary(Path(out_dir), as_json=bool(args.json))
    return OK


def _progress_handler(log: logging.Logger, quiet: bool) -> logging.Handler | None:
    """Show the export's stage lines on stderr unless logging already shows them."""
    if quiet or log.isEnabledFor(logging.INFO):
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("prm export: %(message)s"))
    handler.setLevel(logging.INFO)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler


def print_summary(out_dir: Path, *, as_json: bool) -> None:
    """Print what an export wrote: format, parity figures, fusion, files (or one JSON object)."""
    from prm_plugins.manifest import Manifest

    man = Manifest.read(out_dir)
    par = man.parity
    if as_json:
        _write(json.dumps({
            "out_dir": str(out_dir), "format": man.format, "dtype": man.dtype,
            "opset": man.opset, "max_length": man.max_length, "parity": par,
            "fusion": man.fusion, "files": man.files,
        }, ensure_ascii=False))
        return
    _write(f"wrote {out_dir} ({man.format}, {man.dtype}, opset {man.opset}, "
           f"max_length {man.max_length})")
    source = str(man.extra.get("format_source") or "")
    if source.startswith("detected"):
        _write(f"format {man.format} {source}")
    mean_tol = par.get("mean_tolerance")
    _write(f"parity vs torch: max |Δp| {par['max_abs_diff']:.3g}, mean "
           f"{par['mean_abs_diff']:.3g} (tolerance {par['tolerance']:g}"
           f"{'' if mean_tol is None else f', mean {mean_tol:g}'}) over {par['n_chains']} "
           f"chains, {par['n_steps']} steps, padding {'+'.join(par['padding_sides'])}, "
           f"{par.get('backend', '')}")
    for precision, figures in (par.get("by_dtype") or {}).items():
        if not figures.get("gate"):
            _write(f"graph vs torch in {precision} (for information): max |Δp| "
                   f"{figures['max_abs_diff']:.3g}, mean {figures['mean_abs_diff']:.3g}")
    if "fp32_graph" in par:
        fp32 = par["fp32_graph"]
        _write(f"fp32 graph before quantisation: max |Δp| {fp32['max_abs_diff']:.3g}, "
               f"mean {fp32['mean_abs_diff']:.3g}")
    if man.fusion.get("mode") == "fused":
        ops = ", ".join(f"{k} {v}" for k, v in man.fusion["fused_ops"].items())
        _write(f"fused graph: {ops} ({man.fusion['nodes_before']} -> "
               f"{man.fusion['nodes_after']} nodes)")
    check = par.get("runtime_check")
    if check:
        _write(f"load_prm() on the parity chains: max |Δp| {check['max_abs_diff']:.3g}")
    sizes = ", ".join(f"{name} ({(out_dir / name).stat().st_size / 2**20:.1f} MiB)"
                      for name in man.files)
    _write(f"files: {sizes}, prm.json")
