"""The node pack inside a real ComfyUI 0.3.75: registration, shipped workflows, progress, previews, cancel,
and clear errors for bad input with the server still serving afterwards."""

from __future__ import annotations

import copy
import io
import json
import random
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image


REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows" / "api"
MODEL_NAME = "lumina-mgpt-world"


def node_ids_in_source() -> set[str]:
    ids = set()
    for path in (REPO / "nodes").glob("*.py"):
        ids.update(re.findall(r'node_id="(LuminaMGPT\w+)"', path.read_text()))
    return ids


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def on_model(graph: dict, name: str) -> dict:
    """A copy whose model and tokenizer loaders load ``name`` from models/lumina_mgpt/."""
    graph = copy.deepcopy(graph)
    for node in graph.values():
        if node["class_type"] == "LuminaMGPTModelLoader":
            node["inputs"]["model_name"] = name
        elif node["class_type"] == "LuminaMGPTTokenizerLoader":
            node["inputs"]["tokenizer"] = f"lumina_mgpt/{name}"
    return graph


def reseed(graph: dict, seed: int | None = None) -> dict:
    """A copy with every seed changed, so ComfyUI's cache never answers for the test."""
    graph = copy.deepcopy(graph)
    seed = random.randrange(1 << 31) if seed is None else seed
    for node in graph.values():
        if "seed" in node["inputs"]:
            node["inputs"]["seed"] = seed
    return graph


@pytest.fixture(scope="module")
def server(comfy_server, lumina_model):
    """The server with the workflows' model (bundled, or a random demo). Nothing is copied into input/: the
    workflows take their picture from the Example Image node (each shipped workflow is run from the editor by
    test_first_contact.py)."""
    comfy_server.input_dir.mkdir(parents=True, exist_ok=True)
    return comfy_server


def saved_pngs(server, result) -> list[Image.Image]:
    images = []
    for output in result.executed.values():
        for item in output.get("images", []):
            data = server.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))
            img = Image.open(io.BytesIO(data))
            assert img.format == "PNG"
            images.append(img)
    return images


def test_every_node_is_registered(server):
    info = server.object_info()
    ours = {k for k in info if k.startswith("LuminaMGPT")}
    assert node_ids_in_source() <= ours
    assert len(ours) >= 15
    for node_id in ours:
        spec = info[node_id]
        assert spec["category"].startswith("Lumina-mGPT/")
        for group in ("required", "optional"):
            for name, (_, options) in ((n, (s[0], s[1] if len(s) > 1 else {}))
                                       for n, s in spec["input"].get(group, {}).items()):
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
    model_choice = info["LuminaMGPTModelLoader"]["input"]["required"]["model_name"]
    assert model_choice[0] == "COMBO" and MODEL_NAME in model_choice[1]["options"]
    assert not server.import_failures()


