"""Read tensors from ``.safetensors`` or pickled ``.ckpt/.pt/.pth`` files without running code from the file.

Pickles are only ever opened with ``torch.load(..., weights_only=True)``. Lightning checkpoints (like
Meta's ``vqgan.ckpt``) also carry non-tensor objects - hyper-parameter dicts, OmegaConf configs,
``argparse.Namespace``, numpy scalars, paths - whose classes ``weights_only`` refuses. Those classes are never
imported: each global the file names is first checked against an allow-list of inert data containers, then
replaced by an *inert placeholder* class that accepts any constructor arguments and state and keeps nothing.
A file naming any other global (``posix.system``, ``builtins.eval``, ``subprocess.Popen`` ...) is refused
before anything is unpickled.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..atomic import atomic_file
from ..file_checks import check_zip_checkpoint, safetensors_header

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"

# Globals that only describe inert data in training checkpoints (never called: replaced by placeholders).
_ALLOWED_PREFIXES = (
    "pytorch_lightning.",
    "lightning.",
    "lightning_fabric.",
    "omegaconf.",
    "typing.",
    "collections.",
    "pathlib.",
    "numpy.dtypes.",
)
_ALLOWED_NAMES = frozenset({
    "argparse.Namespace",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    # builtin *types* referenced as values (e.g. OmegaConf node metadata); builtin functions stay refused
    "builtins.object", "builtins.dict", "builtins.list", "builtins.tuple", "builtins.int", "builtins.float",
    "builtins.str", "builtins.bool", "builtins.bytes",
})

CONVERT_HINT = "python -m lumina_tools convert-vqgan"


def is_inert_global(name: str) -> bool:
    """True if the pickle global ``name`` ("module.Qualname") is an allow-listed data container."""
    return name in _ALLOWED_NAMES or name.startswith(_ALLOWED_PREFIXES)


class _InertMeta(type):
    """Metaclass of the placeholders.

    torch's weights-only unpickler allows dict item assignment (SETITEMS) only when
    ``type(target) in [dict, OrderedDict, Counter]``; dict subclasses such as Lightning's ``AttributeDict``
    are pickled that way. Placeholder classes compare equal to ``dict`` so that check passes, and their
    instances drop the items. Nothing else is affected: real ``dict`` objects are never replaced. Should torch
    switch to an identity check, such files fail to load (closed), they do not run anything.
    """

    def __eq__(cls, other: object) -> bool:
        return other is dict or type.__eq__(cls, other)

    __hash__ = type.__hash__


def _make_placeholder(qualified_name: str) -> type:
    """A class standing in for ``qualified_name``: accepts any args/state/items, does and imports nothing."""

    def __new__(cls, *args: Any, **kwargs: Any):  # noqa: N807
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        pass

    def __setstate__(self, state: Any) -> None:  # noqa: N807
        pass

    def __setitem__(self, key: Any, value: Any) -> None:  # noqa: N807
        pass

    def __repr__(self) -> str:  # noqa: N807
        return f"<inert placeholder for {qualified_name}>"

    return _InertMeta("InertPlaceholder", (), {
        "__new__": __new__, "__init__": __init__, "__setstate__": __setstate__, "__setitem__": __setitem__,
        "__repr__": __repr__, "__slots__": (), "__module__": __name__, "__qualname__": "InertPlaceholder",
        "replaces": qualified_name,
    })


def _refusal(path: Path, name: str) -> ValueError:
    return ValueError(
        f"refusing to load {path}: the pickle names the global {name!r}, which is not an inert data "
        f"container, so loading it could run code from the file. This pack never unpickles such objects: get a "
        f".safetensors copy of the weights (or, for a file you have checked, convert it with your own tools) "
        f"and load that instead. (Lightning checkpoints whose extra objects are only hyper-parameters load as they "
        f"are; `{CONVERT_HINT}` turns those into .safetensors.)")


def _unsafe_globals(path: Path) -> list[str] | None:
    """Globals of a zip-format torch pickle outside torch's default allow-list; None for legacy formats."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except pickle.UnpicklingError as err:
        raise ValueError(f"refusing to load {path}: its pickle uses an operation that cannot be checked "
                         f"({_short_error(err)}). Get a .safetensors copy of the weights and load that "
                         f"instead.") from None
    except (ValueError, RuntimeError, KeyError):
        return None  # not a torch.save zip archive: torch.load's weights-only unpickler decides alone


