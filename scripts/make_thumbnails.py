"""Make each template's thumbnail (``workflows/<title>.jpg``) from the real output of its workflow.

Starts a headless ComfyUI with this pack (or uses ``--server URL``), runs every API workflow of
``make_ui_workflows.TEMPLATES`` on the bundled model and draws its input picture (if any), the pictures it saved
and the texts it answered onto one card. Run it after changing a workflow or retraining the model:

    .venv/bin/python scripts/make_thumbnails.py            # writes workflows/*.jpg (5 min on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))  # a CLI entry point: the sibling scripts are plain modules

import comfyui_harness  # noqa: E402
from make_ui_workflows import TEMPLATES  # noqa: E402

CARD = (512, 384)  # width, height of a thumbnail
BACKGROUND = (32, 34, 40)
INK = (235, 235, 235)
ARROW = (140, 150, 170)
MARGIN = 16


def outputs_of(server: comfyui_harness.ComfyServer, graph: dict, result: comfyui_harness.RunResult
               ) -> tuple[list[Image.Image], list[Image.Image], list[str]]:
    """(input pictures, saved pictures, answered texts) of one finished run, in node order."""
    inputs = []
    for node in graph.values():
        if node["class_type"] == "LuminaMGPTExampleImage":
            inputs.append(Image.open(REPO / "workflows" / "inputs" / node["inputs"]["example"]).convert("RGB"))
    pictures, texts = [], []
    for node_id in sorted(result.executed, key=int):
        output = result.executed[node_id]
        for item in output.get("images", []):
            data = server.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))
            pictures.append(Image.open(io.BytesIO(data)).convert("RGB"))
        texts += [str(t) for t in output.get("text", [])]
    return inputs, pictures, texts


def _scaled(img: Image.Image, height: int, max_width: int) -> Image.Image:
    """Pixel-exact enlargement (NEAREST) of the small world pictures; larger ones are shrunk smoothly."""
    scale = min(height / img.height, max_width / img.width)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS)


def card(inputs: list[Image.Image], pictures: list[Image.Image], texts: list[str]) -> Image.Image:
    """One thumbnail: inputs -> pictures on a row (the loss curve of a training run on its own), texts below."""
    out = Image.new("RGB", CARD, BACKGROUND)
    draw = ImageDraw.Draw(out)
    row = [*inputs[:1], *pictures[:4]]
    text_h = 0
    font = ImageFont.load_default(size=22)
    lines = [line for t in texts[:2] for line in textwrap.wrap(t.strip() or "(empty answer)", 38)[:2]]
    if lines:
        text_h = 30 * len(lines) + MARGIN
    if row:
        gap = 28 if inputs else 10
        avail_w = CARD[0] - 2 * MARGIN - gap * (len(row) - 1)
        height = min(CARD[1] - 2 * MARGIN - text_h, 240)
        ratio_sum = sum(im.width / im.height for im in row)
        height = int(min(height, avail_w / ratio_sum))
        tiles = [_scaled(im, height, avail_w) for im in row]
        x = (CARD[0] - sum(t.width for t in tiles) - gap * (len(tiles) - 1)) // 2
        y = MARGIN + (CARD[1] - 2 * MARGIN - text_h - height) // 2
        for i, tile in enumerate(tiles):
            out.paste(tile, (x, y))
            x += tile.width
            if inputs and i == 0 and len(tiles) > 1:  # input -> answer
                mid = y + height // 2
                draw.line([(x + 5, mid), (x + gap - 7, mid)], fill=ARROW, width=3)
                draw.polygon([(x + gap - 5, mid), (x + gap - 12, mid - 6), (x + gap - 12, mid + 6)], fill=ARROW)
            x += gap
    y = CARD[1] - text_h if row else (CARD[1] - text_h) // 2
    for line in lines:
        draw.text((MARGIN, y), line, fill=INK, font=font)
        y += 30
    return out


def make(server: comfyui_harness.ComfyServer, names: list[str]) -> list[Path]:
    written = []
    for name in names:
        graph = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
        result = server.run(graph, timeout=900)
        if not result.ok:
            raise SystemExit(f"{name} failed: {result.error}")
        inputs, pictures, texts = outputs_of(server, graph, result)
        if name == "train_lora":  # the picture drawn with the adapter, then the loss curve
            inputs, pictures = [], pictures[:2]
        path = REPO / "workflows" / f"{TEMPLATES[name]}.jpg"
        card(inputs, pictures, texts).save(path, quality=90)
        print(path, flush=True)  # noqa: T201
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="API workflow names (default: every template)")
    args = parser.parse_args(argv)
    names = args.names or list(TEMPLATES)
    unknown = sorted(set(names) - set(TEMPLATES))
    if unknown:
        raise SystemExit(f"not templates: {unknown}; choose from {list(TEMPLATES)}")
    with comfyui_harness.ComfyServer() as server:
        make(server, names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
