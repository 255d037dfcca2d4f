"""Omni-SFT tasks on top of the sampler: one conversation turn in, the model's answer (text + images) out.

A ``Conversation`` carries every earlier turn, images included (as VQ codes), so chat and multi-turn editing
continue where the last answer stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from . import conversation, limits
from .conversation import Conversation
from .pipeline import TokenizerBundle
from .sampling.generate import StepCallback, generate
from .sampling.settings import SamplerConfig
from .tasks import get_task, refuse_placeholder
from .unirep import parse_image_block

# Omni defaults of the official demos (LUMINA_SPEC §4.4): no guidance, image top-k 200, text top-k 5.
OMNI_DEFAULTS = dict(cfg_scale=1.0, image_top_k=200, text_top_k=5)
MAX_PROMPT_CHARS = 1024


@dataclass(frozen=True)
class Answer:
    """What the model said: text (``<|image|>`` where an image stood) and the images' codes ``[h, w]``."""

    text: str
    images: tuple[Tensor, ...]
    conversation: Conversation


def user_message(task: str, prompt: str = "", **fields: object) -> str:
    """The exact user message of a task (official wording where one exists)."""
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt has {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS}")
    refuse_placeholder(prompt)
    spec = get_task(task)
    if "{prompt}" in spec.template and not prompt.strip():
        raise ValueError(f"the {task} task needs a text prompt (the instruction, object or caption)")
    return spec.message(prompt, **fields)


def ask(model, bundle: TokenizerBundle, history: Conversation, message: str, images: Sequence[Tensor],
        settings: SamplerConfig, *, generator: torch.Generator | None = None,
        on_step: StepCallback | None = None) -> Answer:
    """Add a user turn (``message`` with its images' codes) and sample the assistant's answer."""
    conv = history.add_user(message, tuple(images))
    ids = conversation.build_prompt_ids(bundle.text, list(conv.turns), list(conv.images))
    limits.check_generation(model, [ids], bundle.vocab, settings)  # before any cache is allocated
    result = generate(model, [ids], bundle.vocab, settings, generator=generator, on_step=on_step)
    text, blocks = conversation.split_response(result.tokens[0], bundle.text)
    codes = tuple(parse_image_block(b, bundle.vocab) for b in blocks)
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
