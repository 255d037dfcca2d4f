"""Build a real ``tokenizers`` tokenizer file laid out like Chameleon's vocabulary.

Used by the tests and by the pack's own small bundled model. The layout (LUMINA_SPEC §2.1):

* ids 0..3: ``<s>``, ``<pad>``, ``</s>``, ``<unk>``
* then one ``IMGIMG…`` name per VQGAN code, given ids in *lexicographic order of the names* (so the id of
  code ``c`` is generally not ``c + 4``: anything that maps codes by arithmetic instead of by name fails)
* then ``<eoss>``, ``<racm3:break>``
* official layout: ``<reservedNNNNN>`` at id ``NNNNN + 4`` for every following id up to the last size token
  (with 8192 codes every id matches the official vocabulary); compact layout: only ``<reserved08706>``,
  ``<reserved08799>`` and the size tokens ``<reserved0{8800+n}>``, n = 0..max_grid
* then a byte-level BPE trained on ``text_corpus``.

All the names above are special tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from comfy_lumina_mgpt.vocab import BOI, BOS, EOI, EOL, EOS, IMAGE_PREFIX, MAX_SIZE_INDEX, PAD, SEP, size_token_name

logger = logging.getLogger(__name__)

UNK = "<unk>"
OFFICIAL_NUM_CODES = 8192
RESERVED_ID_OFFSET = 4  # official rule: <reservedNNNNN> has id NNNNN + 4


def image_token_name(code: int) -> str:
    """Chameleon-style name of VQGAN code ``code``: ``"IMGIMG"`` + its digits spelled ``A..J`` + ``"Z"``."""
    if code < 0:
        raise ValueError(f"VQ code must be >= 0; got {code}")
    return IMAGE_PREFIX + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def chameleon_special_tokens(num_codes: int, max_grid: int, official_layout: bool) -> list[str]:
    """All special token names in id order (id = list index)."""
    if num_codes < 1:
        raise ValueError(f"num_codes must be >= 1; got {num_codes}")
    if not 1 <= max_grid <= MAX_SIZE_INDEX:
        raise ValueError(f"max_grid must be in 1..{MAX_SIZE_INDEX}; got {max_grid}")
    names = [BOS, PAD, EOS, UNK]
    names += sorted(image_token_name(c) for c in range(num_codes))
    names += [EOI, BOI]
    last_size = size_token_name(max_grid)
    if official_layout:
        if num_codes > OFFICIAL_NUM_CODES:
            raise ValueError(f"the official layout holds at most {OFFICIAL_NUM_CODES} image codes; "
                             f"got {num_codes}")
        last_id = int(last_size[len("<reserved"):-1]) + RESERVED_ID_OFFSET
        names += [f"<reserved{i - RESERVED_ID_OFFSET:05d}>" for i in range(len(names), last_id + 1)]
    else:
        names += [SEP, EOL] + [size_token_name(n) for n in range(max_grid + 1)]
    return names


def build_chameleon_tokenizer(path: str | Path, *, num_codes: int, max_grid: int, text_corpus: Sequence[str],
                              text_vocab_size: int, official_layout: bool) -> Path:
    """Write a Chameleon-like ``tokenizer.json`` to ``path`` and return the path.

    Args:
        path: output file (its folder is created).
        num_codes: number of VQGAN codes (8192 for the official VQGAN).
        max_grid: largest grid-size token ``n`` (1..128).
        text_corpus: strings the byte-level BPE is trained on.
        text_vocab_size: about how many text tokens (256 byte symbols + merges) follow the special tokens.
        official_layout: reserved tokens at id ``NNNNN + 4`` (official ids with 8192 codes) instead of a
            compact block.
    """
    path = Path(path)
    specials = chameleon_special_tokens(num_codes, max_grid, official_layout)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=len(specials) + max(int(text_vocab_size), 0),
        min_frequency=1,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(text_corpus), trainer=trainer)
    # Like the published HF tokenizer: a post-processor that prepends BOS when special tokens are requested.
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, specials.index(BOS))])
    for i in (0, len(specials) - 1):
        if tok.token_to_id(specials[i]) != i:
            raise RuntimeError(f"tokenizers placed {specials[i]!r} at id {tok.token_to_id(specials[i])}, "
                               f"not {i}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    logger.debug("wrote %s: %d special + %d text tokens", path, len(specials),
                 tok.get_vocab_size() - len(specials))
    return path
