"""Write a small, randomly initialised model folder in the published layout.

Used by the tests and by the README's main job until the bundled trained model exists: it proves the whole
path (files, loaders, sampler, decoder, ComfyUI) without any download. Its pictures are noise.

    python -m lumina_tools demo-model models/lumina_mgpt/lumina-mgpt-demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from comfy_lumina_mgpt.config import ModelConfig
from comfy_lumina_mgpt.model.chameleon import LuminaMGPT
from comfy_lumina_mgpt.atomic import atomic_folder, check_writable
from comfy_lumina_mgpt.model.loading import is_weights_file, write_model_files
from lumina_world.tokenizer_builder import build_chameleon_tokenizer
from comfy_lumina_mgpt.vqgan import VQGAN, VQGANConfig, save_vqgan

CORPUS = [
    "Generate an image of 64x64 according to the following prompt:",
    "a red circle on the left and a blue square at the top",
    "a small green triangle in the centre of the picture",
    "Depth estimation. Segmentic segmentation. Surface normal estimation. Human pose estimation. Detect:",
    "Describe the image in detail. What colour is the circle? How many objects are there?",
]


def demo_vqgan_config() -> VQGANConfig:
    """8x downsampling, 64 codes: size tokens step by 16 px."""
    return VQGANConfig(embed_dim=8, n_embed=64, z_channels=8, resolution=64, ch=32, ch_mult=(1, 1, 2, 2),
                       num_res_blocks=1, attn_resolutions=())


def write_demo_model(folder: str | Path, *, seed: int = 0, dim: int = 64, n_layers: int = 2,
                     overwrite: bool = False) -> Path:
    """Create ``folder`` with config.json, model.safetensors, tokenizer.json, vqgan.yaml/.safetensors
    (an existing folder only with ``overwrite``, keeping its other files)."""
    folder = Path(folder)
    check_writable(folder, overwrite, "model folder")
    torch.manual_seed(seed)
    vq_cfg = demo_vqgan_config()
    staging = folder.with_name(folder.name + ".tokenizer-tmp")
    staging.mkdir(parents=True, exist_ok=True)
    tok_path = build_chameleon_tokenizer(staging / "tokenizer.json", num_codes=vq_cfg.n_embed, max_grid=16,
                                         text_corpus=CORPUS, text_vocab_size=300, official_layout=False)
    tokenizer_json = Path(tok_path).read_text(encoding="utf-8")
    from comfy_lumina_mgpt.tokenizer import TextTokenizer

    vocab = TextTokenizer.from_file(tok_path).vocab
    cfg = ModelConfig(vocab_size=vocab.vocab_size, dim=dim, intermediate_size=2 * dim, n_layers=n_layers,
                      n_heads=4, n_kv_heads=4, max_seq_len=1024, qk_norm_rows=1)
    model = LuminaMGPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.02)
    with atomic_folder(folder, overwrite=overwrite, replaces=is_weights_file, what="model folder") as tmp:
        write_model_files(model, tmp, extra_files={"tokenizer.json": tokenizer_json})
        save_vqgan(VQGAN(vq_cfg).eval(), tmp)
    for f in staging.iterdir():
        f.unlink()
    staging.rmdir()
    return folder


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lumina_tools demo-model", description=__doc__)
    parser.add_argument("folder", type=Path, help="where to write the model folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the weights of an existing folder (its other files are kept)")
    args = parser.parse_args(argv)
    try:
        print(write_demo_model(args.folder, seed=args.seed, overwrite=args.overwrite))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
