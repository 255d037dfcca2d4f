"""The training objective and the condition dropout that keeps classifier-free guidance working.

``lm_loss`` is the official one (LUMINA_SPEC §6): next-token cross-entropy over supervised positions in fp32,
plus ``z_loss_weight * mean(logsumexp(logits) ** 2)`` over the same positions, which keeps the softmax
normaliser near zero (PaLM's z-loss).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..vocab import LuminaVocab

IGNORE_INDEX = -100


def lm_loss(logits: Tensor, labels: Tensor, z_loss_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """Shifted next-token loss.

    Position ``t`` of ``logits`` predicts ``labels[t + 1]``; targets equal to -100 are ignored.

    Args:
        logits: ``[B, T, V]`` (computed in fp32 whatever their dtype).
        labels: ``[B, T]`` token ids, -100 where nothing is supervised (BOS, human turns, padding).
        z_loss_weight: weight of the z-loss term.
    Returns:
        ``(total, ce, z)``: scalars; ``total = ce + z_loss_weight * z``. With no supervised position all three
        are zeros that still carry a graph (so a backward pass is harmless).
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {list(logits.shape)} and labels {list(labels.shape)} disagree on [B, T]")
    pred = logits[:, :-1].float()  # a view when the logits are fp32 already (the model returns fp32)
    target = labels[:, 1:]
    valid = target != IGNORE_INDEX
    count = valid.sum()
    if int(count) == 0:
        zero = pred.sum() * 0.0
        return zero, zero, zero
    # One logsumexp serves both terms; no [N, V] copy of the valid rows and no separate log_softmax (the
    # logits of a 4k-token sequence over a 65k vocabulary are a gigabyte).
    lse = torch.logsumexp(pred, dim=-1)  # [B, T-1]
    picked = pred.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    mask = valid.to(lse.dtype)
    ce = ((lse - picked) * mask).sum() / count
    z = (lse.pow(2) * mask).sum() / count
    return ce + z_loss_weight * z, ce, z


def drop_condition(ids: Sequence[int], labels: Sequence[int], vocab: LuminaVocab, prob: float,
                   rng: random.Random) -> tuple[list[int], list[int]]:
    """With probability ``prob``, cut an example down to its first supervised image block.

    The sampler's unconditional (guidance) context is ``[<racm3:break>, H, W, codes...]`` starting at position
    0 with no BOS and no text (LUMINA_SPEC §4.2), so the dropped example is exactly that: the tokens from the
    first ``<racm3:break>`` whose label is supervised (an assistant image) through its ``<eoss>``, labels
    kept. No BOS is prepended, so the model learns the unconditional distribution at the positions where
    guidance queries it. Examples without an assistant image are returned unchanged. One ``rng.random()`` draw
    is made per call whatever the outcome, so later draws do not depend on the data.

    Args:
        ids, labels: one example (equal lengths; labels -100 where unsupervised).
        vocab: gives ``boi_id`` / ``eoi_id``.
        prob: drop probability in [0, 1].
        rng: the source of the decision.
    Returns:
        ``(ids, labels)`` as new lists.
    """
    if len(ids) != len(labels):
        raise ValueError(f"ids ({len(ids)}) and labels ({len(labels)}) differ in length")
    draw = rng.random()
    ids, labels = list(ids), list(labels)
    if draw >= prob:
        return ids, labels
    start = next((i for i, (tok, lab) in enumerate(zip(ids, labels))
                  if tok == vocab.boi_id and lab != IGNORE_INDEX), None)
    if start is None:
        return ids, labels
    try:
        end = ids.index(vocab.eoi_id, start) + 1
    except ValueError:
        end = len(ids)  # a truncated image: keep what there is
    return ids[start:end], labels[start:end]
