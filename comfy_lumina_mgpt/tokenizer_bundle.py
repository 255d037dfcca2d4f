"""The tokenizer side of a model: its text tokenizer and its VQGAN, loaded and checked together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .tokenizer import TextTokenizer
from .vocab import LuminaVocab
from .vqgan import VQGAN, find_vqgan_files, load_vqgan

TOKENIZER_FILES = ("tokenizer.json", "text_tokenizer.json")


@dataclass
class TokenizerBundle:
    """Text tokenizer and VQGAN of one model family; ``patch`` is the pixel size of one size-token step."""

    text: TextTokenizer
    vqgan: VQGAN
    name: str = ""

    @property
    def vocab(self) -> LuminaVocab:
        return self.text.vocab

    @property
    def patch(self) -> int:
        return 2 * self.vqgan.config.downsample

    def check_model_vocab(self, vocab_size: int) -> None:
        """Raise if the model's embedding table cannot hold this tokenizer's ids."""
        self.text.check_model_vocab(vocab_size)


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def has_vqgan(folder: Path) -> bool:
    return (folder / "vqgan.yaml").is_file() and any(
        (folder / f"vqgan.{ext}").is_file() for ext in ("safetensors", "ckpt"))


def load_tokenizer_bundle(text_folder: str | Path, vq_folder: str | Path | None = None,
                          device: str | torch.device = "cpu") -> TokenizerBundle:
    """Load the text tokenizer from ``text_folder`` and the VQGAN from ``vq_folder`` (default: the same)."""
    text_folder = Path(text_folder)
    vq_folder = Path(vq_folder) if vq_folder is not None else text_folder
    text = TextTokenizer.from_folder(text_folder)
    yaml_path, weights_path = find_vqgan_files(vq_folder)
    vqgan = load_vqgan(yaml_path, weights_path, device=device)
    if vqgan.config.n_embed != text.vocab.num_codes:
        raise ValueError(f"the VQGAN in {vq_folder} has {vqgan.config.n_embed} codes but the tokenizer in "
                         f"{text_folder} names {text.vocab.num_codes} image tokens; they do not belong together")
    return TokenizerBundle(text, vqgan, name=text_folder.name)
