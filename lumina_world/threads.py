"""``torch_threads(n)``: torch's intra-op thread count for a block, restored afterwards (the world's training and
benchmark set it for speed; a caller in the same process keeps its own setting)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
