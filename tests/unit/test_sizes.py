"""Sizes follow the model: world list, official families on the 32-px grid, generic models by their tokenizer."""

from __future__ import annotations

import json

import pytest

from comfy_lumina_mgpt import sizes, unirep
from lumina_world.scene import WORLD_SIZES

WORLD = sizes.ModelLayout("lumina-mgpt-world", max_seq_len=1024, canvas_sizes=tuple(WORLD_SIZES),
                          default_size=(64, 48))


def official(family: int, name: str | None = None) -> sizes.ModelSizes:
    layout = sizes.layout_from_config(name or f"Lumina-mGPT-7B-{family}", {"max_position_embeddings": 10240})
    return sizes.model_sizes(layout, patch=32, max_grid=64)


def test_layout_is_read_from_config_and_folder_name(tmp_path):
    folder = tmp_path / "Lumina-mGPT-34B-512"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    assert sizes.read_layout(folder) == sizes.ModelLayout("Lumina-mGPT-34B-512", 512, 4096)
    assert sizes.layout_from_config("Lumina-mGPT-7B-768-Omni", {}).family == 768
    assert sizes.layout_from_config("my-model-17680", {}).family is None  # digits inside a number do not count
    listed = sizes.layout_from_config("world-768", {"canvas_sizes": [[48, 32]], "default_size": [48, 32]})
    assert listed.family is None and listed.canvas_sizes == ((48, 32),) and listed.default_size == (48, 32)
    with pytest.raises(ValueError, match="canvas_sizes must be a list of"):
        sizes.layout_from_config("m", {"canvas_sizes": [48, 32]})


def test_world_model_draws_exactly_its_canvas_sizes():
    world = sizes.model_sizes(WORLD, patch=16, max_grid=5)
    assert set(world.sizes) == set(WORLD_SIZES)
    assert world.default == (64, 48) == world.choose("auto")
    assert world.choose("square 1:1") == (48, 48)
    assert world.choose("portrait 1:2") == (32, 64)
    assert world.choose("landscape 16:9") == (80, 48)
    for choice in sizes.CHOICES[:-1]:
        assert world.choose(choice, 0.5) in world.sizes


@pytest.mark.parametrize("family", [512, 768, 1024])
def test_official_families_hold_their_whole_candidate_list(family):
    model = official(family)
    assert model.default == (family, family) == model.choose("auto")
    assert set(unirep.crop_size_list(family)) <= set(model.sizes)
    assert model.fit_candidates() == unirep.crop_size_list(family)  # the official preprocessing's list
    wide = model.choose("landscape 16:9")
    assert wide in model.sizes and 1.6 < wide[0] / wide[1] < 1.95
    half = model.choose("square 1:1", 0.25)
    assert half == (family // 2, family // 2)


def test_a_size_the_model_cannot_draw_names_limits_and_the_nearest():
    world = sizes.model_sizes(WORLD, patch=16, max_grid=5)
    with pytest.raises(ValueError) as err:
        world.choose("custom", custom_size="512x512")
    text = str(err.value)
    assert "lumina-mgpt-world cannot draw 512x512" in text and "48x48" in text and "64x48" in text
    with pytest.raises(ValueError, match="nearest size it draws is 768x768"):
        official(768).check(1024, 1024)
    with pytest.raises(ValueError, match="multiples of 32"):
        official(512).check(500, 500)
    assert official(512).nearest(500, 500) == (512, 512)
    with pytest.raises(ValueError, match="768x768"):
        official(768).choose("custom", custom_size="768 by 768")


def test_generic_model_follows_its_tokenizer_and_context():
    demo = sizes.model_sizes(sizes.ModelLayout("lumina-mgpt-demo", max_seq_len=1024), patch=16, max_grid=16)
    assert (256, 256) in demo.sizes and (64, 64) in demo.sizes and (256, 32) not in demo.sizes  # ratio 8
    side = demo.default[0]
    assert demo.default == (side, side) and unirep.block_length(side // 8, side // 8) <= 512


def test_a_tokenizer_that_cannot_write_the_models_sizes_is_refused():
    with pytest.raises(ValueError, match="tokenizer that belongs"):
        sizes.model_sizes(WORLD, patch=32, max_grid=64)
