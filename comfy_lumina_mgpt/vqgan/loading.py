"""Find, load and save a VQGAN folder.

A folder holds ``vqgan.yaml`` and ``vqgan.safetensors`` (preferred) or ``vqgan.ckpt``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import yaml
from torch import Tensor

from ..atomic import atomic_file
from ..file_checks import check_shapes, safetensors_header
from .config import VQGANConfig
from .model import VQGAN
from .safe_checkpoint import SAFETENSORS_SUFFIX, load_state_dict_file, save_safetensors_atomic

logger = logging.getLogger(__name__)

CONFIG_NAME = "vqgan.yaml"
WEIGHT_NAMES = ("vqgan.safetensors", "vqgan.ckpt")
_MAX_LISTED = 8


def _listing(keys: list[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def check_state_dict(model: VQGAN, state: dict[str, Tensor], source: str) -> None:
    """ValueError naming ``source`` and the keys when ``state`` does not fit ``model``.

    Keys starting with ``loss.`` are ignored.
    """
    expected = {k: v.shape for k, v in model.state_dict().items()}
    got = {k: v for k, v in state.items() if not k.startswith("loss.")}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    misshaped = [f"{k} (file {tuple(got[k].shape)}, config {tuple(expected[k])})"
                 for k in expected if k in got and got[k].shape != expected[k]]
    not_float = [f"{k} ({got[k].dtype})" for k in expected if k in got and not got[k].is_floating_point()]
    problems = []
    if missing:
        problems.append(f"missing tensor(s) {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor(s) {_listing(unexpected)}")
    if misshaped:
        problems.append(f"wrong shape for {_listing(misshaped)}")
    if not_float:
        problems.append(f"non-float tensor(s) {_listing(not_float)}")
    if problems:
        raise ValueError(f"VQGAN weights {source} do not match the config: " + "; ".join(problems)
                         + ". Check that vqgan.yaml belongs to these weights.")


def load_vqgan(config_path: str | Path, weights_path: str | Path,
               device: str | torch.device = "cpu") -> VQGAN:
    """Build a VQGAN from ``vqgan.yaml`` and load its weights (.safetensors or .ckpt, no code executed).

    Returns the model in fp32, in evaluation mode, with ``requires_grad`` off, on ``device``.
    ValueError naming the file and keys when tensors are missing, extra (``loss.*`` is ignored) or
    mis-shaped.
    """
    config = VQGANConfig.from_yaml(config_path)
    with torch.device("meta"):
        model = VQGAN(config)
    if Path(weights_path).suffix.lower() == SAFETENSORS_SUFFIX:  # shapes from the header, before any read
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        check_shapes(weights_path, safetensors_header(weights_path), expected, ("loss.",))
    state = load_state_dict_file(weights_path)
    check_state_dict(model, state, str(weights_path))
    state = {k: v.to(torch.float32) for k, v in state.items() if not k.startswith("loss.")}
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(device=device, dtype=torch.float32)
    model.eval().requires_grad_(False)
    logger.info("loaded VQGAN from %s (%d codes, downsample %d)", weights_path, config.n_embed,
                config.downsample)
    return model


def find_vqgan_files(folder: str | Path) -> tuple[Path, Path]:
    """``(vqgan.yaml, weights)`` in ``folder``; weights: ``vqgan.safetensors``, else ``vqgan.ckpt``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"VQGAN folder {folder} does not exist (expected a folder holding {CONFIG_NAME} and "
                         f"{' or '.join(WEIGHT_NAMES)})")
    config = folder / CONFIG_NAME
    weights = next((folder / n for n in WEIGHT_NAMES if (folder / n).is_file()), None)
    if not config.is_file() or weights is None:
        found = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        shown = ", ".join(found[:20]) + (f" (+{len(found) - 20} more)" if len(found) > 20 else "")
        raise ValueError(f"VQGAN folder {folder} needs {CONFIG_NAME} and {' or '.join(WEIGHT_NAMES)}; found: "
                         f"{shown or 'nothing'}")
    return config, weights


def save_vqgan(model: VQGAN, folder: str | Path) -> tuple[Path, Path]:
    """Write ``vqgan.safetensors`` then ``vqgan.yaml`` into ``folder`` (each atomically).

    Returns ``(yaml_path, weights_path)``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = save_safetensors_atomic(model.state_dict(), folder / WEIGHT_NAMES[0])
    config = folder / CONFIG_NAME
    text = yaml.safe_dump(model.config.to_yaml_dict(), sort_keys=False)
    with atomic_file(config) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return config, weights
