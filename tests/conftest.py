"""Test-wide settings.

The tests run tiny models on a 2-core machine: one intra-op thread is several times faster there than
OpenMP's default (which spins threads that fight each other and any other process on the box).
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
