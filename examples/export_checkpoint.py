"""Export a downloaded PRM checkpoint to an ONNX model directory and score with it.

Run: python examples/export_checkpoint.py CHECKPOINT_DIR OUT_DIR [--format F] [--dtype D]

Needs the export extra (pip install "prm-plugins[export]"). The checkpoint is taken as
downloaded: safetensors or .bin weights (read as tensors only, never as arbitrary pickle),
tokenizer.json or a sentencepiece tokenizer.model (converted to tokenizer.json). Nothing is
downloaded and no remote code runs. The format is detected from the checkpoint (Qwen2.5-Math-PRM,
Skywork-o1-Open-PRM, Math-Shepherd, TRL token classifiers); RLHFlow's PRMs are plain Llama
checkpoints and need --format rlhflow. The same as `prm export CHECKPOINT_DIR OUT_DIR`
followed by `prm score OUT_DIR ...`.
"""

from __future__ import annotations

import argparse
import json

from prm_plugins import load_prm
from prm_plugins.onnx_export.export import DTYPES, ExportConfig, export_prm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("out_dir")
    parser.add_argument("--format", default=None,
                        help="PRM format (default: detected; RLHFlow needs --format rlhflow)")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32",
                        help="bf16 needs --device cuda; bf16-weights runs on CPU too")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quantize", choices=["int8"], default=None)
    args = parser.parse_args()

    out = export_prm(ExportConfig(args.checkpoint, args.out_dir, format=args.format,
                                  dtype=args.dtype, device=args.device,
                                  quantize=args.quantize))
    prm = load_prm(out, device="auto")
    man = prm.manifest
    print("format:", man.format, "-", man.extra.get("format_source"))
    print("parity:", json.dumps({dtype: figures["max_abs_diff"]
                                 for dtype, figures in man.parity.get("by_dtype", {}).items()}))
    s = prm.score("What is 12 * 4 - 5?", ["12 * 4 = 48.", "48 - 5 = 43.", "The answer is 43."])
    print("scores:", [round(x, 3) for x in s.scores], "provider:", prm.provider)


if __name__ == "__main__":
    main()
