"""Input-image fitting: the spec's worked examples, draw order, transparency, pixel conversions."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from comfy_lumina_mgpt.preprocess import best_crop_size, fit_image, pil_to_tensor, tensor_to_pil
from comfy_lumina_mgpt.unirep import crop_size_list

CROPS_768 = crop_size_list(768)


def _gradient(w, h, mode="RGB"):
    x = np.linspace(0, 255, w, dtype=np.float64)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float64)[:, None, None]
    arr = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                          np.broadcast_to((x + y) / 2, (h, w, 1))], axis=2).astype(np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


@pytest.mark.parametrize("size,want", [((1024, 768), (864, 640)), ((1920, 1080), (1024, 576)),
                                       ((1000, 1000), (768, 768))])
def test_spec_examples(size, want):
    assert best_crop_size(*size, CROPS_768, random.Random(0)) == want


def test_depth_example_offsets_and_draw_order():
    """1024x768 -> 864x640: BICUBIC to 864x648, left = randint(0, 0), top = randint(0, 8)."""
    img = _gradient(1024, 768)
    resized = img.resize((864, 648), resample=Image.BICUBIC)
    tops = set()
    for seed in range(30):
        out = fit_image(img, CROPS_768, random.Random(seed))
        assert out.size == (864, 640) and out.mode == "RGB"
        ref = random.Random(seed)
        ref.choice([0])
        left, top = ref.randint(0, 0), ref.randint(0, 8)
        assert left == 0
        tops.add(top)
        assert np.array_equal(np.asarray(out), np.asarray(resized.crop((left, top, left + 864, top + 640))))
    assert tops <= set(range(9)) and len(tops) > 3


def test_box_halving_then_bicubic():
    img = _gradient(1920, 1080)
    out = fit_image(img, CROPS_768, random.Random(1))
    assert out.size == (1024, 576)
    # 1920x1080 is not twice 1024x576 on both sides, so no halving: one BICUBIC resize to exactly 1024x576
    assert np.array_equal(np.asarray(out), np.asarray(img.resize((1024, 576), resample=Image.BICUBIC)))
    big = _gradient(3300, 3000)
    out = fit_image(big, CROPS_768, random.Random(2))
    cw, ch = best_crop_size(3300, 3000, CROPS_768, random.Random(2))
    assert (cw, ch) == out.size == (800, 736)
    half = big.resize((1650, 1500), resample=Image.BOX).resize((825, 750), resample=Image.BOX)  # twice
    scale = max(cw / 825, ch / 750)
    want = half.resize((round(825 * scale), round(750 * scale)), resample=Image.BICUBIC)
    assert want.size == (810, 736)
    rng = random.Random(2)
    rng.choice([0])
    left, top = rng.randint(0, want.size[0] - cw), rng.randint(0, want.size[1] - ch)
    assert np.array_equal(np.asarray(out), np.asarray(want.crop((left, top, left + cw, top + ch))))


def test_transparency_over_white():
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:32, :, 3] = 0
    rgba[32:, :, 3] = 100
    img = Image.fromarray(rgba, "RGBA")
    out = np.asarray(fit_image(img, [(64, 64)], random.Random(0)))
    assert (out[:32] == 255).all()
    a = 100 / 255.0
    want = [int((1 - a) * 255 + a * v) for v in (10, 20, 30)]  # truncation, not rounding
    assert want == [158, 162, 166]
    assert (out[32:] == want).all()
    opaque = np.full((32, 32, 4), 200, dtype=np.uint8)
    opaque[..., 3] = 255
    opaque = Image.fromarray(opaque, "RGBA")
    assert np.asarray(fit_image(opaque, [(32, 32)], random.Random(0))).tolist() == \
        np.full((32, 32, 3), 200).tolist()
    gray = Image.fromarray(np.full((32, 32), 77, dtype=np.uint8), "L")
    assert fit_image(gray, [(32, 32)], random.Random(0)).mode == "RGB"


def test_pixel_conversions():
    img = _gradient(48, 32)
    x = pil_to_tensor(img)
    assert x.shape == (1, 3, 32, 48) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x[0, 0, 0, 0] == -1 and x[0, 0, 0, -1] == 1
    back = np.asarray(tensor_to_pil(x[0])).astype(int)
    assert (back == np.asarray(img)).all()  # rounding brings every level back exactly
    assert np.asarray(tensor_to_pil(torch.full((3, 2, 2), 5.0))).tolist() == [[[255] * 3] * 2] * 2
    # (x + 1) * 127.5 is rounded, not truncated: 0.5 -> 191.25 -> 191, 0.99 -> 253.72 -> 254
    assert np.asarray(tensor_to_pil(torch.full((3, 1, 1), 0.5)))[0, 0, 0] == 191
    assert np.asarray(tensor_to_pil(torch.full((1, 3, 1, 1), 0.99)))[0, 0, 0] == 254
    with pytest.raises(ValueError):
        tensor_to_pil(torch.zeros(4, 2, 2))


def test_native_target_keeps_the_images_own_size():
    from pathlib import Path

    from comfy_lumina_mgpt.codec import encode_images, native_size

    from comfy_lumina_mgpt.tokenizer_bundle import load_tokenizer_bundle

    assert native_size(64, 48, 8) == (64, 48)
    assert native_size(70, 45, 8) == (72, 48) and native_size(3, 3, 8) == (8, 8)
    bundle = load_tokenizer_bundle(Path(__file__).resolve().parents[2] / "models" / "lumina_mgpt"
                                   / "lumina-mgpt-world")
    wide = Image.new("RGB", (64, 32), (240, 240, 240))  # not in the crop list of any square target
    (native,) = encode_images(bundle, [wide], None)
    assert tuple(native.shape) == (4, 8)  # [h, w] in 8-px VQ cells
    (listed,) = encode_images(bundle, [wide], 64)
    assert tuple(listed.shape) != (4, 8)  # the official crop list of 64 has 80x32, not 64x32
