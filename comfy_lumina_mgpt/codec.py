"""What a user gives and gets, to tokens and back: prompts to token ids, pictures to VQ codes (fitted to the
model's sizes), codes and generated token blocks back to pictures.

Nodes and the CLI call these functions and stay thin. Images here are ``[B, 3, H, W]`` floats in [-1, 1];
conversion to ComfyUI's ``IMAGE`` lives in ``nodes/convert.py``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image
from torch import Tensor

from . import conversation, limits, preprocess, unirep
from .limits import CheckCancel
from .tasks import TEXT_TO_IMAGE, refuse_placeholder
from .tokenizer_bundle import TokenizerBundle

@dataclass(frozen=True)
class PromptTokens:
    """A prompt ready for the sampler: token ids, the optional negative context, the requested size."""

    ids: tuple[int, ...]
    negative_ids: tuple[int, ...] | None = None
    width: int = 0
    height: int = 0
    text: str = ""

    def grid_for(self, patch: int) -> tuple[int, int] | None:
        """``(h_grid, w_grid)`` size tokens of the requested size (for ``force_size``), if a size was set."""
        if not (self.width and self.height):
            return None
        return self.height // patch, self.width // patch


def text_to_image_prompt(bundle: TokenizerBundle, prompt: str, width: int, height: int,
                         negative: str = "") -> PromptTokens:
    """The resolution-aware prompt ``Generate an image of {W}x{H} according to the following prompt:\\n...``.

    A non-empty ``negative`` becomes the guidance context (its conversation, then the image) in place of the
    bare ``[<racm3:break>, H, W]`` one.
    """
    if not prompt.strip():
        raise ValueError("the prompt is empty; describe the image to generate")
    refuse_placeholder(prompt)
    refuse_placeholder(negative, "the negative prompt")
    unirep.check_size(width, height, bundle.patch)
    text = TEXT_TO_IMAGE.message(prompt, width=width, height=height)
    ids = conversation.build_prompt_ids(bundle.text, [text])
    neg = None
    if negative.strip():
        neg = tuple(conversation.build_prompt_ids(
            bundle.text, [TEXT_TO_IMAGE.message(negative, width=width, height=height)]))
    return PromptTokens(tuple(ids), neg, width, height, text)


def task_prompt(bundle: TokenizerBundle, turns: Sequence[str], images: Sequence[Tensor] = ()) -> PromptTokens:
    """Prompt ids of a conversation whose turns may hold ``<|image|>`` placeholders (codes ``[h, w]`` each)."""
    ids = conversation.build_prompt_ids(bundle.text, list(turns), list(images))
    return PromptTokens(tuple(ids), None, 0, 0, turns[-1] if turns else "")


@dataclass(frozen=True)
class TokenBatch:
    """Generated (or encoded) token sequences, one per batch item, plus any decoded text."""

    sequences: tuple[tuple[int, ...], ...]
    texts: tuple[str, ...] = field(default=())


def image_codes(bundle: TokenizerBundle, sequence: Sequence[int]) -> list[Tensor]:
    """Codes ``[h_lat, w_lat]`` of every complete image block in a token sequence (unfinished ones dropped)."""
    _, blocks = conversation.split_response(list(sequence), bundle.text)
    return [unirep.parse_image_block(b, bundle.vocab) for b in blocks]


@torch.no_grad()
def decode_codes(bundle: TokenizerBundle, codes: Tensor) -> Tensor:
    """``codes [h, w]`` -> image ``[1, 3, H, W]`` in [-1, 1] (fp32, on the VQGAN's device)."""
    device = next(bundle.vqgan.parameters()).device
    return bundle.vqgan.decode_codes(codes[None].to(device)).clamp(-1, 1)


def decode_batch(bundle: TokenizerBundle, batch: TokenBatch, check_cancel: CheckCancel | None = None
                 ) -> list[Tensor]:
    """Every image of every sequence, in order, each ``[1, 3, H, W]`` in [-1, 1]; ``check_cancel`` runs before
    each image (raise from it to stop)."""
    out = []
    for seq in batch.sequences:
        for codes in image_codes(bundle, seq):
            if check_cancel is not None:
                check_cancel()
            out.append(decode_codes(bundle, codes))
    return out


def native_size(width: int, height: int, patch: int) -> tuple[int, int]:
    """An image's own size on the patch grid ``(W, H)``: each side rounded to the nearest multiple of
    ``patch`` (at least one patch). For models trained on their own sizes rather than a crop list."""
    return (max(patch, round(width / patch) * patch), max(patch, round(height / patch) * patch))


@torch.no_grad()
def encode_images(bundle: TokenizerBundle, images: Sequence[Image.Image], target: int | None, seed: int = 0,
                  candidates: Sequence[tuple[int, int]] | None = None,
                  check_cancel: CheckCancel | None = None) -> list[Tensor]:
    """Fit PIL images to the best candidate size of ``target`` and VQ-encode them -> codes ``[h, w]`` each.

    ``candidates`` (sizes ``(W, H)``, e.g. a model's ``ModelSizes.fit_candidates()``) replaces ``target``'s
    crop list. ``target`` None without candidates keeps each image's own size (``native_size``: resized by at
    most half a patch per side), scaled down first where a side passes the model's largest grid
    (``limits.capped_native_size``). A ``target`` whose side has no size token is refused before any work. The
    crop offsets come from ``random.Random(seed)``, drawn in image order as the official code does.
    ``check_cancel`` runs before each image (raise from it to stop).
    """
    if target is not None and not candidates:
        limits.check_target_size(target, bundle.patch, bundle.vocab)
    crops = list(candidates) if candidates else (
        unirep.crop_size_list(target, bundle.patch) if target is not None else None)
    rng = random.Random(seed)  # noqa: S311  seeded, not a secret
    out = []
    for img in images:
        if check_cancel is not None:
            check_cancel()
        fits = crops if crops is not None else [limits.capped_native_size(*img.size, bundle.patch, bundle.vocab)]
        out.append(encode_picture(bundle, img, fits, rng)[0])
    return out


@torch.no_grad()
def encode_picture(bundle: TokenizerBundle, img: Image.Image, fits: Sequence[tuple[int, int]], rng: random.Random,
                   name: str = "input image") -> tuple[Tensor, tuple[int, int]]:
    """Fit one picture to the best of ``fits`` (sizes ``(W, H)``; the crop offset drawn from ``rng``) and
    VQ-encode it -> ``(codes [h, w] on the CPU, the fitted (W, H))``. ValueError naming ``name`` when a side is
    under one patch."""
    if min(img.size) < bundle.patch:
        raise ValueError(f"{name} is {img.size[0]}x{img.size[1]}; it must be at least {bundle.patch} px on each "
                         "side")
    fitted = preprocess.fit_image(img, fits, rng)
    pixels = preprocess.pil_to_tensor(fitted).to(next(bundle.vqgan.parameters()).device)
    return bundle.vqgan.encode(pixels)[0].cpu(), fitted.size
