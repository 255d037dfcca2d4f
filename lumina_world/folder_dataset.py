"""Captioned world pictures in the Trainer's folder format (``000000.png`` + ``000000.txt``).

Imports nothing outside ``lumina_world`` (numpy and PIL only): the Example Dataset node loads it inside ComfyUI,
where the pack's packages are reached only by relative imports.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .render import render_image
from .scene import caption, sample_scene

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorldDataset:
    """What was written: ``path`` (the JSONL, or the folder in folder mode) and records per task.

    Path-like: ``open(ds)`` / ``Path(ds)`` give ``path``.
    """

    root: Path
    path: Path
    counts: dict[str, int] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return str(self.path)


def scene_rng(seed: int, index: int, what: str) -> random.Random:
    """The random stream of scene ``index``'s ``what`` for ``seed`` (the same for every writer)."""
    return random.Random(f"lumina-world:{seed}:{index}:{what}")  # noqa: S311  seeded, not a secret


def save_png(image: Image.Image, path: Path) -> None:
    image.save(path, format="PNG", optimize=False)


def write_folder_dataset(out_dir: str | Path, n_scenes: int, seed: int) -> WorldDataset:
    """Text-to-image folder format: ``{i:06d}.png`` with its caption in ``{i:06d}.txt``.

    Scene ``i`` is the same scene ``write_world_dataset`` draws for that seed and index.
    """
    if n_scenes < 1:
        raise ValueError(f"n_scenes must be >= 1, got {n_scenes}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for index in range(n_scenes):
        scene = sample_scene(scene_rng(seed, index, "scene"))
        save_png(render_image(scene), root / f"{index:06d}.png")
        (root / f"{index:06d}.txt").write_text(caption(scene) + "\n", encoding="utf-8", newline="\n")
    logger.info("wrote %d captioned world images to %s", n_scenes, root)
    return WorldDataset(root=root, path=root, counts={"text_to_image": n_scenes})
