"""Special and image token ids of a Chameleon / Lumina-mGPT vocabulary, looked up by token *name*.

Nothing here assumes numbers: every id comes from the tokenizer's name -> id map (LUMINA_SPEC §2.1, §2.2).

* ``<s>`` BOS, ``<pad>`` (optional), ``</s>`` (optional, unused by Lumina generation)
* ``<racm3:break>`` begins an image, ``<eoss>`` ends it
* ``<reserved08706>`` ends every conversation turn (and generation)
* ``<reserved08799>`` ends every row of image codes
* ``<reserved0{8800+n}>`` is the grid-size token for ``n`` (``n`` 32-px steps for the official VQGAN)
* ``IMGIMG…`` names carry the VQGAN code: drop the prefix and the last character, read the letters ``A..J`` as
  digits ``0..9``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

BOS = "<s>"
PAD = "<pad>"
EOS = "</s>"
BOI = "<racm3:break>"
EOI = "<eoss>"
SEP = "<reserved08706>"
EOL = "<reserved08799>"
IMAGE_PREFIX = "IMGIMG"
SIZE_BASE = 8800
MAX_SIZE_INDEX = 128


def size_token_name(n: int) -> str:
    """Name of the grid-size token for ``n``: ``<reserved{8800+n:05d}>``."""
    return f"<reserved{SIZE_BASE + n:05d}>"


def image_name_to_code(name: str) -> int:
    """VQGAN code carried by an ``IMGIMG…`` token name; ValueError if it does not spell one."""
    if not name.startswith(IMAGE_PREFIX):
        raise ValueError(f"{name!r} is not an image token name (it must start with {IMAGE_PREFIX!r})")
    letters = name[len(IMAGE_PREFIX):-1]
    if not letters or any(not ("A" <= ch <= "J") for ch in letters):
        raise ValueError(f"image token name {name!r} must be {IMAGE_PREFIX!r} + digits spelled with the "
                         f"letters A..J + one trailing character")
    return int("".join(str(ord(ch) - ord("A")) for ch in letters))


@dataclass(frozen=True)
class LuminaVocab:
    """Token ids the engine needs, derived by name from one tokenizer.

    Attributes:
        bos_id, boi_id, eoi_id, sep_id, eol_id: ``<s>``, ``<racm3:break>``, ``<eoss>``, ``<reserved08706>``,
            ``<reserved08799>``.
        pad_id, eos_id: ``<pad>`` / ``</s>`` or None where the vocabulary lacks them.
        size_ids: ``size_ids[n]`` is the id of ``<reserved0{8800+n}>``, n = 0..max_grid.
        code_to_id: ``code_to_id[c]`` is the token id of VQGAN code ``c``.
        vocab_size: largest id + 1 (the model's embedding table must have at least this many rows).
    """

    bos_id: int
    pad_id: int | None
    boi_id: int
    eoi_id: int
    sep_id: int
    eol_id: int
    size_ids: tuple[int, ...]
    code_to_id: tuple[int, ...]
    vocab_size: int
    eos_id: int | None = None
    _mask_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    # --- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_token_map(cls, token_to_id: Mapping[str, int]) -> LuminaVocab:
        """Build from a tokenizer's name -> id map (``Tokenizer.get_vocab(with_added_tokens=True)``).

        Raises:
            ValueError: required names are missing (not a Chameleon / Lumina-mGPT tokenizer), or the image
                token names do not spell exactly the codes ``0..N-1``.
        """
        required = [BOS, BOI, EOI, SEP, EOL, size_token_name(0), size_token_name(1)]
        missing = [name for name in required if name not in token_to_id]
        image_names = [name for name in token_to_id if name.startswith(IMAGE_PREFIX)]
        if not image_names:
            missing.append(f"{IMAGE_PREFIX}… (image tokens)")
        if missing:
            raise ValueError(f"the tokenizer lacks the tokens {', '.join(missing)}; it is not a Chameleon / "
                             f"Lumina-mGPT tokenizer (use tokenizer.json from Alpha-VLLM/Lumina-mGPT-7B-768 "
                             f"or Meta's text_tokenizer.json)")

        by_code: dict[int, int] = {}
        for name in image_names:
            code = image_name_to_code(name)
            if code in by_code:
                raise ValueError(f"image code {code} is named twice (ids {by_code[code]} and "
                                 f"{token_to_id[name]})")
            by_code[code] = int(token_to_id[name])
        n = len(by_code)
        if min(by_code) != 0 or max(by_code) != n - 1:
            gaps = sorted(set(range(max(by_code) + 1)) - set(by_code))[:5]
            raise ValueError(f"the {n} image token names must spell exactly the codes 0..{n - 1}; they span "
                             f"{min(by_code)}..{max(by_code)} (first missing codes: {gaps})")
        code_to_id = tuple(by_code[c] for c in range(n))

        size_ids = []
        for k in range(MAX_SIZE_INDEX + 1):
            name = size_token_name(k)
            if name not in token_to_id:
                break
            size_ids.append(int(token_to_id[name]))

        vocab = cls(
            bos_id=int(token_to_id[BOS]),
            pad_id=int(token_to_id[PAD]) if PAD in token_to_id else None,
            boi_id=int(token_to_id[BOI]),
            eoi_id=int(token_to_id[EOI]),
            sep_id=int(token_to_id[SEP]),
            eol_id=int(token_to_id[EOL]),
            size_ids=tuple(size_ids),
            code_to_id=code_to_id,
            vocab_size=max(int(i) for i in token_to_id.values()) + 1,
            eos_id=int(token_to_id[EOS]) if EOS in token_to_id else None,
        )
        image_ids = set(code_to_id)
        clash = [name for name, i in (("<s>", vocab.bos_id), (BOI, vocab.boi_id), (EOI, vocab.eoi_id),
                                      (SEP, vocab.sep_id), (EOL, vocab.eol_id)) if i in image_ids]
        clash += [size_token_name(k) for k, i in enumerate(size_ids) if i in image_ids]
        if clash:
            raise ValueError(f"the tokens {clash} share ids with image tokens; the tokenizer is malformed")
        logger.debug("vocab: %d image codes, max grid %d, %d ids", n, vocab.max_grid, vocab.vocab_size)
        return vocab

    # --- sizes --------------------------------------------------------------------------------------------

    @property
    def num_codes(self) -> int:
        """Number of VQGAN codes (image tokens)."""
        return len(self.code_to_id)

    @property
    def max_grid(self) -> int:
        """Largest ``n`` with a size token (the largest grid side, in size-token steps)."""
        return len(self.size_ids) - 1

    @cached_property
    def _size_index(self) -> dict[int, int]:
        return {tok: n for n, tok in enumerate(self.size_ids)}

    def size_of(self, token_id: int) -> int:
        """``n`` of a grid-size token id; ValueError if ``token_id`` is not a size token."""
        try:
            return self._size_index[int(token_id)]
        except KeyError:
            raise ValueError(f"token id {int(token_id)} is not a grid-size token (expected one of the ids of "
                             f"<reserved08800>..{size_token_name(self.max_grid)})") from None

    def size_token(self, n: int) -> int:
        """Token id of the grid-size token for ``n``; ValueError outside ``0..max_grid``."""
        if not 0 <= int(n) <= self.max_grid:
            raise ValueError(f"grid size {n} has no size token; the tokenizer allows 0..{self.max_grid}")
        return self.size_ids[int(n)]

    # --- image tokens -------------------------------------------------------------------------------------

    @cached_property
    def _code_to_id_table(self) -> Tensor:
        return torch.tensor(self.code_to_id, dtype=torch.long)

    @cached_property
    def _id_to_code_table(self) -> Tensor:
        table = torch.full((self.vocab_size,), -1, dtype=torch.long)
        table[self._code_to_id_table] = torch.arange(self.num_codes, dtype=torch.long)
        return table

    def is_image_id(self, token_id: int) -> bool:
        """Whether ``token_id`` is an image-code token."""
        t = int(token_id)
        return 0 <= t < self.vocab_size and int(self._id_to_code_table[t]) >= 0

    def id_to_code(self, token_ids: Tensor) -> Tensor:
        """Token ids (any shape, any device) -> VQGAN codes of the same shape; -1 where not an image token."""
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        table = self._id_to_code_table.to(ids.device)
        inside = (ids >= 0) & (ids < self.vocab_size)
        codes = table[ids.clamp(0, self.vocab_size - 1)]
        return torch.where(inside, codes, torch.full_like(codes, -1))

    def code_to_token(self, codes: Tensor | Sequence[int] | int) -> Tensor | int:
        """VQGAN codes (tensor of any shape, a sequence, or one int) -> token ids (same form; tensors keep
        their device). ValueError for codes outside ``0..num_codes-1``."""
        scalar = isinstance(codes, int)
        c = torch.as_tensor(codes, dtype=torch.long)
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= self.num_codes):
            raise ValueError(f"VQ codes must be in 0..{self.num_codes - 1}; got values "
                             f"{int(c.min())}..{int(c.max())} (is the VQGAN the one that belongs to this "
                             f"tokenizer?)")
        out = self._code_to_id_table.to(c.device)[c]
        return int(out) if scalar else out

    def _mask(self, kind: str, ids: Sequence[int], vocab_size: int) -> Tensor:
        if vocab_size < self.vocab_size:
            raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's {self.vocab_size} "
                             f"ids; the model does not belong to this tokenizer")
        key = (kind, int(vocab_size))
        if key not in self._mask_cache:
            mask = torch.zeros(vocab_size, dtype=torch.bool)
            mask[torch.tensor(ids, dtype=torch.long)] = True
            self._mask_cache[key] = mask
        return self._mask_cache[key].clone()

    def image_id_mask(self, vocab_size: int) -> Tensor:
        """``[vocab_size]`` bool, True at image-code token ids (a fresh tensor each call)."""
        return self._mask("image", self.code_to_id, vocab_size)

    def size_id_mask(self, vocab_size: int) -> Tensor:
        """``[vocab_size]`` bool, True at grid-size token ids (``n`` = 0..max_grid; a fresh tensor)."""
        return self._mask("size", self.size_ids, vocab_size)
