"""Stage 1 of ``world train``: the world VQGAN (Chameleon's classes, small config) with a supervised codebook.

The world is drawn on an 8-px grid, so its images are made of a few hundred distinct 8 x 8 patches
(``patch_alphabet``). Each gets its own code; the encoder learns to hit it and the decoder to draw it
(``train_vqgan``, ``refine_decoder``). The language model writes answer images in those codes
(``snap_codes``); input images keep whatever the encoder gives, as at inference.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from comfy_lumina_mgpt.preprocess import pil_to_tensor, to_pixels
from comfy_lumina_mgpt.training.loop import half_cosine
from comfy_lumina_mgpt.vqgan import VQGAN, VQGANConfig, save_vqgan
from .analyser import score_text_to_image
from .dataset import scene_examples
from .render import CONDITION_KINDS, render_condition, render_detection, render_image, render_multiview
from .scene import WORLD_SIZES, sample_scene
from .train_config import LogFn, WorldTrainConfig

logger = logging.getLogger(__name__)


def world_vqgan_config(cfg: WorldTrainConfig) -> VQGANConfig:
    """Chameleon's VQGAN layout at world scale: 8x downsampling (4 levels), one res block per level."""
    return VQGANConfig(embed_dim=cfg.vq_embed_dim, n_embed=cfg.vq_codes, z_channels=cfg.vq_ch, resolution=80,
                       ch=cfg.vq_ch, ch_mult=(1, 1, 2, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0)


def vq_training_images(n: int, seed: int) -> dict[tuple[int, int], list[Image.Image]]:
    """``n`` world renders grouped by size (W, H): pictures (about half) and every task target."""
    rng = random.Random(f"lumina-world-vq:{seed}")  # noqa: S311  seeded, not a secret
    out: dict[tuple[int, int], list[Image.Image]] = defaultdict(list)
    i = 0
    while sum(len(v) for v in out.values()) < n:
        scene = sample_scene(random.Random(f"lumina-world-vq:{seed}:{i}"))  # noqa: S311  seeded, not a secret
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


def _pool_tensors(pool: dict[tuple[int, int], list[Image.Image]], alphabet: dict[bytes, int]
                  ) -> tuple[dict[tuple[int, int], Tensor], dict[tuple[int, int], Tensor]]:
    """A training pool by size as ``(images [N, 3, H, W] in [-1, 1], alphabet codes [N, H/8, W/8])``."""
    tensors = {size: _to_batch(ims) for size, ims in pool.items()}
    labels = {size: torch.stack([patch_labels(im, alphabet, 8) for im in ims]) for size, ims in pool.items()}
    return tensors, labels


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


#: The VQGAN folder's record of which code each world patch got: the language model must write answer
#: images in the codes *this* VQGAN was trained on (the alphabet depends on the run's seed).
ALPHABET_FILE = "patch_alphabet.json"


def save_alphabet(alphabet: dict[bytes, int], path: Path) -> None:
    """Write ``{patch pixels as hex: code}`` next to the VQGAN it was trained with."""
    path.write_text(json.dumps({k.hex(): v for k, v in alphabet.items()}), encoding="utf-8")


def load_alphabet(path: Path) -> dict[bytes, int]:
    """The alphabet ``save_alphabet`` wrote.

    Raises:
        FileNotFoundError: the VQGAN folder has none (made before alphabets were saved): retrain it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the VQGAN in {path.parent} does not say which code each "
                                "world patch has; delete that folder (or run with --fresh) to retrain it")
    return {bytes.fromhex(k): int(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


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
    tensors, labels = _pool_tensors(pool, alphabet)
    log(f"vqgan: {len(alphabet)} patch codes for {sum(map(len, pool.values()))} training images")
    torch.manual_seed(cfg.seed)
    vq = VQGAN(world_vqgan_config(cfg))
    with torch.no_grad():  # well-separated starting codes; they move with their patches
        vq.quantize.embedding.weight.normal_(0.0, 1.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(f"lumina-world-vq-batches:{cfg.seed}")  # noqa: S311  seeded, not a secret
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
        lr = cfg.vq_lr * min(1.0, (step + 1) / warm) * (0.05 + 0.95 * half_cosine(step / steps))
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
    refine_decoder(vq, tensors, labels, steps=cfg.vq_decoder_steps, lr=cfg.vq_lr, batch=cfg.vq_batch,
                   seed=cfg.seed, log=log)
    if folder is not None:
        save_vqgan(vq, folder)
    return vq, alphabet


def refine_decoder(vq: VQGAN, tensors: dict[tuple[int, int], Tensor],
                   labels: dict[tuple[int, int], Tensor], *, steps: int, lr: float, batch: int, seed: int,
                   log: LogFn = logger.info) -> None:
    """``steps`` cosine-decayed Adam steps (peak ``lr``, ``batch`` images of one size) on ``post_quant_conv``
    and the decoder only, drawing ``tensors`` (by size, ``[N, 3, H, W]``) from their alphabet codes
    ``labels`` (``[N, H/8, W/8]``, -1 outside the alphabet: the encoder's nearest code there).

    The encoder and codebook are frozen, so every image keeps its codes (the language model's data does not
    change). Phase 2 of ``train_vqgan`` (the joint phase leaves the codes right but the drawing soft: a small
    square drawn as a blob, and the analyser needs crisp shapes) and ``polish_decoder``.
    """
    if steps <= 0:
        return
    gen = torch.Generator().manual_seed(seed + 1)
    rng = random.Random(f"lumina-world-vq-decoder:{seed}")  # noqa: S311  seeded, not a secret
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
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    start = time.perf_counter()
    for step in range(steps):
        size = rng.choices(sizes, weights)[0]
        idx = torch.randint(0, len(tensors[size]), (batch,), generator=gen)
        x = tensors[size][idx]
        for g in opt.param_groups:
            g["lr"] = lr * (0.02 + 0.98 * half_cosine(step / steps))
        recon = vq.decode(vq.quantize.lookup(codes[size][idx]))
        loss = (recon - x).abs().mean() + F.mse_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"vqgan decoder step {step + 1}/{steps} rec {loss.item():.4f} "
                f"({time.perf_counter() - start:.0f}s)")
    vq.eval().requires_grad_(False)


def task_images(n: int, seed: int) -> dict[tuple[int, int], list[Image.Image]]:
    """Every image of every world task (the picture, each map, the detection and edited pictures, the
    multiview frames) of ``n`` fresh scenes, grouped by size (W, H)."""
    out: dict[tuple[int, int], list[Image.Image]] = defaultdict(list)
    for i in range(n):
        scene = sample_scene(random.Random(f"lumina-world-vq-maps:{seed}:{i}"))  # noqa: S311  seeded, not a secret
        _, images, _ = scene_examples(scene, seed, 5 * 10**6 + i)
        for im in images.values():
            out[im.size].append(im)
    return dict(out)


def polish_decoder(vq: VQGAN, alphabet: dict[bytes, int], cfg: WorldTrainConfig, *,
                   log: LogFn = logger.info) -> None:
    """Phase 3: ``vq_polish_steps`` more decoder-only steps (peak ``vq_polish_lr``) on every task's images of
    ``vq_polish_scenes`` fresh scenes, each drawn from its alphabet codes.

    Phases 1-2 see the maps only as a share of their pool, and their decoder drew a written answer's exact
    codes back at segmentation IoU ~0.85, depth layer accuracy ~0.6, multiview ~0.8: a ceiling on the
    language model's scores however right its tokens. The codes, and so the language model's data, do not
    change (the encoder is frozen).
    """
    pool = task_images(cfg.vq_polish_scenes, cfg.seed)
    tensors, labels = _pool_tensors(pool, alphabet)
    log(f"vqgan polish: {sum(map(len, pool.values()))} task images of {cfg.vq_polish_scenes} scenes")
    refine_decoder(vq, tensors, labels, steps=cfg.vq_polish_steps, lr=cfg.vq_polish_lr, batch=cfg.vq_batch,
                   seed=cfg.seed, log=log)


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
    scenes = [sample_scene(random.Random(f"lumina-world-vq-eval:{seed}:{i}"))  # noqa: S311  seeded, not a secret
              for i in range(n)]
    images = [render_image(s) for s in scenes]
    codes = encode_pil(vq, images)
    ok = 0
    for scene, c in zip(scenes, codes):
        rec = vq.decode_codes(c[None]).clamp(-1, 1)[0]
        arr = to_pixels(rec).cpu().numpy()
        ok += score_text_to_image(arr, scene)["overall"] == 1.0
    return ok / max(1, n)
