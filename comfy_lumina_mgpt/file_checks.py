"""Checks a weights, tokenizer or index file must pass before anything reads it for real.

Each check reads only a file's header or directory (never its tensors) and raises ``ValueError`` naming the file
and the problem, so a truncated, empty, forged or hostile file becomes a clear error instead of a crash, a huge
allocation or a read outside the model folder:

* ``safetensors_header``: the 8-byte header length, the JSON header, every tensor's dtype, shape and byte range
  against the file size (no tensor may claim bytes the file does not hold, none may overlap).
* ``check_zip_checkpoint``: a ``torch.save`` zip archive may hold only stored (uncompressed) members whose sizes
  fit in the file: a compressed storage could inflate to any size (a zip bomb) and is refused before inflating.
* ``confined_child``: a file name taken from inside a file (index shard names) stays inside its folder.
* ``read_json_file``: a JSON file of bounded size, parsed to the expected top-level type.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

# Bytes per element of every safetensors dtype (the format's own names).
SAFETENSORS_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                           "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the format's own limit for the JSON header
MAX_JSON_BYTES = 64 * 1024 * 1024  # config, index and tokenizer files are far smaller (a 65k-token vocab ~ 5 MB)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as a safetensors header describes it (nothing read from the data section)."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                           for v in value)


def safetensors_header(path: str | Path) -> dict[str, TensorInfo]:
    """The tensors a ``.safetensors`` file declares, after checking the header against the file size.

    Raises:
        ValueError: naming ``path``: missing or empty file, header length past the file, header not a JSON
            object, unknown dtype, a shape or byte range that does not fit (claims bytes the file lacks,
            overlaps another tensor, or disagrees with shape x dtype).
    """
    path = Path(path)
    hint = "the file is corrupt, truncated or not a safetensors file; download or save it again"
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if size == 0:
                raise ValueError(f"{path} is empty (0 bytes); {hint}")
            if len(head) < 8:
                raise ValueError(f"{path} is {size} bytes, too short for a safetensors header; {hint}")
            (header_len,) = struct.unpack("<Q", head)
            if header_len < 2 or header_len > MAX_SAFETENSORS_HEADER or 8 + header_len > size:
                raise ValueError(f"{path}: the header claims {header_len} bytes but the file has {size}; {hint}")
            raw = fh.read(header_len)
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: the header is not valid JSON ({err}); {hint}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header is not a JSON object; {hint}")
    data_size = size - 8 - header_len
    out: dict[str, TensorInfo] = {}
    ranges: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: tensor {name!r} has no description; {hint}")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPE_BYTES:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}; {hint}")
        if not _int_list(shape) or not _int_list(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
            raise ValueError(f"{path}: tensor {name!r} has an invalid shape {shape!r} or byte range {offsets!r}; "
                             f"{hint}")
        nbytes = math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype]
        begin, end = offsets
        if end > data_size:
            raise ValueError(f"{path}: tensor {name!r} claims bytes {begin}..{end} but the file holds only "
                             f"{data_size} bytes of data; {hint}")
        if end - begin != nbytes:
            raise ValueError(f"{path}: tensor {name!r} of shape {shape} ({dtype}) needs {nbytes} bytes but its "
                             f"byte range holds {end - begin}; {hint}")
        out[name] = TensorInfo(dtype, tuple(shape), nbytes)
        ranges.append((begin, end, name))
    ranges.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(ranges, ranges[1:]):
        if begin_b < end_a:
            raise ValueError(f"{path}: tensors {a!r} and {b!r} overlap in the file; {hint}")
    return out


def check_shapes(path: str | Path, declared: Mapping[str, TensorInfo], expected: Mapping[str, tuple[int, ...]],
                 ignored_prefixes: tuple[str, ...] = ()) -> None:
    """ValueError naming ``path`` if a declared tensor is unknown to the model or has another shape.

    Run on the header before loading: a config that disagrees with the weights fails without reading them.
    """
    for name, info in declared.items():
        if ignored_prefixes and name.startswith(ignored_prefixes):
            continue
        if name not in expected:
            raise ValueError(f"unexpected tensor {name!r} in {Path(path).name}: it does not belong to a model "
                             f"with this config")
        if tuple(info.shape) != tuple(expected[name]):
            raise ValueError(f"tensor {name!r} in {Path(path).name} has shape {list(info.shape)}, the config "
                             f"implies {list(expected[name])}; the config and the weights do not belong together")


def check_zip_checkpoint(path: str | Path) -> bool:
    """Refuse a ``torch.save`` zip archive that could inflate beyond its own size. Returns False when ``path``
    is not a zip archive (legacy pickles are left to the weights-only unpickler).

    torch writes every member stored (uncompressed); a compressed member, or one that declares more bytes than
    the file holds, can only be a zip bomb or a forgery and is refused before anything is inflated.
    """
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            return False
        size = path.stat().st_size
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise ValueError(f"cannot read {path} as a torch checkpoint archive: {err}") from None
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"refusing to load {path}: member {info.filename!r} is compressed ({info.file_size} "
                             f"bytes when inflated, {info.compress_size} stored); torch never writes compressed "
                             f"checkpoints, so this could be a zip bomb. Get a .safetensors copy of the weights.")
        if info.file_size > size or info.header_offset + info.compress_size > size:
            raise ValueError(f"refusing to load {path}: member {info.filename!r} claims {info.file_size} bytes "
                             f"but the whole file has {size}; the archive is forged or truncated.")
        total += info.file_size
    if total > size:
        raise ValueError(f"refusing to load {path}: its members claim {total} bytes in a {size}-byte file; the "
                         f"archive is forged.")
    return True


def confined_child(folder: str | Path, name: object, what: str) -> Path:
    """``folder / name`` for a relative name that stays inside ``folder`` (no absolute path, drive, ``..``).

    The test is on the name itself, not on resolved links, so a model folder that is itself a symlink (or holds
    symlinked shards placed by its owner) works, while a name written inside a file cannot leave the folder.
    """
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise ValueError(f"{what}: {name!r} is not a file name")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts:
        raise ValueError(f"{what}: {name!r} points outside {folder}; only names inside the folder are allowed")
    return Path(folder) / name


def read_json_file(path: str | Path, expected: type = dict, what: str = "file") -> Any:
    """Parse a JSON file of at most ``MAX_JSON_BYTES``; ValueError naming it when unreadable or of another type."""
    path = Path(path)
    try:
        size = os.stat(path).st_size
        if size > MAX_JSON_BYTES:
            raise ValueError(f"{what} {path} is {size} bytes; a valid one is far below {MAX_JSON_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"cannot read {what} {path}: {err}") from None
    if not isinstance(data, expected):
        raise ValueError(f"{what} {path} must hold a JSON {expected.__name__}; got {type(data).__name__}")
    return data
