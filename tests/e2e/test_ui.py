"""The editor-format workflows in a real browser: ComfyUI's own frontend loads each one and turns it back into
exactly the API graph the tests run (same nodes, links and widget values), so what people drop onto the canvas
is what CI exercised."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DRIVER_DIR = REPO / ".cache" / "ui-driver"  # npm install --prefix .cache/ui-driver playwright-core (setup.sh)
SCRIPT = Path(__file__).parent / "ui" / "graph_to_prompt.js"


@pytest.fixture(scope="module")
def editor_prompts(comfy_server, lumina_model, tmp_path_factory):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists() or not (DRIVER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.skip("chromium or playwright-core missing; run `bash scripts/setup.sh`")
    out = tmp_path_factory.mktemp("ui")
    env = {"NODE_PATH": str(DRIVER_DIR / "node_modules"), "CHROMIUM": chromium, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["node", str(SCRIPT), comfy_server.url, str(REPO / "workflows"), str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "prompts.json").read_text()), out


def template_titles() -> dict[str, str]:
    """API workflow name -> editor file name, from scripts/make_ui_workflows.py (the one source)."""
    spec = importlib.util.spec_from_file_location("make_ui_workflows", REPO / "scripts" / "make_ui_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TEMPLATES


def api_workflows() -> list[Path]:
    return sorted((REPO / "workflows" / "api").glob("*.json"))


def test_every_api_workflow_has_its_editor_twin_and_thumbnail():
    titles = template_titles()
    assert set(titles) == {p.stem for p in api_workflows()}
    editor = {p.stem for p in (REPO / "workflows").glob("*.json")}
    assert editor == set(titles.values())
    for title in titles.values():
        assert (REPO / "workflows" / f"{title}.jpg").is_file(), f"{title} has no thumbnail"


@pytest.mark.parametrize("api_path", api_workflows(), ids=lambda p: p.stem)
def test_editor_graph_equals_api_graph(comfy_server, editor_prompts, api_path):
    prompts, _ = editor_prompts
    from_editor = prompts[f"{template_titles()[api_path.stem]}.json"]
    expected = json.loads(api_path.read_text())
    assert set(from_editor) == set(expected)
    for node_id, node in expected.items():
        got = from_editor[node_id]
        assert got["class_type"] == node["class_type"]
        # Inputs the server declares; the frontend may add display-only ones (PreviewAny's "preview").
        spec = comfy_server.object_info(node["class_type"])[node["class_type"]]["input"]
        declared = set(spec.get("required", {})) | set(spec.get("optional", {}))
        got_inputs = {k: v for k, v in got["inputs"].items() if k in declared}
        assert got_inputs == node["inputs"], f"{api_path.name} node {node_id}"
