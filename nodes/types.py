"""The pack's socket types, each defined once, and the small objects that travel through them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from comfy_api.latest import io

from ..comfy_lumina_mgpt.sizes import ModelLayout

LuminaModel = io.Custom("LUMINA_MGPT_MODEL")
LuminaTokenizer = io.Custom("LUMINA_MGPT_TOKENIZER")
LuminaPrompt = io.Custom("LUMINA_MGPT_PROMPT")
LuminaTokens = io.Custom("LUMINA_MGPT_TOKENS")
LuminaConversation = io.Custom("LUMINA_MGPT_CONVERSATION")


@dataclass
class LoadedModel:
    """A loaded decoder wrapped for ComfyUI's model management (``patcher.model`` is the ``LuminaMGPT``)."""

    patcher: Any
    name: str
    dtype_name: str
    layout: ModelLayout  # which sizes it draws (with the tokenizer's patch): see nodes/sizes.py


@dataclass(frozen=True)
class SizedPrompt:
    """A prompt that follows the model it is sampled with. The sampler resolves ``resolution`` (auto / an
    aspect ratio / custom, at ``scale``) against the model's sizes and calls ``build(width, height, fit)`` for
    the ``PromptTokens``; ``fit`` is the model's list of sizes for input pictures (None: their own size). A
    prompt that is not ``sized`` (a task answering about a picture) gets width = height = 0. Travels through
    the ``LUMINA_MGPT_PROMPT`` socket like ready tokens."""

    build: Callable[[int, int, list[tuple[int, int]] | None], Any]
    resolution: str
    scale: float
    custom_size: str
    sized: bool = True
