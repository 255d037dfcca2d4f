"""The pack's model folders in ComfyUI: registration (``models/lumina_mgpt``, ``models/vq``,
``models/lumina_mgpt_lora`` and the pack's own ``models/``), listing for the loaders' dropdowns, and resolving a
choice back to a path that stays inside its folder."""

from __future__ import annotations

import os
from pathlib import Path

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
