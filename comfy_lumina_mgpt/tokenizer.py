"""The text tokenizer: a ``tokenizers.Tokenizer`` plus the ``<|image|>`` placeholder and the Lumina vocab.

Reads the ``tokenizer.json`` of ``Alpha-VLLM/Lumina-mGPT-7B-768`` or Meta's ``text_tokenizer.json`` (same JSON
format). ``<|image|>`` is registered as a plain added token, as the official code does (LUMINA_SPEC §3.1); it
only ever stands in the text and is replaced by an image block before the ids reach the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from .tasks import IMAGE_PLACEHOLDER
from .vocab import LuminaVocab

logger = logging.getLogger(__name__)

TOKENIZER_FILE_NAMES = ("tokenizer.json", "text_tokenizer.json")


class TextTokenizer:
    """Wraps a ``tokenizers.Tokenizer`` of the Chameleon vocabulary.

    Attributes:
        image_placeholder_id: id of ``<|image|>`` (never fed to the model).
        path: the file it was read from, if any.
    """

    def __init__(self, tokenizer: Tokenizer, path: Path | None = None) -> None:
        self._tok = tokenizer
        self.path = path
        # A plain (non-special) added token, as ``tokenizer.add_tokens(["<|image|>"])`` registers it.
        self._tok.add_tokens([AddedToken(IMAGE_PLACEHOLDER, single_word=False, lstrip=False, rstrip=False,
                                         normalized=True, special=False)])
        placeholder = self._tok.token_to_id(IMAGE_PLACEHOLDER)
        if placeholder is None:
            raise RuntimeError(f"could not register {IMAGE_PLACEHOLDER} in the tokenizer")
        self.image_placeholder_id: int = placeholder

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        """Read a ``tokenizer.json``-format file; ValueError if it is missing or not tokenizer JSON."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"tokenizer file {path} does not exist")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the tokenizers library raises plain Exception subclasses
            raise ValueError(f"{path} is not a valid tokenizer JSON file ({exc}); use tokenizer.json from "
                             f"Alpha-VLLM/Lumina-mGPT-7B-768 or Meta's text_tokenizer.json") from None
        return cls(tok, path)

    @classmethod
    def from_folder(cls, folder: str | Path) -> TextTokenizer:
        """Read ``tokenizer.json`` (7B-768 release) or else ``text_tokenizer.json`` (Meta) from ``folder``."""
        folder = Path(folder)
        for name in TOKENIZER_FILE_NAMES:
            if (folder / name).is_file():
                return cls.from_file(folder / name)
        raise ValueError(f"no {TOKENIZER_FILE_NAMES[0]} or {TOKENIZER_FILE_NAMES[1]} in {folder}; put the "
                         f"tokenizer.json of Alpha-VLLM/Lumina-mGPT-7B-768 (or Meta's Chameleon "
                         f"text_tokenizer.json) there")

    @cached_property
    def vocab(self) -> LuminaVocab:
        """Special and image token ids, by name (built once; ``<|image|>`` is left out of it)."""
        names = self._tok.get_vocab(with_added_tokens=True)
        names.pop(IMAGE_PLACEHOLDER, None)
        return LuminaVocab.from_token_map(names)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: no BOS, no post-processing; special names in the text become their ids."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Text of ``ids`` (``<|image|>`` stays, it is not special)."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_to_id(self, name: str) -> int | None:
        """Id of a token name, or None."""
        return self._tok.token_to_id(name)

    def id_to_token(self, token_id: int) -> str | None:
        """Name of a token id, or None."""
        return self._tok.id_to_token(int(token_id))

    @property
    def backend(self) -> Tokenizer:
        """The wrapped ``tokenizers.Tokenizer``."""
        return self._tok

    def __repr__(self) -> str:
        return f"TextTokenizer({str(self.path) if self.path else '<in memory>'!r})"
