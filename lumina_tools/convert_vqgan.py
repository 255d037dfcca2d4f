"""``python -m lumina_tools convert-vqgan vqgan.ckpt [out.safetensors]``.

Reads Meta's Lightning-style ``vqgan.ckpt`` without executing pickled code and writes its tensors as
``vqgan.safetensors`` beside it (the loaders prefer that file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from comfy_lumina_mgpt.vqgan import convert_ckpt_to_safetensors


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lumina_tools convert-vqgan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", type=Path, help="vqgan.ckpt (or any .ckpt/.pt/.pth with a state_dict)")
    parser.add_argument("out", type=Path, nargs="?", help="output .safetensors (default: beside the input)")
    args = parser.parse_args(argv)
    try:
        out = convert_ckpt_to_safetensors(args.ckpt, args.out)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0
