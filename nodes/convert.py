"""Conversions between ComfyUI values and the engine's: pictures, and the weight dtype of a loader choice.

ComfyUI ``IMAGE`` is ``[B, H, W, C]`` float in 0..1; the engine uses ``[B, 3, H, W]`` in [-1, 1].
"""

from __future__ import annotations

import comfy.model_management as mm
import torch
from PIL import Image


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weight dtype for a loader choice; ``auto`` is bf16/fp16 on accelerators and fp32 on CPU."""
    if name == "auto":
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if mm.should_use_bf16(device) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def image_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """ComfyUI ``IMAGE [B, H, W, C]`` 0..1 -> RGB PIL images (alpha, if any, kept as RGBA)."""
    # In place on clamp's copy: one float copy instead of four (a 10000x10000 input took 6 s, now 1.4 s).
    arrays = images.detach().cpu().float().clamp(0, 1).mul_(255.0).round_().to(torch.uint8).numpy()
    return [Image.fromarray(a, "RGBA" if a.shape[-1] == 4 else "RGB") for a in arrays]


def engine_to_image(images: torch.Tensor) -> torch.Tensor:
    """Engine ``[B, 3, H, W]`` in [-1, 1] -> ComfyUI ``IMAGE [B, H, W, 3]`` 0..1 on the CPU.

    Values are quantised to 8 bits by truncating 255 * x on purpose, not by the engine's rounding
    (``preprocess.to_pixels``): ComfyUI's SaveImage and the previews (``progress.pil_preview``) truncate, so an
    output, its previews and its saved PNG hold the same pixels.
    """
    x = ((images.detach().float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)
    return (x.permute(0, 2, 3, 1).float() / 255.0).cpu()


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``[1, H, W, 3]`` images into one batch; images of another size are resized to the first."""
    if not images:
        raise ValueError("the tokens contain no complete image; raise max_new_tokens or check the prompt")
    h, w = images[0].shape[1:3]
    out = []
    for img in images:
        if img.shape[1:3] != (h, w):
            img = torch.nn.functional.interpolate(img.permute(0, 3, 1, 2), size=(h, w), mode="bicubic")
            img = img.clamp(0, 1).permute(0, 2, 3, 1)
        out.append(img)
    return torch.cat(out, dim=0)
