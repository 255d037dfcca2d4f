"""Write the editor-format workflows in ``workflows/`` from the API-format ones in ``workflows/api/``.

The API graphs are the source of truth (tests run them); the editor graphs are what ComfyUI's template
browser lists and what people drop onto the canvas. The browser shows a template's file name as its title and
offers to sort by it, so each editor graph is named by ``TEMPLATES``: a number for the order, then a title.
The conversion needs each node's input order, which only a running server knows, so it reads ``/object_info``
(from ``--server URL`` or a saved ``--object-info FILE``). Thumbnails: ``scripts/make_thumbnails.py``.

    python scripts/make_ui_workflows.py --server http://127.0.0.1:8188
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
#: API workflow name -> the editor graph's file name (without .json) in the template browser, in browser order.
TEMPLATES: dict[str, str] = {
    "text_to_image_one_node": "01 Text to image",
    "text_to_image": "02 Text to image, step by step",
    "image_editing": "03 Edit a picture in two turns",
    "depth_estimation": "04 Depth map",
    "segmentation": "05 Segmentation",
    "surface_normals": "06 Surface normals",
    "pose": "07 Pose",
    "detection": "08 Detect an object",
    "condition_to_image": "09 Picture from a depth map",
    "multiview": "10 Four views of an object",
    "caption_and_questions": "11 Caption and questions",
    "chat": "12 Chat about a picture",
    "train_lora": "13 Train a LoRA, then sample with it",
}
COLUMN_WIDTH, ROW_HEIGHT = 380, 330


def is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def ordered_inputs(info: dict) -> list[tuple[str, list]]:
    inputs = info["input"]
    order = info.get("input_order", {})
    out = []
    for group in ("required", "optional"):
        names = order.get(group, list(inputs.get(group, {})))
        out += [(name, inputs[group][name]) for name in names]
    return out


def depth_of(node_id: str, graph: dict, memo: dict) -> int:
    """Longest chain of links above a node: its column in the layout."""
    if node_id not in memo:
        parents = [v[0] for v in graph[node_id]["inputs"].values() if isinstance(v, list) and len(v) == 2
                   and isinstance(v[0], str)]
        memo[node_id] = 1 + max((depth_of(p, graph, memo) for p in parents), default=-1)
    return memo[node_id]


def to_ui(graph: dict, object_info: dict) -> dict:
    """Convert one API-format graph to the editor's format (nodes, links, widget values in schema order)."""
    memo: dict = {}
    columns: dict[int, int] = {}
    nodes, links = [], []
    outputs_of: dict[str, list[dict]] = {}
    for node_id, node in graph.items():
        info = object_info[node["class_type"]]
        outputs_of[node_id] = [{"name": n, "type": t, "links": [], "slot_index": i}
                               for i, (n, t) in enumerate(zip(info["output_name"], info["output"]))]
    for order, (node_id, node) in enumerate(sorted(graph.items(), key=lambda kv: int(kv[0]))):
        info = object_info[node["class_type"]]
        col = depth_of(node_id, graph, memo)
        row = columns.get(col, 0)
        columns[col] = row + 1
        inputs, widgets = [], []
        for name, spec in ordered_inputs(info):
            value = node["inputs"].get(name)
            if is_widget(spec) and not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
                if value is None:
                    continue
                widgets.append(value)
                # the editor adds a "control after generate" widget to any INT named seed, flagged or not
                flagged = len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("control_after_generate")
                if flagged or (spec[0] == "INT" and name in ("seed", "noise_seed")):
                    widgets.append("fixed")
                continue
            entry = {"name": name, "type": spec[0] if not isinstance(spec[0], list) else "COMBO", "link": None}
            if is_widget(spec):  # a widget fed by a link keeps its name and a slot in widgets_values, as the
                entry["widget"] = {"name": name}  # editor saves it (the value is unused while linked)
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                widgets.append(options.get("default", ""))
            if isinstance(value, list):
                link_id = len(links) + 1
                src, slot = value
                links.append([link_id, int(src), slot, int(node_id), len(inputs), entry["type"]])
                outputs_of[src][slot]["links"].append(link_id)
                entry["link"] = link_id
            inputs.append(entry)
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": [40 + col * COLUMN_WIDTH, 40 + row * ROW_HEIGHT],
            "size": [340, 260], "flags": {}, "order": order, "mode": 0, "inputs": inputs,
            "outputs": outputs_of[node_id], "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets,
            **({"title": node["_meta"]["title"]} if node.get("_meta", {}).get("title") else {}),
        })
    return {"last_node_id": max(int(k) for k in graph), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--server", help="URL of a running ComfyUI with this pack loaded")
    src.add_argument("--object-info", type=Path, help="a saved /object_info JSON")
    args = parser.parse_args(argv)
    if args.server:
        with urllib.request.urlopen(args.server.rstrip("/") + "/object_info", timeout=60) as resp:
            object_info = json.load(resp)
    else:
        object_info = json.loads(args.object_info.read_text())
    api_names = sorted(p.stem for p in (REPO / "workflows" / "api").glob("*.json"))
    if set(api_names) != set(TEMPLATES):
        raise SystemExit(f"TEMPLATES must name every API workflow exactly once; API: {api_names}")
    for stale in (REPO / "workflows").glob("*.json"):  # renamed or removed templates
        if stale.stem not in TEMPLATES.values():
            stale.unlink()
    for name, title in TEMPLATES.items():
        graph = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
        ui = to_ui(graph, object_info)
        out = REPO / "workflows" / f"{title}.json"
        out.write_text(json.dumps(ui, indent=2) + "\n")
        print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
