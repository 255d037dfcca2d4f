"""Uni-Rep: candidate sizes equal the spec's lists, blocks round-trip, token counts, bad blocks raise."""

from __future__ import annotations

import pytest
import torch

from comfy_lumina_mgpt import unirep

SPEC_512 = (
    "1024x256, 992x256, 960x256, 928x256, 896x256, 896x288, 864x288, 832x288, 800x288, 800x320, 768x320, "
    "736x320, 736x352, 704x352, 672x352, 672x384, 640x384, 608x384, 608x416, 576x416, 576x448, 544x448, "
    "544x480, 512x480, 512x512, 480x512, 480x544, 448x544, 448x576, 416x576, 416x608, 384x608, 384x640, "
    "384x672, 352x672, 352x704, 352x736, 320x736, 320x768, 320x800, 288x800, 288x832, 288x864, 288x896, "
    "256x896, 256x928, 256x960, 256x992, 256x1024"
)
SPEC_768 = (
    "1536x384, 1504x384, 1472x384, 1440x384, 1408x384, 1408x416, 1376x416, 1344x416, 1312x416, 1312x448, "
    "1280x448, 1248x448, 1216x448, 1216x480, 1184x480, 1152x480, 1152x512, 1120x512, 1088x512, 1056x512, "
    "1056x544, 1024x544, 1024x576, 992x576, 960x576, 960x608, 928x608, 896x608, 896x640, 864x640, 864x672, "
    "832x672, 832x704, 800x704, 800x736, 768x736, 768x768, 736x768, 736x800, 704x800, 704x832, 672x832, "
    "672x864, 640x864, 640x896, 608x896, 608x928, 608x960, 576x960, 576x992, 576x1024, 544x1024, 544x1056, "
    "512x1056, 512x1088, 512x1120, 512x1152, 480x1152, 480x1184, 480x1216, 448x1216, 448x1248, 448x1280, "
    "448x1312, 416x1312, 416x1344, 416x1376, 416x1408, 384x1408, 384x1440, 384x1472, 384x1504, 384x1536"
)
SPEC_1024 = (
    "2048x512, 2016x512, 1984x512, 1952x512, 1920x512, 1920x544, 1888x544, 1856x544, 1824x544, 1792x544, "
    "1792x576, 1760x576, 1728x576, 1696x576, 1696x608, 1664x608, 1632x608, 1632x640, 1600x640, 1568x640, "
    "1536x640, 1536x672, 1504x672, 1472x672, 1472x704, 1440x704, 1408x704, 1408x736, 1376x736, 1344x736, "
    "1344x768, 1312x768, 1280x768, 1280x800, 1248x800, 1248x832, 1216x832, 1184x832, 1184x864, 1152x864, "
    "1152x896, 1120x896, 1120x928, 1088x928, 1088x960, 1056x960, 1056x992, 1024x992, 1024x1024, 992x1024, "
    "992x1056, 960x1056, 960x1088, 928x1088, 928x1120, 896x1120, 896x1152, 864x1152, 864x1184, 832x1184, "
    "832x1216, 832x1248, 800x1248, 800x1280, 768x1280, 768x1312, 768x1344, 736x1344, 736x1376, 736x1408, "
    "704x1408, 704x1440, 704x1472, 672x1472, 672x1504, 672x1536, 640x1536, 640x1568, 640x1600, 640x1632, "
    "608x1632, 608x1664, 608x1696, 576x1696, 576x1728, 576x1760, 576x1792, 544x1792, 544x1824, 544x1856, "
    "544x1888, 544x1920, 512x1920, 512x1952, 512x1984, 512x2016, 512x2048"
)
SPEC_LISTS = {512: SPEC_512, 768: SPEC_768, 1024: SPEC_1024}


def _parse(text):
    return [tuple(int(v) for v in s.split("x")) for s in text.split(", ")]


@pytest.mark.parametrize("target,count", [(512, 49), (768, 73), (1024, 97)])
def test_crop_lists_equal_spec(target, count):
    got = unirep.crop_size_list(target)
    assert got == _parse(SPEC_LISTS[target])
    assert len(got) == count
    assert (target, target) in got


