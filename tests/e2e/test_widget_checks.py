"""Every widget value is checked by the pack itself, in a real ComfyUI 0.3.75 (which checks no V3 combo and lets
NaN through its min/max test): each combo of each node given an unknown value, non-finite numbers, text that is
not valid text and a dataset that is empty or the whole input folder are node errors at validation time."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = "lumina-mgpt-world"
EXAMPLE_IMAGE = "lumina_mgpt_example.png"
DATASET = "widget_check_images"
BAD = "no-such-value"

# nodes that give each custom socket type a valid source, so only the widget under test can be wrong
PROVIDERS = {
    "LUMINA_MGPT_MODEL": {"class_type": "LuminaMGPTModelLoader", "inputs": {"model_name": MODEL, "dtype": "fp32"}},
    "LUMINA_MGPT_TOKENIZER": {"class_type": "LuminaMGPTTokenizerLoader",
                              "inputs": {"tokenizer": f"lumina_mgpt/{MODEL}", "vqgan": "(same as tokenizer)"}},
    "IMAGE": {"class_type": "LoadImage", "inputs": {"image": EXAMPLE_IMAGE}},
    "LUMINA_MGPT_PROMPT": {"class_type": "LuminaMGPTPrompt",
                           "inputs": {"tokenizer": ["LUMINA_MGPT_TOKENIZER", 0], "prompt": "a red circle",
                                      "resolution": "custom", "custom_size": "48x48", "scale": 1.0}},
    "LUMINA_MGPT_TOKENS": {"class_type": "LuminaMGPTVQEncode",
                           "inputs": {"tokenizer": ["LUMINA_MGPT_TOKENIZER", 0], "image": ["IMAGE", 0],
                                      "target": "native", "seed": 0}},
}
WIDGET_VALUES = {"dataset": DATASET, "custom_size": "48x48", "resolution": "custom"}  # valid, not just defaults


@pytest.fixture(scope="module")
def server(comfy_server, lumina_model):
    comfy_server.input_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "workflows" / "inputs" / EXAMPLE_IMAGE, comfy_server.input_dir / EXAMPLE_IMAGE)
    (comfy_server.input_dir / DATASET).mkdir(exist_ok=True)
    return comfy_server


def widget_value(name: str, spec: list):
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if name in WIDGET_VALUES:
        return WIDGET_VALUES[name]
    if name in ("output_name", "name"):
        return f"widget-check-{uuid.uuid4().hex[:8]}"  # a folder that does not exist yet
    if kind == "COMBO":
        choices = options.get("options") or []
        return options.get("default", choices[0] if choices else "")
    return options.get("default")


def graph_for(info: dict, node_id: str, **overrides) -> dict:
    """``node_id`` with every required input valid (custom sockets wired to providers), then ``overrides``;
    a PreviewAny on its first output makes ComfyUI validate it."""
    graph: dict = {}

    def provide(kind: str) -> list:
        if kind not in graph:
            node = json.loads(json.dumps(PROVIDERS[kind]))
            for key, value in node["inputs"].items():
                if isinstance(value, list):
                    node["inputs"][key] = [provide(value[0])[0], value[1]]
            graph[kind] = node
        return [kind, 0]

    inputs = {}
    for name, spec in info[node_id]["input"].get("required", {}).items():
        inputs[name] = provide(spec[0]) if spec[0] in PROVIDERS else widget_value(name, spec)
    inputs.update(overrides)
    graph["tested"] = {"class_type": node_id, "inputs": inputs}
    if not info[node_id].get("output_node"):
        graph["out"] = {"class_type": "PreviewAny", "inputs": {"source": ["tested", 0]}}
    return graph


def refusal_text(server, graph: dict) -> str:
    """POST the graph; it must be refused at validation with errors on the tested node only. Returns their
    text."""
    from comfyui_harness import ComfyHTTPError

    with pytest.raises(ComfyHTTPError) as err:
        server.post_prompt(graph)
    assert err.value.status == 400
    node_errors = err.value.body.get("node_errors", {})
    assert set(node_errors) == {"tested"}, node_errors
    return json.dumps(node_errors["tested"]["errors"], ensure_ascii=False)


def combos(info: dict) -> list[tuple[str, str, list]]:
    found = []
    for node_id in sorted(k for k in info if k.startswith("LuminaMGPT")):
        for group in ("required", "optional"):
            for name, spec in info[node_id]["input"].get(group, {}).items():
                if spec[0] == "COMBO":
                    found.append((node_id, name, spec[1].get("options") or []))
    return found


def test_every_combo_of_every_node_refuses_an_unknown_value(server, safe_cases):
    info = server.object_info()
    found = combos(info)
    assert len(found) >= 15 and {n for n, _, _ in found} >= {"LuminaMGPTModelLoader", "LuminaMGPTTrainer",
                                                               "LuminaMGPTTaskPrompt", "LuminaMGPTVQEncode"}
    for node_id, name, options in found:
        with safe_cases.case(f"{node_id}.{name}={BAD!r}"):
            text = refusal_text(server, graph_for(info, node_id, **{name: BAD}))
            assert f"widget '{name}'" in text and BAD in text, text
            if options:
                assert "not one of the allowed values" in text and repr(options[0]) in text, text
            else:
                assert "nothing to choose from" in text, text


@pytest.mark.parametrize("node_id, values, words", [
    ("LuminaMGPTTextToImage", {"cfg": float("nan")}, ["widget 'cfg'", "finite"]),
    ("LuminaMGPTTextToImage", {"image_temperature": float("inf")}, ["widget 'image_temperature'", "finite"]),
    ("LuminaMGPTSampler", {"text_temperature": float("-inf")}, ["widget 'text_temperature'", "finite"]),
    ("LuminaMGPTTrainer", {"lora_alpha": float("nan")}, ["widget 'lora_alpha'", "finite"]),
    ("LuminaMGPTTrainer", {"learning_rate": float("nan")}, ["widget 'learning_rate'", "finite"]),
    ("LuminaMGPTTextToImage", {"seed": -1}, ["widget 'seed'", "between 0"]),
    ("LuminaMGPTTextToImage", {"prompt": "a red \ud800 circle"}, ["widget 'prompt'", "lone surrogate"]),
    ("LuminaMGPTPrompt", {"prompt": "a red \x00 circle"}, ["widget 'prompt'", "control character"]),
    ("LuminaMGPTChat", {"message": "hi \x1b[2J"}, ["widget 'message'", "control character"]),
    ("LuminaMGPTTaskPrompt", {"text": "\udcff"}, ["widget 'text'", "lone surrogate"]),
    ("LuminaMGPTTrainer", {"dataset": ""}, ["widget 'dataset'", "empty"]),
    ("LuminaMGPTTrainer", {"dataset": "."}, ["widget 'dataset'", "whole input folder"]),
    ("LuminaMGPTTrainer", {"dataset": "sub/.."}, ["widget 'dataset'", "whole input folder"]),
    ("LuminaMGPTTrainer", {"validation_prompt": "x\x00"}, ["widget 'validation_prompt'", "control character"]),
    ("LuminaMGPTTrainer", {"target_size": 64}, ["widget 'target_size'", "not one of the allowed values"]),
    ("LuminaMGPTModelLoader", {"dtype": "fp64"}, ["widget 'dtype'", "'fp64'", "'bf16'"]),
    ("LuminaMGPTTrainer", {"mode": "foo"}, ["widget 'mode'", "'lora', 'full'"]),
    ("LuminaMGPTVQEncode", {"target": "abc"}, ["widget 'target'", "'native'"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_widget_values_are_node_errors(server, safe_cases, node_id, values, words):
    info = server.object_info()
    with safe_cases.case(f"{node_id} {values!r}"):
        text = refusal_text(server, graph_for(info, node_id, **values))
        for word in words:
            assert word in text, text
