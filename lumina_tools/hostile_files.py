"""Broken and forged model files, built on purpose: the cases the loaders must refuse with a clear error.

Used by the pack's hardening tests (unit and end-to-end) so both try exactly the same files. Every builder
writes small files quickly (the zip bomb streams zeros through the compressor); none of them is ever loaded by
the pack outside tests.
"""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
from pathlib import Path

import torch

from comfy_lumina_mgpt.vocab import IMAGE_PREFIX


def copy_folder(src: str | Path, dst: str | Path) -> Path:
    """A fresh copy of a model folder (an existing ``dst`` is replaced)."""
    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def empty_file(path: str | Path) -> Path:
    """Truncate ``path`` to 0 bytes."""
    Path(path).write_bytes(b"")
    return Path(path)


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Keep the first ``keep`` fraction of ``path`` (a download that stopped half-way)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def garbage(path: str | Path, size: int = 4096) -> Path:
    """Replace ``path`` with ``size`` bytes that are not any file format."""
    Path(path).write_bytes(bytes((i * 37 + 11) % 251 for i in range(size)))
    return Path(path)


def forge_huge_tensor(path: str | Path) -> Path:
    """Rewrite a safetensors header so its first tensor claims 4 TiB (``[1<<20, 1<<20]`` fp32) of data the file
    does not hold; the rest of the file is kept."""
    path = Path(path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8: 8 + n])
    first = next(k for k in header if k != "__metadata__")
    header[first] = {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 1 << 42]}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    return path


def forge_header_length(path: str | Path) -> Path:
    """Make a safetensors file's 8-byte header length claim 1 TiB."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 1 << 40) + data[8:])
    return path


def edit_json(path: str | Path, **changes: object) -> Path:
    """Set top-level keys of a JSON file (``None`` deletes the key)."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def traversal_index(folder: str | Path, shard_name: str) -> Path:
    """Replace a model folder's weights by a ``model.safetensors.index.json`` naming ``shard_name`` for every
    tensor (``../../../../etc/passwd``, ``/etc/passwd`` ...)."""
    folder = Path(folder)
    from safetensors import safe_open

    single = folder / "model.safetensors"
    with safe_open(str(single), framework="pt") as sf:
        keys = list(sf.keys())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": dict.fromkeys(keys, shard_name)}), encoding="utf-8")
    single.unlink()
    return folder


def strip_special_tokens(path: str | Path) -> Path:
    """Remove every special and image token (``<…>`` and ``IMGIMG…``) from a tokenizer.json."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))

    def special(name: str) -> bool:
        return name.startswith("<") or name.startswith(IMAGE_PREFIX)

    data["added_tokens"] = [t for t in data.get("added_tokens", []) if not special(t["content"])]
    data["model"]["vocab"] = {k: v for k, v in data["model"]["vocab"].items() if not special(k)}
    data["post_processor"] = None
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def zip_bomb_checkpoint(path: str | Path, inflated_bytes: int = 1 << 31) -> Path:
    """A small ``torch.save``-style archive whose storages are deflated: one small real state dict, recompressed,
    plus a storage member of ``inflated_bytes`` zeros (2 GiB by default; a few MB on disk)."""
    path = Path(path)
    staging = path.with_name(path.name + ".plain")
    torch.save({"state_dict": {"w": torch.zeros(4, 4)}}, staging)
    with zipfile.ZipFile(staging) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        prefix = src.namelist()[0].split("/")[0]
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
        chunk = bytes(1 << 24)
        with dst.open(f"{prefix}/data/1", "w", force_zip64=True) as out:
            for _ in range(inflated_bytes // len(chunk)):
                out.write(chunk)
    staging.unlink()
    return path


def forge_lora_shapes(folder: str | Path, side: int = 4096) -> Path:
    """Rewrite an adapter so its first A/B pair has rank 1 and asks for a ``[side, side]`` update that fits no
    weight of the model (a careless loader forms the product before noticing)."""
    from safetensors.torch import load_file, save_file

    path = Path(folder) / "adapter_model.safetensors"
    tensors = load_file(str(path))
    a_key = next(k for k in tensors if k.endswith("lora_A.weight"))
    b_key = a_key.replace("lora_A", "lora_B")
    tensors[a_key] = torch.zeros(1, side)
    tensors[b_key] = torch.zeros(side, 1)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path
