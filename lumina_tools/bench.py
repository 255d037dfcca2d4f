"""``python -m lumina_tools bench``: speed and memory on this machine, against upstream and the floor.

``--sample`` (default): text-to-image decoding of a random model of an official shape (``--config tiny``,
``7b-slice``: the 7B's width, heads, MLP and 65536 vocabulary with 2 layers, ``7b``, ``34b``) at ``--image``
pixels (16-px codes, the official VQGAN), guidance ``--cfg``, ``--dtype``, ``--batch``, ``--jacobi-window``.
In the same run it times
  (a) the upstream-style baseline on the same weights: transformers' Chameleon ``generate`` with the official
      processor order and unbatched guidance with its own cache (``bench_baseline``), and
  (b) the weight-read floor: the bytes one decode step must read (weights, the image-code head rows, the KV
      cache at the mean context) over the best read rate measured here (``torch.sum`` of a large buffer).
It prints prefill, decode ms/step, s/image, tokens/s, peak memory, ``speedup_vs_baseline`` (our tokens/s over
the baseline's) and ``time_over_floor`` (our step over the floor). ``matmul_ms_per_step`` is the time of the
step's weight products alone (the same layers, rows and head rows, run back to back), so
``time_over_matmuls`` separates the engine's own overhead from how fast this device's matmul kernels read
weights (on CPUs the kernels, not memory, are the limit at 2-4 rows). ``--max-steps N`` times the first N image
tokens only (the 7B-width baseline needs ~0.3 s a step on a CPU). ``--json`` prints one JSON object.

``--world``: the world benchmark on the bundled model, plain and with speculative Jacobi decoding on the same
prompts and seeds: each suite's score and model passes per prompt (``--world-top-k`` > 1 samples).

``--train``: optimizer steps of a small random model through the real trainer (tokens/s).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CONFIGS: dict[str, dict[str, Any]] = {
    # (dim, intermediate, layers, heads, kv heads, swin_norm, q/k-norm rows) of the official shapes
    "tiny": dict(dim=128, intermediate_size=352, n_layers=2, n_heads=2, n_kv_heads=2),
    "7b-slice": dict(dim=4096, intermediate_size=11008, n_layers=2, n_heads=32, n_kv_heads=32),
    "7b": dict(dim=4096, intermediate_size=11008, n_layers=32, n_heads=32, n_kv_heads=32),
    "34b": dict(dim=8192, intermediate_size=22016, n_layers=48, n_heads=64, n_kv_heads=8, swin_norm=True,
                qk_norm_rows=4),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PATCH = 16  # pixels per code of the official VQGAN


class _Stop(Exception):
    """Raised by the step callback to end a timed run after ``--max-steps`` tokens."""


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _official_vocab(folder: Path):
    from comfy_lumina_mgpt.tokenizer import TextTokenizer
    from lumina_world.tokenizer_builder import build_chameleon_tokenizer

    path = build_chameleon_tokenizer(folder / "tokenizer.json", num_codes=8192, max_grid=64,
                                     text_corpus=["a photo of a red fox in the snow"], text_vocab_size=64,
                                     official_layout=True)
    return TextTokenizer.from_file(path)


def _random_model(config: str, dtype: torch.dtype, device: torch.device):
    """A model of an official shape with random weights (small normal values, made layer by layer)."""
    from comfy_lumina_mgpt.config import ModelConfig
    from comfy_lumina_mgpt.model.chameleon import LuminaMGPT

    cfg = ModelConfig(vocab_size=65536, max_seq_len=8192, **CONFIGS[config])
    need = _param_count(cfg) * torch.finfo(dtype).bits // 8
    free = _free_memory(device)
    if need > 0.85 * free:
        raise RuntimeError(f"config {config} needs {need / 1e9:.1f} GB of weights in {dtype}; "
                           f"{device} has {free / 1e9:.1f} GB free (try --dtype bf16 or a smaller config)")
    with torch.device("meta"):
        model = LuminaMGPT(cfg)
    model = model.to_empty(device=device).to(dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.02, generator=gen)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)
    return model.eval()


def _param_count(cfg) -> int:
    kv = cfg.n_kv_heads * cfg.head_dim
    layer = cfg.dim * (2 * cfg.dim + 2 * kv) + 3 * cfg.dim * cfg.intermediate_size
    return cfg.n_layers * layer + 2 * cfg.vocab_size * cfg.dim


def _free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def read_rate(device: torch.device, mbytes: int = 512, repeats: int = 7) -> float:
    """Best bytes/s of streaming a ``mbytes`` MB fp32 buffer (``sum``, the best-vectorised read torch has):
    the rate at which this machine can read weights, whatever their dtype."""
    buf = torch.ones(mbytes * 2**20 // 4, dtype=torch.float32, device=device)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        buf.sum()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return buf.numel() * buf.element_size() / best


def step_bytes(model, rows: int, mean_context: float, head_rows: int) -> float:
    """Bytes one decode step must read: every decoder weight (quantized ones with their scales), ``head_rows``
    rows of the LM head, and the KV cache of ``rows`` sequences at ``mean_context`` tokens."""
    cfg = model.config
    weights = [t for name, t in [*model.model.layers.named_parameters(), *model.model.layers.named_buffers(),
                                 *model.model.norm.named_parameters()] if "kv_cache" not in name]
    layers = sum(t.numel() * t.element_size() for t in weights)
    head = model.lm_head.weight
    head_bytes = head_rows * head[0].numel() * head.element_size()
    act = model.model.embed_tokens.weight.element_size()  # the KV cache keeps the activations' dtype
    kv = rows * cfg.n_layers * 2 * cfg.n_kv_heads * cfg.head_dim * mean_context * act
    return layers + head_bytes + kv


def matmul_time(model, rows: int, head_rows: int, device: torch.device, repeats: int = 3) -> float:
    """Best seconds for the weight products of one decode step alone: every linear layer of the decoder on a
    ``[rows, in]`` input, in layer order (so caches help no more than in a real step), then ``head_rows`` rows of
    the LM head."""
    import torch.nn.functional as F

    layers = [m for m in model.model.layers.modules() if type(m).__name__.endswith("Linear")]
    head = model.lm_head
    head = head.narrow_rows(0, head_rows) if hasattr(head, "narrow_rows") else None
    head_weight = model.lm_head.weight[:head_rows]
    act = model.model.embed_tokens.weight.dtype
    inputs = {m.in_features: torch.randn(rows, m.in_features, dtype=act, device=device) for m in layers}
    x_head = torch.randn(rows, model.config.dim, dtype=act, device=device)

    def one_step() -> None:
        for m in layers:
            m(inputs[m.in_features])
        head(x_head) if head is not None else F.linear(x_head, head_weight)

    best = float("inf")
    with torch.no_grad():
        one_step()
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            one_step()
            _sync(device)
            best = min(best, time.perf_counter() - start)
    return best


def _peak_memory(device: torch.device) -> float:
    """Peak bytes: allocated on a GPU, the process's resident set on a CPU."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def _time_ours(model, tok, prompt: list[int], grid: tuple[int, int], args, device) -> dict[str, Any]:
    """Prefill and per-step decode times of our sampler over ``--max-steps`` tokens (or the whole image)."""
    from comfy_lumina_mgpt.answers import sample_answers
    from comfy_lumina_mgpt.sampling.settings import SamplerConfig

    settings = SamplerConfig(cfg_scale=args.cfg, image_top_k=2000, force_size=grid, force_images=1,
                             max_new_tokens=8192, jacobi_window=args.jacobi_window, compiled=args.compile)


    def stop_early(step: int, total: int, tokens) -> None:
        if step >= 3 + 8:
            raise _Stop

    try:  # warm-up on the same shapes (a compiled step compiles here, outside the timing)
        sample_answers(model, tok, [prompt] * args.batch, settings,
                       generator=torch.Generator(device).manual_seed(1), on_step=stop_early)
    except _Stop:
        pass
    marks: list[tuple[int, float]] = []

    def on_step(step: int, total: int, tokens) -> None:
        _sync(device)
        marks.append((step, time.perf_counter()))
        if args.max_steps and step >= args.max_steps + 3:  # three prompt-side tokens, then N image tokens
            raise _Stop

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    forwards = None
    try:
        result = sample_answers(model, tok, [prompt] * args.batch, settings,
                                generator=torch.Generator(device).manual_seed(0), on_step=on_step)
        forwards = result.forwards
    except _Stop:
        pass
    steps = marks[-1][0]
    first = marks[0][1] - start  # prefill + the first (forced) token
    decode_s = marks[-1][1] - marks[0][1]
    return {"prefill_s": first, "steps": steps, "decode_ms_per_step": 1000 * decode_s / (steps - 1),
            "forwards": forwards, "peak_memory_gb": _peak_memory(device) / 1e9}


