"""Which vocabulary columns a decode step computes logits for.

Inside an image body only the VQGAN codes can be sampled (end-of-line and end-of-image are forced by the grid),
so the LM head needs only those rows of its weight: 8192 of 65536 for the official vocabulary. On a CPU with a
small model that head is most of the step; on the 7B it is ~4 % of the weight read. The image ids of the
official tokenizer fill one contiguous range (4..8195) but not in code order (code ``c`` is not id ``4 + c``), so
the head multiplies by a view of that row range (no copy, and a quantized head keeps its own kernel) and puts
the 8192 logits in code order afterwards. Tokenizers whose image ids are scattered get a gathered copy of the
rows, made once per model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..vocab import LuminaVocab

Head = Callable[[Tensor], Tensor]


def _id_span(ids: tuple[int, ...]) -> tuple[int, int] | None:
    """``(start, stop)`` when ``ids`` hold each of ``start..stop-1`` once, in any order, else None."""
    if not ids:
        return None
    start = min(ids)
    if len(set(ids)) == len(ids) and max(ids) == start + len(ids) - 1:
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
        span = _id_span(vocab.code_to_id)
        if span is not None:
            start, stop = span
            if hasattr(lm_head, "narrow_rows"):
                rows = _module_head(lm_head.narrow_rows(start, stop))  # a quantized head keeps its own kernel
            else:
                rows = _weight_head(weight[start:stop])
            if list(vocab.code_to_id) == list(range(start, stop)):
                self.head = rows
            else:
                order = self.ids - start  # column c of the result is row code_to_id[c] of the head
                self.head = lambda h: _columns(rows(h), order)
        elif isinstance(lm_head, nn.Linear):
            self.head = _weight_head(weight.index_select(0, self.ids))
        else:  # a quantized head with scattered image ids: full logits, then the columns (correct, slower)
            full = _module_head(lm_head)
            ids = self.ids
            self.head = lambda h: _columns(full(h), ids)


def _columns(logits: Tensor, index: Tensor) -> Tensor:
    """``logits[..., index]``; ``gather`` because ``index_select`` on the last dimension is ~30x slower on CPUs."""
    return logits.gather(-1, index.expand(*logits.shape[:-1], index.numel()))


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
