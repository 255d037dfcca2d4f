"""Host-to-device copies that never make the host wait."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def to_device(values: Sequence[int], device: torch.device) -> Tensor:
    """A long tensor on ``device`` without a host sync (pinned, non-blocking copy on CUDA)."""
    host = torch.tensor(list(values), dtype=torch.long)
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)
