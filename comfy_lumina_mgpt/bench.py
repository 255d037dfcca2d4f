"""``python -m comfy_lumina_mgpt bench``: throughput numbers on this machine, no download needed.

``--train``: optimizer steps of a small random model on synthetic token sequences through the real trainer
(``training.train``), reported as tokens per second. ``--sample``: text-to-image decoding tokens/s with
guidance (see ``bench_sample``).
Each benchmark is a function ``(args) -> dict`` registered in ``BENCHES``; ``main`` runs the selected ones and
prints one line each.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    """Training tokens/s of a ``dim``-wide, ``layers``-deep model over ``steps`` steps (after 2 warm-up)."""
    from .config import ModelConfig
    from .model.chameleon import LuminaMGPT
    from .training.config import TrainConfig
    from .training.data import TokenDataset
    from .training.loop import train

    device = _device(args.device)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=args.vocab, dim=args.dim, intermediate_size=int(args.dim * 8 / 3) // 8 * 8,
                      n_layers=args.layers, n_heads=max(1, args.dim // 64), n_kv_heads=max(1, args.dim // 64),
                      max_seq_len=args.seq_len)
    model = LuminaMGPT(cfg).to(device)
    rng = random.Random(0)
    seqs = [[rng.randrange(1, args.vocab) for _ in range(args.seq_len)] for _ in range(4 * args.batch)]
    data = TokenDataset.from_sequences(seqs)
    lora = None if args.full else {"rank": 16, "alpha": 32}
    train_cfg = TrainConfig.from_dict(dict(max_steps=args.steps + 2, batch_size=args.batch, lr=1e-4,
                                           lora=lora, gradient_checkpointing=False, cfg_drop_prob=0.0,
                                           bf16=True))
    start = time.perf_counter()
    result = train(model, data, train_cfg)
    total = time.perf_counter() - start
    timed = result.history[2:]
    tokens = args.batch * args.seq_len * len(timed)
    step_time = sum(tokens / len(timed) / h["tokens_per_s"] for h in timed)
    return {"name": "train", "tokens_per_s": tokens / step_time, "steps": len(timed), "wall_s": total,
            "device": str(device), "setup": f"{'full' if args.full else 'LoRA r16'} dim={args.dim} "
            f"layers={args.layers} batch={args.batch} seq={args.seq_len} vocab={args.vocab} "
            f"threads={torch.get_num_threads()}"}


def bench_sample(args: argparse.Namespace) -> dict[str, Any]:
    """Text-to-image decoding tokens/s with guidance on (2 x batch rows per step) for a random
    ``dim``/``layers`` model; ``--image WxH`` in 16-px size steps (256x256 = 1060 tokens, the length of a
    512x512 official image). ``--dim 4096 --layers 32 --vocab 65536`` on a GPU is the 7B shape."""
    import tempfile

    from .config import ModelConfig
    from .model.chameleon import LuminaMGPT
    from .sampling.generate import generate
    from .sampling.settings import SamplerConfig
    from .tokenizer import TextTokenizer
    from .vocab_builder import build_chameleon_tokenizer

    device = _device(args.device)
    width, height = (int(v) for v in args.image.lower().split("x"))
    patch = 16
    with tempfile.TemporaryDirectory() as tmp:
        path = build_chameleon_tokenizer(Path(tmp) / "tokenizer.json", num_codes=512, max_grid=64,
                                         text_corpus=["a red circle on the left"], text_vocab_size=64,
                                         official_layout=False)
        tok = TextTokenizer.from_file(path)
    vocab = tok.vocab
    torch.manual_seed(0)
    heads = max(1, args.dim // 128) if args.dim >= 1024 else max(1, args.dim // 64)
    cfg = ModelConfig(vocab_size=max(args.vocab, vocab.vocab_size), dim=args.dim,
                      intermediate_size=int(args.dim * 8 / 3) // 8 * 8, n_layers=args.layers, n_heads=heads,
                      n_kv_heads=heads, max_seq_len=8192)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = LuminaMGPT(cfg).to(device=device, dtype=dtype).eval()
    prompt = [vocab.bos_id] + tok.encode("a red circle on the left") + [vocab.sep_id]
    grid = (height // patch, width // patch)
    settings = SamplerConfig(cfg_scale=4.0, image_top_k=2000, force_size=grid, force_images=1,
                             max_new_tokens=4 + 2 * grid[0] * (2 * grid[1] + 1))
    gen = torch.Generator(device=device).manual_seed(0)
    warm = SamplerConfig(cfg_scale=4.0, force_size=(1, 1), force_images=1, max_new_tokens=16)
    generate(model, [prompt] * args.batch, vocab, warm, generator=gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = generate(model, [prompt] * args.batch, vocab, settings, generator=gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    steps = max(len(t) for t in result.tokens)
    return {"name": "sample", "tokens_per_s": args.batch * steps / wall, "steps": steps, "wall_s": wall,
            "device": str(device), "setup": f"{width}x{height} image, cfg on, batch={args.batch}, dim={args.dim} "
            f"layers={args.layers} vocab={cfg.vocab_size} {str(dtype).removeprefix('torch.')} "
            f"threads={torch.get_num_threads()}; {1000 * wall / steps:.1f} ms/step"}


BENCHES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "train": bench_train,
    "sample": bench_sample,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfy_lumina_mgpt bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="store_true", help="training throughput")
    parser.add_argument("--sample", action="store_true", help="sampling throughput")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--image", default="256x256", help="sample: image size WxH (16-px steps)")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--full", action="store_true", help="train every weight (default: LoRA rank 16)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (0 = torch's default; 1 is fastest on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    selected = [name for name in BENCHES if getattr(args, name)] or ["train"]
    status = 0
    for name in selected:
        try:
            res = BENCHES[name](args)
        except NotImplementedError as err:
            print(f"{name}: {err}")
            status = 2
            continue
        print(f"{name}: {res['tokens_per_s']:.0f} tokens/s on {res['device']} ({res['setup']}; "
              f"{res['steps']} steps, {res['wall_s']:.1f} s)")
    return status
