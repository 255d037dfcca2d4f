"""The Model Loader fetches an official checkpoint on first run, from the hub ``HF_ENDPOINT`` names (here a
local server holding the bundled model in the official sharded layout under ``Alpha-VLLM/Lumina-mGPT-7B-768``)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

from comfy_lumina_mgpt.download import MODEL_RELEASES
from comfy_lumina_mgpt.model.loading import load_model, write_model_files

REPO = Path(__file__).resolve().parents[2]
NAME = "Lumina-mGPT-7B-768"


def official_layout(model_folder: Path, out: Path) -> Path:
    """``model_folder``'s weights as 2+ shards with an index, its config and tokenizer, and the small files
    the official repository has."""
    out.mkdir(parents=True)
    model = load_model(model_folder)
    embedding = model.model.embed_tokens.weight
    write_model_files(model, out, max_shard_bytes=embedding.numel() * embedding.element_size())
    (out / "config.json").write_bytes((model_folder / "config.json").read_bytes())  # keeps its own keys
    (out / "tokenizer.json").write_bytes((model_folder / "tokenizer.json").read_bytes())
    for name in ("generation_config.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / name).write_text(json.dumps({"bos_token_id": 0}) if name.startswith("gen") else "{}")
    assert len(list(out.glob("model-*.safetensors"))) > 1
    return out


def test_official_names_are_offered_but_never_the_default(comfy_server, lumina_model):
    spec = comfy_server.object_info("LuminaMGPTModelLoader")["LuminaMGPTModelLoader"]
    choice = spec["input"]["required"]["model_name"][1]
    assert set(MODEL_RELEASES) <= set(choice["options"])
    assert choice["default"] == lumina_model.name  # a fresh node loads the bundled model, it never downloads


def test_the_model_loader_downloads_an_official_checkpoint_on_first_run(comfy_server, session_hub, lumina_model,
                                                                        tmp_path):
    session_hub.add_folder(f"Alpha-VLLM/{NAME}", official_layout(lumina_model, tmp_path / "release"))
    graph = json.loads((REPO / "workflows" / "api" / "text_to_image.json").read_text())
    graph = copy.deepcopy(graph)
    for node in graph.values():
        if node["class_type"] == "LuminaMGPTModelLoader":
            node["inputs"]["model_name"] = NAME
        if "seed" in node["inputs"]:
            node["inputs"]["seed"] = random.randrange(1 << 31)
    result = comfy_server.run(graph, timeout=300)
    assert result.ok, result.error
    assert any(t.startswith(f"downloading {NAME}") for t in result.texts)
    target = comfy_server.models_dir / "lumina_mgpt" / NAME
    for path in (tmp_path / "release").iterdir():
        assert (target / path.name).read_bytes() == path.read_bytes(), path.name

    gets = len(session_hub.gets())
    graph_again = copy.deepcopy(graph)
    for node in graph_again.values():
        if "seed" in node["inputs"]:
            node["inputs"]["seed"] += 1
    again = comfy_server.run(graph_again, timeout=300)
    assert again.ok, again.error
    assert session_hub.gets()[gets:] == []  # on disk now: loaded, not fetched again
