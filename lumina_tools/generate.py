"""``python -m lumina_tools generate``: text-to-image (or any prompt) without ComfyUI.

    python -m lumina_tools generate --model models/lumina_mgpt/Lumina-mGPT-7B-768 \\
        --tokenizer models/lumina_mgpt/chameleon-tokenizer --prompt "a dog in the snow" --size 768x768 \\
        --seed 1 --out dog.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from comfy_lumina_mgpt import codec, sizes, unirep
from comfy_lumina_mgpt.tokenizer_bundle import load_tokenizer_bundle
from comfy_lumina_mgpt.checks import number_problem, require, text_problem
from comfy_lumina_mgpt.model.loading import load_model
from comfy_lumina_mgpt.model.quant import QUANT_MODES
from comfy_lumina_mgpt.preprocess import tensor_to_pil
from comfy_lumina_mgpt.answers import sample_answers
from comfy_lumina_mgpt.sampling.settings import SamplerConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lumina_tools generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="checkpoint folder (config.json + safetensors)")
    p.add_argument("--tokenizer", type=Path, help="folder with tokenizer.json and vqgan files (default: --model)")
    p.add_argument("--vqgan", type=Path, help="folder with vqgan.yaml + weights (default: --tokenizer)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="", help="negative prompt (replaces the empty guidance context)")
    p.add_argument("--size", default="768x768", help="WIDTHxHEIGHT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--image-top-k", type=int, default=2000)
    p.add_argument("--text-top-k", type=int, default=10)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--quant", default="none", choices=list(QUANT_MODES),
                   help="weight-only quantization of the transformer layers and LM head (int8 halves bf16's memory)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--free-size", action="store_true", help="let the model sample the size tokens")
    p.add_argument("--jacobi-window", type=int, default=0,
                   help="speculative Jacobi decoding with this many drafts per pass (16 recommended; 0 = off)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (CUDA graphs on a GPU)")
    p.add_argument("--out", type=Path, default=Path("out.png"), help="output PNG (suffix _N added for N>0)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    dtype = args.dtype if args.dtype != "auto" else ("fp32" if device.type == "cpu" else "bf16")
    tok_dir = args.tokenizer or args.model
    try:
        # the checks the nodes make on their widgets (argv bytes that are not UTF-8 arrive as lone surrogates)
        for flag in ("prompt", "negative", "size"):
            require(text_problem(getattr(args, flag), f"--{flag}"))
        for flag in ("cfg", "temperature"):
            require(number_problem(getattr(args, flag), f"--{flag}", minimum=0.0))
        bundle = load_tokenizer_bundle(tok_dir, args.vqgan, device=device)
        model = load_model(args.model, dtype=dtype, device=device, quant=args.quant)
        width, height = sizes.parse_size(args.size, "--size")
        prompt = codec.text_to_image_prompt(bundle, args.prompt, width, height, args.negative)
        grid = None if args.free_size else prompt.grid_for(bundle.patch)
        settings = SamplerConfig(cfg_scale=args.cfg, image_top_k=args.image_top_k, text_top_k=args.text_top_k,
                                 image_temperature=args.temperature, text_temperature=args.temperature,
                                 force_size=grid, force_images=1 if grid is not None else 0,
                                 jacobi_window=args.jacobi_window, compiled=args.compile,
                                 # + room for a few text tokens when the model picks the size (--free-size)
                                 max_new_tokens=unirep.forced_images_tokens(
                                     (height // bundle.patch, width // bundle.patch)) + 7)
        negatives = [list(prompt.negative_ids)] * args.batch if prompt.negative_ids else None
        generator = torch.Generator(device=device).manual_seed(args.seed)
        start = time.perf_counter()
        answers = sample_answers(model, bundle, [list(prompt.ids)] * args.batch, settings,
                                 negative_prompts=negatives, generator=generator)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    written = 0
    for text, images in zip(answers.texts, answers.images):
        for codes in images:
            image = tensor_to_pil(codec.decode_codes(bundle, codes)[0].cpu())
            path = args.out if written == 0 else args.out.with_name(f"{args.out.stem}_{written}{args.out.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            print(path)
            written += 1
        if text.strip():
            print(f"text: {text}", file=sys.stderr)
    n_tokens = sum(len(t) for t in answers.tokens)
    print(f"{n_tokens} tokens in {elapsed:.1f}s ({n_tokens / max(elapsed, 1e-9):.1f} tok/s)", file=sys.stderr)
    if written == 0:
        print("error: no complete image was generated", file=sys.stderr)
        return 1
    return 0
