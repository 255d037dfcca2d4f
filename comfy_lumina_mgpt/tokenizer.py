"""The text tokenizer: a ``tokenizers.Tokenizer`` plus the ``<|image|>`` placeholder and the Lumina vocab.

Reads the ``tokenizer.json`` of ``Alpha-VLLM/Lumina-mGPT-7B-768`` or Meta's ``text_tokenizer.json`` (same JSON
format). ``<|image|>`` is registered as a plain added token, as the official code does (LUMINA_SPEC §3.1); it
only ever stands in the text and is replaced by an image block before the ids reach the model.

Text is literal text. ``encode`` never yields a control id (``<s>``, ``</s>``, ``<pad>``, ``<unk>``,
``<racm3:break>``, ``<eoss>``, any ``<reservedNNNNN>``, any ``IMGIMG…`` image token, or any other added token of
the file): where a string spells one, its characters are encoded one by one as ordinary text, so the model sees
the characters, never the control token. Text without such spellings encodes exactly as the tokenizer file says,
token for token. The control ids of a prompt come only from the code that builds the official format
(``conversation`` and ``unirep``); ``<|image|>`` is the one name ``encode`` recognises, and the callers refuse
it in user text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from .file_checks import read_json_file
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

    def check_model_vocab(self, vocab_size: int) -> None:
        """ValueError unless a model with ``vocab_size`` embeddings can hold every id of this tokenizer."""
        if self.vocab.vocab_size > vocab_size:
            where = f" {self.path.parent.name!r}" if self.path is not None else ""
            raise ValueError(f"the tokenizer{where} uses ids up to {self.vocab.vocab_size - 1} but the model has "
                             f"only {vocab_size} embeddings; load the tokenizer that belongs to this model")

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        """Read a ``tokenizer.json``-format file and check it holds the Lumina special tokens.

        Raises:
            ValueError: naming the file: missing, oversized, not tokenizer JSON, or without the special and
                image tokens (``<s>``, ``<racm3:break>``, ``<eoss>``, ``<reserved08706>``, size tokens, ``IMGIMG…``).
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"tokenizer file {path} does not exist")
        hint = "use tokenizer.json from Alpha-VLLM/Lumina-mGPT-7B-768 or Meta's text_tokenizer.json"
        data = read_json_file(path, dict, "tokenizer file")
        if not isinstance(data.get("model"), dict):
            raise ValueError(f"{path} is not a valid tokenizer JSON file (no 'model' section); {hint}")
        try:
            tok = Tokenizer.from_str(json.dumps(data))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - a malformed file can make the Rust side panic
            raise ValueError(f"{path} is not a valid tokenizer JSON file ({type(exc).__name__}: {exc}); "
                             f"{hint}") from None
        text = cls(tok, path)
        try:
            text.vocab  # noqa: B018 - checked now, so a file without the special tokens fails at load time
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        return text

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

    @cached_property
    def control_ids(self) -> frozenset[int]:
        """Ids text must never produce: every added token of the file but ``<|image|>``, and every structural id
        of the Lumina vocabulary (BOS, image delimiters, separators, size tokens, image codes)."""
        ids = {int(i) for i, tok in self._tok.get_added_tokens_decoder().items()
               if tok.content != IMAGE_PLACEHOLDER}
        try:
            v = self.vocab
        except ValueError:  # not a Lumina vocabulary: the added tokens are all there is to guard
            return frozenset(ids)
        ids.update((v.bos_id, v.boi_id, v.eoi_id, v.sep_id, v.eol_id, *v.size_ids, *v.code_to_id))
        ids.update(i for i in (v.pad_id, v.eos_id) if i is not None)
        return frozenset(ids)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as literal text: no BOS, no post-processing, never a control id.

        A span the tokenizer would turn into a control id (a spelled ``<racm3:break>``, ``<s>``,
        ``<reserved08706>``, ``IMGIMG…``) is encoded character by character instead, so it stays text; the rest
        of the string is encoded as usual (identical ids when no such span occurs). ``<|image|>`` keeps its
        placeholder id (the callers place images there, or refuse it in user text).

        Raises:
            ValueError: ``text`` is not valid Unicode (a lone surrogate), or holds a character this tokenizer
                can only write with a control id (an ``<unk>`` tokenizer without that character).
        """
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"the text holds a character that is not valid Unicode ({err.reason} at position "
                             f"{err.start}); remove it") from None
        enc = self._tok.encode(text, add_special_tokens=False)
        control = self.control_ids
        if not any(i in control for i in enc.ids):
            return list(enc.ids)
        out: list[int] = []
        for tok_id, (start, end) in zip(enc.ids, enc.offsets):
            if tok_id in control:
                out.extend(self._spell(text[start:end]))
            else:
                out.append(tok_id)
        if any(i in control for i in out):  # a control id with an empty span: never pass it on
            raise RuntimeError("the tokenizer produced a control id that could not be spelled as text")
        return out

    def _spell(self, piece: str) -> list[int]:
        """Ids of ``piece`` written one character at a time (none of them a control id)."""
        control = self.control_ids
        ids: list[int] = []
        for ch in piece:
            char_ids = self._tok.encode(ch, add_special_tokens=False).ids
            if not char_ids or any(i in control for i in char_ids):
                raise ValueError(f"the character {ch!r} can only be written with a control token in "
                                 f"{self.path or 'this tokenizer'}; remove it from the text")
            ids.extend(char_ids)
        return ids

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
