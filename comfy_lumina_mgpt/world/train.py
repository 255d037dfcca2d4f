"""Train the pack's bundled small model on the synthetic world, from nothing, on a CPU.

    python -m comfy_lumina_mgpt world train [--out models/lumina_mgpt/lumina-mgpt-world] [--work runs/world]

Three stages, each resumable from ``--work`` (a finished stage is reused, so a second run continues):

1. **VQGAN** (the Chameleon classes, small config: 8x downsampling, ``ch`` 32, a low-dimensional codebook)
   trained on world renders of every task target (pictures, segmentation / depth / normal / pose maps,
   detection boxes, multiview frames) with L1 + MSE reconstruction and a *supervised codebook*: the world is drawn on the 8-px grid, so its images are made of a few hundred
   distinct patches, each given its own code (``patch_alphabet``); the encoder learns to hit that code,
   the decoder to draw it. The language model writes answer images in those codes (``snap_codes``); input
   images keep whatever the encoder gives, as at inference.
2. **Tokenizer**: ``vocab_builder.build_chameleon_tokenizer`` with one ``IMGIMG…`` token per VQGAN code, the
   official special-token names (size-token unit = 2 x 8 px = 16 px, so 80 px = 5 size steps), and a small
   byte-level BPE trained on every world prompt, caption and answer.
3. **Lumina-mGPT** (the same ``LuminaMGPT`` class, a few layers) trained from scratch by the pack's trainer
   (``training.train``, full finetune, condition dropout for guidance) on world conversations in the official
   format (``dataset.scene_examples``: the records ``write_world_dataset`` writes): mostly text-to-image,
   plus every Omni task.

The result is one folder in the published layout: ``config.json``, ``model.safetensors``,
``tokenizer.json``, ``vqgan.yaml``, ``vqgan.safetensors``. Everything is a function of ``seed`` (torch runs
single-threaded for it; thread count changes float summation order).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..config import ModelConfig
from ..model.chameleon import LuminaMGPT
from ..model.loading import load_model, save_model
from ..pipeline import TokenizerBundle
from ..preprocess import pil_to_tensor
from ..tasks import TASKS
from ..tokenizer import TextTokenizer
from ..vocab_builder import build_chameleon_tokenizer
from ..vqgan import VQGAN, VQGANConfig, find_vqgan_files, load_vqgan, save_vqgan
from .analyser import score_text_to_image
from .dataset import WORLD_TASKS, _rng, scene_examples
from .render import CONDITION_KINDS, render_condition, render_detection, render_image, render_multiview
from .scene import COLOURS, POSITIONS, SHAPES, SIZES, WORLD_SIZES, caption, sample_scene, vqa_pairs

logger = logging.getLogger(__name__)

DEFAULT_OUT = "models/lumina_mgpt/lumina-mgpt-world"
DEFAULT_WORK = "runs/world"
#: Largest size-token value: 80 px / 16 px per size step.
MAX_GRID = 5
#: Relative share of each task in the language-model data (text-to-image dominates).
TASK_WEIGHTS: dict[str, float] = {
    "text_to_image": 10.0, "segmentation": 0.6, "depth": 0.6, "normals": 0.5, "pose": 0.3, "detection": 0.6,
    "editing": 0.8, "condition_to_image": 0.6, "multiview": 0.4, "caption": 0.6, "vqa": 1.0,
}
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class WorldTrainConfig:
    """Every setting of ``world train`` (the defaults make the bundled model, ~45 min on 2 CPU cores).

    VQGAN: ``vq_codes`` codebook entries of ``vq_embed_dim`` dims, ``vq_ch`` base channels, ``vq_steps``
    Adam steps of ``vq_batch`` whole images at peak ``vq_lr`` (cosine), from ``vq_pool`` rendered images,
    then ``vq_decoder_steps`` decoder-only steps (see ``train_vqgan``, ``refine_decoder``).
    LM: ``lm_dim`` hidden size, ``lm_layers`` layers, ``lm_heads`` heads, ``lm_steps`` steps of ``lm_batch``
    sequences at ``lm_lr``, then ``lm_extra_steps`` more in a second cycle peaking at ``lm_extra_lr`` (0 = no
    second cycle); data from ``t2i_scenes`` text-to-image scenes and ``omni_scenes`` scenes whose
    Omni-task examples are drawn with ``TASK_WEIGHTS``. ``text_vocab`` BPE text tokens.
    ``recon_eval`` held-out pictures measure the VQGAN's reconstructions with the analyser.
    ``max_minutes_vq`` / ``max_minutes_lm`` (0 = none) stop a stage early (saving what it has).
    """

    out: str = DEFAULT_OUT
    work_dir: str = DEFAULT_WORK
    seed: int = 0
    vq_codes: int = 512
    vq_embed_dim: int = 16
    vq_ch: int = 32
    vq_steps: int = 1500
    vq_batch: int = 8
    vq_decoder_steps: int = 4000
    vq_lr: float = 2e-3
    vq_pool: int = 3000
    lm_dim: int = 192
    lm_layers: int = 4
    lm_heads: int = 6
    lm_steps: int = 4000
    lm_batch: int = 16
    lm_lr: float = 2e-3
    lm_extra_steps: int = 4000
    lm_extra_lr: float = 1e-3
    t2i_scenes: int = 16000
    omni_scenes: int = 3000
    text_vocab: int = 500
    cfg_drop_prob: float = 0.1
    recon_eval: int = 64
    max_minutes_vq: float = 0.0
    max_minutes_lm: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vq_codes", "vq_embed_dim", "vq_steps", "vq_batch", "vq_pool", "lm_dim", "lm_layers",
                     "lm_heads", "lm_steps", "lm_batch", "t2i_scenes", "text_vocab"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lm_extra_steps < 0 or self.vq_decoder_steps < 0:
            raise ValueError("lm_extra_steps and vq_decoder_steps must be >= 0")
        if self.vq_ch % 32:
            raise ValueError(f"vq_ch must be a multiple of 32 (GroupNorm groups), got {self.vq_ch}")
        if self.lm_dim % self.lm_heads:
            raise ValueError(f"lm_dim {self.lm_dim} must be divisible by lm_heads {self.lm_heads}")


# --- VQGAN ------------------------------------------------------------------------------------------------
def world_vqgan_config(cfg: WorldTrainConfig) -> VQGANConfig:
    """Chameleon's VQGAN layout at world scale: 8x downsampling (4 levels), one res block per level."""
    return VQGANConfig(embed_dim=cfg.vq_embed_dim, n_embed=cfg.vq_codes, z_channels=cfg.vq_ch, resolution=80,
                       ch=cfg.vq_ch, ch_mult=(1, 1, 2, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0)


def vq_training_images(n: int, seed: int) -> dict[tuple[int, int], list[Image.Image]]:
    """``n`` world renders grouped by size (W, H): pictures (about half) and every task target."""
    rng = random.Random(f"lumina-world-vq:{seed}")
    out: dict[tuple[int, int], list[Image.Image]] = defaultdict(list)
    i = 0
    while sum(len(v) for v in out.values()) < n:
        scene = sample_scene(random.Random(f"lumina-world-vq:{seed}:{i}"))
        i += 1
        imgs = [render_image(scene)]
        kind = rng.random()
        if kind < 0.45:
            imgs.append(render_condition(scene, rng.choice(CONDITION_KINDS)))
        elif kind < 0.6:
            imgs.append(render_detection(scene, rng.choice(scene.objects)))
        elif kind < 0.75:
            size = rng.choice([s for s in WORLD_SIZES if min(s) >= 48])
            try:
                imgs.append(rng.choice(render_multiview(rng.choice(scene.objects), 4, size)))
            except ValueError:
                pass
        for im in imgs:
            out[im.size].append(im)
    return dict(out)


def _to_batch(images: Sequence[Image.Image]) -> Tensor:
    return torch.cat([pil_to_tensor(im) for im in images])


def patch_keys(image: Image.Image, d: int) -> np.ndarray:
    """``[h, w]`` object array: the raw bytes of each ``d x d`` RGB patch (equal bytes = equal patch)."""
    arr = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    h, w = arr.shape[0] // d, arr.shape[1] // d
    blocks = arr[: h * d, : w * d].reshape(h, d, w, d, 3).transpose(0, 2, 1, 3, 4)
    out = np.empty((h, w), dtype=object)
    for i in range(h):
        for j in range(w):
            out[i, j] = blocks[i, j].tobytes()
    return out


def patch_alphabet(images: Sequence[Image.Image], d: int, size: int, min_count: int = 2) -> dict[bytes, int]:
    """The world's patch alphabet: the ``size`` most frequent ``d x d`` patches of ``images`` (seen at least
    ``min_count`` times) -> code ids ``0..``, most frequent first (ties broken by the pixels, so the result
    depends only on the images)."""
    counts: dict[bytes, int] = defaultdict(int)
    for im in images:
        for key in patch_keys(im, d).ravel().tolist():
            counts[key] += 1
    ranked = sorted((k for k, c in counts.items() if c >= min_count), key=lambda k: (-counts[k], k))
    return {key: code for code, key in enumerate(ranked[:size])}


def patch_labels(image: Image.Image, alphabet: dict[bytes, int], d: int) -> Tensor:
    """``[h, w]`` int64: each patch's code in ``alphabet``, -1 for a patch outside it."""
    keys = patch_keys(image, d)
    return torch.tensor([[alphabet.get(k, -1) for k in row] for row in keys.tolist()], dtype=torch.long)


def snap_codes(image: Image.Image, codes: Tensor, alphabet: dict[bytes, int], d: int) -> Tensor:
    """``codes [h, w]`` with every patch found in ``alphabet`` set to its code (others keep theirs)."""
    labels = patch_labels(image, alphabet, d)
    return torch.where(labels >= 0, labels, codes)


def world_alphabet(cfg: WorldTrainConfig) -> dict[bytes, int]:
    """``patch_alphabet`` of the VQGAN training pool (deterministic in ``cfg.seed``)."""
    pool = vq_training_images(cfg.vq_pool, cfg.seed)
    return patch_alphabet([im for ims in pool.values() for im in ims], 8, cfg.vq_codes)


def train_vqgan(cfg: WorldTrainConfig, *, log: LogFn = logger.info, folder: Path | None = None
                ) -> tuple[VQGAN, dict[bytes, int]]:
    """Train the world VQGAN with a *supervised codebook*; returns ``(vqgan, alphabet)``.

    The world is drawn on the 8-px grid, so its pictures and maps are made of a small set of distinct
    patches (``patch_alphabet``: a few hundred, >99.9 % of all patches). Each gets its own code, and one
    joint phase of ``vq_steps`` Adam steps on ``vq_batch`` whole images of one size trains:

    * the encoder to put each patch nearest its code: cross-entropy over negative squared distances to the
      codebook, plus the usual commitment term towards the code's embedding;
    * the codebook towards the encoder outputs of its patch (the usual codebook term, with known assignment);
    * the decoder to draw the image from its patches' codes (L1 + MSE). Patches outside the alphabet use the
      encoder's nearest code, as in plain VQ training.

    Encoding a world picture then gives exactly its patches' codes, the same codes the language model writes
    (``snap_codes``), and the decoder draws them back exactly.
    """
    pool = vq_training_images(cfg.vq_pool, cfg.seed)
    alphabet = patch_alphabet([im for ims in pool.values() for im in ims], 8, cfg.vq_codes)
    tensors = {size: _to_batch(ims) for size, ims in pool.items()}
    labels = {size: torch.stack([patch_labels(im, alphabet, 8) for im in ims]) for size, ims in pool.items()}
    log(f"vqgan: {len(alphabet)} patch codes for {sum(map(len, pool.values()))} training images")
    torch.manual_seed(cfg.seed)
    vq = VQGAN(world_vqgan_config(cfg))
    with torch.no_grad():  # well-separated starting codes; they move with their patches
        vq.quantize.embedding.weight.normal_(0.0, 1.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(f"lumina-world-vq-batches:{cfg.seed}")
    sizes = sorted(tensors)
    weights = [len(tensors[s]) for s in sizes]
    vq.train().requires_grad_(True)
    opt = torch.optim.Adam(vq.parameters(), lr=cfg.vq_lr, betas=(0.9, 0.99))
    deadline = time.perf_counter() + 60 * cfg.max_minutes_vq if cfg.max_minutes_vq > 0 else math.inf
    start, steps, warm = time.perf_counter(), cfg.vq_steps, max(1, min(50, cfg.vq_steps // 10))
    book = vq.quantize.embedding.weight
    for step in range(steps):
        size = rng.choices(sizes, weights)[0]
        idx = torch.randint(0, len(tensors[size]), (cfg.vq_batch,), generator=gen)
        x, lab = tensors[size][idx], labels[size][idx]
        lr = cfg.vq_lr * min(1.0, (step + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        z = vq.encode_latents(x)  # [B, D, h, w]
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        target = lab.reshape(-1)
        dist = flat.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2.0 * flat @ book.t()  # [N, K]
        known = target >= 0
        codes = torch.where(known, target, dist.detach().argmin(1))
        ce = F.cross_entropy(-dist[known], target[known]) if known.any() else dist.sum() * 0.0
        e = book[codes]
        vq_loss = F.mse_loss(e, flat.detach()) + 0.25 * F.mse_loss(flat, e.detach())
        z_q = e.reshape(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
        recon = vq.decode(z_q)
        rec = (recon - x).abs().mean() + F.mse_loss(recon, x)
        loss = rec + vq_loss + 0.5 * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            acc = float((dist.detach().argmin(1)[known] == target[known]).float().mean()) if known.any() else 0.0
            log(f"vqgan step {step + 1}/{steps} rec {rec.item():.4f} ce {ce.item():.4f} code acc {acc:.3f} "
                f"({time.perf_counter() - start:.0f}s)")
        if time.perf_counter() > deadline:
            log(f"vqgan: time budget reached at step {step + 1}")
            break
    vq.eval().requires_grad_(False)
    refine_decoder(vq, tensors, labels, cfg, log=log)
    if folder is not None:
        save_vqgan(vq, folder)
    return vq, alphabet


def refine_decoder(vq: VQGAN, tensors: dict[tuple[int, int], Tensor], labels: dict[tuple[int, int], Tensor],
                   cfg: WorldTrainConfig, *, log: LogFn = logger.info) -> None:
    """Phase 2: ``vq_decoder_steps`` steps on ``post_quant_conv`` and the decoder only, from the alphabet
    codes (the encoder's nearest code for patches outside it).

    The encoder and codebook are frozen, so every image keeps its codes (the language model's data does not
    change); the joint phase leaves the codes right but the drawing soft (a small square drawn as a blob),
    and the analyser needs crisp shapes.
    """
    if cfg.vq_decoder_steps <= 0:
        return
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    rng = random.Random(f"lumina-world-vq-decoder:{cfg.seed}")
    codes = {}
    with torch.no_grad():
        for size, x in tensors.items():
            enc = torch.cat([vq.encode(x[i:i + 64]) for i in range(0, len(x), 64)])
            codes[size] = torch.where(labels[size] >= 0, labels[size], enc)
    sizes = sorted(tensors)
    weights = [len(tensors[s]) for s in sizes]
    params = [*vq.post_quant_conv.parameters(), *vq.decoder.parameters()]
    for p in params:
        p.requires_grad_(True)
    vq.decoder.train()
    opt = torch.optim.Adam(params, lr=cfg.vq_lr, betas=(0.9, 0.99))
    start, steps = time.perf_counter(), cfg.vq_decoder_steps
    for step in range(steps):
        size = rng.choices(sizes, weights)[0]
        idx = torch.randint(0, len(tensors[size]), (cfg.vq_batch,), generator=gen)
        x = tensors[size][idx]
        lr = cfg.vq_lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        recon = vq.decode(vq.quantize.lookup(codes[size][idx]))
        loss = (recon - x).abs().mean() + F.mse_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"vqgan decoder step {step + 1}/{steps} rec {loss.item():.4f} "
                f"({time.perf_counter() - start:.0f}s)")
    vq.eval().requires_grad_(False)


@torch.no_grad()
def encode_pil(vq: VQGAN, images: Sequence[Image.Image], batch: int = 64) -> list[Tensor]:
    """VQ codes ``[h, w]`` of each PIL image (sides multiples of the downsample), batched by size."""
    out: list[Tensor | None] = [None] * len(images)
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        by_size[im.size].append(i)
    for idx in by_size.values():
        for s in range(0, len(idx), batch):
            part = idx[s:s + batch]
            codes = vq.encode(_to_batch([images[i] for i in part]))
            for i, c in zip(part, codes):
                out[i] = c.cpu()
    return [c for c in out if c is not None]


@torch.no_grad()
def reconstruction_accuracy(vq: VQGAN, n: int = 64, seed: int = 999) -> float:
    """Share of held-out world pictures whose VQ reconstruction scores ``overall`` 1 with the analyser."""
    scenes = [sample_scene(random.Random(f"lumina-world-vq-eval:{seed}:{i}")) for i in range(n)]
    images = [render_image(s) for s in scenes]
    codes = encode_pil(vq, images)
    ok = 0
    for scene, c in zip(scenes, codes):
        rec = vq.decode_codes(c[None]).clamp(-1, 1)[0]
        arr = ((rec + 1) * 127.5).round().permute(1, 2, 0).numpy().astype("uint8")
        ok += score_text_to_image(arr, scene)["overall"] == 1.0
    return ok / max(1, n)


# --- tokenizer --------------------------------------------------------------------------------------------
def text_corpus() -> list[str]:
    """Every string the world's conversations use: task messages, captions' words, answers."""
    out = [t.template.replace("{image}", "").replace("{prompt}", "") for t in TASKS.values()]
    for w, h in WORLD_SIZES:
        out.append(TASKS["text_to_image"].message("", width=w, height=h))
        out.append(TASKS["multiview"].message("", views=4, width=w, height=h))
    for i in range(200):
        scene = sample_scene(random.Random(f"lumina-world-corpus:{i}"))
        out.append(caption(scene))
        for pairs in vqa_pairs(scene).values():
            out.extend(f"{q} {a}" for q, a in pairs)
    for c in COLOURS:
        for s in SHAPES:
            out.extend([f"Change the {c} {s} to {c2}." for c2 in COLOURS] + [f"Remove the {c} {s}.",
                        f"Detect: {c} {s}"] + [f"Move the {c} {s} to the {p}." for p in POSITIONS])
            out.extend(f"a {z} {c} {s}" for z in SIZES)
    return out


def build_world_tokenizer(path: str | Path, num_codes: int, text_vocab: int) -> Path:
    """The world tokenizer: Chameleon names (compact layout), sizes 0..``MAX_GRID``, BPE on the corpus."""
    return build_chameleon_tokenizer(path, num_codes=num_codes, max_grid=MAX_GRID, text_corpus=text_corpus(),
                                     text_vocab_size=text_vocab, official_layout=False)


# --- language-model data ----------------------------------------------------------------------------------
def _omni_tasks(rng: random.Random) -> str:
    tasks = [t for t in WORLD_TASKS if t != "text_to_image"]
    return rng.choices(tasks, [TASK_WEIGHTS[t] for t in tasks])[0]


def world_conversations(cfg: WorldTrainConfig) -> list[tuple[str, list[str], list[Image.Image]]]:
    """``(task, [human, gpt], images)`` examples in the official conversation form (``scene_examples``).

    ``t2i_scenes`` text-to-image examples (scene indices ``0..t2i_scenes-1`` of ``cfg.seed``) and, from
    ``omni_scenes`` further scenes, Omni examples drawn with ``TASK_WEIGHTS`` (about
    ``sum(omni weights) / TASK_WEIGHTS['text_to_image'] * t2i_scenes`` in all, spread over the scenes).
    """
    out = []
    for i in range(cfg.t2i_scenes):
        scene = sample_scene(_rng(cfg.seed, i, "scene"))
        exs, imgs, _ = scene_examples(scene, cfg.seed, i, ("text_to_image",))
        out.extend((ex.task, [ex.human, ex.gpt], [imgs[n] for n in ex.images]) for ex in exs)
    if cfg.omni_scenes <= 0:
        return out
    omni_total = sum(w for t, w in TASK_WEIGHTS.items() if t != "text_to_image")
    n_omni = round(cfg.t2i_scenes * omni_total / TASK_WEIGHTS["text_to_image"])
    per_scene = max(1, math.ceil(n_omni / cfg.omni_scenes))
    rng = random.Random(f"lumina-world-omni:{cfg.seed}")
    for k in range(cfg.omni_scenes):
        if len(out) >= cfg.t2i_scenes + n_omni:
            break
        i = cfg.t2i_scenes + k
        scene = sample_scene(_rng(cfg.seed, i, "scene"))
        tasks = sorted({_omni_tasks(rng) for _ in range(per_scene)})
        exs, imgs, _ = scene_examples(scene, cfg.seed, i, tasks)
        out.extend((ex.task, [ex.human, ex.gpt], [imgs[n] for n in ex.images]) for ex in exs)
    return out


def tokenize_conversations(convs: Sequence[tuple[str, list[str], list[Image.Image]]], bundle: TokenizerBundle,
                           max_seq_len: int, alphabet: dict[bytes, int] | None = None
                           ) -> tuple[list[list[int]], list[list[int]], list[str]]:
    """``(ids, labels, buckets)`` of each conversation (``conversation.build_training_example``).

    Input images keep the encoder's codes (what the pipeline gives at inference); answer images are snapped
    to ``alphabet`` (``snap_codes``) when given.
    """
    from ..tasks import IMAGE_PLACEHOLDER
    from ..conversation import build_training_example

    unique: dict[int, Image.Image] = {}
    for _, _, ims in convs:
        for im in ims:
            unique.setdefault(id(im), im)  # a scene's picture serves several tasks: encode it once
    codes = dict(zip(unique, encode_pil(bundle.vqgan, list(unique.values()))))
    ids_all, labels_all, buckets = [], [], []
    d = bundle.vqgan.downsample
    for task, turns, ims in convs:
        n_in = turns[0].count(IMAGE_PLACEHOLDER)
        c = [codes[id(im)] if k < n_in or not alphabet else snap_codes(im, codes[id(im)], alphabet, d)
             for k, im in enumerate(ims)]
        ids, labels = build_training_example(bundle.text, turns, c)
        if len(ids) > max_seq_len:
            continue
        ids_all.append(ids)
        labels_all.append(labels)
        buckets.append(task)
    return ids_all, labels_all, buckets


def world_lm_config(cfg: WorldTrainConfig, vocab_size: int) -> ModelConfig:
    """A small Chameleon decoder (Lumina keys in ``extra`` so config.json reads like the release)."""
    return ModelConfig(vocab_size=vocab_size, dim=cfg.lm_dim,
                       intermediate_size=cfg.lm_dim * 8 // 3 // 32 * 32, n_layers=cfg.lm_layers,
                       n_heads=cfg.lm_heads, n_kv_heads=cfg.lm_heads, max_seq_len=1024,
                       qk_norm_rows=1, extra={"mask_image_logits": False, "z_loss_weight": 1e-5,
                                              "dropout": 0.0, "world_model": True})


def init_lm(cfg: WorldTrainConfig, vocab_size: int) -> LuminaMGPT:
    """Fresh decoder, GPT-2-style init (normal 0.02, residual projections scaled by depth) of the weight
    matrices; norms keep their ones and zeros (the qk-norms are ``[1, head_dim]`` matrices, and drawing them
    near zero would make every attention uniform)."""
    torch.manual_seed(cfg.seed)
    model = LuminaMGPT(world_lm_config(cfg, vocab_size))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1 and "norm" not in name.rsplit(".", 2)[-2]:
                residual = name.endswith(("o_proj.weight", "down_proj.weight"))
                std = 0.02 / math.sqrt(2 * cfg.lm_layers) if residual else 0.02
                p.normal_(0.0, std)
    return model


# --- the whole run ----------------------------------------------------------------------------------------
def assemble_folder(model: LuminaMGPT, vq: VQGAN, tokenizer_path: str | Path, out: str | Path) -> Path:
    """Write the model folder: config.json, model.safetensors, tokenizer.json, vqgan.yaml/.safetensors."""
    out = Path(out)
    save_model(model, out, extra_files={"tokenizer.json": Path(tokenizer_path).read_text(encoding="utf-8")})
    save_vqgan(vq, out)
    return out


def run(cfg: WorldTrainConfig, *, log: LogFn = logger.info) -> Path:
    """All three stages; finished stages found in ``cfg.work_dir`` are reused. Returns the model folder."""
    torch.set_num_threads(1)
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "world_train_config.json").write_text(json.dumps(asdict(cfg), indent=2), encoding="utf-8")
    t0 = time.perf_counter()

    vq_dir = work / "vqgan"
    if (vq_dir / "DONE").is_file():
        vq = load_vqgan(*find_vqgan_files(vq_dir))
        log(f"reusing the VQGAN in {vq_dir}")
    else:
        vq, _ = train_vqgan(cfg, log=log, folder=vq_dir)
        acc = reconstruction_accuracy(vq, n=cfg.recon_eval)
        (vq_dir / "DONE").write_text(json.dumps({"recon_overall": acc}), encoding="utf-8")
        log(f"vqgan done in {time.perf_counter() - t0:.0f}s; analyser overall on reconstructions: {acc:.3f}")

    tok_path = work / "tokenizer.json"
    build_world_tokenizer(tok_path, cfg.vq_codes, cfg.text_vocab)
    bundle = TokenizerBundle(TextTokenizer.from_file(tok_path), vq, name="lumina-mgpt-world")
    vocab = bundle.vocab

    t1 = time.perf_counter()
    convs = world_conversations(cfg)
    alphabet = world_alphabet(cfg)
    (work / "patch_alphabet.json").write_text(  # patch pixels named by their SHA-1, for inspection
        json.dumps({hashlib.sha1(k).hexdigest(): v for k, v in alphabet.items()}, indent=0), encoding="utf-8")
    ids, labels, buckets = tokenize_conversations(convs, bundle, max_seq_len=1024, alphabet=alphabet)
    counts: dict[str, int] = defaultdict(int)
    for b in buckets:
        counts[b] += 1
    log(f"{len(ids)} training sequences ({dict(counts)}), {sum(map(len, ids))} tokens, "
        f"tokenised in {time.perf_counter() - t1:.0f}s")

    from ..training import TokenDataset, TrainConfig, train

    dataset = TokenDataset.from_sequences(ids, labels, buckets=None, vocab=vocab)
    model = init_lm(cfg, vocab.vocab_size)
    lm_dir = work / "lm"
    tcfg = TrainConfig(lr=cfg.lm_lr, betas=(0.9, 0.95), weight_decay=0.05,
                       warmup_steps=min(100, cfg.lm_steps // 10),
                       max_steps=cfg.lm_steps, min_lr_ratio=0.05, grad_clip=1.0, batch_size=cfg.lm_batch,
                       z_loss_weight=1e-5, dropout=0.0, cfg_drop_prob=cfg.cfg_drop_prob, bf16=False,
                       gradient_checkpointing=False, seed=cfg.seed, save_every=100, keep_last=1,
                       log_every=10**9,
                       lora=None, max_seq_len=1024, bucket_window=50, output_dir=str(lm_dir))
    deadline = time.perf_counter() + 60 * cfg.max_minutes_lm if cfg.max_minutes_lm > 0 else math.inf
    t2 = time.perf_counter()
    ema: list[float] = []

    def on_step(step: int, total: int, metrics: dict[str, float]) -> None:
        ema.append(metrics["ce"])
        if step % 25 == 0 or step == total:
            recent = sum(ema[-25:]) / len(ema[-25:])
            log(f"lm step {step}/{total} ce {recent:.4f} lr {metrics['lr']:.2e} "
                f"({time.perf_counter() - t2:.0f}s)")

    resume = True if any(lm_dir.glob("step-*")) else None
    result = train(model, dataset, tcfg, on_step=on_step, should_stop=lambda: time.perf_counter() > deadline,
                   resume_from=resume)
    log(f"lm: {result.step} steps in {time.perf_counter() - t2:.0f}s")
    model = result.model
    if cfg.lm_extra_steps > 0 and not result.stopped_early:
        # Stage 2: a second warm-up + cosine cycle at a lower peak. The binding of colour and shape words to
        # the cells an object covers is learnt late (after a plateau at ~2000 steps), when the first cycle's
        # rate is already decaying; a second cycle finishes it.
        extra_dir = work / "lm2"
        tcfg2 = replace(tcfg, lr=cfg.lm_extra_lr, warmup_steps=min(100, cfg.lm_extra_steps // 10),
                        max_steps=cfg.lm_extra_steps, seed=cfg.seed + 1, output_dir=str(extra_dir))
        deadline = time.perf_counter() + 60 * cfg.max_minutes_lm if cfg.max_minutes_lm > 0 else math.inf
        t2, ema[:] = time.perf_counter(), []
        resume = True if any(extra_dir.glob("step-*")) else None
        result = train(model, dataset, tcfg2, on_step=on_step,
                       should_stop=lambda: time.perf_counter() > deadline, resume_from=resume)
        log(f"lm stage 2: {result.step} steps in {time.perf_counter() - t2:.0f}s")
        model = result.model
    folder = assemble_folder(model, vq, tok_path, cfg.out)
    log(f"wrote {folder} ({_folder_mb(folder):.1f} MB) in {time.perf_counter() - t0:.0f}s total")
    return folder


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6


def load_world_lm(folder: str | Path) -> LuminaMGPT:
    """The bundled model's decoder in fp32 eval mode."""
    return load_model(folder, dtype="fp32")


def clean_work_dir(work_dir: str | Path) -> None:
    """Remove a previous run's stages (for a run from scratch)."""
    shutil.rmtree(work_dir, ignore_errors=True)
