"""The pack's socket types, each defined once, and the small objects that travel through them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comfy_api.latest import io

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
