"""The headless client's --set handling (its HTTP side runs in tests/e2e through the main job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lumina_tools.client import apply_overrides, find_node, parse_set, run_workflow

WORKFLOW = json.loads((Path(__file__).resolve().parents[2] / "workflows/api/text_to_image.json").read_text())


def test_overrides_by_id_title_and_class_keep_types():
    graph = apply_overrides(WORKFLOW, {"4.seed": "7", "prompt.prompt": "7 red circles",
                                       "LuminaMGPTSampler.cfg": "2.5", "sampler.force_size": "false"})
    assert graph["4"]["inputs"]["seed"] == 7
    assert graph["3"]["inputs"]["prompt"] == "7 red circles"  # stays text although it starts with a digit
    assert graph["4"]["inputs"]["cfg"] == 2.5 and graph["4"]["inputs"]["force_size"] is False
    assert WORKFLOW["4"]["inputs"]["seed"] == 0, "the input workflow is not modified"


@pytest.mark.parametrize("key,value,message", [
    ("6.seed", "7", "has no input 'seed'"),
    ("sampler.prompt", "x", "is a link"),
    ("sampler.seed", "many", "expected a number"),
    ("nowhere.seed", "1", "no node 'nowhere'"),
])
def test_bad_overrides_are_refused(key, value, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(WORKFLOW, {key: value})


def test_parse_set_and_find_node():
    assert parse_set("sampler.seed=7") == ("sampler.seed", "7")
    assert parse_set("prompt.prompt=a=b") == ("prompt.prompt", "a=b")
    with pytest.raises(ValueError, match="NODE.INPUT=VALUE"):
        parse_set("seed=7")
    assert find_node(WORKFLOW, "SaveImage") == "6"


@pytest.mark.parametrize("server", ["file:///etc", "ftp://127.0.0.1:8188"])
def test_only_http_servers_are_reached(server, tmp_path):
    with pytest.raises(ValueError, match="http:// or https://"):
        run_workflow(WORKFLOW, server, tmp_path)