def _time_baseline(model, tok, prompt: list[int], grid: tuple[int, int], steps: int, args, device
                   ) -> dict[str, Any]:
    """The upstream-style pipeline over the same image tokens, batch 1 (upstream samples one image)."""
    from .bench_baseline import baseline_generate, hf_chameleon

    hf = hf_chameleon(model)
    v = tok.vocab
    start_ids = prompt + [v.boi_id, v.size_token(grid[0]), v.size_token(grid[1])]
    baseline_generate(hf, v, start_ids, 2, args.cfg)  # warm-up
    marks: list[float] = []

    def on_token() -> None:
        _sync(device)
        marks.append(time.perf_counter())

    # One run, stamped at every token: the steps are differences of one monotonic clock, so a loaded machine
    # makes them slower but never negative (two separate runs of 1 and N tokens did, on a busy CPU).
    _sync(device)
    start = time.perf_counter()
    baseline_generate(hf, v, start_ids, steps, args.cfg, on_token=on_token)
    return {"prefill_s": marks[0] - start, "decode_ms_per_step": 1000 * (marks[-1] - marks[0]) / (steps - 1)}


def bench_sample(args: argparse.Namespace) -> dict[str, Any]:
    """Our sampler, the upstream-style baseline and the floor on one random model of ``--config``."""
    from comfy_lumina_mgpt import unirep

    device = _device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype != "auto" else (torch.bfloat16 if device.type == "cuda"
                                                               else torch.float32)
    width, height = (int(v) for v in args.image.lower().split("x"))
    grid = (height // (2 * PATCH), width // (2 * PATCH))
    tokens_per_image = unirep.block_length(2 * grid[0], 2 * grid[1])
    with tempfile.TemporaryDirectory() as tmp:
        tok = _official_vocab(Path(tmp))
    model = _random_model(args.config, dtype, device)
    if args.quant != "none":
        from comfy_lumina_mgpt.model.quant import quantize_model_

        quantize_model_(model, args.quant)
    prompt = [tok.vocab.bos_id] + tok.encode(f"Generate an image of {width}x{height} according to the "
                                             "following prompt:\na photo of a red fox in the snow") + [tok.vocab.sep_id]
    ours = _time_ours(model, tok, prompt, grid, args, device)
    guided = args.cfg != 1.0
    rows = args.batch * (2 if guided else 1)
    mean_context = (len(prompt) + 3 + ours["steps"] / 2 + (3 + ours["steps"] / 2 if guided else 0)) / (
        2 if guided else 1)
    floor_s = step_bytes(model, rows, mean_context, len(tok.vocab.code_to_id)) / read_rate(device)
    matmul_s = matmul_time(model, rows, len(tok.vocab.code_to_id), device)
    ms = ours["decode_ms_per_step"]
    out: dict[str, Any] = {
        "name": "sample", "config": args.config, "device": str(device), "dtype": args.dtype if args.dtype != "auto"
        else str(dtype).removeprefix("torch."), "quant": args.quant, "image": f"{width}x{height}",
        "tokens_per_image": tokens_per_image, "cfg": args.cfg, "batch": args.batch,
        "jacobi_window": args.jacobi_window, "compiled": args.compile, "threads": torch.get_num_threads(),
        "timed_steps": ours["steps"],
        "prefill_s": ours["prefill_s"], "decode_ms_per_step": ms,
        "s_per_image": (ours["prefill_s"] + ms * tokens_per_image / 1000) / args.batch,
        "tokens_per_s": 1000 * args.batch / ms, "peak_memory_gb": ours["peak_memory_gb"],
        "floor_ms_per_step": 1000 * floor_s, "time_over_floor": ms / (1000 * floor_s),
        "matmul_ms_per_step": 1000 * matmul_s, "time_over_matmuls": ms / (1000 * matmul_s),
    }
    if ours["forwards"] is not None:
        out["tokens_per_forward"] = ours["steps"] / max(1, ours["forwards"])
    if not args.no_baseline:
        try:
            steps = max(2, min(ours["steps"], args.baseline_steps or args.max_steps or 10**9))  # a step is a difference
            base = _time_baseline(model, tok, prompt, grid, steps, args, device)
        except ImportError:
            out["baseline"] = "skipped: transformers is not installed (pip install -r requirements-dev.txt)"
        else:
            out["baseline_prefill_s"] = base["prefill_s"]
            out["baseline_decode_ms_per_step"] = base["decode_ms_per_step"]
            out["baseline_tokens_per_s"] = 1000 / base["decode_ms_per_step"]
            out["speedup_vs_baseline"] = out["tokens_per_s"] / out["baseline_tokens_per_s"]
    return out


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    """Training tokens/s of a ``dim``-wide, ``layers``-deep model over ``steps`` steps (after 2 warm-up)."""
    from comfy_lumina_mgpt.config import ModelConfig
    from comfy_lumina_mgpt.model.chameleon import LuminaMGPT
    from comfy_lumina_mgpt.training.config import TrainConfig
    from comfy_lumina_mgpt.training.data import TokenDataset
    from comfy_lumina_mgpt.training.loop import train

    device = _device(args.device)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=args.vocab, dim=args.dim, intermediate_size=int(args.dim * 8 / 3) // 8 * 8,
                      n_layers=args.layers, n_heads=max(1, args.dim // 64), n_kv_heads=max(1, args.dim // 64),
                      max_seq_len=args.seq_len)
    model = LuminaMGPT(cfg).to(device)
    rng = random.Random(0)  # noqa: S311  seeded, not a secret
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


def bench_world(args: argparse.Namespace) -> dict[str, Any]:
    """The world benchmark on the bundled model twice, plain and with SJD (``--jacobi-window``, default 16),
    on the same prompts and seeds: scores and model passes per prompt of each suite."""
    from lumina_world.benchmark import DEFAULT_MODEL, SUITES, EvalSettings, evaluate_world

    window = args.jacobi_window or 16
    runs = {}
    for name, w in (("plain", 0), ("sjd", window)):
        settings = EvalSettings(image_top_k=args.world_top_k, cfg_scale=args.cfg if args.cfg_set else 1.0,
                                jacobi_window=w)
        runs[name] = evaluate_world(DEFAULT_MODEL, n=args.world_n, n_omni=args.world_n_omni, seed=args.world_seed,
                                    suites=SUITES, settings=settings)
    suites = {}
    for suite in SUITES:
        plain, sjd = runs["plain"][suite], runs["sjd"][suite]
        suites[suite] = {"plain": plain["overall"], "sjd": sjd["overall"],
                         "plain_forwards": plain["forwards_per_prompt"], "sjd_forwards": sjd["forwards_per_prompt"],
                         "fewer_forwards": plain["forwards_per_prompt"] / max(sjd["forwards_per_prompt"], 1e-9),
                         "seconds": (plain["seconds"], sjd["seconds"])}
    return {"name": "world", "jacobi_window": window, "image_top_k": args.world_top_k, "seed": args.world_seed,
            "suites": suites}


def format_world(res: dict[str, Any]) -> str:
    lines = [f"world: bundled model, plain vs SJD (window {res['jacobi_window']}), image top-k "
             f"{res['image_top_k']}, seed {res['seed']}; passes per prompt (batched)",
             f"  {'suite':20}{'plain':>8}{'sjd':>8}{'passes':>9}{'sjd':>8}{'fewer':>8}"]
    for suite, r in res["suites"].items():
        lines.append(f"  {suite:20}{r['plain']:8.3f}{r['sjd']:8.3f}{r['plain_forwards']:9.2f}"
                     f"{r['sjd_forwards']:8.2f}{r['fewer_forwards']:7.2f}x")
    return "\n".join(lines)


BENCHES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "sample": bench_sample,
    "train": bench_train,
    "world": bench_world,
}


