"""The GPU figures of the speed issue in one run; one JSON line per figure on stdout.

    python scripts/gpu_check.py            # on a machine with a CUDA GPU (< 8 minutes on an H200)
    python scripts/gpu_check.py --smoke    # the same steps on a tiny model on the CPU (seconds; for CI)

Figures (7B shape, random bf16 weights, 768x768, cfg 4, official 8192 image codes):
  sample_plain      ours vs the upstream-style baseline (first --baseline-steps tokens) and the floor
  sample_sjd        speculative Jacobi decoding, window 16 (random weights accept few drafts: the time per
                    pass is the figure; the pass count needs real weights)
  sample_int8       weight-only int8 (when the pack's quantization is present)
  sample_batch4     four images per pass, s/image
  train_bf16        LoRA steps through the real trainer with bf16 autocast (7B-width slice)
  train_fsdp        the same through accelerate FSDP, world size 1
Each line is a JSON object with "figure" and the bench's keys, or "figure" and "error".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FSDP_WORKER = r"""
import json, sys, time
import torch
from lumina_tools.bench import CONFIGS
from comfy_lumina_mgpt.config import ModelConfig
from comfy_lumina_mgpt.model.chameleon import LuminaMGPT
from comfy_lumina_mgpt.training.config import TrainConfig
from comfy_lumina_mgpt.training.data import TokenDataset
from comfy_lumina_mgpt.training.distributed import make_accelerator, is_fsdp
from comfy_lumina_mgpt.training.loop import train

config, seq_len, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
shape = {**CONFIGS[config], "n_layers": 2}
torch.manual_seed(0)
model = LuminaMGPT(ModelConfig(vocab_size=65536, max_seq_len=seq_len, **shape))
seqs = [[1 + (i * 7919 + k * 104729) % 65000 for k in range(seq_len)] for i in range(8)]
cfg = TrainConfig.from_dict(dict(max_steps=steps, batch_size=1, lr=1e-4, lora={"rank": 16, "alpha": 32},
                                 gradient_checkpointing=True, cfg_drop_prob=0.0, bf16=torch.cuda.is_available()))
launched = "LOCAL_RANK" in __import__("os").environ  # under accelerate launch (FSDP); else plain autocast
accelerator = make_accelerator(cfg) if launched else None
if not launched and torch.cuda.is_available():
    model = model.cuda()
start = time.perf_counter()
result = train(model, TokenDataset.from_sequences(seqs), cfg, accelerator=accelerator)
losses = [h["loss"] for h in result.history]
print(json.dumps({"fsdp": is_fsdp(accelerator), "accelerate": launched, "steps": len(losses), "loss_first": losses[0],
                  "loss_last": losses[-1], "wall_s": time.perf_counter() - start,
                  "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None}))
"""


def emit(figure: str, **values) -> None:
    print(json.dumps({"figure": figure, **values}), flush=True)


def bench(figure: str, argv: list[str]) -> None:
    from lumina_tools import bench as bench_mod

    args = bench_mod.parse_args(argv)
    try:
        emit(figure, **bench_mod.BENCHES["sample"](args))
    except Exception as err:  # one failed figure must not hide the others
        emit(figure, error=f"{type(err).__name__}: {err}")


def train_figure(figure: str, fsdp: bool, config: str, seq_len: int, steps: int, timeout: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        worker = Path(tmp) / "worker.py"
        worker.write_text(FSDP_WORKER)
        if fsdp:
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                   "--config_file", str(REPO / "docs" / "accelerate_fsdp.yaml"), str(worker)]
        else:
            cmd = [sys.executable, str(worker)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd + [config, str(seq_len), str(steps)], capture_output=True, text=True,
                                  timeout=timeout, env=env, cwd=REPO)
        except subprocess.TimeoutExpired:
            emit(figure, error=f"timed out after {timeout} s")
            return
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            emit(figure, error=f"exit {proc.returncode}: {proc.stderr[-800:]}")
            return
        emit(figure, **json.loads(lines[-1]), total_s=time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script, not the GPU")
    p.add_argument("--baseline-steps", type=int, default=128, help="tokens the baseline is timed on")
    args = p.parse_args(argv)
    import torch

    if args.smoke:
        common = ["--config", "tiny", "--device", "cpu", "--dtype", "fp32", "--image", "64x64"]
        train_args = ("tiny", 32, 2, 300)
    else:
        if not torch.cuda.is_available():
            emit("setup", error="no CUDA device; run with --smoke to check the script on a CPU")
            return 2
        emit("setup", device=torch.cuda.get_device_name(0), torch=torch.__version__,
             capability=list(torch.cuda.get_device_capability(0)))
        common = ["--config", "7b", "--device", "cuda", "--dtype", "bf16", "--image", "768x768"]
        train_args = ("7b-slice", 1024, 6, 400)
    base = ["--cfg", "4", "--baseline-steps", str(args.baseline_steps)]
    bench("sample_plain", common + base)
    bench("sample_sjd", common + ["--cfg", "4", "--jacobi-window", "16", "--no-baseline"])
    bench("sample_int8", common + ["--cfg", "4", "--quant", "int8", "--no-baseline"])
    bench("sample_batch4", common + ["--cfg", "4", "--batch", "4", "--no-baseline"])
    train_figure("train_bf16", False, *train_args)
    if not args.smoke:  # FSDP needs CUDA (NCCL); on a CPU the launcher path is tested by the unit tests
        train_figure("train_fsdp", True, *train_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