def _short_error(err: BaseException) -> str:
    """The unpickler's own reason, without torch's advice to switch its weights-only check off."""
    text = str(err)
    if "TorchScript" in text:
        return "it is a TorchScript archive, not a saved state dict"
    for para in text.split("\n\n"):
        para = para.strip().replace("WeightsUnpickler error:", "").strip()
        if para and "weights_only" not in para and not para.startswith("Check the documentation"):
            return " ".join(para.split())
    return type(err).__name__


def _torch_load(path: Path) -> Any:
    check_zip_checkpoint(path)  # compressed or oversized members are refused before anything is inflated
    names = _unsafe_globals(path)
    placeholders: list[tuple[type, str]] = []
    for name in names or ():
        if not is_inert_global(name):
            raise _refusal(path, name)
        placeholders.append((_make_placeholder(name), name))
    if placeholders:
        logger.info("%s: replacing %d non-tensor global(s) with inert placeholders: %s", path,
                    len(placeholders), ", ".join(n for _, n in placeholders))
    try:
        with torch.serialization.safe_globals(placeholders):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"refusing to load {path}: the weights-only unpickler rejected it "
                         f"({_short_error(err)}). Get a .safetensors copy of the weights and load that "
                         f"instead.") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"could not read {path} as a torch checkpoint: {_short_error(err)}") from None


def _collect_tensors(obj: Any, path: Path, drop_prefixes: Iterable[str]) -> dict[str, Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a state dict (name -> tensor) or a "
                         f"checkpoint dict with a 'state_dict' entry")
    drop = tuple(drop_prefixes)
    out: dict[str, Tensor] = {}
    skipped = 0
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            skipped += 1
            continue
        if drop and key.startswith(drop):
            continue
        out[key] = value
    if skipped:
        logger.debug("%s: skipped %d non-tensor entries", path, skipped)
    if not out:
        raise ValueError(f"{path} contains no tensors (expected a state dict of model weights)")
    return out


def load_state_dict_file(path: str | Path, *, drop_prefixes: Iterable[str] = ("loss.",)) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` or ``.ckpt/.pt/.pth/.bin`` file, on CPU, without executing pickled code.

    Lightning checkpoints: the ``state_dict`` entry is used. Non-tensor entries are dropped, and so are keys
    starting with any of ``drop_prefixes`` (by default the ``loss.*`` discriminator/perceptual weights).
    Raises ValueError naming the file when it is missing, unreadable, forged (a safetensors header that does not fit
    the file, a zip archive with compressed or oversized members), or names a global that could run code.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} was not found")
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        safetensors_header(path)  # header length and tensor ranges against the file size
        try:
            obj: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ValueError(f"could not read {path} as safetensors: {err}") from None
    elif suffix in PICKLE_SUFFIXES:
        obj = _torch_load(path)
    else:
        raise ValueError(f"{path}: unsupported weights format {suffix!r}; use .safetensors or one of "
                         f"{', '.join(PICKLE_SUFFIXES)}")
    return _collect_tensors(obj, path, drop_prefixes)


def save_safetensors_atomic(tensors: dict[str, Tensor], dst: str | Path,
                            metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` to ``dst`` via a temporary file in the same folder and ``os.replace``.

    Tensors are moved to CPU and made contiguous; tensors sharing storage are copied (safetensors needs that).
    """
    from safetensors.torch import save_file

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    seen: set[tuple[int, int]] = set()
    prepared: dict[str, Tensor] = {}
    for key, value in tensors.items():
        t = value.detach().to("cpu").contiguous()
        ident = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.numel() and ident in seen:
            t = t.clone()
        elif t.numel():
            seen.add(ident)
        prepared[key] = t
    with atomic_file(dst) as tmp:
        save_file(prepared, str(tmp), metadata={"format": "pt", **(metadata or {})})
    return dst


def convert_ckpt_to_safetensors(src: str | Path, dst: str | Path | None = None) -> Path:
    """Convert pickled checkpoint ``src`` to ``dst`` (default: same name, ``.safetensors``); returns ``dst``.

    Loads with :func:`load_state_dict_file` (no code executed, ``loss.*`` dropped) and writes atomically.
    """
    src = Path(src)
    dst = src.with_suffix(SAFETENSORS_SUFFIX) if dst is None else Path(dst)
    if dst.resolve() == src.resolve():
        raise ValueError(f"convert_ckpt_to_safetensors: destination {dst} is the source file; "
                         f"pick another path")
    if dst.suffix.lower() != SAFETENSORS_SUFFIX:
        raise ValueError(f"convert_ckpt_to_safetensors: destination {dst} should end in .safetensors")
    tensors = load_state_dict_file(src)
    return save_safetensors_atomic(tensors, dst, metadata={"converted_from": src.name})
