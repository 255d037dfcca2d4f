"""Feedback that tells the truth, in a real ComfyUI: the bar only moves forward over multi-image jobs, the
node says how long is left, the last preview is the output picture, and IMAGE batches are answered picture
by picture (or refused with a message), never cut to the first."""

from __future__ import annotations

import copy
import io
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"


def workflow(name: str) -> dict:
    graph = json.loads((WORKFLOWS / f"{name}.json").read_text())
    seed = random.randrange(1 << 30)
    for node in graph.values():
        if "seed" in node["inputs"]:
            node["inputs"]["seed"] = seed
    return graph


def node_of(graph: dict, class_type: str) -> str:
    return next(k for k, n in graph.items() if n["class_type"] == class_type)


def fractions(result, node: str) -> list[float]:
    return [p["value"] / p["max"] for p in result.progress if p["node"] == node]


def saved(server, result, node: str) -> list[np.ndarray]:
    out = []
    for item in result.executed.get(node, {}).get("images", []):
        data = server.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))
        out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return out


def test_multiview_progress_never_goes_back(comfy_server, lumina_model):
    graph = workflow("multiview")
    node = node_of(graph, "LuminaMGPTMultiview")
    result = comfy_server.run(graph, timeout=600)
    assert result.ok, result.error
    steps = fractions(result, node)
    assert len(steps) > 20 and steps == sorted(steps), steps
    assert steps[-1] == 1.0
    # four views of equal length: a quarter of the bar per view, not a restart per view
    assert any(0.2 < f < 0.3 for f in steps) and any(0.7 < f < 0.8 for f in steps)
    assert "done in" in result.texts[-1]


def test_a_batch_of_three_pictures_is_answered_one_by_one(comfy_server, lumina_model):
    graph = workflow("depth_estimation")
    example = node_of(graph, "LuminaMGPTExampleImage")
    depth = node_of(graph, "LuminaMGPTDensePrediction")
    graph["90"] = {"class_type": "RepeatImageBatch", "inputs": {"image": [example, 0], "amount": 3}}
    graph[depth]["inputs"]["image"] = ["90", 0]
    save = node_of(graph, "SaveImage")
    result = comfy_server.run(graph, timeout=600)
    assert result.ok, result.error
    maps = saved(comfy_server, result, save)
    assert len(maps) == 3  # not only the first picture
    steps = fractions(result, depth)
    assert steps == sorted(steps) and steps[-1] == 1.0
    assert any(0.3 < f < 0.4 for f in steps) and any(0.6 < f < 0.7 for f in steps)  # picture 2 of 3, 3 of 3
    assert any("picture 3 of 3" in t for t in result.texts)


def test_the_last_preview_is_the_output_picture(comfy_server, lumina_model):
    graph = workflow("text_to_image_one_node")
    save = node_of(graph, "SaveImage")
    result = comfy_server.run(graph, timeout=600)
    assert result.ok, result.error
    (picture,) = saved(comfy_server, result, save)
    assert result.preview_frames >= 2
    last = np.asarray(Image.open(io.BytesIO(result.previews[-1])).convert("RGB"))
    assert last.shape == picture.shape and np.array_equal(last, picture)
    earlier = np.asarray(Image.open(io.BytesIO(result.previews[0])).convert("RGB"))
    assert earlier.shape != picture.shape or not np.array_equal(earlier, picture)  # a partial one came first


def test_a_batch_into_chat_is_refused_with_a_message(comfy_server, lumina_model):
    graph = copy.deepcopy(workflow("chat"))
    example = node_of(graph, "LuminaMGPTExampleImage")
    chat = next(k for k, n in graph.items() if n["class_type"] == "LuminaMGPTChat" and "image" in n["inputs"])
    graph["90"] = {"class_type": "RepeatImageBatch", "inputs": {"image": [example, 0], "amount": 2}}
    graph[chat]["inputs"]["image"] = ["90", 0]
    result = comfy_server.run(graph, timeout=600)
    assert result.status == "error"
    assert "batch of 2" in result.error["exception_message"]
