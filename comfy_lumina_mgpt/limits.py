"""Bounds on a request, checked before any memory is allocated for it.

The nodes, ``codec``, ``answers`` and the CLI call these before ``generate()`` or a VQ encode, so a request the
model or the machine cannot hold becomes a ``ValueError`` naming the limit and what to change, instead of minutes
of work, a killed server or an out-of-memory error halfway:

* ``check_generation``: the prompt fits the model's context (``max_position_embeddings``), forced image sizes
  have size tokens, and the KV cache plus the prefill's attention fit in the device's free memory.
* ``check_target_size``: a crop-list target (``512``/``768``/``1024``) has size tokens for its square side.
* ``capped_native_size``: ``native`` input sizes are scaled down to the model's largest grid.

``max_new_tokens`` may run past ``max_position_embeddings`` (RoPE has no hard limit and the answer usually ends
well before the cap), but its cache must fit in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import torch

from .config import ModelConfig
from .sampling.generate import new_tokens_budget
from .sampling.settings import SamplerConfig
from .vocab import LuminaVocab

logger = logging.getLogger(__name__)

CheckCancel = Callable[[], None]  # raises to stop a long loop (ComfyUI: throw_exception_if_processing_interrupted)
MEMORY_HEADROOM = 0.8  # a request may use at most this share of the free memory (activations, fragmentation)
GIB = 1024**3


def available_bytes(device: torch.device | str) -> int | None:
    """Free memory on ``device`` now: CUDA free plus what torch holds unused; host ``MemAvailable``; None when
    unknown (no check is made then)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


def generation_bytes(cfg: ModelConfig, batch: int, guided: bool, prompt_len: int, max_new_tokens: int,
                     dtype_bytes: int) -> int:
    """Bytes ``generate`` allocates for a request: the static KV cache (``2 x layers x rows x kv_heads x
    capacity x head_dim``) and the prefill's attention scores and mask (``batch x heads x T x T``)."""
    rows = 2 * batch if guided else batch
    capacity = prompt_len + max_new_tokens + 1
    kv = 2 * cfg.n_layers * rows * cfg.n_kv_heads * capacity * cfg.head_dim * dtype_bytes
    prefill = batch * prompt_len * prompt_len * (cfg.n_heads * 4 + 1)
    return kv + prefill


def check_generation(model: torch.nn.Module, prompts: Sequence[Sequence[int]], vocab: LuminaVocab,
                     settings: SamplerConfig, negative_prompts: Sequence[Sequence[int]] | None = None,
                     free_bytes: int | None = None) -> None:
    """Refuse a generation request the model or the device cannot hold, before any cache is allocated.

    Args:
        model: the decoder (its ``config`` and parameters' device/dtype are read, nothing is run).
        prompts, negative_prompts: token-id lists as ``generate`` takes them.
        vocab: the tokenizer's ids (for the largest size token).
        settings: the sampler settings (batch rows, guidance, ``max_new_tokens``, ``force_size``).
        free_bytes: free memory of the model's device (default: ``available_bytes``).
    Raises:
        ValueError: naming the limit and what to change.
    """
    cfg: ModelConfig = model.config
    if not prompts:
        raise ValueError("there is no prompt to sample from")
    longest = max(len(p) for p in [*prompts, *(negative_prompts or [])])
    if longest > cfg.max_seq_len:
        raise ValueError(f"the prompt is {longest} tokens but the model's context holds {cfg.max_seq_len} "
                         f"(max_position_embeddings in its config.json); shorten the text or the conversation")
    if settings.force_size is not None and max(settings.force_size) > vocab.max_grid:
        h, w = settings.force_size
        raise ValueError(f"the requested image is a {h}x{w} grid of size tokens but this tokenizer has size "
                         f"tokens up to {vocab.max_grid}; choose a smaller size")
    param = next(model.parameters())
    new_tokens = new_tokens_budget(settings) + settings.jacobi_window  # what generate sizes its cache for
    need = generation_bytes(cfg, len(prompts), settings.guided, longest, new_tokens, param.element_size())
    free = available_bytes(param.device) if free_bytes is None else free_bytes
    if free is not None and need > MEMORY_HEADROOM * free:
        rows = len(prompts) * (2 if settings.guided else 1)
        raise ValueError(f"this request needs about {need / GIB:.2f} GiB for its KV cache ({rows} rows x "
                         f"{longest + new_tokens + 1} positions) but {free / GIB:.2f} GiB are free on "
                         f"{param.device}; lower max_new_tokens or batch_size, or set cfg to 1.0 (no guidance "
                         f"rows)")


def max_side(vocab: LuminaVocab, patch: int) -> int:
    """The largest image side in pixels this tokenizer's size tokens can describe."""
    return vocab.max_grid * patch


def check_target_size(target: int, patch: int, vocab: LuminaVocab) -> None:
    """Refuse a crop-list target whose square side has no size token (or is below one patch)."""
    if not isinstance(target, int) or isinstance(target, bool):
        raise ValueError(f"target size must be a whole number of pixels; got {target!r}")
    if target < patch or target // patch > vocab.max_grid:
        raise ValueError(f"target size {target} is outside what this model can draw: {patch} to "
                         f"{max_side(vocab, patch)} px (its size tokens reach {vocab.max_grid} steps of {patch} "
                         f"px); choose a target in that range or 'native'")


def capped_native_size(width: int, height: int, patch: int, vocab: LuminaVocab) -> tuple[int, int]:
    """An image's own size on the patch grid ``(W, H)``, scaled down (aspect kept) so no side passes the model's
    largest grid; each side rounded to a multiple of ``patch``, at least one patch."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive; got {width}x{height}")
    limit = max_side(vocab, patch)
    scale = min(1.0, limit / max(width, height))
    w, h = width * scale, height * scale
    return (min(limit, max(patch, round(w / patch) * patch)), min(limit, max(patch, round(h / patch) * patch)))
