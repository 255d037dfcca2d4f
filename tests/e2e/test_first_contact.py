"""A new user's first minutes, in ComfyUI's real editor (headless Chromium driven by ui/first_contact.js) on a
fresh server where nothing was copied into input/: the template browser shows every shipped workflow with its
own thumbnail in the numbered order and each runs on the first click; a new graph with every sampling and task
node at its defaults runs on the bundled model; a size that model cannot draw is refused at validation with the
nearest size it draws."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DRIVER_DIR = REPO / ".cache" / "ui-driver"
SCRIPT = Path(__file__).parent / "ui" / "first_contact.js"
PACK = "lumina-mgpt"


def template_titles() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("make_ui_workflows", REPO / "scripts" / "make_ui_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TEMPLATES


TITLES = template_titles()


@pytest.fixture(scope="module")
def session(comfy_server, lumina_model, tmp_path_factory):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists() or not (DRIVER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.skip("chromium or playwright-core missing; run `bash scripts/setup.sh`")
    for picture in comfy_server.input_dir.glob("*"):  # what a fresh ComfyUI has in input/: nothing of ours
        if picture.name.startswith("lumina_mgpt"):
            picture.unlink()
    out = tmp_path_factory.mktemp("first_contact")
    env = {"NODE_PATH": str(DRIVER_DIR / "node_modules"), "CHROMIUM": chromium, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["node", str(SCRIPT), comfy_server.url, str(out), lumina_model.name],
                          capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "first_contact.json").read_text()), out


def outputs(comfy_server, prompt_id: str) -> dict:
    return comfy_server.history(prompt_id)["outputs"]


def test_every_template_has_its_own_thumbnail(comfy_server, session):
    result, out = session
    requested = {t["url"].rsplit("/", 1)[1]: t["status"] for t in result["thumbnails"]}
    for title in TITLES.values():
        assert requested.get(f"{title}.jpg") == 200, f"the editor did not get the thumbnail of {title}"
        served = comfy_server.request("GET", f"/api/workflow_templates/{PACK}/{quote(title)}.jpg")
        assert served == (REPO / "workflows" / f"{title}.jpg").read_bytes()
    pictures = {(REPO / "workflows" / f"{t}.jpg").read_bytes() for t in TITLES.values()}
    assert len(pictures) == len(TITLES)  # no shared placeholder
    assert Image.open(out / "templates.png").size == (1600, 1000)


def test_templates_sort_into_the_numbered_order(session):
    result, _ = session
    assert result["alphabetical"] == list(TITLES.values())


@pytest.mark.parametrize("name", list(TITLES))
def test_template_runs_on_first_click(comfy_server, session, name):
    result, _ = session
    run = result["templates"][TITLES[name]]
    assert run["status"] and run["status"]["status_str"] == "success", run["submit"]
    api = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
    assert {k: v["class_type"] for k, v in run["prompt"].items()} == {k: v["class_type"] for k, v in api.items()}
    produced = outputs(comfy_server, run["submit"]["prompt_id"])
    images = [i for o in produced.values() for i in o.get("images", [])]
    texts = [t for o in produced.values() for t in o.get("text", [])]
    if name in ("chat", "caption_and_questions"):
        assert len(texts) == 2 and all(t.strip() for t in texts)
        return
    assert images, f"{name} showed no picture"
    sizes = set()
    for item in images:
        data = comfy_server.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))
        sizes.add(Image.open(io.BytesIO(data)).size)
    if name == "multiview":
        assert len(images) == 4 and sizes == {(48, 48)}
    elif name == "text_to_image_one_node":
        assert sizes == {(80, 48)}  # 'landscape 16:9' snapped to the bundled model's sizes
    elif name != "train_lora":
        assert all(w % 16 == 0 and h % 16 == 0 for w, h in sizes)


def test_every_node_at_its_defaults_runs_on_the_bundled_model(comfy_server, session):
    result, _ = session
    defaults = result["defaults"]
    assert defaults["submit"]["status"] == 200, defaults["submit"]["body"]
    assert defaults["history"]["status"]["status_str"] == "success", defaults["history"]["status"]
    classes = {n["class_type"] for n in defaults["submit"]["prompt"].values()}
    assert {"LuminaMGPTTextToImage", "LuminaMGPTPrompt", "LuminaMGPTSampler", "LuminaMGPTTaskPrompt",
            "LuminaMGPTImageEdit", "LuminaMGPTDensePrediction", "LuminaMGPTDetect", "LuminaMGPTConditionToImage",
            "LuminaMGPTMultiview", "LuminaMGPTChat"} <= classes
    for node in defaults["submit"]["prompt"].values():
        if "resolution" in node["inputs"]:
            assert node["inputs"]["resolution"] == "auto"
    produced = outputs(comfy_server, defaults["submit"]["body"]["prompt_id"])
    viewers = [k for k, n in defaults["submit"]["prompt"].items() if n["class_type"] in ("PreviewImage", "PreviewAny")]
    assert viewers and all(k in produced for k in viewers)
    t2i = next(k for k, n in defaults["submit"]["prompt"].items() if n["class_type"] == "LuminaMGPTTextToImage")
    viewer = next(k for k, n in defaults["submit"]["prompt"].items() if n["inputs"].get("images") == [t2i, 0])
    item = produced[viewer]["images"][0]
    data = comfy_server.view(item["filename"], item.get("subfolder", ""), item.get("type", "temp"))
    assert Image.open(io.BytesIO(data)).size == (64, 48)  # 'auto' = the bundled model's own size


def test_a_size_the_model_cannot_draw_is_refused_at_validation(session):
    result, _ = session
    refused = result["refused"]
    assert refused["status"] == 400
    text = json.dumps(refused["body"]["node_errors"])
    assert "cannot draw 512x512" in text and "nearest size it draws is 48x48" in text and "custom_size" in text
