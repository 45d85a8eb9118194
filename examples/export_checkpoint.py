"""Export a local transformers PRM checkpoint to an ONNX model directory and score with it.

Run: python examples/export_checkpoint.py CHECKPOINT_DIR OUT_DIR --format qwen-prm

Needs the export extra (pip install "prm-plugins[export]"). The checkpoint must be on local
disk (safetensors); nothing is downloaded and no remote code runs. The same as
`prm export CHECKPOINT_DIR OUT_DIR --format F` followed by `prm score OUT_DIR ...`.
"""

from __future__ import annotations

import argparse
import json

from prm_plugins import load_prm
from prm_plugins.onnx_export.export import ExportConfig, export_prm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("out_dir")
    parser.add_argument("--format", required=True)
    parser.add_argument("--quantize", choices=["int8"], default=None)
    args = parser.parse_args()

    out = export_prm(ExportConfig(args.checkpoint, args.out_dir, format=args.format,
                                  quantize=args.quantize))
    prm = load_prm(out, device="auto")
    print("parity:", json.dumps(prm.manifest.parity.get("max_abs_diff")))
    s = prm.score("What is 12 * 4 - 5?", ["12 * 4 = 48.", "48 - 5 = 43.", "The answer is 43."])
    print("scores:", [round(x, 3) for x in s.scores], "provider:", prm.provider)


if __name__ == "__main__":
    main()
