"""From prompt ids to answers: the one way everything samples (nodes, command line, trainer previews, benchmarks).

``sample_answers`` checks a request against the model's limits before any memory is allocated for it, runs
``generate`` and splits each row's tokens into its text and the VQ codes of its complete images. ``ask`` is the
same for one conversation turn (chat, editing, the Omni tasks): the answer joins the conversation, so the next
turn continues where this one stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from . import conversation, limits
from .conversation import Conversation
from .tokenizer_bundle import TokenizerBundle
from .sampling.generate import StepCallback, generate
from .sampling.settings import SamplerConfig
from .tokenizer import TextTokenizer
from .unirep import parse_image_block


@dataclass(frozen=True)
class Answers:
    """What the model wrote for each prompt of a batch.

    Attributes:
        tokens: every new token id of each row (the closing ``<reserved08706>`` removed).
        texts: each row's text, ``<|image|>`` where an image stood.
        images: each row's complete images as VQ codes ``[h, w]`` (an unfinished image is left out).
        forwards: model passes after the prefill; ``steps``: tokens of the longest row.
    """

    tokens: tuple[tuple[int, ...], ...]
    texts: tuple[str, ...]
    images: tuple[tuple[Tensor, ...], ...]
    forwards: int
    steps: int


def sample_answers(model, tokenizer: TextTokenizer | TokenizerBundle, prompts: Sequence[Sequence[int]],
                   settings: SamplerConfig, *,
                   negative_prompts: Sequence[Sequence[int]] | None = None,
                   generator: torch.Generator | None = None, on_step: StepCallback | None = None,
                   free_bytes: int | None = None) -> Answers:
    """Sample a batch of prompts (token ids, BOS first) and split what comes back.

    ``tokenizer``: the text tokenizer (or a bundle holding it); nothing here decodes pictures. Raises
    ``ValueError`` before any work when the tokenizer does not belong to the model or the request passes the
    model's limits (``free_bytes``: the device memory there is, when known).
    """
    text_tokenizer = tokenizer.text if isinstance(tokenizer, TokenizerBundle) else tokenizer
    vocab = text_tokenizer.vocab
    text_tokenizer.check_model_vocab(model.config.vocab_size)
    limits.check_generation(model, prompts, vocab, settings, negative_prompts, free_bytes=free_bytes)
    result = generate(model, prompts, vocab, settings, generator=generator, on_step=on_step,
                      negative_prompts=negative_prompts)
    texts, images = [], []
    for row in result.tokens:
        text, blocks = conversation.split_response(row, text_tokenizer)
        texts.append(text)
        images.append(tuple(parse_image_block(b, vocab) for b in blocks))
    return Answers(tuple(tuple(t) for t in result.tokens), tuple(texts), tuple(images), result.forwards,
                   result.steps)


@dataclass(frozen=True)
class Answer:
    """One turn's answer: text (``<|image|>`` where an image stood), the images' codes ``[h, w]``, and the
    conversation with this turn added."""

    text: str
    images: tuple[Tensor, ...]
    conversation: Conversation


def ask(model, bundle: TokenizerBundle, history: Conversation, message: str, images: Sequence[Tensor],
        settings: SamplerConfig, *, generator: torch.Generator | None = None,
        on_step: StepCallback | None = None, free_bytes: int | None = None) -> Answer:
    """Add a user turn (``message`` with its images' codes) and sample the assistant's answer."""
    conv = history.add_user(message, tuple(images))
    ids = conversation.build_prompt_ids(bundle.text, list(conv.turns), list(conv.images))
    answers = sample_answers(model, bundle, [ids], settings, generator=generator, on_step=on_step,
                             free_bytes=free_bytes)
    text, codes = answers.texts[0], answers.images[0]
    return Answer(text, codes, conv.add_assistant(text, codes))


def detect_box(before: Tensor, after: Tensor, threshold: float = 0.25) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` of what the model drew onto an image (detection answers).

    Args:
        before, after: ``[3, H, W]`` in [-1, 1], the same size.
    Returns:
        The box of pixels that changed by more than ``threshold`` (mean over channels), or None.
    """
    if before.shape != after.shape:
        return None
    changed = (after - before).abs().mean(0) > threshold
    if changed.sum() < 4:
        return None
    ys, xs = torch.nonzero(changed, as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
