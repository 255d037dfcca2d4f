"""Measure weight-only quantization at the 7B width on this machine (numbers quoted in model/quant.py).

    .venv/bin/python scripts/quant_bench.py layers   # ms per 7B layer set: bf16 nn.Linear vs Int8Linear vs Fp8Linear
    .venv/bin/python scripts/quant_bench.py rows     # Int8Linear CPU kernels by input rows (CPU_PACK_MAX_ROWS)
    .venv/bin/python scripts/quant_bench.py step     # one decode step of a 2-layer 7B-width slice, vocab 65536
    .venv/bin/python scripts/quant_bench.py memory   # a 2-layer 7B-width slice, vocab 65536: bytes and load peak

Everything runs with 1 thread (the honest default on these shared 2-core machines) and reports the best and the
median of several repeats, so a neighbour's load shows as a gap between the two.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # a script, not library code: run from a checkout without installing

from comfy_lumina_mgpt.config import ModelConfig  # noqa: E402
from comfy_lumina_mgpt.model import quant  # noqa: E402

DIM, FFN = 4096, 11008
LAYER_SHAPES = [(DIM, DIM)] * 4 + [(FFN, DIM)] * 2 + [(DIM, FFN)]  # q k v o, gate up, down: [out, in]


def timed(fn, repeats: int) -> tuple[float, float]:
    """(best, median) milliseconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times), statistics.median(times)


def layer_set(kind: str) -> list[nn.Module]:
    torch.manual_seed(0)
    mods = []
    for out_f, in_f in LAYER_SHAPES:
        lin = nn.Linear(in_f, out_f, bias=False, dtype=torch.bfloat16)
        nn.init.normal_(lin.weight, std=0.02)
        mods.append(lin if kind == "bf16" else quant.QUANT_LINEARS[kind].from_float(lin.weight))
    return mods


@torch.no_grad()
def bench_layers(rows: int, repeats: int) -> list[dict]:
    xs = {n: torch.randn(rows, n, dtype=torch.bfloat16) for n in (DIM, FFN)}
    results = []
    for kind in ("bf16", "int8", "fp8"):
        mods = layer_set(kind)
        nbytes = sum(sum(t.numel() * t.element_size() for t in m.state_dict().values()) for m in mods)
        best, median = timed(lambda: [m(xs[m.in_features]) for m in mods], repeats)
        results.append({"kind": kind, "rows": rows, "best_ms": round(best, 2), "median_ms": round(median, 2),
                        "weight_MB": round(nbytes / 1e6, 1), "GB_per_s": round(nbytes / best / 1e6, 1)})
        mods = None  # free the layer set before the next kind
    base = results[0]["best_ms"]
    for r in results:
        r["speedup_vs_bf16"] = round(base / r["best_ms"], 2)
    return results


@torch.no_grad()
def bench_rows(repeats: int) -> list[dict]:
    torch.manual_seed(0)
    lin = nn.Linear(DIM, FFN, bias=False, dtype=torch.bfloat16)
    nn.init.normal_(lin.weight, std=0.02)
    q = quant.Int8Linear.from_float(lin.weight)
    out = []
    for rows in (1, 2, 4, 8, 12, 16, 24, 32, 64):
        x = torch.randn(rows, DIM, dtype=torch.bfloat16)
        pack = timed(lambda: torch._weight_int8pack_mm(x, q.weight, q.scales), repeats)[0]
        chunked = timed(lambda: quant._dequant_linear_chunked(x, q.weight, q.scales), repeats)[0]
        bf16 = timed(lambda: lin(x), repeats)[0]
        out.append({"rows": rows, "pack_ms": round(pack, 2), "chunked_ms": round(chunked, 2),
                    "bf16_linear_ms": round(bf16, 2)})
    return out


def slice_config() -> ModelConfig:
    return ModelConfig(vocab_size=65536, dim=DIM, intermediate_size=FFN, n_layers=2, n_heads=32, n_kv_heads=32)


def random_slice() -> nn.Module:
    from comfy_lumina_mgpt.model.chameleon import LuminaMGPT

    torch.manual_seed(0)
    model = LuminaMGPT(slice_config()).to(torch.bfloat16).eval()
    for p in model.parameters():
        if p.ndim > 1:
            nn.init.normal_(p, std=0.02)
    return model