def test_text_to_image_progress_and_previews(server, demo_model):
    graph = reseed(on_model(load_workflow("text_to_image"), demo_model.name))
    graph["3"]["inputs"]["custom_size"] = "64x64"
    result = server.run(graph, timeout=300)
    assert result.ok, result.error
    sampler_progress = [p for p in result.progress if p["node"] == "4"]
    assert len(sampler_progress) > 10
    # 64x64 with the demo VQGAN (8x) = 8 latent rows, a preview every 2 rows, then the finished picture
    assert result.preview_frames >= 3
    fractions = [p["value"] / p["max"] for p in sampler_progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("left" in t for t in result.texts) and "done in" in result.texts[-1]  # the ETA, then the end
    (img,) = saved_pngs(server, result)
    assert img.size == (64, 64)


def test_interrupt_mid_sampling_then_next_prompt_works(server, demo_model):
    graph = reseed(on_model(load_workflow("text_to_image"), demo_model.name))
    graph["3"]["inputs"]["custom_size"] = "256x256"  # 1060 tokens: long enough to cancel mid-way
    client = "interrupt-test"
    prompt_id = server.post_prompt(graph, client)
    ws = server.connect(client)
    for _ in range(2000):
        frame = ws.recv()
        if isinstance(frame, str) and json.loads(frame).get("type") == "progress":
            break
    server.interrupt()
    result = server.wait_for(prompt_id, client, timeout=120)
    assert result.status == "interrupted"
    after = server.run(reseed(load_workflow("text_to_image")), timeout=300)
    assert after.ok, after.error


def expect_validation_error(server, graph, *words):
    from comfyui_harness import ComfyHTTPError

    with pytest.raises(ComfyHTTPError) as err:
        server.post_prompt(graph)
    text = json.dumps(err.value.body)
    for word in words:
        assert word in text, text


def expect_error(server, graph, *words):
    """Refused at validation (400) or failed in the node: either way the message names the problem."""
    from comfyui_harness import ComfyHTTPError

    try:
        result = server.run(graph, timeout=300)
    except ComfyHTTPError as err:
        text = json.dumps(err.body)
    else:
        assert result.status == "error"
        text = result.error["exception_message"]
    for word in words:
        assert word in text, text


def expect_execution_error(server, graph, *words):
    result = server.run(graph, timeout=300)
    assert result.status == "error"
    message = result.error["exception_message"]
    for word in words:
        assert word in message, message


def test_bad_inputs_give_clear_errors_and_server_keeps_serving(server, lumina_model):
    base = load_workflow("text_to_image")

    bad_size = reseed(base)
    bad_size["3"]["inputs"]["custom_size"] = "50x70"
    expect_validation_error(server, bad_size, "lumina-mgpt-world cannot draw 50x70", "48x80", "custom_size")

    missing = reseed(base)
    missing["1"]["inputs"]["model_name"] = "no-such-model"
    expect_error(server, missing, "no-such-model")

    top_k = reseed(base)
    top_k["4"]["inputs"]["image_top_k"] = 0
    expect_validation_error(server, top_k, "image_top_k")

    empty = reseed(base)
    empty["3"]["inputs"]["prompt"] = "   "
    expect_execution_error(server, empty, "prompt is empty")

    corrupt = server.models_dir / "lumina_mgpt" / "corrupt-model"
    if not corrupt.exists():
        shutil.copytree(lumina_model, corrupt)
        weights = corrupt / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:200])
    broken = reseed(base)
    broken["1"]["inputs"]["model_name"] = "corrupt-model"
    expect_execution_error(server, broken, "model.safetensors", "corrupt")

    wrong_multiple = reseed(base)
    wrong_multiple["3"]["inputs"]["custom_size"] = "48x40"  # 40 is a multiple of 8, not of 16
    expect_validation_error(server, wrong_multiple, "48x40", "nearest size it draws is 64x48")

    too_big = reseed(base)  # a size of the 16-px grid that the world model was never trained on
    too_big["3"]["inputs"]["custom_size"] = "512x512"
    expect_validation_error(server, too_big, "cannot draw 512x512", "48x48")

    ok = server.run(reseed(base), timeout=300)
    assert ok.ok, ok.error


def test_task_nodes_reject_bad_inputs(server):
    multiview = reseed(load_workflow("multiview"))
    multiview["3"]["inputs"]["views"] = 0
    expect_validation_error(server, multiview, "views")

    long_prompt = reseed(load_workflow("image_editing"))
    long_prompt["4"]["inputs"]["instruction"] = "x" * 2000
    expect_execution_error(server, long_prompt, "characters")

    tiny = Image.new("RGB", (8, 8), (255, 0, 0))
    tiny.save(server.input_dir / "tiny.png")
    small = reseed(load_workflow("depth_estimation"))
    small["3"] = {"class_type": "LoadImage", "inputs": {"image": "tiny.png"}}
    small["4"]["inputs"]["target"] = "native"  # 'auto' would fit it to the model's sizes
    expect_execution_error(server, small, "at least")

    no_image = reseed(load_workflow("depth_estimation"))
    del no_image["4"]["inputs"]["image"]
    expect_validation_error(server, no_image, "image")


def test_unload_models_then_run_again(server):
    """ComfyUI's "Unload models" (/free) unloads our patcher like its own models; the cached loader output
    is loaded back onto the device by the sampler (load_models_gpu) on the next prompt."""
    assert server.run(reseed(load_workflow("text_to_image")), timeout=300).ok
    server.free()
    again = server.run(reseed(load_workflow("text_to_image")), timeout=300)
    assert again.ok, again.error
    assert "4" in again.executing


def test_workflow_templates_are_listed(server):
    templates = server.get_json("/workflow_templates")
    names = {Path(n).stem for n in templates.get("lumina-mgpt", [])}
    assert {"01 Text to image", "04 Depth map", "13 Train a LoRA, then sample with it"} <= names
