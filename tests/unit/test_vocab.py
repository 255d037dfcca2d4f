"""Vocabulary: ids by name, the official layout pinned, the IMGIMG mapping, the tokenizer wrapper."""

from __future__ import annotations

import json

import pytest
import torch

from comfy_lumina_mgpt.tasks import IMAGE_PLACEHOLDER
from comfy_lumina_mgpt.tokenizer import TextTokenizer
from comfy_lumina_mgpt.vocab import LuminaVocab, image_name_to_code
from lumina_world.tokenizer_builder import build_chameleon_tokenizer, image_token_name


def test_official_ids_pinned(official_tokenizer):
    v = official_tokenizer.vocab
    assert v.bos_id == 0
    assert v.pad_id == 1
    assert v.eos_id == 2
    assert v.eoi_id == 8196
    assert v.boi_id == 8197
    assert v.sep_id == 8710
    assert v.eol_id == 8803
    assert v.max_grid == 64
    assert v.size_ids == tuple(8804 + n for n in range(65))
    assert v.num_codes == 8192
    assert sorted(v.code_to_id) == list(range(4, 8196))
    assert v.size_token(16) == 8820 and v.size_token(24) == 8828 and v.size_token(32) == 8836
    mask = v.image_id_mask(v.vocab_size)
    assert mask.shape == (v.vocab_size,) and mask.sum() == 8192
    assert mask[4:8196].all() and not mask[:4].any() and not mask[8196:].any()
    size_mask = v.size_id_mask(v.vocab_size + 10)
    assert size_mask.shape == (v.vocab_size + 10,)
    assert size_mask.nonzero().flatten().tolist() == list(range(8804, 8869))
    # <|image|> is registered but is not part of the model's vocabulary
    assert official_tokenizer.image_placeholder_id >= v.vocab_size


def test_mapping_is_by_name(official_tokenizer, tiny_tokenizer):
    for tok in (official_tokenizer, tiny_tokenizer):
        v = tok.vocab
        assert any(i != c + 4 for c, i in enumerate(v.code_to_id))
        for c in (0, 1, 9, 10, v.num_codes - 1):
            assert tok.id_to_token(v.code_to_id[c]) == image_token_name(c)
            assert image_name_to_code(image_token_name(c)) == c


def test_code_round_trip(official_tokenizer):
    v = official_tokenizer.vocab
    codes = torch.randint(0, v.num_codes, (7, 9), generator=torch.Generator().manual_seed(0))
    ids = v.code_to_token(codes)
    assert ids.shape == codes.shape
    assert torch.equal(v.id_to_code(ids), codes)
    assert torch.equal(v.id_to_code(v.code_to_token(torch.arange(v.num_codes))), torch.arange(v.num_codes))
    assert v.code_to_token(5) == v.code_to_id[5]
    non_image = torch.tensor([v.bos_id, v.boi_id, v.eoi_id, v.sep_id, v.eol_id, v.size_token(3), -5, 10**6])
    assert v.id_to_code(non_image).tolist() == [-1] * 8
    with pytest.raises(ValueError, match="0..8191"):
        v.code_to_token(torch.tensor([8192]))


def test_size_tokens(tiny_tokenizer):
    v = tiny_tokenizer.vocab
    assert v.max_grid == 8
    for n in range(9):
        assert v.size_of(v.size_token(n)) == n
    with pytest.raises(ValueError, match="0..8"):
        v.size_token(9)
    with pytest.raises(ValueError, match="not a grid-size token"):
        v.size_of(v.boi_id)


def _map(**extra):
    names = {"<s>": 0, "<racm3:break>": 10, "<eoss>": 11, "<reserved08706>": 12, "<reserved08799>": 13,
             "<reserved08800>": 14, "<reserved08801>": 15, "<reserved08802>": 16, "<reserved08804>": 17}
    names.update({image_token_name(c): 20 + c for c in range(12)})
    names.update(extra)
    return names


def test_from_token_map_minimal_and_contiguous_sizes():
    v = LuminaVocab.from_token_map(_map())
    assert v.pad_id is None and v.eos_id is None
    assert v.size_ids == (14, 15, 16)  # <reserved08803> is absent, so 08804 is not a size token
    assert v.num_codes == 12 and v.vocab_size == 32


def test_missing_names_are_listed():
    names = _map()
    del names["<eoss>"], names["<reserved08706>"]
    with pytest.raises(ValueError, match=r"<eoss>, <reserved08706>.*not a Chameleon"):
        LuminaVocab.from_token_map(names)
    with pytest.raises(ValueError, match="IMGIMG"):
        LuminaVocab.from_token_map({k: i for k, i in _map().items() if not k.startswith("IMGIMG")})


def test_codes_must_be_contiguous():
    names = _map()
    del names[image_token_name(3)]
    with pytest.raises(ValueError, match="0..10"):
        LuminaVocab.from_token_map(names)
    with pytest.raises(ValueError, match="A..J"):
        LuminaVocab.from_token_map(_map(IMGIMGXZ=40))


def test_tokenizer_encode_decode(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = tok.encode("a cat")
    assert ids and tok.vocab.bos_id not in ids  # the file's post-processor would add BOS: it is not used
    assert tok.decode(ids) == "a cat"
    ph = tok.encode(f"Depth estimation. {IMAGE_PLACEHOLDER}")
    assert ph[-1] == tok.image_placeholder_id and ph.count(tok.image_placeholder_id) == 1
    assert tok.decode(ph) == f"Depth estimation. {IMAGE_PLACEHOLDER}"
    # a spelled control token stays literal text (the raw file would give its id)
    assert tok.backend.encode("x<reserved08706>", add_special_tokens=False).ids[-1] == tok.vocab.sep_id
    assert tok.vocab.sep_id not in tok.encode("x<reserved08706>")
    assert tok.decode(tok.encode("x<reserved08706>")) == "x<reserved08706>"
    assert tok.decode([tok.vocab.sep_id], skip_special=True) == ""


def test_from_folder(tmp_path, tiny_tokenizer_path):
    with pytest.raises(ValueError, match=r"tokenizer\.json.*text_tokenizer\.json.*" + tmp_path.name):
        TextTokenizer.from_folder(tmp_path)
    text = tiny_tokenizer_path.read_text(encoding="utf-8")
    (tmp_path / "text_tokenizer.json").write_text(text, encoding="utf-8")
    assert TextTokenizer.from_folder(tmp_path).vocab.num_codes == 64
    (tmp_path / "tokenizer.json").write_text(json.dumps({"not": "a tokenizer"}), encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid tokenizer JSON"):
        TextTokenizer.from_folder(tmp_path)  # tokenizer.json is preferred


def test_builder_layouts(tmp_path):
    p = build_chameleon_tokenizer(tmp_path / "t.json", num_codes=100, max_grid=4, text_corpus=["hello there"],
                                  text_vocab_size=280, official_layout=False)
    v = TextTokenizer.from_file(p).vocab
    assert v.num_codes == 100 and v.max_grid == 4
    assert v.eoi_id == 104 and v.boi_id == 105 and v.sep_id == 106 and v.eol_id == 107
    assert v.size_ids == tuple(range(108, 113))
    with pytest.raises(ValueError):
        build_chameleon_tokenizer(tmp_path / "u.json", num_codes=9000, max_grid=4, text_corpus=["x"],
                                  text_vocab_size=10, official_layout=True)
