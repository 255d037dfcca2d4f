"""Conversation format of Lumina-mGPT (LUMINA_SPEC §3.1): prompt ids, training labels, response splitting.

No role labels, no system prompt: the token sequence is ``[<s>]`` followed by every turn's text, each closed
by ``<reserved08706>``. Turns alternate human, assistant, human, ... Each ``<|image|>`` in a turn is
replaced, in order, by the image block (``unirep.image_block``) of the next image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .tasks import IMAGE_PLACEHOLDER
from .tokenizer import TextTokenizer
from .unirep import image_block

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def _count_placeholders(turns: Sequence[str]) -> int:
    return sum(t.count(IMAGE_PLACEHOLDER) for t in turns)


def _place_images(turns: Sequence[str], n_images: int) -> list[str]:
    """Check the placeholder count against ``n_images``; unmarked images go before the first message
    (as the official code does)."""
    turns = list(turns)
    count = _count_placeholders(turns)
    if n_images and count == 0:
        turns[0] = f"{IMAGE_PLACEHOLDER} " * n_images + turns[0]
    elif count != n_images:
        raise ValueError(f"the conversation has {count} {IMAGE_PLACEHOLDER} placeholders but {n_images} "
                         f"images; give one image per placeholder (or none of the placeholders)")
    return turns


def _encode_turn(tokenizer: TextTokenizer, text: str, images: Iterator[Tensor]) -> list[int]:
    """Token ids of one turn's text plus its separator, with image blocks spliced in at the placeholders."""
    vocab = tokenizer.vocab
    out: list[int] = []
    for tok in tokenizer.encode(text):
        if tok == tokenizer.image_placeholder_id:
            out.extend(image_block(next(images), vocab))
        else:
            out.append(tok)
    out.append(vocab.sep_id)
    return out


def build_prompt_ids(tokenizer: TextTokenizer, turns: Sequence[str], images: Sequence[Tensor] = ()
                     ) -> list[int]:
    """Prompt ids for generation: ``[BOS] + encode(turn_1 + SEP + … + turn_n + SEP)`` with image blocks.

    Args:
        tokenizer: the text tokenizer.
        turns: human, assistant, …, human (an odd number; the model answers the last one).
        images: VQ codes ``[h_lat, w_lat]`` per ``<|image|>``, in order. If no turn has a placeholder,
            ``"<|image|> " * len(images)`` is put before the first message (as the official code does).
    Raises:
        ValueError: no turns, an even number of turns, or placeholder and image counts differ.
    """
    if not turns or len(turns) % 2 == 0:
        raise ValueError(f"a prompt needs an odd number of turns (human, assistant, …, human); "
                         f"got {len(turns)}")
    turns = _place_images(turns, len(images))
    it = iter(images)
    ids = [tokenizer.vocab.bos_id]
    for text in turns:
        ids.extend(_encode_turn(tokenizer, text, it))
    return ids


def build_training_example(tokenizer: TextTokenizer, turns: Sequence[str], images: Sequence[Tensor] = ()
                           ) -> tuple[list[int], list[int]]:
    """``(ids, labels)`` of one conversation for training: labels are ``-100`` on BOS and on every human turn
    (text, separator and images) and equal the ids on assistant turns (text, separator, image blocks).

    Raises:
        ValueError: placeholder and image counts differ, or no assistant turn (nothing to learn).
    """
    if not turns:
        raise ValueError("the conversation has no turns")
    turns = _place_images(turns, len(images))
    it = iter(images)
    vocab = tokenizer.vocab
    ids, labels = [vocab.bos_id], [IGNORE_INDEX]
    for i, text in enumerate(turns):
        piece = _encode_turn(tokenizer, text, it)
        ids.extend(piece)
        labels.extend(piece if i % 2 == 1 else [IGNORE_INDEX] * len(piece))
    if all(lab == IGNORE_INDEX for lab in labels):
        raise ValueError("the conversation has no assistant turn, so nothing is supervised; add the answer")
    return ids, labels


