"""Uni-Rep, the "Unambiguous image Representation" of an image in the token sequence (LUMINA_SPEC §2.3-2.5).

One image of ``h_lat x w_lat`` VQ codes is written as::

    <racm3:break> size(h_lat/2) size(w_lat/2) [row 0 codes] <eol> ... [row h_lat-1 codes] <eol> <eoss>

Height first, then width. A size token counts ``patch`` pixels (32 px for the official VQGAN: two latent
cells of 16 px), so latent sides are always even and pixel sides multiples of ``patch``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from .tasks import TEXT_TO_IMAGE
from .vocab import LuminaVocab

logger = logging.getLogger(__name__)

OFFICIAL_PATCH = 32


def crop_size_list(target: int, patch: int = OFFICIAL_PATCH, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """Candidate image sizes ``(W, H)`` holding at most ``(target // patch)**2`` patches, wide to tall.

    Walks ``wp`` down from the full patch count and ``hp`` up from 1, keeping every ``(wp, hp)`` whose aspect
    ratio is at most ``max_ratio`` (LUMINA_SPEC §2.5). 512 -> 49 sizes, 768 -> 73, 1024 -> 97.
    """
    if patch <= 0 or target < patch:
        raise ValueError(f"target size {target} must be at least one patch ({patch} px)")
    num_patches = (target // patch) ** 2
    sizes: list[tuple[int, int]] = []
    wp, hp = num_patches, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            sizes.append((wp * patch, hp * patch))
        if (hp + 1) * wp <= num_patches:
            hp += 1
        else:
            wp -= 1
    return sizes


def grid_size(width: int, height: int, patch: int = OFFICIAL_PATCH) -> tuple[int, int]:
    """Pixels ``(width, height)`` -> size-token grid ``(h_grid, w_grid)``; ValueError unless multiples of
    ``patch``."""
    check_size(width, height, patch)
    return height // patch, width // patch


def pixel_size(h_grid: int, w_grid: int, patch: int = OFFICIAL_PATCH) -> tuple[int, int]:
    """Size-token grid ``(h_grid, w_grid)`` -> pixels ``(width, height)``."""
    return w_grid * patch, h_grid * patch


def latent_size(width: int, height: int, patch: int = OFFICIAL_PATCH) -> tuple[int, int]:
    """Pixels ``(width, height)`` -> VQ latent grid ``(h_lat, w_lat)`` (two latent cells per size step)."""
    h_grid, w_grid = grid_size(width, height, patch)
    return 2 * h_grid, 2 * w_grid


def check_size(width: int, height: int, patch: int = OFFICIAL_PATCH) -> None:
    """ValueError unless ``width`` and ``height`` are positive multiples of ``patch`` (suggests the
    nearest)."""
    if width > 0 and height > 0 and width % patch == 0 and height % patch == 0:
        return

    def near(v: int) -> int:
        return max(patch, int(round(v / patch)) * patch)

    raise ValueError(f"width and height must be multiples of {patch}; got {width}x{height}. "
                     f"Try {near(width)}x{near(height)}.")


def block_length(h_lat: int, w_lat: int) -> int:
    """Tokens in one image block: boi, two size tokens, ``h_lat`` rows of ``w_lat`` codes + eol, eoi."""
    return h_lat * (w_lat + 1) + 4


def forced_images_tokens(size_tokens: tuple[int, int], images: int = 1) -> int:
    """Tokens a generation writes when its next ``images`` images are forced to size tokens ``(h, w)``: their
    blocks (``2h x 2w`` codes each) and the closing ``<reserved08706>``. The one image-token budget: the
    sampler sizes its KV cache from it and every caller asks for it."""
    h, w = size_tokens
    return images * block_length(2 * h, 2 * w) + 1


def image_block(codes: Tensor, vocab: LuminaVocab) -> list[int]:
    """VQ codes ``[h_lat, w_lat]`` (long, any device) -> the image's token ids (LUMINA_SPEC §2.3).

    Raises:
        ValueError: ``codes`` is not 2-D, a side is odd or zero, a side exceeds the size tokens, or a code is
            out of range.
    """
    codes = torch.as_tensor(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [h_lat, w_lat]; got shape {tuple(codes.shape)}")
    h_lat, w_lat = codes.shape
    if h_lat == 0 or w_lat == 0 or h_lat % 2 or w_lat % 2:
        raise ValueError(f"latent sides must be even and non-zero (a size token counts two latent cells); "
                         f"got {h_lat}x{w_lat}")
    ids = vocab.code_to_token(codes.detach().to("cpu", torch.long))
    eol = torch.full((h_lat, 1), vocab.eol_id, dtype=torch.long)
    body = torch.cat([ids, eol], dim=1).flatten().tolist()
    return [vocab.boi_id, vocab.size_token(h_lat // 2), vocab.size_token(w_lat // 2), *body, vocab.eoi_id]


def parse_image_block(tokens: Sequence[int], vocab: LuminaVocab) -> Tensor:
    """Token ids of one image (with or without the ``<racm3:break>`` / ``<eoss>`` ends) -> codes ``[h, w]``.

    Raises:
        ValueError: naming the position: a size token is missing, the length does not match the sizes, a row
            does not end with ``<reserved08799>`` or holds a non-image id.
    """
    toks = [int(t) for t in tokens]
    start = 1 if toks and toks[0] == vocab.boi_id else 0
    end = len(toks) - 1 if len(toks) > start and toks[-1] == vocab.eoi_id else len(toks)
    if end - start < 2:
        raise ValueError(f"image block of {len(toks)} tokens is too short: it needs the height and width "
                         f"size tokens at positions {start} and {start + 1}")
    try:
        h_grid = vocab.size_of(toks[start])
        w_grid = vocab.size_of(toks[start + 1])
    except ValueError as exc:
        raise ValueError(f"image block positions {start}, {start + 1}: expected height and width size "
                         f"tokens ({exc})") from None
    if h_grid == 0 or w_grid == 0:
        raise ValueError(f"image block at position {start}: zero-sized image ({h_grid}x{w_grid} grid)")
    h_lat, w_lat = 2 * h_grid, 2 * w_grid
    body_start = start + 2
    want = h_lat * (w_lat + 1)
    if end - body_start != want:
        raise ValueError(f"image block of {h_lat}x{w_lat} codes needs {want} body tokens (positions "
                         f"{body_start}..{body_start + want - 1}) but has {end - body_start}"
                         + ("" if end == len(toks) else ", before the final <eoss>"))
    grid = torch.tensor(toks[body_start:end], dtype=torch.long).view(h_lat, w_lat + 1)
    bad_eol = (grid[:, -1] != vocab.eol_id).nonzero()
    if len(bad_eol):
        r = int(bad_eol[0])
        pos = body_start + r * (w_lat + 1) + w_lat
        raise ValueError(f"image block position {pos}: row {r} must end with the end-of-line token "
                         f"{vocab.eol_id}; got {toks[pos]}")
    codes = vocab.id_to_code(grid[:, :-1])
    bad = (codes < 0).nonzero()
    if len(bad):
        r, c = (int(v) for v in bad[0])
        pos = body_start + r * (w_lat + 1) + c
        raise ValueError(f"image block position {pos} (row {r}, column {c}): token {toks[pos]} is not an "
                         f"image token")
    return codes


def t2i_prompt(width: int, height: int, prompt: str) -> str:
    """The text-to-image user message:
    ``Generate an image of {W}x{H} according to the following prompt:\\n{prompt}``."""
    return TEXT_TO_IMAGE.message(prompt, width=width, height=height)
