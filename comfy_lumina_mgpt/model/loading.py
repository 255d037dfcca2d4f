"""Read and write Lumina-mGPT checkpoint folders in the published layout.

A folder holds ``config.json`` and either ``model.safetensors`` or ``model-0000X-of-0000N.safetensors`` shards
with ``model.safetensors.index.json``. The model is built on the meta device and each shard is assigned
straight into it, so peak host memory stays about one copy of the weights. ``model.vqmodel.*`` tensors (absent
from the Lumina releases, present in some Chameleon conversions) are skipped: images go through the VQGAN.

With ``quant="int8"|"fp8"`` tensors are read one at a time and each projection weight is quantized as soon as it
is read (``quant.py``), so the peak is the quantized model plus one float tensor (the largest is the LM head),
never a full float copy.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..atomic import atomic_folder
from ..config import ModelConfig
from ..file_checks import check_shapes, confined_child, read_json_file, safetensors_header
from . import quant as quantization
from .chameleon import LuminaMGPT

logger = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
IGNORED_PREFIXES = ("model.vqmodel.",)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"|"fp16"|"fp32"|"auto"|None`` -> torch dtype (``None`` keeps the stored dtype)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return None
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"Unknown dtype {name!r}; choose one of {['auto', *DTYPES]}") from None


def checkpoint_files(folder: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint folder, in shard order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Model folder {folder} does not exist. Put the checkpoint folder (config.json + "
                         "*.safetensors) under models/lumina_mgpt/.")
    index = folder / INDEX_NAME
    if index.is_file():
        weight_map = read_json_file(index, dict, "safetensors index").get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f"{index} is not a valid safetensors index: it needs a 'weight_map' of tensor "
                             f"name -> shard file name")
        # Shard names come from a file: they may only name files inside this folder.
        files = [confined_child(folder, name, f"shard in {index}") for name in sorted(set(weight_map.values()))]
    elif (folder / SINGLE_NAME).is_file():
        files = [folder / SINGLE_NAME]
    else:
        files = sorted(p for p in folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"No .safetensors weights in {folder} (expected {SINGLE_NAME} or {INDEX_NAME} + shards)")
    for f in files:
        if not f.is_file():
            raise ValueError(f"{f.name} is listed in {INDEX_NAME} but missing from {folder}")
    return files


def _qk_norm_rows(files: list[Path]) -> int:
    """Row count of the stored q-norm weight (``[1, D]``, ``[mp, D]`` or ``[n_heads, D]``); every shard's header
    is checked against its file size on the way (ValueError naming the file)."""
    key = "model.layers.0.self_attn.q_norm.weight"
    rows = 1
    for f in files:
        header = safetensors_header(f)
        if key in header:
            shape = header[key].shape
            rows = shape[0] if len(shape) == 2 else 1
    return rows


def read_config(folder: str | Path) -> ModelConfig:
    """The ``ModelConfig`` of a checkpoint folder, with ``qk_norm_rows`` read from the weights header."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    checkpoint_files(folder)  # says clearly when the folder itself is missing
    if not cfg_path.is_file():
        raise ValueError(f"{folder} has no config.json; is it a Lumina-mGPT checkpoint folder?")
    rows = _qk_norm_rows(checkpoint_files(folder))
    return ModelConfig.from_json(cfg_path, qk_norm_rows=rows)


def _shard_tensors(path: Path, device: str | torch.device, one_by_one: bool):
    """``(key, tensor)`` pairs of one safetensors file: the whole file at once, or one tensor at a time."""
    try:
        if not one_by_one:
            yield from load_file(str(path), device=str(device)).items()
            return
        with safe_open(str(path), framework="pt", device=str(device)) as sf:
            for key in sf.keys():
                yield key, sf.get_tensor(key)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"cannot read {path}: {err} (file corrupt or truncated? download it again)") from err


