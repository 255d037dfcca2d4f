"""``python -m comfy_lumina_mgpt bench``: throughput numbers on this machine, no download needed.

``--train``: optimizer steps of a small random model on synthetic token sequences through the real trainer
(``training.train``), reported as tokens per second. ``--sample``: sampling throughput (see ``bench_sample``).
Each benchmark is a function ``(args) -> dict`` registered in ``BENCHES``; ``main`` runs the selected ones and
prints one line each.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
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
    """Sampling throughput (tokens/s). Hook: filled in with the sampler benchmark."""
    raise NotImplementedError("the sampling benchmark is not available in this version")


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
