"""The bundled example pictures as a node, so that the shipped image workflows run on the first click without
copying anything into ComfyUI's input folder (the node reads the pack's files), and a small example dataset
for the Trainer, written into ComfyUI's temp folder when the graph runs (never at import)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image

from ..comfy_lumina_mgpt.atomic import atomic_folder
from ..lumina_world.folder_dataset import write_folder_dataset
from .validation import CheckedNode

EXAMPLES = Path(__file__).resolve().parents[1] / "workflows" / "inputs"


def example_names() -> list[str]:
    """File names of the bundled example pictures (``workflows/inputs/*.png``)."""
    return sorted(p.name for p in EXAMPLES.glob("*.png"))


def load_example(name: str) -> torch.Tensor:
    """The example picture ``name`` as IMAGE ``[1, H, W, 3]`` in 0..1; ValueError for a name not bundled."""
    if name not in example_names():
        raise ValueError(f"{name!r} is not a bundled example picture; choose one of {', '.join(example_names())}")
    with Image.open(EXAMPLES / name) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels)[None]


class LuminaMGPTExampleImage(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTExampleImage", display_name="Lumina-mGPT Example Image", category="Lumina-mGPT/image",
            description="A picture bundled with the pack (a scene of the world the bundled model knows), for "
                        "trying the image workflows. Use ComfyUI's Load Image for your own pictures.",
            inputs=[io.Combo.Input("example", options=example_names(), tooltip="Bundled example picture.")],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, example: str) -> io.NodeOutput:
        return io.NodeOutput(load_example(example))


def example_dataset(root: Path, scenes: int, seed: int) -> Path:
    """The folder of ``scenes`` captioned world pictures for ``seed`` under ``root``, written once (atomically)
    and reused: ``{i:06d}.png`` with its caption in ``{i:06d}.txt``."""
    folder = root / f"world-{scenes}-seed{seed}"
    if not (folder / f"{scenes - 1:06d}.txt").is_file():
        with atomic_folder(folder) as tmp:
            write_folder_dataset(tmp, n_scenes=scenes, seed=seed)
    return folder


class LuminaMGPTExampleDataset(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTExampleDataset", display_name="Lumina-mGPT Example Dataset",
            category="Lumina-mGPT/training",
            description="Writes a small folder of captioned pictures of the bundled model's world (in ComfyUI's "
                        "temp folder, when the graph runs) and gives its path, for trying the Trainer.",
            inputs=[io.Int.Input("scenes", default=16, min=1, max=2000, tooltip="Number of captioned pictures."),
                    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, tooltip="Which scenes are drawn.")],
            outputs=[io.String.Output(display_name="dataset", tooltip="Folder path, for the Trainer's 'dataset'.")],
        )

    @classmethod
    def execute(cls, scenes: int, seed: int) -> io.NodeOutput:
        import folder_paths

        root = Path(folder_paths.get_temp_directory()) / "lumina_mgpt_example_datasets"
        return io.NodeOutput(str(example_dataset(root, scenes, seed)))