def format_sample(res: dict[str, Any]) -> str:
    """The sampling figures as a small table."""
    lines = [f"sample: {res['config']} {res['dtype']} quant={res['quant']} {res['image']} "
             f"({res['tokens_per_image']} tokens) cfg={res['cfg']} batch={res['batch']} "
             f"jacobi_window={res['jacobi_window']} on {res['device']}, {res['threads']} threads, "
             f"{res['timed_steps']} steps timed",
             f"  {'':22}{'ours':>12}{'baseline':>12}{'floor':>12}",
             f"  {'prefill s':22}{res['prefill_s']:12.3f}{res.get('baseline_prefill_s', float('nan')):12.3f}",
             f"  {'decode ms/step':22}{res['decode_ms_per_step']:12.2f}"
             f"{res.get('baseline_decode_ms_per_step', float('nan')):12.2f}{res['floor_ms_per_step']:12.2f}",
             f"  {'tokens/s':22}{res['tokens_per_s']:12.1f}{res.get('baseline_tokens_per_s', float('nan')):12.1f}",
             f"  {'matmuls ms/step':22}{res['matmul_ms_per_step']:12.2f}",
             f"  {'s/image':22}{res['s_per_image']:12.2f}",
             f"  {'peak memory GB':22}{res['peak_memory_gb']:12.2f}"]
    if "tokens_per_forward" in res:
        lines.append(f"  {'tokens/forward':22}{res['tokens_per_forward']:12.2f}")
    lines.append(f"  speedup_vs_baseline {res.get('speedup_vs_baseline', float('nan')):.2f}x   "
                 f"time_over_floor {res['time_over_floor']:.2f}x   "
                 f"time_over_matmuls {res['time_over_matmuls']:.2f}x" + (f"   ({res['baseline']})"
                                                                       if "baseline" in res else ""))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lumina_tools bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="store_true", help="training throughput")
    parser.add_argument("--sample", action="store_true", help="sampling speed against baseline and floor")
    parser.add_argument("--world", action="store_true",
                        help="the world benchmark on the bundled model, plain vs SJD (scores and passes)")
    parser.add_argument("--world-top-k", type=int, default=1, help="world: image top-k (1 = greedy)")
    parser.add_argument("--world-seed", type=int, default=0, help="world: prompt set and sampling seed")
    parser.add_argument("--world-n", type=int, default=100, help="world: text-to-image prompts")
    parser.add_argument("--world-n-omni", type=int, default=40, help="world: scenes per Omni task")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny", help="sample: model shape")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                        help="sample: weights (auto: bf16 on a GPU, fp32 on a CPU)")
    parser.add_argument("--quant", choices=["none", "int8", "fp8"], default="none",
                        help="sample: weight-only quantization")
    parser.add_argument("--image", default="512x512", help="sample: WxH pixels (32-px steps; 512x512 = 1060 tokens)")
    parser.add_argument("--cfg", type=float, default=None, help="guidance scale (1 = off; sample: 4, world: 1)")
    parser.add_argument("--jacobi-window", type=int, default=0, help="sample: speculative Jacobi decoding")
    parser.add_argument("--max-steps", type=int, default=0, help="sample: time only the first N image tokens")
    parser.add_argument("--compile", action="store_true",
                        help="sample: torch.compile the decode step (compile time is not timed)")
    parser.add_argument("--no-baseline", action="store_true", help="sample: skip the transformers baseline")
    parser.add_argument("--baseline-steps", type=int, default=0,
                        help="sample: time the baseline on its first N image tokens only (default: as ours)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per benchmark")
    parser.add_argument("--steps", type=int, default=5, help="train: optimizer steps")
    parser.add_argument("--dim", type=int, default=128, help="train: model width")
    parser.add_argument("--layers", type=int, default=2, help="train: layers")
    parser.add_argument("--batch", type=int, default=1, help="images (sample) or sequences (train) per step")
    parser.add_argument("--seq-len", type=int, default=256, help="train: sequence length")
    parser.add_argument("--vocab", type=int, default=2048, help="train: vocabulary size")
    parser.add_argument("--full", action="store_true", help="train: every weight (default: LoRA rank 16)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (0 = torch's default; 1 is fastest on a busy machine)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed options; ``cfg_set`` records whether ``--cfg`` was given (sample defaults to 4, world to 1)."""
    args = build_parser().parse_args(argv)
    args.cfg_set = args.cfg is not None
    args.cfg = 4.0 if args.cfg is None else args.cfg
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    selected = [name for name in BENCHES if getattr(args, name)] or ["sample"]
    status = 0
    for name in selected:
        try:
            res = BENCHES[name](args)
        except (RuntimeError, NotImplementedError, ValueError) as err:
            print(f"{name}: {err}", file=sys.stderr)
            status = 2
            continue
        if args.json:
            print(json.dumps(res))
        elif name == "sample":
            print(format_sample(res))
        elif name == "world":
            print(format_world(res))
        else:
            print(f"{name}: {res['tokens_per_s']:.0f} tokens/s on {res['device']} ({res['setup']}; "
                  f"{res['steps']} steps, {res['wall_s']:.1f} s)")
    return status