@torch.no_grad()
def bench_step(position: int, repeats: int) -> list[dict]:
    """One cached decode step of the 2-layer 7B-width slice (2 rows, the guidance pair) at ``position``,
    full 65536-row head, bf16 vs int8 vs fp8 weights; plus the LM head alone, full and cut to 8192 rows."""
    results = []
    for mode in ("none", "int8", "fp8"):
        model = quant.quantize_model_(random_slice(), mode)
        model.setup_caches(2, position + 2)
        tokens = torch.tensor([[5], [6]])
        pos = torch.full((2, 1), position)
        step = timed(lambda: model.step(tokens, pos), repeats)
        h = torch.randn(2, DIM, dtype=torch.bfloat16)
        head = model.lm_head
        image_head = head.narrow_rows(4, 8196) if mode != "none" else nn.Linear(DIM, 8192, bias=False)
        if mode == "none":
            image_head.weight = nn.Parameter(head.weight[4:8196], requires_grad=False)
        full = timed(lambda: head(h), repeats)[0]
        cut = timed(lambda: image_head(h), repeats)[0]
        results.append({"quant": mode, "position": position, "step_best_ms": round(step[0], 1),
                        "step_median_ms": round(step[1], 1), "head_65536_ms": round(full, 2),
                        "head_8192_ms": round(cut, 2)})
        model = None  # free it before the next kind
    base = results[0]["step_best_ms"]
    for r in results:
        r["step_speedup_vs_bf16"] = round(base / r["step_best_ms"], 2)
    return results


def _load_peak(folder: str, mode: str) -> None:
    """Child process: load the slice with ``quant=mode`` and print its tensor bytes and peak RSS."""
    from comfy_lumina_mgpt.model.loading import load_model

    before = _status_mb("RssAnon")
    peak = [before]
    done = threading.Event()

    def sample() -> None:  # anonymous memory has no high-water mark in /proc: poll it
        while not done.wait(0.05):
            peak[0] = max(peak[0], _status_mb("RssAnon"))

    sampler = threading.Thread(target=sample)
    sampler.start()
    model = load_model(folder, dtype="bf16", quant=mode)
    done.set()
    sampler.join()
    load_peak = max(peak[0], _status_mb("RssAnon"))
    # Touch every byte (a byte-view max allocates nothing), so weights still mapped from the file count as
    # resident, as they will once the model runs.
    tensors = list(model.state_dict().values())
    for t in tensors:
        t.reshape(-1).view(torch.uint8).max()
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    print(json.dumps({"quant": mode, "tensor_MB": round(nbytes / 1e6, 1), "anon_MB_before_load": before,
                      "peak_anon_MB_during_load": load_peak,
                      "rss_MB_after_touching_all_weights": _status_mb("VmRSS")}))


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status in MB (VmHWM, unlike ru_maxrss, is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def bench_memory() -> list[dict]:
    from comfy_lumina_mgpt.model.loading import save_model

    with tempfile.TemporaryDirectory() as tmp:
        model = random_slice()
        save_model(model, Path(tmp) / "slice", max_shard_bytes=1 << 30)
        model = None  # free it before the next kind
        results = []
        for mode in ("none", "int8", "fp8"):
            proc = subprocess.run([sys.executable, __file__, "_load", str(Path(tmp) / "slice"), mode],
                                  capture_output=True, text=True, check=True)
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        return results


def main(argv: list[str]) -> int:
    if argv[:1] == ["_load"]:
        torch.set_num_threads(1)
        _load_peak(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["layers", "rows", "step", "memory"])
    parser.add_argument("--rows", type=int, default=2, help="input rows for 'layers' (2 = one guidance pair)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--position", type=int, default=1000, help="KV position of the timed step for 'step'")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.what == "layers":
        results = bench_layers(args.rows, args.repeats)
    elif args.what == "rows":
        results = bench_rows(args.repeats)
    elif args.what == "step":
        results = bench_step(args.position, args.repeats)
    else:
        results = bench_memory()
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
