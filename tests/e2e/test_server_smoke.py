"""The real ComfyUI starts with the pack, answers its API and did not fail to import the pack."""

from __future__ import annotations

import urllib.request

import pytest

pytestmark = pytest.mark.comfyui


def test_server_answers_system_stats(comfy_server):
    with urllib.request.urlopen(comfy_server.url + "/system_stats", timeout=10) as resp:
        assert resp.status == 200


def test_object_info_answers(comfy_server):
    info = comfy_server.object_info()
    assert isinstance(info, dict) and "SaveImage" in info, "ComfyUI's own nodes are missing from /object_info"


def test_pack_imported_without_failure(comfy_server, comfy_harness):
    log = comfy_server.log_text()
    name = comfy_harness.PACK_NAME
    assert "Import times for custom nodes" in log, "ComfyUI did not try to load any custom node"
    loaded = [ln for ln in log.splitlines() if ln.rstrip().endswith(f"custom_nodes/{name}")]
    assert loaded, f"custom_nodes/{name} was not loaded:\n{comfy_server.log_tail()}"
    failed = [ln for ln in loaded if "(IMPORT FAILED)" in ln]
    assert not failed, f"ComfyUI reports: {failed}\n{comfy_server.log_tail(120)}"
    assert not comfy_server.import_failures()


def test_pack_nodes_are_listed(comfy_server):
    """The V3 ``comfy_entrypoint`` extension was called and its nodes registered."""
    ours = sorted(k for k in comfy_server.object_info() if k.startswith("LuminaMGPT"))
    assert ours, "no LuminaMGPT* node in /object_info"
