"""Finetuning Lumina-mGPT: LoRA or full, one device or several (accelerate/FSDP).

``train(model, dataset, cfg)`` is the whole loop (``loop.py``); ``data.prepare_dataset`` turns a captioned
image folder or the official conversation JSON into tokenised examples; ``lora`` saves, loads and merges
adapters; ``checkpoint`` writes resumable ``step-*`` folders. peft and accelerate are imported only when used.
"""

from __future__ import annotations

from .config import LoraSettings, TrainConfig
from .data import TokenDataset, prepare_dataset
from .loop import TrainResult, lr_at, train
from .objective import drop_condition, lm_loss

__all__ = ["LoraSettings", "TrainConfig", "TokenDataset", "TrainResult", "drop_condition", "lm_loss", "lr_at",
           "prepare_dataset", "train"]
