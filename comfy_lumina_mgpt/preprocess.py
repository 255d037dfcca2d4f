"""Input-image fitting as the official preprocessing does it (LUMINA_SPEC §2.6), and pixel conversions.

Resampling is done with Pillow exactly as specified (BOX halving, one BICUBIC resize): other resizers change
pixels and therefore VQ codes. Random draws come from a caller-owned ``random.Random`` in the official order:
``choice`` of the size, then ``randint`` for the left offset, then for the top offset.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

logger = logging.getLogger(__name__)


def best_crop_size(width: int, height: int, crop_list: Sequence[tuple[int, int]], rng: random.Random
                   ) -> tuple[int, int]:
    """The candidate ``(cw, ch)`` whose aspect ratio best matches a ``width x height`` image.

    Score = ``min(cw/w, ch/h) / max(cw/w, ch/h)``; pairs ``(score, (cw, ch))`` sorted descending (ties go to
    the larger ``cw``, then ``ch``); ``rng.choice`` of the top one (one draw, as the official code makes).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive; got {width}x{height}")
    if not crop_list:
        raise ValueError("the list of candidate sizes is empty")
    scored = []
    for cw, ch in crop_list:
        rw, rh = cw / width, ch / height
        scored.append((min(rw, rh) / max(rw, rh), (cw, ch)))
    scored.sort(reverse=True)
    return rng.choice([size for _, size in scored[:1]])


def _whiten_transparency(img: Image.Image) -> Image.Image:
    """RGB as is; other modes -> RGB, compositing over white (truncating) where any alpha is below 255."""
    if img.mode == "RGB":
        return img
    rgba = np.asarray(img.convert("RGBA"))
    alpha = rgba[:, :, 3]
    if not (alpha < 255).any():
        return img.convert("RGB")
    a = (alpha / 255.0)[:, :, None]
    rgb = (1.0 - a) * 255.0 + a * rgba[:, :, :3]
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def fit_image(img: Image.Image, crop_list: Sequence[tuple[int, int]], rng: random.Random) -> Image.Image:
    """Fit ``img`` to its best candidate size: halve (BOX) while both sides are at least twice the target,
    resize (BICUBIC) so it covers the target, crop at a random offset, whiten transparency. Returns RGB of
    exactly ``(cw, ch)``."""
    cw, ch = best_crop_size(img.size[0], img.size[1], crop_list, rng)
    while img.size[0] >= 2 * cw and img.size[1] >= 2 * ch:
        img = img.resize((img.size[0] // 2, img.size[1] // 2), resample=Image.BOX)
    w, h = img.size
    scale = max(cw / w, ch / h)
    img = img.resize((round(w * scale), round(h * scale)), resample=Image.BICUBIC)
    w, h = img.size
    left = rng.randint(0, w - cw)
    top = rng.randint(0, h - ch)
    img = img.crop((left, top, left + cw, top + ch))
    return _whiten_transparency(img)


def pil_to_tensor(img: Image.Image) -> Tensor:
    """PIL image -> ``[1, 3, H, W]`` float32 in [-1, 1] (computed in float64 as the official code does)."""
    arr = np.asarray(_whiten_transparency(img), dtype=np.float64) / 255.0 * 2.0 - 1.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float()[None]


def to_pixels(x: Tensor) -> Tensor:
    """``[..., 3, H, W]`` in [-1, 1] -> uint8 ``[..., H, W, 3]`` on the same device: clamped, then rounded to the
    nearest level. The engine's one rule for the pictures it writes (the CLI) and scores (the world benchmark,
    the VQGAN's check); ComfyUI's outputs keep SaveImage's truncation instead (``nodes/convert.py``)."""
    return ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).movedim(-3, -1)


def tensor_to_pil(x: Tensor) -> Image.Image:
    """``[3, H, W]`` (or ``[1, 3, H, W]``) in [-1, 1] -> RGB PIL image (``to_pixels``)."""
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected an image [3, H, W]; got shape {tuple(x.shape)}")
    return Image.fromarray(to_pixels(x).cpu().numpy(), "RGB")
