"""Conversions between ComfyUI values and the engine's, plus folder and device helpers.

ComfyUI ``IMAGE`` is ``[B, H, W, C]`` float in 0..1; the engine uses ``[B, 3, H, W]`` in [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

import comfy.model_management as mm
import folder_paths

from ..comfy_lumina_mgpt.file_checks import confined_child

FOLDER = "lumina_mgpt"
VQ_FOLDER = "vq"
LORA_FOLDER = "lumina_mgpt_lora"
PACK_MODELS = Path(__file__).resolve().parents[1] / "models"  # the bundled model ships here


def register_folders() -> None:
    """Register ``models/lumina_mgpt``, ``models/vq`` and ``models/lumina_mgpt_lora`` (extendable in
    extra_model_paths.yaml), then the pack's own ``models/`` folders so the bundled model shows up on a fresh
    install."""
    for name in (FOLDER, VQ_FOLDER, LORA_FOLDER):
        for path, default in ((os.path.join(folder_paths.models_dir, name), True), (str(PACK_MODELS / name), False)):
            if path not in folder_paths.folder_names_and_paths.get(name, ([], set()))[0]:
                folder_paths.add_model_folder_path(name, path, is_default=default)


def _roots(name: str) -> list[Path]:
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(name)]
    except KeyError:
        return []


def list_subfolders(name: str, wanted) -> list[str]:
    """Names (relative, '/'-separated) of sub-folders of model folder ``name`` for which ``wanted(path)``."""
    found = set()
    for root in _roots(name):
        if not root.is_dir():
            continue
        seen: set[str] = set()
        # Symlinked model folders are followed (people keep big checkpoints on another disk); each real folder
        # is walked once, so a link cycle cannot loop.
        for dirpath, dirnames, _ in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            path = Path(dirpath)
            if path != root and wanted(path):
                found.add(path.relative_to(root).as_posix())
    return sorted(found)


def resolve_subfolder(name: str, rel: str) -> Path:
    """Absolute path of a listed sub-folder; ValueError naming the searched folders if absent.

    ``rel`` must stay inside a root by its own spelling (no absolute path, no ``..``); links are not resolved
    for that test, so a model folder that is a symlink placed there by the owner works like any other.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise ValueError(f"no model folder chosen for {name}; pick one from the list")
    for root in _roots(name):
        candidate = confined_child(root, rel, f"model folder under {root}")
        if candidate.is_dir():
            return candidate
    roots = ", ".join(str(r) for r in _roots(name)) or f"models/{name}"
    raise ValueError(f"model folder {rel!r} was not found under {roots}; put it there or refresh the page")


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weight dtype for a loader choice; ``auto`` is bf16/fp16 on accelerators and fp32 on CPU."""
    if name == "auto":
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if mm.should_use_bf16(device) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def image_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """ComfyUI ``IMAGE [B, H, W, C]`` 0..1 -> RGB PIL images (alpha, if any, kept as RGBA)."""
    # In place on clamp's copy: one float copy instead of four (a 10000x10000 input took 6 s, now 1.4 s).
    arrays = images.detach().cpu().float().clamp(0, 1).mul_(255.0).round_().to(torch.uint8).numpy()
    return [Image.fromarray(a, "RGBA" if a.shape[-1] == 4 else "RGB") for a in arrays]


def engine_to_image(images: torch.Tensor) -> torch.Tensor:
    """Engine ``[B, 3, H, W]`` in [-1, 1] -> ComfyUI ``IMAGE [B, H, W, 3]`` 0..1 on the CPU.

    Values are quantised to 8 bits with truncation, as the official pipeline saves them.
    """
    x = ((images.detach().float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)
    return (x.permute(0, 2, 3, 1).float() / 255.0).cpu()


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``[1, H, W, 3]`` images into one batch; images of another size are resized to the first."""
    if not images:
        raise ValueError("the tokens contain no complete image; raise max_new_tokens or check the prompt")
    h, w = images[0].shape[1:3]
    out = []
    for img in images:
        if img.shape[1:3] != (h, w):
            img = torch.nn.functional.interpolate(img.permute(0, 3, 1, 2), size=(h, w), mode="bicubic")
            img = img.clamp(0, 1).permute(0, 2, 3, 1)
        out.append(img)
    return torch.cat(out, dim=0)