@pytest.mark.parametrize("target", [512, 768, 1024])
def test_every_candidate_round_trips(official_tokenizer, target):
    vocab = official_tokenizer.vocab
    g = torch.Generator().manual_seed(target)
    longest = 0
    for w, h in unirep.crop_size_list(target):
        h_lat, w_lat = unirep.latent_size(w, h)
        assert (h_lat, w_lat) == (h // 16, w // 16)
        codes = torch.randint(0, vocab.num_codes, (h_lat, w_lat), generator=g)
        block = unirep.image_block(codes, vocab)
        assert len(block) == unirep.block_length(h_lat, w_lat)
        assert block[:3] == [vocab.boi_id, vocab.size_token(h // 32), vocab.size_token(w // 32)]
        assert block[-1] == vocab.eoi_id
        assert torch.equal(unirep.parse_image_block(block, vocab), codes)
        assert torch.equal(unirep.parse_image_block(block[1:-1], vocab), codes)  # without boi/eoi
        longest = max(longest, len(block))
    assert longest == {512: 1092, 768: 2404, 1024: 4228}[target]


@pytest.mark.parametrize("side,count,size_id", [(512, 1060, 8820), (768, 2356, 8828), (1024, 4164, 8836)])
def test_square_token_counts(official_tokenizer, side, count, size_id):
    vocab = official_tokenizer.vocab
    codes = torch.zeros(side // 16, side // 16, dtype=torch.long)
    block = unirep.image_block(codes, vocab)
    assert len(block) == count == unirep.block_length(side // 16, side // 16)
    assert block[:3] == [8197, size_id, size_id] and block[-1] == 8196
    assert block[3 + side // 16] == 8803 and block[-2] == 8803


def test_depth_example_block(official_tokenizer):
    """864x640 -> hg=20, wg=27 -> 8197, 8824, 8831, (54 codes, 8803) x 40, 8196: 2204 tokens."""
    vocab = official_tokenizer.vocab
    block = unirep.image_block(torch.zeros(40, 54, dtype=torch.long), vocab)
    assert block[:3] == [8197, 8824, 8831] and len(block) == 2204


def _block(vocab, h=4, w=6, seed=0):
    codes = torch.randint(0, vocab.num_codes, (h, w), generator=torch.Generator().manual_seed(seed))
    return codes, unirep.image_block(codes, vocab)


def test_malformed_blocks_raise(tiny_tokenizer):
    vocab = tiny_tokenizer.vocab
    codes, block = _block(vocab)
    with pytest.raises(ValueError, match="body tokens"):
        unirep.parse_image_block(block[:-3], vocab)  # truncated
    with pytest.raises(ValueError, match="body tokens"):
        unirep.parse_image_block(block[:-1] + [block[-2], block[-1]], vocab)  # one token too many
    bad = list(block)
    bad[3 + 6] = bad[3]  # row 0's eol replaced by an image id
    with pytest.raises(ValueError, match="position 9: row 0 must end"):
        unirep.parse_image_block(bad, vocab)
    bad = list(block)
    bad[3 + 7 + 2] = vocab.sep_id  # a non-image id inside row 1
    with pytest.raises(ValueError, match=r"position 12 \(row 1, column 2\)"):
        unirep.parse_image_block(bad, vocab)
    bad = list(block)
    bad[1] = vocab.eol_id
    with pytest.raises(ValueError, match="size tokens"):
        unirep.parse_image_block(bad, vocab)
    with pytest.raises(ValueError, match="too short"):
        unirep.parse_image_block([vocab.boi_id, vocab.size_token(1)], vocab)
    with pytest.raises(ValueError, match="even"):
        unirep.image_block(torch.zeros(3, 4, dtype=torch.long), vocab)
    with pytest.raises(ValueError, match="0..8"):
        unirep.image_block(torch.zeros(2, 18, dtype=torch.long), vocab)  # 9 size steps > max_grid 8
    with pytest.raises(ValueError, match="0..63"):
        unirep.image_block(torch.full((2, 2), 64), vocab)


def test_sizes_and_prompt():
    assert unirep.block_length(48, 48) == 2356
    assert unirep.grid_size(864, 640) == (20, 27)
    assert unirep.pixel_size(20, 27) == (864, 640)
    assert unirep.latent_size(64, 48, patch=16) == (6, 8)
    unirep.check_size(768, 512, 32)
    with pytest.raises(ValueError, match="multiples of 32; got 770x500. Try 768x512"):
        unirep.check_size(770, 500, 32)
    assert unirep.t2i_prompt(768, 512, "a cat") == (
        "Generate an image of 768x512 according to the following prompt:\na cat")
    small = unirep.crop_size_list(64, 16)  # the bundled model's 16-px size step
    assert (64, 64) in small
    assert all(w % 16 == 0 and h % 16 == 0 and (w // 16) * (h // 16) <= 16 and max(w, h) <= 4 * min(w, h)
               for w, h in small)
