"""Shared fixtures: real ``tokenizers`` files in Chameleon's layout, built once per session."""

from __future__ import annotations

import pytest

from lumina_world.tokenizer_builder import build_chameleon_tokenizer

CORPUS = [
    "Generate an image of 768x768 according to the following prompt:\na cat",
    "Generate an image of 512x512 according to the following prompt:\na dog playing in the water",
    "Depth estimation. Segmentic segmentation. Surface normal estimation. Human pose estimation.",
    "Describe the image in detail. The image shows a red circle and a blue square.",
    "Detect: the cat. What colour is the circle? It is red.",
]


@pytest.fixture(scope="session")
def official_tokenizer_path(tmp_path_factory):
    """Official id layout: 8192 codes at ids 4..8195, <reservedNNNNN> at NNNNN+4, sizes up to n=64."""
    folder = tmp_path_factory.mktemp("official_tokenizer")
    return build_chameleon_tokenizer(folder / "tokenizer.json", num_codes=8192, max_grid=64,
                                     text_corpus=CORPUS, text_vocab_size=400, official_layout=True)


@pytest.fixture(scope="session")
def tiny_tokenizer_path(tmp_path_factory):
    """Compact layout: 64 codes, sizes up to n=8."""
    folder = tmp_path_factory.mktemp("tiny_tokenizer")
    return build_chameleon_tokenizer(folder / "tokenizer.json", num_codes=64, max_grid=8, text_corpus=CORPUS,
                                     text_vocab_size=300, official_layout=False)


@pytest.fixture(scope="session")
def official_tokenizer(official_tokenizer_path):
    from comfy_lumina_mgpt.tokenizer import TextTokenizer

    return TextTokenizer.from_file(official_tokenizer_path)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_path):
    from comfy_lumina_mgpt.tokenizer import TextTokenizer

    return TextTokenizer.from_file(tiny_tokenizer_path)


@pytest.fixture(scope="session")
def tiny_tok(tiny_tokenizer_path):
    from comfy_lumina_mgpt.tokenizer import TextTokenizer

    return TextTokenizer.from_file(tiny_tokenizer_path)


@pytest.fixture(scope="session")
def peaked_model(tiny_tok):
    """``peaked_model(seed)``: a 2-layer model on the tiny tokenizer with large weights, so its distributions
    are peaked and sampling is far from uniform."""
    import torch

    from comfy_lumina_mgpt.config import ModelConfig
    from comfy_lumina_mgpt.model.chameleon import LuminaMGPT

    def build(seed: int):
        torch.manual_seed(seed)
        cfg = ModelConfig(vocab_size=tiny_tok.vocab.vocab_size, dim=48, intermediate_size=96, n_layers=2,
                          n_heads=4, n_kv_heads=2, max_seq_len=512)
        m = LuminaMGPT(cfg).eval()
        with torch.no_grad():
            for p in m.parameters():
                if p.ndim > 1:
                    p.normal_(0, 0.5)
        return m

    return build
