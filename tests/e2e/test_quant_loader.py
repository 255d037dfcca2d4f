"""The Model Loader's ``quant`` input in a real ComfyUI: the bundled world model with int8 weights draws the
text-to-image workflow's picture as the unquantized model does."""

from __future__ import annotations

import numpy as np
import pytest

from .test_bundled_model import BUNDLED_MODEL, load_workflow, reseed, saved_pngs


@pytest.fixture(scope="module")
def server(comfy_server, lumina_model):
    assert lumina_model == BUNDLED_MODEL, "the repo ships models/lumina_mgpt/lumina-mgpt-world; it is missing"
    return comfy_server


def picture(server, graph: dict) -> np.ndarray:
    result = server.run(graph, timeout=300)
    assert result.ok, result.error
    (img,) = saved_pngs(server, result)
    return np.asarray(img, dtype=np.int16)


def test_int8_loader_draws_the_unquantized_picture(server):
    """Same workflow, same seed (greedy decoding), dtype fp32, quant none vs int8: the world analyser scores
    both pictures perfect for their prompt, and at least 99 % of their pixels are equal (a different image
    token would change a whole 8x8 patch; the 64x48 picture has 48 of them)."""
    from lumina_world import parse_caption, score_text_to_image

    graph = reseed(load_workflow("text_to_image"))
    loader = next(n for n in graph.values() if n["class_type"] == "LuminaMGPTModelLoader")
    loader["inputs"]["dtype"] = "fp32"
    plain = picture(server, graph)
    loader["inputs"]["quant"] = "int8"
    quantized = picture(server, graph)

    prompt_node = next(n for n in graph.values() if "custom_size" in n["inputs"])
    width, height = (int(v) for v in prompt_node["inputs"]["custom_size"].split("x"))
    scene = parse_caption(prompt_node["inputs"]["prompt"], width, height)
    assert quantized.shape == plain.shape == (height, width, 3)
    for img in (plain, quantized):
        assert score_text_to_image(img.astype(np.uint8), scene)["overall"] == 1.0
    same = (np.abs(quantized - plain).max(axis=-1) == 0).mean()
    assert same >= 0.99, same


def test_loader_rejects_unknown_quant(server):
    graph = reseed(load_workflow("text_to_image"))
    loader = next(n for n in graph.values() if n["class_type"] == "LuminaMGPTModelLoader")
    loader["inputs"]["quant"] = "int4"
    from comfyui_harness import ComfyHTTPError

    with pytest.raises(ComfyHTTPError) as err:  # refused at validation, before anything loads
        server.run(graph, timeout=120)
    assert "widget 'quant': 'int4' is not one of the allowed values" in str(err.value)
