"""LoRA adapters through ``peft``, on the plain ``LuminaMGPT`` module.

``peft.inject_adapter_in_model`` swaps each target ``nn.Linear`` for a LoRA layer in place, so the model keeps
its class, its ``forward`` and its attributes (``gradient_checkpointing``, ``config``); a ``PeftModel``
wrapper would forward attribute reads but swallow attribute writes. Files use peft's layout so they also load
with ``PeftModel.from_pretrained``: ``adapter_model.safetensors`` with keys
``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``, and ``adapter_config.json``.

peft is imported inside the functions: it pulls in transformers, which costs seconds at ComfyUI start-up.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..atomic import atomic_folder
from ..file_checks import read_json_file, safetensors_header
from .config import LoraSettings

if TYPE_CHECKING:
    from ..model.chameleon import LuminaMGPT

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_NAME = "default"
FILE_PREFIX = "base_model.model."


def _lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def has_lora(model: nn.Module) -> bool:
    """Whether LoRA layers are injected in ``model``."""
    return any(".lora_A." in name for name, _ in model.named_parameters())


def peft_config(settings: LoraSettings):  # -> peft.LoraConfig
    """The ``peft.LoraConfig`` of our settings."""
    from peft import LoraConfig

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules), bias="none")


def apply_lora(model: LuminaMGPT, settings: LoraSettings) -> LuminaMGPT:
    """Inject fresh LoRA adapters into ``model`` in place and freeze everything else.

    B starts at zero, so the adapted model computes exactly what the base model did. Adapter weights are fp32
    whatever the base dtype (low-precision adapters lose small updates).

    Returns:
        ``model`` itself, with only the ``lora_A`` / ``lora_B`` parameters trainable.
    Raises:
        RuntimeError: if the model already carries adapters.
        ValueError: if no module matches ``settings.target_modules``.
    """
    from peft import inject_adapter_in_model

    if has_lora(model):
        raise RuntimeError("the model already has LoRA adapters; merge_lora or unload_lora it first")
    try:
        inject_adapter_in_model(peft_config(settings), model, adapter_name=ADAPTER_NAME)
    except ValueError as err:
        raise ValueError(f"LoRA target_modules {list(settings.target_modules)} match no module of the model "
                         f"(valid names end in q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                         f"down_proj): "
                         f"{err}") from err
    for name, p in model.named_parameters():
        is_adapter = ".lora_A." in name or ".lora_B." in name
        p.requires_grad_(is_adapter)
        if is_adapter and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


def lora_state_dict(model: nn.Module | dict[str, Tensor]) -> dict[str, Tensor]:
    """Adapter weights only, in peft's file naming (``base_model.model.<module>.lora_A.weight``), on CPU.

    Accepts the model or a full state dict of it (as gathered from several processes).
    """
    items = model.items() if isinstance(model, dict) else model.named_parameters()
    out = {}
    for name, p in items:
        if ".lora_A." in name or ".lora_B." in name:
            key = FILE_PREFIX + name.replace(f".{ADAPTER_NAME}.", ".")
            out[key] = p.detach().to("cpu", copy=True).contiguous()
    if not out:
        raise ValueError("the model has no LoRA adapter to save (was it trained with lora: null?)")
    return out


def write_lora_files(folder: str | Path, state: dict[str, Tensor], settings: LoraSettings) -> None:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` into an existing ``folder``."""
    save_file(state, str(Path(folder) / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    peft_config(settings).save_pretrained(str(folder))


def save_lora(model: nn.Module, settings: LoraSettings, folder: str | Path,
              state: dict[str, Tensor] | None = None, *, overwrite: bool = False) -> Path:
    """Write the adapter of ``model`` as a peft adapter folder, atomically.

    An existing ``folder`` that holds anything is refused (``ValueError``) unless ``overwrite``; an overwrite
    replaces the two adapter files and keeps any other file there. ``state`` overrides the weights read from
    ``model`` (used when they were gathered from several processes).
    """
    folder = Path(folder)
    state = lora_state_dict(model) if state is None else state
    with atomic_folder(folder, overwrite=overwrite, replaces={ADAPTER_WEIGHTS, ADAPTER_CONFIG}.__contains__,
                       what="LoRA folder") as tmp:
        write_lora_files(tmp, state, settings)
    return folder


def read_lora_settings(folder: str | Path) -> LoraSettings:
    """``LoraSettings`` from a peft ``adapter_config.json``."""
    path = Path(folder) / ADAPTER_CONFIG
    raw = read_json_file(path, dict, "LoRA config")
    if raw.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path} describes a {raw.get('peft_type')} adapter; only LoRA is supported")
    if raw.get("use_rslora") or raw.get("use_dora") or raw.get("rank_pattern") or raw.get("alpha_pattern"):
        raise ValueError(f"{path} uses rsLoRA/DoRA/per-layer ranks, which this loader does not support")
    targets = raw.get("target_modules") or []
    if isinstance(targets, str):
        raise ValueError(f"{path} gives target_modules as a regex ({targets!r}); a list of names is needed")
    rank, alpha, dropout = raw.get("r"), raw.get("lora_alpha"), raw.get("lora_dropout", 0.0)
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= 65536:
        raise ValueError(f"{path}: 'r' must be an integer rank in 1..65536, got {rank!r}")
    for name, value in (("lora_alpha", alpha), ("lora_dropout", dropout)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{path}: {name!r} must be a finite number, got {value!r}")
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"{path}: 'target_modules' must be a list of module names, got {targets!r}")
    return LoraSettings(rank=rank, alpha=float(alpha), dropout=float(dropout), target_modules=tuple(targets))


def read_lora_weights(folder: str | Path) -> dict[str, Tensor]:
    """Adapter tensors keyed by module path, peft's prefix removed (``model.layers.0.mlp.up_proj.lora_A``)."""
    path = Path(folder) / ADAPTER_WEIGHTS
    if not path.is_file():
        raise ValueError(f"{folder} has no {ADAPTER_WEIGHTS}; is it a LoRA adapter folder?")
    safetensors_header(path)  # header length and tensor ranges against the file size
    try:
        raw = load_file(str(path))
    except (OSError, RuntimeError, ValueError, SafetensorError) as err:
        raise ValueError(f"cannot read LoRA weights {path}: {err}") from err
    out = {}
    for key, tensor in raw.items():
        if key.startswith(FILE_PREFIX):
            key = key[len(FILE_PREFIX):]
        if not key.endswith((".lora_A.weight", ".lora_B.weight")):
            raise ValueError(f"{path} holds {key!r}, which is not a LoRA A/B weight")
        out[key.removesuffix(".weight")] = tensor
    return out


def load_lora_state(model: nn.Module, folder: str | Path) -> None:
    """Copy the adapter weights in ``folder`` into the adapters already injected in ``model``."""
    weights = read_lora_weights(folder)
    params = dict(model.named_parameters())
    missing = []
    for key, tensor in weights.items():
        name = key.replace(".lora_A", f".lora_A.{ADAPTER_NAME}").replace(".lora_B", f".lora_B.{ADAPTER_NAME}")
        name += ".weight"
        if name not in params:
            missing.append(key)
            continue
        if params[name].shape != tensor.shape:
            raise ValueError(f"LoRA tensor {key} has shape {list(tensor.shape)}, the model expects "
                             f"{list(params[name].shape)}; the adapter belongs to another model size")
        with torch.no_grad():
            params[name].copy_(tensor)
    expected = sum(1 for n in params if ".lora_A." in n or ".lora_B." in n)
    if missing or expected != len(weights):
        raise ValueError(f"LoRA file in {folder} does not fit the model: {len(missing)} tensors without a "
                         f"matching module (e.g. {missing[:2]}), {expected} adapter tensors in the model, "
                         f"{len(weights)} in the file")


def load_lora(model: LuminaMGPT, path: str | Path, strength: float = 1.0) -> LuminaMGPT:
    """Apply a trained adapter folder to a loaded model, in place, scaled by ``strength``.

    The base weights are untouched (the adapter runs beside them; ``unload_lora`` removes it again,
    ``merge_lora`` folds it in). Copy the model first if the caller still needs it unadapted.

    Args:
        model: a ``LuminaMGPT`` without adapters.
        path: folder with ``adapter_model.safetensors`` and ``adapter_config.json``.
        strength: multiplier on the adapter's update (0 = base model, 1 = as trained).
    """
    settings = read_lora_settings(path)
    apply_lora(model, settings)
    load_lora_state(model, path)
    for _, layer in _lora_layers(model):
        layer.scaling[ADAPTER_NAME] = layer.scaling[ADAPTER_NAME] * strength
    model.requires_grad_(False)
    return model


def lora_weight_deltas(path: str | Path, strength: float = 1.0,
                       weight_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Tensor]:
    """``{"model.layers.0.self_attn.q_proj.weight": strength * alpha / r * B @ A}`` (fp32, CPU) for patchers
    that add deltas to weights by key (e.g. ComfyUI's ``ModelPatcher``).

    With ``weight_shapes`` (the model's ``{name: shape}``), every pair is checked before its product is formed:
    A ``[r, in]`` and B ``[out, r]`` must meet the adapter's rank and the target weight's ``[out, in]``, so a
    forged file cannot ask for a product of any size.
    """
    settings = read_lora_settings(path)
    weights = read_lora_weights(path)
    scale = strength * settings.alpha / settings.rank
    out = {}
    for key, a in weights.items():
        if not key.endswith(".lora_A"):
            continue
        module = key.removesuffix(".lora_A")
        b = weights.get(module + ".lora_B")
        if b is None:
            raise ValueError(f"{path}: {module} has lora_A but no lora_B")
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"{path}: {module} has lora_A {list(a.shape)} and lora_B {list(b.shape)}, which do "
                             f"not multiply (A must be [rank, in], B [out, rank])")
        if weight_shapes is not None:
            target = weight_shapes.get(module + ".weight")
            if target is None:
                raise ValueError(f"{path} adapts {module}, which the model does not have; the LoRA was trained "
                                 f"for another model")
            if (b.shape[0], a.shape[1]) != tuple(target):
                raise ValueError(f"{path}: the update of {module} would be {[b.shape[0], a.shape[1]]} but the "
                                 f"weight is {list(target)}; the LoRA was trained for another model size")
        out[module + ".weight"] = scale * (b.float() @ a.float())
    return out


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def merge_lora(model: LuminaMGPT) -> LuminaMGPT:
    """Fold the adapters into the base weights and remove the LoRA layers, in place.

    Returns:
        ``model`` as a plain ``LuminaMGPT`` (the published state-dict keys), ready for ``save_model``.
    """
    layers = _lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapter to merge")
    for name, layer in layers:
        with torch.no_grad():
            layer.merge(safe_merge=True)
        _replace_module(model, name, layer.get_base_layer())
    return model


def unload_lora(model: LuminaMGPT) -> LuminaMGPT:
    """Remove the LoRA layers without merging, restoring the base model, in place."""
    for name, layer in _lora_layers(model):
        if layer.merged:
            layer.unmerge()
        _replace_module(model, name, layer.get_base_layer())
    if "peft_config" in vars(model):
        del model.peft_config  # left by peft's injection; a later injection would warn about two adapters
    return model
