"""Two processes through ``accelerate launch --cpu`` (gloo): training keeps the ranks' weights identical."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

WORKER = r'''
import hashlib, json, sys
from pathlib import Path
import torch
from comfy_lumina_mgpt.config import ModelConfig
from comfy_lumina_mgpt.model.chameleon import LuminaMGPT
from comfy_lumina_mgpt.training.config import TrainConfig
from comfy_lumina_mgpt.training.data import TokenDataset
from comfy_lumina_mgpt.training.distributed import make_accelerator, rank_and_world
from comfy_lumina_mgpt.training.loop import train

out = Path(sys.argv[1])


def model():
    torch.manual_seed(0)
    m = LuminaMGPT(ModelConfig(vocab_size=64, dim=32, intermediate_size=64, n_layers=2, n_heads=4,
                               n_kv_heads=4, max_seq_len=64))
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.05)
    return m


ids = [[0, 10 + i % 3, 5, *[(30 + (1 + i % 3) * k) % 24 + 30 for k in range(12 + i % 4)], 6]
       for i in range(16)]
labels = [[-100, -100] + s[2:] for s in ids]
data = TokenDataset.from_sequences(ids, labels)


def digest(m):
    h = hashlib.sha256()
    for k, v in sorted(m.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


for mode in ("full", "lora"):
    lora = {"rank": 4, "alpha": 8, "dropout": 0.1} if mode == "lora" else None
    cfg = TrainConfig.from_dict(dict(lr=5e-3, max_steps=4, batch_size=2, grad_accum=2, dropout=0.1, lora=lora,
                                     gradient_checkpointing=False, cfg_drop_prob=0.0, save_every=2,
                                     output_dir=str(out / mode), seed=3))
    acc = make_accelerator(cfg)
    rank, world = rank_and_world(acc)
    first = train(model(), data, cfg, accelerator=acc)
    resumed = train(model(), data, cfg.with_(max_steps=6), accelerator=acc, resume_from="latest")
    (out / f"{mode}-rank{rank}.json").write_text(json.dumps({
        "world": world, "first": digest(first.model), "resumed": digest(resumed.model),
        "losses": [h["loss"] for h in first.history + resumed.history],
        "steps": [h["step"] for h in first.history + resumed.history],
        "checkpoint": str(resumed.last_checkpoint)}))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two accelerate processes, each importing torch: about 7 s
def test_two_processes_end_with_identical_weights(tmp_path):
    """DDP over gloo, full finetune and LoRA, each trained 4 steps then resumed to 6 from its checkpoint."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    # CPU processes even on a GPU machine (two ranks cannot share one GPU under NCCL).
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    # accelerate's --cpu flag starts several processes only through mpirun; --multi_gpu uses torchrun, and
    # make_accelerator selects the CPU (gloo) when there is no CUDA.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(_free_port()), str(script), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    for mode in ("full", "lora"):
        r0, r1 = (json.loads((tmp_path / f"{mode}-rank{r}.json").read_text()) for r in range(2))
        assert r0["world"] == r1["world"] == 2
        assert r0["first"] == r1["first"] and r0["resumed"] == r1["resumed"], mode
        assert r0["first"] != r0["resumed"]
        assert r0["losses"] == r1["losses"]  # logged losses are averaged over the ranks
        assert r0["steps"] == [1, 2, 3, 4, 5, 6]
        assert Path(r0["checkpoint"]).name == "step-00000006"
        state = json.loads((Path(r0["checkpoint"]) / "trainer_state.json").read_text())
        assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["lora"] == (mode == "lora")
