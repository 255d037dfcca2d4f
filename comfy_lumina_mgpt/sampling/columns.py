"""Which vocabulary columns a decode step computes logits for.

Inside an image body only the VQGAN codes can be sampled (end-of-line and end-of-image are forced by the grid),
so the LM head needs only those rows of its weight: 8192 of 65536 for the official vocabulary. On a CPU with a
small model that head is most of the step; on the 7B it is ~4 % of the weight read. The image rows of the
official tokenizer are one contiguous id range (4..8195), so the sliced weight is a view and costs no memory;
tokenizers with scattered image ids get a gathered copy, made once per model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..vocab import LuminaVocab

Head = Callable[[Tensor], Tensor]


def _contiguous_range(ids: tuple[int, ...]) -> tuple[int, int] | None:
    """``(start, stop)`` when ``ids`` are ``start, start+1, ..., stop-1`` in that order, else None."""
    if not ids:
        return None
    start = ids[0]
    if all(i == start + k for k, i in enumerate(ids)):
        return start, start + len(ids)
    return None


class ImageColumns:
    """The image-code columns of one model's head.

    Attributes:
        ids: ``[n_codes]`` long on the model's device, the token id of column ``c`` (= VQGAN code ``c``).
        head: ``h [..., dim] -> logits [..., n_codes]`` in fp32, computing only those rows of the LM head.
    """

    def __init__(self, lm_head: nn.Module, vocab: LuminaVocab) -> None:
        weight = lm_head.weight
        self.ids = torch.tensor(vocab.code_to_id, dtype=torch.long, device=weight.device)
        span = _contiguous_range(vocab.code_to_id)
        if span is not None and hasattr(lm_head, "narrow_rows"):
            self.head = _module_head(lm_head.narrow_rows(*span))  # a quantized head keeps its own kernel
        elif span is not None:
            self.head = _weight_head(weight[span[0]:span[1]])
        elif isinstance(lm_head, nn.Linear):
            self.head = _weight_head(weight.index_select(0, self.ids))
        else:  # a quantized head without a contiguous range: full logits, then the columns (correct, slower)
            full = _module_head(lm_head)
            ids = self.ids
            self.head = lambda h: full(h).index_select(-1, ids)


def _weight_head(weight: Tensor) -> Head:
    return lambda h: F.linear(h, weight).float()


def _module_head(module: nn.Module) -> Head:
    return lambda h: module(h).float()


def image_columns(model: nn.Module, vocab: LuminaVocab) -> ImageColumns:
    """The ``ImageColumns`` of ``model.lm_head`` for ``vocab``, cached on the model until its head changes."""
    key = (id(model.lm_head), model.lm_head.weight.data_ptr(), model.lm_head.weight.device, vocab.code_to_id)
    cached = getattr(model, "_image_columns", None)
    if cached is None or cached[0] != key:
        cached = (key, ImageColumns(model.lm_head, vocab))
        model._image_columns = cached
    return cached[1]
