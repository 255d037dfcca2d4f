"""Write the synthetic world as training data.

``write_world_dataset`` writes PNGs and one JSONL of the official conversation format (LUMINA_SPEC §6): one
record per line, ``{"conversations": [{"from": "human", ...}, {"from": "gpt", ...}], "image": [paths],
"task": name, "scene_id": i}``, image paths relative to the JSONL's folder, one ``<|image|>`` per image in
the order of ``image``. User messages come from ``tasks.py``; image answers are ``<|image|>`` (multiview: one
per view, back to back). A ``scenes.jsonl`` next to it holds every scene's ground truth for evaluation.

``folder_dataset.write_folder_dataset`` writes the text-to-image-only folder format.

Everything is a function of ``(seed, scene index, task)``: the same arguments write the same bytes, and
choosing fewer tasks does not change the records of the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from comfy_lumina_mgpt.tasks import IMAGE_PLACEHOLDER, get_task
from .render import (
    CONDITION_KINDS,
    MULTIVIEW_SIZES,
    detection_box,
    render_condition,
    render_detection,
    render_image,
    render_multiview,
)
from .folder_dataset import WorldDataset, save_png, scene_rng
from .scene import Scene, caption, edit_scene, sample_scene, vqa_pairs

logger = logging.getLogger(__name__)

WORLD_TASKS: tuple[str, ...] = ("text_to_image", "segmentation", "depth", "normals", "pose", "detection",
                                "editing", "condition_to_image", "multiview", "caption", "vqa")
DENSE_TASKS: tuple[str, ...] = ("segmentation", "depth", "normals", "pose")
MULTIVIEW_VIEWS = 4
JSONL_NAME = "world.jsonl"
SCENES_NAME = "scenes.jsonl"


@dataclass
class WorldExample:
    """One single-turn example: user message, answer, and the scene's image names in placeholder order."""

    task: str
    human: str
    gpt: str
    images: list[str]


def _check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    bad = [t for t in tasks if t not in WORLD_TASKS]
    if bad or not tasks:
        raise ValueError(f"Unknown or no world tasks {bad}; choose from {list(WORLD_TASKS)}")
    return tuple(t for t in WORLD_TASKS if t in tasks)


def scene_examples(scene: Scene, seed: int, index: int, tasks: Sequence[str] = WORLD_TASKS,
                   views: int = MULTIVIEW_VIEWS) -> tuple[list[WorldExample], dict[str, Image.Image], dict]:
    """The examples of one scene: ``(examples, images by name, ground truth)``."""
    images: dict[str, Image.Image] = {"scene": render_image(scene)}
    truth: dict = {"scene_id": index, "scene": scene.to_dict(), "caption": caption(scene)}
    out: list[WorldExample] = []
    text = caption(scene)
    for task in _check_tasks(tasks):
        rng = scene_rng(seed, index, task)
        t = get_task(task)
        if task == "text_to_image":
            out.append(WorldExample(task, t.message(text, width=scene.width, height=scene.height),
                                IMAGE_PLACEHOLDER, ["scene"]))
        elif task in DENSE_TASKS:
            images.setdefault(task, render_condition(scene, task))
            out.append(WorldExample(task, t.message(), IMAGE_PLACEHOLDER, ["scene", task]))
        elif task == "detection":
            target = rng.choice(scene.objects)
            images["detection"] = render_detection(scene, target)
            truth["detection"] = {"object": target.name, "box": list(detection_box(scene, target))}
            out.append(WorldExample(task, t.message(target.name), IMAGE_PLACEHOLDER, ["scene", "detection"]))
        elif task == "editing":
            instruction, edited = edit_scene(scene, rng)
            images["edited"] = render_image(edited)
            truth["editing"] = {"instruction": instruction, "scene": edited.to_dict()}
            out.append(WorldExample(task, t.message(instruction), IMAGE_PLACEHOLDER, ["scene", "edited"]))
        elif task == "condition_to_image":
            kind = CONDITION_KINDS[index % len(CONDITION_KINDS)]
            images.setdefault(kind, render_condition(scene, kind))
            truth["condition_to_image"] = {"condition": kind}
            out.append(WorldExample(task, t.message(text), IMAGE_PLACEHOLDER, [kind, "scene"]))
        elif task == "multiview":
            obj = rng.choice(scene.objects)
            width, height = rng.choice(MULTIVIEW_SIZES)
            names = [f"view{k}" for k in range(views)]
            images.update(zip(names, render_multiview(obj, views, (width, height))))
            subject = f"a {obj.colour} {obj.shape}"  # multiview shows every object as a large close-up
            truth["multiview"] = {"object": subject, "colour": obj.colour, "shape": obj.shape,
                                  "views": views, "width": width, "height": height}
            out.append(WorldExample(task, t.message(subject, views=views, width=width, height=height),
                                IMAGE_PLACEHOLDER * views, names))
        elif task == "caption":
            out.append(WorldExample(task, t.message(), text, ["scene"]))
        elif task == "vqa":
            pairs = vqa_pairs(scene)
            kind = rng.choice(sorted(pairs))
            question, answer = rng.choice(pairs[kind])
            truth["vqa"] = {"kind": kind, "question": question, "answer": answer}
            out.append(WorldExample(task, t.message(question), answer, ["scene"]))
    return out, images, truth


def write_world_dataset(out_dir: str | Path, n_scenes: int, seed: int, tasks: Sequence[str] = WORLD_TASKS, *,
                        views: int = MULTIVIEW_VIEWS) -> WorldDataset:
    """Write ``n_scenes`` scenes x ``tasks`` to ``out_dir`` (``world.jsonl``, ``scenes.jsonl``, ``images/``).

    Returns the JSONL path and the number of records per task. Existing files of the same names are
    overwritten.
    """
    if n_scenes < 1:
        raise ValueError(f"n_scenes must be >= 1, got {n_scenes}")
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    tasks = _check_tasks(tasks)
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    counts = {t: 0 for t in tasks}
    with open(root / JSONL_NAME, "w", encoding="utf-8", newline="\n") as fj, \
            open(root / SCENES_NAME, "w", encoding="utf-8", newline="\n") as fs:
        for index in range(n_scenes):
            scene = sample_scene(scene_rng(seed, index, "scene"))
            examples, images, truth = scene_examples(scene, seed, index, tasks, views)
            used = {name for ex in examples for name in ex.images}
            paths = {name: f"images/{index:06d}_{name}.png" for name in images if name in used}
            for name in paths:
                save_png(images[name], root / paths[name])
            for ex in examples:
                turns = [{"from": "human", "value": ex.human}, {"from": "gpt", "value": ex.gpt}]
                record = {"conversations": turns,
                          "image": [paths[n] for n in ex.images], "task": ex.task, "scene_id": index}
                fj.write(json.dumps(record, ensure_ascii=False) + "\n")
                counts[ex.task] += 1
            fs.write(json.dumps(truth, ensure_ascii=False) + "\n")
    logger.info("wrote %d world records to %s", sum(counts.values()), root / JSONL_NAME)
    return WorldDataset(root=root, path=root / JSONL_NAME, counts=counts)


def read_jsonl(path: str | Path) -> list[dict]:
    """All records of a JSONL file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