def load_model(folder: str | Path, *, dtype: str | torch.dtype | None = None,
               device: str | torch.device = "cpu", quant: str = "none",
               check_cancel: Callable[[], None] | None = None) -> LuminaMGPT:
    """Load a checkpoint folder into a ``LuminaMGPT`` in eval mode.

    Args:
        folder: checkpoint folder (published layout).
        dtype: ``"bf16"``, ``"fp16"``, ``"fp32"``, a torch dtype, or None/``"auto"`` for the stored dtype; with
            ``quant`` it is the compute dtype (scales, embedding, norms, activations).
        device: where the weights go (loaded there directly, shard by shard).
        quant: ``"none"``, ``"int8"`` or ``"fp8"``: weight-only quantization of the decoder layers' and the LM
            head's linear layers while loading (``quant.quantize_model_``).
        check_cancel: called before each shard; raise from it to stop loading (e.g. ComfyUI's interrupt).
    Raises:
        ValueError: naming the file and key for a missing, unexpected or mis-shaped tensor, or a corrupt file;
            an unknown or unsupported ``quant``.
    """
    folder = Path(folder)
    cfg = read_config(folder)
    dtype = parse_dtype(dtype)
    quant = quantization.check_quant_supported(quant, device)
    with torch.device("meta"):
        model = LuminaMGPT(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    files = checkpoint_files(folder)
    for f in files:  # every header against its file and the config before any tensor is read
        check_shapes(f, safetensors_header(f), expected, IGNORED_PREFIXES)
    to_quantize = {f"{name}.weight": name for name in quantization.quantizable_linears(model)} \
        if quant != "none" else {}
    if any(model.get_submodule(name).bias is not None for name in to_quantize.values()):
        raise ValueError("quantization of linear layers with a bias is not supported by the loader")
    seen: set[str] = set()
    for f in files:
        if check_cancel is not None:
            check_cancel()
        tensors = {}
        for key, tensor in _shard_tensors(f, device, one_by_one=bool(to_quantize)):
            if key.startswith(IGNORED_PREFIXES):
                continue
            if key not in expected:
                raise ValueError(f"unexpected tensor {key!r} in {f.name}: it does not belong to a "
                                 f"Lumina-mGPT model with this config.json")
            if tensor.shape != expected[key]:
                raise ValueError(f"tensor {key!r} in {f.name} has shape {list(tensor.shape)}, the config.json "
                                 f"implies {list(expected[key])}")
            tensor = tensor.to(dtype) if dtype is not None else tensor
            seen.add(key)
            if key in to_quantize:
                module = quantization.QUANT_LINEARS[quant].from_float(tensor)
                quantization.replace_module_(model, to_quantize[key], module)
            elif to_quantize:
                # A tensor read one by one may still point into the file's memory map; a copy lets the map
                # (and every page the quantization read through it) go when the file is closed.
                tensors[key] = tensor.clone()
            else:
                tensors[key] = tensor
            del tensor
        model.load_state_dict(tensors, strict=False, assign=True)
        del tensors
    missing = sorted(set(expected) - seen)
    if missing:
        raise ValueError(f"{len(missing)} tensors missing from {folder}, e.g. {missing[:3]}; the checkpoint is "
                         "incomplete (a shard not downloaded?)")
    return (quantization.freeze_(model) if quant != "none" else model).eval()


def is_weights_file(name: str) -> bool:
    """Whether a file name belongs to the weights layout ``save_model`` writes (config, single file, index,
    shards): an overwrite replaces all of them, so an earlier sharded save cannot shadow a new single file."""
    return name in ("config.json", SINGLE_NAME, INDEX_NAME) or SHARD_NAME.fullmatch(name) is not None


def write_model_files(model: LuminaMGPT, folder: str | Path, *, max_shard_bytes: int = 10 * 1024**3,
                      dtype: torch.dtype | None = None, extra_files: dict[str, str] | None = None) -> None:
    """Write ``config.json`` and the weights (one file, or shards of at most ``max_shard_bytes`` with an index)
    into the existing folder ``folder``; ``extra_files`` are more text files by name."""
    if quantization.is_quantized(model):
        raise ValueError("cannot save a quantized model: the published layout holds float weights. Save the "
                         "float model (load it with quant='none') instead.")
    folder = Path(folder)
    state = {k: (v.to(dtype) if dtype is not None else v).detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(folder / SINGLE_NAME), metadata=metadata)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(folder / name), metadata=metadata)
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(t.numel() * t.element_size() for t in state.values())
        (folder / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total},
                                                     "weight_map": weight_map}, indent=2))
    (folder / "config.json").write_text(json.dumps(model.config.to_hf_dict(), indent=2))
    for name, text in (extra_files or {}).items():
        (folder / name).write_text(text)


def save_model(model: LuminaMGPT, folder: str | Path, *, max_shard_bytes: int = 10 * 1024**3,
               dtype: torch.dtype | None = None, extra_files: dict[str, str] | None = None,
               overwrite: bool = False) -> Path:
    """Write ``model`` as a checkpoint folder in the published layout, atomically (``atomic.atomic_folder``).

    An existing ``folder`` that holds anything is refused (``ValueError``) unless ``overwrite``; an overwrite
    replaces the weights layout (``is_weights_file``) and the ``extra_files`` and keeps every other file of the
    folder (tokenizer, VQGAN, the user's own). An interrupted save leaves the previous folder intact.
    """
    with atomic_folder(folder, overwrite=overwrite, replaces=is_weights_file, what="model folder") as tmp:
        write_model_files(model, tmp, max_shard_bytes=max_shard_bytes, dtype=dtype, extra_files=extra_files)
    return Path(folder)