def split_response(token_ids: Sequence[int], tokenizer: TextTokenizer) -> tuple[str, list[list[int]]]:
    """Split generated ids into text and image blocks.

    A trailing ``<reserved08706>`` is dropped; every complete ``<racm3:break> … <eoss>`` block is cut out
    (``<|image|>`` marks its place in the text); an unfinished block is dropped. Other special tokens are
    left out of the text.

    Returns:
        ``(text, blocks)``; each block includes its ``<racm3:break>`` and ``<eoss>``.
    """
    vocab = tokenizer.vocab
    toks = [int(t) for t in token_ids]
    if toks and toks[-1] == vocab.sep_id:
        toks.pop()
    text_ids: list[int] = []
    blocks: list[list[int]] = []
    i = 0
    while i < len(toks):
        if toks[i] != vocab.boi_id:
            text_ids.append(toks[i])
            i += 1
            continue
        j = i + 1
        while j < len(toks) and toks[j] not in (vocab.eoi_id, vocab.boi_id):
            j += 1
        if j < len(toks) and toks[j] == vocab.eoi_id:
            blocks.append(toks[i: j + 1])
            text_ids.append(tokenizer.image_placeholder_id)
            j += 1
        else:
            logger.debug("dropping an unfinished image block of %d tokens", j - i)
        i = j
    return tokenizer.decode(text_ids, skip_special=True), blocks


@dataclass(frozen=True, eq=False)
class Conversation:
    """Multi-turn memory: the turns' texts (human first, alternating) and the codes of their images, in order.

    Immutable; ``add_user`` / ``add_assistant`` return new objects. Images are VQ codes ``[h_lat, w_lat]``
    (long, kept on the CPU). Every image has its ``<|image|>`` in some turn.
    """

    turns: tuple[str, ...] = ()
    images: tuple[Tensor, ...] = ()

    def __post_init__(self) -> None:
        if _count_placeholders(self.turns) != len(self.images):
            raise ValueError(f"the turns hold {_count_placeholders(self.turns)} {IMAGE_PLACEHOLDER} "
                             f"placeholders but {len(self.images)} images are given")

    @property
    def next_role(self) -> str:
        """``"user"`` or ``"assistant"``: whose turn comes next."""
        return "user" if len(self.turns) % 2 == 0 else "assistant"

    def _add(self, role: str, text: str, images: Sequence[Tensor]) -> Conversation:
        if self.next_role != role:
            raise ValueError(f"the next turn belongs to the {self.next_role}, not the {role}")
        codes = []
        for c in images:
            c = torch.as_tensor(c)
            if c.ndim != 2:
                raise ValueError(f"image codes must be [h_lat, w_lat]; got shape {tuple(c.shape)}")
            codes.append(c.detach().to("cpu", torch.long))
        count = text.count(IMAGE_PLACEHOLDER)
        if codes and count == 0:
            text = f"{IMAGE_PLACEHOLDER} " * len(codes) + text
        elif count != len(codes):
            raise ValueError(f"the {role} message has {count} {IMAGE_PLACEHOLDER} placeholders but "
                             f"{len(codes)} images")
        return Conversation(self.turns + (text,), self.images + tuple(codes))

    def add_user(self, text: str, images: Sequence[Tensor] = ()) -> Conversation:
        """A new conversation with a human turn appended (unmarked images go before the text)."""
        return self._add("user", text, images)

    def add_assistant(self, text: str, images: Sequence[Tensor] = ()) -> Conversation:
        """A new conversation with an assistant turn appended (``text`` from ``split_response``)."""
        return self._add("assistant", text, images)

    def prompt_ids(self, tokenizer: TextTokenizer) -> list[int]:
        """``build_prompt_ids`` of this conversation (it must end with a user turn)."""
        return build_prompt_ids(tokenizer, self.turns, self.images)
