"""One matmul for several projections of the same input (q/k/v; gate/up) at inference.

A decode step reads every weight once whatever the layout, but three small matmuls cost three kernel launches
(and on a CPU three passes over the activations) where one over the stacked weights does. The checkpoint's
parameters stay what they are (``q_proj.weight`` ...): ``stack_`` only makes them adjacent row blocks of one
storage, and ``stacked_weight`` finds that stacked matrix again without keeping any reference of its own, so
ComfyUI can still move or offload the parameters one by one (a moved parameter gets its own storage; the next
pass stacks again). Training, LoRA-wrapped and quantized layers run their own modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def stacked_weight(linears: Sequence[nn.Linear]) -> Tensor | None:
    """``[sum(out), in]``: the weights of ``linears`` as one matrix when they are consecutive row blocks of one
    storage (as ``stack_`` leaves them), else None."""
    first = linears[0].weight
    storage = first.untyped_storage()
    offset = first.storage_offset()
    cols = first.shape[1]
    for m in linears:
        w = m.weight
        if (w.untyped_storage().data_ptr() != storage.data_ptr() or w.storage_offset() != offset
                or w.shape[1] != cols or w.stride() != (cols, 1)):
            return None
        offset += w.numel()
    rows = sum(m.weight.shape[0] for m in linears)
    return first.new_empty(0).set_(storage, first.storage_offset(), (rows, cols), (cols, 1))


@torch.no_grad()
def stack_(linears: Sequence[nn.Linear]) -> Tensor:
    """Copy the weights of ``linears`` into one ``[sum(out), in]`` tensor and make each parameter a view of
    its rows (values and names unchanged); returns the stacked tensor."""
    stacked = torch.cat([m.weight.data for m in linears])
    start = 0
    for m in linears:
        rows = m.weight.shape[0]
        m.weight.data = stacked[start:start + rows]
        start += rows
    return stacked


def project(x: Tensor, linears: Sequence[nn.Module]) -> list[Tensor]:
    """``[m(x) for m in linears]`` for bias-free layers, by one matmul when they are plain ``nn.Linear``, no
    gradient is being recorded and no compiler is tracing."""
    if (torch.is_grad_enabled() or torch.compiler.is_compiling()  # a compiler fuses on its own
            or any(type(m) is not nn.Linear or m.bias is not None for m in linears)):
        return [m(x) for m in linears]
    weight = stacked_weight(linears)
    if weight is None:
        weight = stack_(linears)
    return list(F.linear(x, weight).split([m.out_features for m in linears], dim=-1))
