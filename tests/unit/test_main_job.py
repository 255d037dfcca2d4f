"""The README main job's verdict on its PNG: the world analyser against the workflow's own prompt."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from lumina_world import parse_caption, render_image

REPO = Path(__file__).resolve().parents[2]


def _main_job():
    if "main_job" in sys.modules:
        return sys.modules["main_job"]
    spec = importlib.util.spec_from_file_location("main_job", REPO / "scripts" / "main_job.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["main_job"] = module
    spec.loader.exec_module(module)
    return module


def _workflow() -> dict:
    return json.loads((REPO / "workflows" / "api" / "text_to_image.json").read_text(encoding="utf-8"))


def test_the_main_workflow_asks_for_a_valid_world_scene():
    text, width, height = _main_job().prompt_of(_workflow())
    scene = parse_caption(text, width, height)  # raises if the world cannot show it
    assert len(scene.objects) == 2


def test_judge_accepts_the_prompts_own_picture_and_rejects_others(tmp_path):
    job = _main_job()
    workflow = _workflow()
    text, width, height = job.prompt_of(workflow)
    right = tmp_path / "right.png"
    render_image(parse_caption(text, width, height)).save(right)
    assert "MATCHES its prompt" in job.judge(right, workflow)

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(noise)
    assert "does NOT match" in job.judge(noise, workflow)

    swapped = copy.deepcopy(workflow)  # the same picture judged against another prompt
    node = next(n for n in swapped.values() if n["class_type"] == "LuminaMGPTPrompt")
    node["inputs"]["prompt"] = text.replace("red", "green")
    assert "does NOT match" in job.judge(right, swapped)

    node["inputs"]["prompt"] = "a cat on a sofa"
    assert "not checked" in job.judge(right, swapped)
