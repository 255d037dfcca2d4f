"""Chameleon's VQGAN image tokenizer: config, model, safe checkpoint reading, folder loading/saving."""

from __future__ import annotations

from .config import VQGANConfig
from .loading import check_state_dict, find_vqgan_files, load_vqgan, save_vqgan
from .model import VQGAN
from .safe_checkpoint import convert_ckpt_to_safetensors, load_state_dict_file, save_safetensors_atomic

__all__ = [
    "VQGAN",
    "VQGANConfig",
    "check_state_dict",
    "convert_ckpt_to_safetensors",
    "find_vqgan_files",
    "load_state_dict_file",
    "load_vqgan",
    "save_safetensors_atomic",
    "save_vqgan",
]
