"""Size widgets that follow the loaded model, and their check before anything runs.

ComfyUI validates a node's widgets before any loader has run, so ``validate_inputs`` cannot see the model.
It can see the submitted graph, though: ``remember_graph`` (an on-prompt handler) keeps it for the request
that is being validated, and ``graph_sizes`` follows the node's links to the Model and Tokenizer Loaders and
reads the sizes from their folders (config.json, vqgan.yaml, the tokenizer; no weights). Graphs whose model
cannot be traced that way are checked in ``execute``, before any sampling.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from pathlib import Path

from comfy_api.latest import io

from ..comfy_lumina_mgpt import sizes
from ..comfy_lumina_mgpt.tokenizer_bundle import TokenizerBundle
from ..comfy_lumina_mgpt.sizes import ModelSizes
from ..comfy_lumina_mgpt.tokenizer import TextTokenizer
from ..comfy_lumina_mgpt.vqgan import find_vqgan_files
from ..comfy_lumina_mgpt.vqgan.config import VQGANConfig
from .folders import FOLDER, VQ_FOLDER, resolve_subfolder
from .types import LoadedModel

logger = logging.getLogger(__name__)

_GRAPH: contextvars.ContextVar[dict | None] = contextvars.ContextVar("lumina_mgpt_graph", default=None)
_HOOKED = {"done": False}
SAME_FOLDER = "(same as tokenizer)"
MODEL_LOADER = "LuminaMGPTModelLoader"
TOKENIZER_LOADER = "LuminaMGPTTokenizerLoader"


def size_inputs(default: str = sizes.AUTO) -> list:
    """resolution (auto / labelled aspect ratios / custom), scale and custom_size."""
    return [
        io.Combo.Input("resolution", options=sizes.CHOICES, default=default,
                       tooltip="auto: the loaded model's own size (64x48 for lumina-mgpt-world, 768x768 for "
                               "Lumina-mGPT-7B-768). An aspect ratio picks the model's nearest size of that shape. "
                               "custom: type the size in custom_size."),
        io.Float.Input("scale", default=1.0, min=0.1, max=1.0, step=0.05,
                       tooltip="Share of the model's largest image area for auto and the aspect ratios "
                               "(1.0 = the size it was trained at; smaller is faster). Snapped to its sizes."),
        io.String.Input("custom_size", default="",
                        tooltip="Used when resolution is 'custom': WIDTHxHEIGHT. It must be a size the loaded "
                                "model draws; the error names the nearest one."),
    ]


def check_widgets(resolution: str, custom_size: str) -> None:
    """What can be checked without the model: the custom size's form."""
    if resolution == sizes.CUSTOM:
        sizes.parse_size(custom_size)


def sizes_for(model: LoadedModel, bundle: TokenizerBundle) -> ModelSizes:
    """The sizes the loaded model draws with this tokenizer."""
    return sizes.model_sizes(model.layout, bundle.patch, bundle.vocab.max_grid)


def validate_size_widgets(node_id: str | None, resolution: str, custom_size: str = "") -> bool | str:
    """``validate_inputs`` body: the custom size's form always, and whether the model draws it when the graph
    names its loaders ('auto' and the aspect ratios always snap to a size it draws, at any scale)."""
    try:
        check_widgets(resolution, custom_size)
        model_sizes = graph_sizes(node_id)
        if model_sizes is not None:
            model_sizes.choose(resolution, 1.0, custom_size)
    except ValueError as err:
        return str(err)
    return True


def remember_graph(json_data: dict) -> dict:
    """On-prompt handler: keep the submitted graph for ``validate_inputs`` of this request (a context
    variable, so concurrent requests never see each other's graph)."""
    graph = json_data.get("prompt") if isinstance(json_data, dict) else None
    _GRAPH.set(graph if isinstance(graph, dict) else None)
    return json_data


def install_graph_hook() -> None:
    """Register ``remember_graph`` with the running server once (called when ComfyUI lists the nodes)."""
    if _HOOKED["done"]:
        return
    from server import PromptServer

    if PromptServer.instance is not None:
        PromptServer.instance.add_on_prompt_handler(remember_graph)
        _HOOKED["done"] = True


def _linked(graph: dict, node: dict, name: str, class_type: str) -> dict | None:
    link = node.get("inputs", {}).get(name)
    if isinstance(link, list) and len(link) == 2:
        source = graph.get(str(link[0]))
        if isinstance(source, dict) and source.get("class_type") == class_type:
            return source
    return None


def _model_loader(graph: dict, node_id: str) -> dict | None:
    """The Model Loader feeding this node, or (for a prompt node) the one feeding a node that consumes it."""
    node = graph.get(node_id, {})
    direct = _linked(graph, node, "model", MODEL_LOADER)
    if direct is not None:
        return direct
    for other in graph.values():
        inputs = other.get("inputs", {}) if isinstance(other, dict) else {}
        if any(isinstance(v, list) and len(v) == 2 and str(v[0]) == node_id for v in inputs.values()):
            found = _linked(graph, other, "model", MODEL_LOADER)
            if found is not None:
                return found
    return None


def graph_sizes(node_id: str | None) -> ModelSizes | None:
    """The model's sizes for node ``node_id`` of the graph being validated, or None if they cannot be traced
    (no graph, loaders not directly linked, folders missing: execute checks then)."""
    graph = _GRAPH.get()
    if not graph or node_id is None or str(node_id) not in graph:
        return None
    node_id = str(node_id)
    loader = _model_loader(graph, node_id)
    tokenizer = _linked(graph, graph[node_id], "tokenizer", TOKENIZER_LOADER)
    if loader is None or tokenizer is None:
        return None
    try:
        model_folder = resolve_subfolder(FOLDER, str(loader["inputs"]["model_name"]))
        text_folder = _resolve(str(tokenizer["inputs"]["tokenizer"]))
        vq_choice = str(tokenizer["inputs"].get("vqgan", SAME_FOLDER))
        vq_folder = text_folder if vq_choice == SAME_FOLDER else _resolve(vq_choice)
        patch, max_grid = _tokenizer_grid(str(text_folder), str(vq_folder), _stamp(text_folder, vq_folder))
        layout = sizes.read_layout(model_folder)
        return sizes.model_sizes(layout, patch, max_grid)
    except (KeyError, TypeError, ValueError, OSError) as err:
        logger.debug("size check left to execute: %s", err)
        return None


def _resolve(choice: str) -> Path:
    root, _, rel = choice.partition("/")
    if root not in (FOLDER, VQ_FOLDER) or not rel:
        raise ValueError(f"{choice!r} is not a folder under models/{FOLDER} or models/{VQ_FOLDER}")
    return resolve_subfolder(root, rel)


def _stamp(*folders: Path) -> tuple[float, ...]:
    return tuple(max((f.stat().st_mtime for f in folder.iterdir()), default=0.0) for folder in folders)


@functools.lru_cache(maxsize=16)
def _tokenizer_grid(text_folder: str, vq_folder: str, stamp: tuple[float, ...]) -> tuple[int, int]:
    """(patch px, largest size token) of a tokenizer pair, read from vqgan.yaml and the tokenizer file."""
    yaml_path, _ = find_vqgan_files(vq_folder)
    patch = 2 * VQGANConfig.from_yaml(yaml_path).downsample
    return patch, TextTokenizer.from_folder(Path(text_folder)).vocab.max_grid

