"""Autoregressive generation: prefill, then one batched decode step per token.

Guidance runs in the same forward as the conditional rows: the model batch is ``[cond rows; uncond rows]``
(2B rows) and each unconditional row holds only ``[<racm3:break>, H, W, codes...]`` of the image its
conditional row is drawing, at positions 0, 1, 2, ... (per-row positions are what the static cache supports).
Before an image starts, an unconditional row writes a throw-away entry at position 0, which the image's
``<racm3:break>`` then overwrites. With ``cfg_scale == 1`` the unconditional rows are not run at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.chameleon import LuminaMGPT
from ..vocab import LuminaVocab
from .grid import GridState, Phase
from .processors import guide, sample, top_k_mask, top_p_mask
from .settings import SamplerConfig

logger = logging.getLogger(__name__)

# on_step(step, total, tokens): tokens[b] is everything row b produced so far. Raise to cancel.
StepCallback = Callable[[int, int, list[list[int]]], None]


@dataclass
class GenerationResult:
    """New tokens per batch row (the closing ``<reserved08706>`` removed) and the prompt lengths."""

    tokens: list[list[int]]
    prompt_lengths: list[int]


def _mask_table(vocab: LuminaVocab, vocab_size: int, device: torch.device) -> Tensor:
    """``[3, V]`` bool: the tokens allowed for each ``Allowed`` kind."""
    image = vocab.image_id_mask(vocab_size).clone()
    size = vocab.size_id_mask(vocab_size).clone()
    size[vocab.size_token(0)] = False  # a zero-sized image is never valid
    text = ~image
    text[[vocab.eol_id, vocab.eoi_id]] = False
    table = torch.stack([text, size, image])
    return table.to(device)


@torch.no_grad()
def prefill(model: LuminaMGPT, prompts: Sequence[Sequence[int]], device: torch.device, first_row: int = 0
            ) -> Tensor:
    """Run right-padded prompts through cache rows ``first_row..first_row+B-1``; next-token logits ``[B, V]``."""
    lengths = [len(p) for p in prompts]
    width = max(lengths)
    tokens = torch.zeros(len(prompts), width, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    # Padding is written past each prompt's end; decoding overwrites those slots before they are visible.
    positions = torch.arange(width, device=device).expand(len(prompts), -1)
    rows = torch.arange(first_row, first_row + len(prompts), device=device)
    last = torch.tensor(lengths, device=device) - 1
    return model.step(tokens, positions, cache_rows=rows, logits_index=last)


@torch.no_grad()
def generate(model: LuminaMGPT, prompts: Sequence[Sequence[int]], vocab: LuminaVocab, cfg: SamplerConfig,
             *, generator: torch.Generator | None = None, on_step: StepCallback | None = None,
             negative_prompts: Sequence[Sequence[int]] | None = None, keep_cache: bool = False
             ) -> GenerationResult:
    """Sample continuations of a batch of prompts.

    Args:
        model: the decoder (any device/dtype; inputs follow its parameters).
        prompts: B token-id lists (BOS included), e.g. from ``conversation.build_prompt_ids``.
        vocab: special-token ids of the model's tokenizer.
        cfg: sampling settings.
        generator: the source of randomness (same seed -> same tokens); on the model's device.
        on_step: called after every token with ``(step, total, tokens_so_far)``; raising cancels.
        negative_prompts: B token lists that replace the empty guidance context (each image's guidance
            sequence is then ``negative + [<racm3:break>, H, W, ...]``).
        keep_cache: keep the KV cache allocated for the next call (otherwise it is freed).
    Returns:
        ``GenerationResult`` with the new tokens of each row.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (the BOS)")
    device = model.lm_head.weight.device
    bsz = len(prompts)
    guided = cfg.guided
    rows = 2 * bsz if guided else bsz
    negatives = [list(n) for n in negative_prompts] if (guided and negative_prompts) else None
    if negatives is not None and len(negatives) != bsz:
        raise ValueError(f"got {len(negatives)} negative prompts for {bsz} prompts")
    max_prompt = max(len(p) for p in [*prompts, *(negatives or [])])
    capacity = max_prompt + cfg.max_new_tokens + 1
    if capacity > model.config.max_seq_len:
        logger.info("sequence may reach %d tokens, past max_position_embeddings=%d (RoPE has no hard limit)",
                    capacity, model.config.max_seq_len)
    masks = _mask_table(vocab, model.config.vocab_size, device)
    k_img, k_txt = cfg.image_top_k, cfg.text_top_k
    bases = [len(n) for n in negatives] if negatives else [0] * bsz
    states = [GridState(vocab, cfg.force_size, cfg.force_images, base) for base in bases]
    out: list[list[int]] = [[] for _ in range(bsz)]
    pos_c = [len(p) for p in prompts]
    try:
        model.setup_caches(rows, capacity)
        logits_c = prefill(model, prompts, device)
        if negatives:
            prefill(model, negatives, device, first_row=bsz)
        logits_u = torch.zeros_like(logits_c)
        for step in range(1, cfg.max_new_tokens + 1):
            cons = [s.constraint() for s in states]
            scores = logits_c
            if guided:
                use = torch.tensor([c.guided for c in cons], device=device)
                if bool(use.any()):
                    scores = torch.where(use[:, None], guide(logits_c, logits_u, cfg.cfg_scale), logits_c)
            allowed = masks[torch.tensor([int(c.allowed) for c in cons], device=device)]
            scores = scores.masked_fill(~allowed, float("-inf"))
            img_rows = [c.image_params for c in cons]
            is_img = torch.tensor(img_rows, device=device)
            if all(img_rows) or not any(img_rows) or k_img == k_txt:
                scores = top_k_mask(scores, k_img if img_rows[0] else k_txt)  # one k: a cheap topk
            else:
                scores = top_k_mask(scores, torch.where(is_img, k_img, k_txt))  # per-row k: a full sort
            top_p = torch.where(is_img, cfg.image_top_p, cfg.text_top_p).to(scores.dtype)
            if bool((top_p < 1.0).any()):
                scores = top_p_mask(scores, top_p)
            temperature = torch.where(is_img, cfg.image_temperature, cfg.text_temperature).to(scores.dtype)
            sampled = sample(scores, temperature, generator).tolist()
            tokens = [c.forced if c.forced is not None else t for c, t in zip(cons, sampled)]

            feed_pos_c, feed_pos_u = [], []
            for i, (state, tok) in enumerate(zip(states, tokens)):
                was_done = state.phase == Phase.DONE
                state.advance(tok)
                if not was_done:
                    out[i].append(tok)
                    pos_c[i] += 1
                feed_pos_c.append(pos_c[i] - 1)
                feed_pos_u.append(state.uncond_pos)
            if on_step is not None:
                on_step(step, _expected_total(step, states, cfg.max_new_tokens), out)
            if all(s.phase == Phase.DONE for s in states):
                break
            feed = torch.tensor(tokens, device=device)
            positions = torch.tensor(feed_pos_c + (feed_pos_u if guided else []), device=device)
            logits = model.step(feed.repeat(2 if guided else 1)[:, None], positions[:, None])[:, -1]
            logits_c, logits_u = (logits[:bsz], logits[bsz:]) if guided else (logits, logits_c)
    finally:
        if not keep_cache:
            model.clear_caches()
    sep = vocab.sep_id
    return GenerationResult([t[:-1] if t and t[-1] == sep else t for t in out], [len(p) for p in prompts])


def _expected_total(step: int, states: list[GridState], cap: int) -> int:
    """Best guess of the total step count for progress bars: exact once every image's size is known."""
    hints = [s.remaining_hint() for s in states if s.phase != Phase.DONE]
    if not hints:
        return step
    if any(h is None for h in hints):
        return cap
    return min(cap, step + max(h for h in hints if h is not None))
