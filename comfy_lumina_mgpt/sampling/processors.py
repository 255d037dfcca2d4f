"""Logit processors: pure functions of ``scores [B, V]`` that return new tensors."""

from __future__ import annotations

import torch
from torch import Tensor


def guide(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance ``uncond + scale * (cond - uncond)``; all ``[B, V]``."""
    return uncond + scale * (cond - uncond)


def top_k_mask(scores: Tensor, k: Tensor | int) -> Tensor:
    """Keep, per row, the logits >= the k-th largest (ties at the threshold kept); others -> -inf.

    Args:
        scores: ``[B, V]``.
        k: an int or per-row ``[B]`` long tensor (each >= 1).
    """
    vocab = scores.shape[-1]
    if isinstance(k, int):
        kth = torch.topk(scores, min(k, vocab), dim=-1).values[..., -1:]
    else:
        k = k.clamp(1, vocab)
        sorted_scores = torch.sort(scores, dim=-1, descending=True).values
        kth = sorted_scores.gather(-1, (k - 1)[:, None])
    return scores.masked_fill(scores < kth, float("-inf"))


def top_p_mask(scores: Tensor, p: Tensor) -> Tensor:
    """Nucleus filter: keep the smallest set of top tokens whose probability reaches ``p [B]``."""
    sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
    probs = sorted_scores.softmax(-1)
    # a token is dropped when the mass strictly before it already reaches p (the top token always stays)
    drop_sorted = (probs.cumsum(-1) - probs) >= p[:, None]
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


def probabilities(scores: Tensor, temperature: Tensor | float) -> Tensor:
    """``softmax(scores / temperature)`` over the last dim; ``temperature`` a float or one per row ``[...]``."""
    if isinstance(temperature, Tensor):
        temperature = temperature[..., None]
    return (scores / temperature).softmax(-1)


def draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index per row from ``probs [..., V]`` -> ``[...]``.

    Drawn as ``argmax(p / E)`` with ``E ~ Exp(1)`` per entry, which is how ``torch.multinomial`` draws one
    sample (the same random numbers give the same token), minus its device-to-host validity check, so a decode
    step on a GPU never waits for the host.
    """
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / noise).argmax(-1)


def sample(scores: Tensor, temperature: Tensor | float, generator: torch.Generator | None) -> Tensor:
    """Draw one token per row from ``softmax(scores / temperature)``; ``[..., V] -> [...]``."""
    return draw(probabilities(scores, temperature), generator)
