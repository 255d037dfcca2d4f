"""The Trainer and LoRA nodes inside a real ComfyUI: train in the graph, use the result at once, cancel."""

from __future__ import annotations

import io
import json
import random
import uuid

import numpy as np
import pytest
from PIL import Image

from lumina_world import write_folder_dataset

# The random demo model: its samples change with any weight change. The trained world model already draws
# the world's pictures with near-zero loss, so a 12-step LoRA may leave its samples as they were.
MODEL = "lumina-mgpt-demo"
LOADERS = {
    "1": {"class_type": "LuminaMGPTModelLoader", "inputs": {"model_name": MODEL, "dtype": "fp32"}},
    "2": {"class_type": "LuminaMGPTTokenizerLoader",
          "inputs": {"tokenizer": f"lumina_mgpt/{MODEL}", "vqgan": "(same as tokenizer)"}},
}
SAMPLING = {"cfg": 3.0, "image_top_k": 50, "image_top_p": 1.0, "image_temperature": 1.0, "text_top_k": 5,
            "text_temperature": 1.0, "max_new_tokens": 200}


@pytest.fixture(scope="module")
def server(comfy_server, demo_model):
    write_folder_dataset(comfy_server.input_dir / "world_t2i", n_scenes=12, seed=1)
    return comfy_server


def trainer(name: str, steps: int, seed: int, **extra) -> dict:
    inputs = {"model": ["1", 0], "tokenizer": ["2", 0], "dataset": "world_t2i", "mode": "lora", "steps": steps,
              "learning_rate": 3e-3, "batch_size": 4, "grad_accum": 1, "lora_rank": 4, "lora_alpha": 8.0,
              "target_size": "64", "save_every": 5, "seed": seed, "output_name": name}
    inputs.update(extra)
    return {"class_type": "LuminaMGPTTrainer", "inputs": inputs}


def text_to_image(model_ref, seed: int) -> dict:
    return {"class_type": "LuminaMGPTTextToImage",
            "inputs": {"model": model_ref, "tokenizer": ["2", 0], "prompt": "a large red circle on the left",
                       "resolution": "custom", "scale": 1.0, "custom_size": "48x48", "seed": seed, "batch_size": 1,
                       **SAMPLING}}


def save(node: str, prefix: str) -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": [node, 0], "filename_prefix": prefix}}


def images_of(server, result, node: str) -> list[np.ndarray]:
    out = []
    for item in result.executed.get(node, {}).get("images", []):
        data = server.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))
        out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return out


def test_trainer_node_trains_and_the_sampler_uses_the_result(server):
    name = f"lora-{uuid.uuid4().hex[:6]}"
    graph = dict(LOADERS)
    graph.update({
        "3": trainer(name, steps=12, seed=random.randrange(1 << 20), validation_prompt="a small blue square",
                     validation_size="48x48", validate_every=6),
        "4": text_to_image(["3", 0], seed=1),
        "5": save("4", "lumina_mgpt/after_training"),
        "6": save("3", "lumina_mgpt/loss_curve"),
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["3", 2]}},
    })
    graph["6"]["inputs"]["images"] = ["3", 1]
    result = server.run(graph, timeout=900)
    assert result.ok, result.error
    (curve,) = images_of(server, result, "6")
    assert curve.shape == (256, 512, 3)
    (picture,) = images_of(server, result, "5")
    assert picture.shape == (48, 48, 3)
    summary = result.executed["7"]["text"][0]
    assert "12 steps" in summary and name in summary
    assert result.preview_frames >= 2  # validation previews at steps 6 and 12
    assert [p for p in result.progress if p["node"] == "3"][-1]["value"] == 12
    adapter = server.models_dir / "lumina_mgpt_lora" / name
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()

    # the adapter through the LoRA loader: strength 0 is the base model, strength 1 changes the image
    seed = random.randrange(1 << 20)
    graph = dict(LOADERS)
    graph.update({
        "3": {"class_type": "LuminaMGPTLoraLoader", "inputs": {"model": ["1", 0], "lora_name": name,
                                                                "strength": 0.0}},
        "4": {"class_type": "LuminaMGPTLoraLoader", "inputs": {"model": ["1", 0], "lora_name": name,
                                                                "strength": 1.0}},
        "5": text_to_image(["1", 0], seed), "6": text_to_image(["3", 0], seed), "7": text_to_image(["4", 0], seed),
        "8": save("5", "lumina_mgpt/base"), "9": save("6", "lumina_mgpt/strength0"),
        "10": save("7", "lumina_mgpt/strength1"),
    })
    result = server.run(graph, timeout=600)
    assert result.ok, result.error
    (base,), (zero,), (one,) = (images_of(server, result, n) for n in ("8", "9", "10"))
    assert np.array_equal(base, zero)
    assert not np.array_equal(base, one)


def test_cancelling_the_trainer_writes_a_checkpoint(server):
    name = f"cancel-{uuid.uuid4().hex[:6]}"
    graph = dict(LOADERS)
    graph["3"] = trainer(name, steps=100_000, seed=random.randrange(1 << 20), save_every=100_000)
    graph["4"] = {"class_type": "PreviewAny", "inputs": {"source": ["3", 2]}}
    client = uuid.uuid4().hex
    prompt_id = server.post_prompt(graph, client)
    ws = server.connect(client)
    for _ in range(5000):
        frame = ws.recv()
        if isinstance(frame, str):
            msg = json.loads(frame)
            if msg.get("type") == "progress" and msg["data"].get("node") == "3" and msg["data"]["value"] >= 3:
                break
    server.interrupt()
    result = server.wait_for(prompt_id, client, timeout=300)
    assert result.status == "interrupted"
    run = server.output_dir / "lumina_mgpt_training" / name
    checkpoints = sorted(run.glob("step-*"))
    assert checkpoints, f"no checkpoint in {run}"
    assert (checkpoints[-1] / "trainer_state.json").is_file()
    assert server.run({**LOADERS, "3": text_to_image(["1", 0], 5), "4": save("3", "x")}, timeout=300).ok
