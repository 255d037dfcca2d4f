"""Training checkpoints: ``<output_dir>/step-{N:08d}/``, written atomically, the last K kept.

A checkpoint folder holds the weights plus the trainer state, and nothing is pickled:

* weights: the LoRA adapter (``adapter_model.safetensors`` + ``adapter_config.json``, peft's layout) or, for a
  full finetune, the whole model in the published layout (``config.json`` + ``model*.safetensors``), so the
  folder loads with ``load_model`` as it is;
* ``trainer_state.safetensors``: optimizer state tensors (``optimizer/<param>/<name>``) and torch RNG states
  (``rng/<rank>/torch``, ``rng/<rank>/cuda/<device>``), which are ByteTensors;
* ``trainer_state.json``: step, data position, scheduler values, optimizer hyper-parameters, Python and NumPy
  RNG states as lists, the run's config. It is written last.

Everything goes into a hidden temporary sibling (``.step-N.tmp-*``) that is renamed into place with
``os.replace`` only once complete, so a crash mid-write leaves the previous checkpoint as the latest usable
one and ``latest_checkpoint`` never sees the partial folder.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..atomic import atomic_folder

logger = logging.getLogger(__name__)

TRAINER_JSON = "trainer_state.json"
TRAINER_TENSORS = "trainer_state.safetensors"
STEP_DIR = re.compile(r"step-(\d{8})")
FORMAT_VERSION = 1


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders under ``output_dir``, oldest first (temporary folders are ignored)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and STEP_DIR.fullmatch(p.name) and (p / TRAINER_JSON).is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.fullmatch(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete ``step-*`` folder, or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def write_checkpoint(output_dir: str | Path, step: int, writer: Callable[[Path], None], keep_last: int = 0
                     ) -> Path:
    """Create ``<output_dir>/step-{step:08d}`` atomically.

    Args:
        writer: fills the (empty, temporary) folder it is given; anything it raises aborts the checkpoint and
            removes the temporary folder, leaving earlier checkpoints as they were.
        keep_last: keep only this many newest checkpoints (0 = keep all).
    Returns:
        the final folder.
    """
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    # a step folder is the trainer's own: one left by an earlier attempt at this step is replaced whole
    with atomic_folder(final, overwrite=True, replaces=lambda name: True, what="checkpoint") as tmp:
        writer(tmp)
    if keep_last:
        for stale in checkpoints_to_prune(root, keep_last):
            shutil.rmtree(stale, ignore_errors=True)
    return final


def passed_finite_check(folder: Path) -> bool:
    """Whether the trainer checked this checkpoint's weights for NaN/infinity before writing it."""
    try:
        return json.loads((folder / TRAINER_JSON).read_text(encoding="utf-8")).get("finite") is True
    except (OSError, ValueError, AttributeError):
        return False


def checkpoints_to_prune(output_dir: str | Path, keep_last: int) -> list[Path]:
    """All but the ``keep_last`` newest checkpoints, and never the newest one that passed the finiteness
    check (so checkpoints of unknown health can never push the last known-good one out)."""
    found = list_checkpoints(output_dir)
    keep = set(found[-keep_last:])
    good = [p for p in found if passed_finite_check(p)]
    if good:
        keep.add(good[-1])
    return [p for p in found if p not in keep]


# --- RNG --------------------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """This process's RNG states.

    Returns:
        ``{"python": list, "numpy": list, "torch": ByteTensor, "cuda": [ByteTensor per device]}``.
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        if len(state["cuda"]) != torch.cuda.device_count():
            logger.warning("checkpoint has CUDA RNG states for %d devices, this machine has %d; CUDA RNG not "
                           "restored", len(state["cuda"]), torch.cuda.device_count())
        else:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# --- optimizer --------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if torch.is_tensor(value) and value.numel() == 1:
        return value.item()
    raise ValueError(f"cannot store optimizer value {value!r} ({type(value).__name__}) in JSON")


def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split a torch optimizer ``state_dict`` into safetensors tensors and a JSON description."""
    tensors: dict[str, Tensor] = {}
    described: dict[str, dict[str, Any]] = {}
    int_keys = all(isinstance(k, int) for k in state_dict["state"])
    for key, entry in state_dict["state"].items():
        desc = {}
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer/{key}/{name}"] = value.detach().to("cpu", copy=True).contiguous()
                desc[name] = "<tensor>"
            else:
                desc[name] = _jsonable(value)
        described[str(key)] = desc
    meta = {"state": described, "int_keys": int_keys, "param_groups": _jsonable(state_dict["param_groups"])}
    return tensors, meta


def unflatten_optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of ``flatten_optimizer_state``."""
    state: dict[Any, dict[str, Any]] = {}
    for key, desc in meta["state"].items():
        entry = {name: tensors[f"optimizer/{key}/{name}"] if value == "<tensor>" else value
                 for name, value in desc.items()}
        state[int(key) if meta["int_keys"] else key] = entry
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


# --- trainer state ----------------------------------------------------------------------------------------
@dataclass
class TrainerState:
    """What besides the weights a run needs to continue exactly.

    Attributes:
        step: optimizer steps done.
        epoch, batch_index: data position (batches of ``epoch`` already consumed by each process).
        optimizer: a torch optimizer ``state_dict`` (None when not saved).
        rng: one ``capture_rng()`` dict per process, by rank.
        extra: free JSON (scheduler values, config, world size).
    """

    step: int
    epoch: int = 0
    batch_index: int = 0
    optimizer: dict[str, Any] | None = None
    rng: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def save_trainer_state(folder: Path, state: TrainerState) -> None:
    """Write ``trainer_state.safetensors``, then ``trainer_state.json`` (the completion marker)."""
    tensors: dict[str, Tensor] = {}
    optimizer_meta = None
    if state.optimizer is not None:
        opt_tensors, optimizer_meta = flatten_optimizer_state(state.optimizer)
        tensors.update(opt_tensors)
    rng_json = []
    for rank, rng in enumerate(state.rng):
        tensors[f"rng/{rank}/torch"] = rng["torch"].cpu().contiguous()
        for dev, cuda_state in enumerate(rng["cuda"]):
            tensors[f"rng/{rank}/cuda/{dev}"] = cuda_state.cpu().contiguous()
        rng_json.append({"python": rng["python"], "numpy": rng["numpy"], "cuda_devices": len(rng["cuda"])})
    save_file(tensors, str(folder / TRAINER_TENSORS), metadata={"format": "pt"})
    payload = {"format_version": FORMAT_VERSION, "step": state.step, "epoch": state.epoch,
               "batch_index": state.batch_index, "optimizer": optimizer_meta, "rng": rng_json,
               **_jsonable(state.extra)}
    _write_trainer_json(folder / TRAINER_JSON, payload)


def _write_trainer_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")


def load_trainer_state(folder: str | Path) -> TrainerState:
    """Read what ``save_trainer_state`` wrote."""
    folder = Path(folder)
    try:
        payload = json.loads((folder / TRAINER_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / TRAINER_TENSORS))
    except (OSError, json.JSONDecodeError, RuntimeError, ValueError, SafetensorError) as err:
        raise ValueError(f"{folder} is not a complete training checkpoint ({err}); resume from another "
                         f"step-* folder") from err
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        version = payload.get("format_version") if isinstance(payload, dict) else None
        raise ValueError(f"{folder} has trainer-state format {version}, this version reads {FORMAT_VERSION}")
    try:
        return _trainer_state(payload, tensors)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise ValueError(f"{folder / TRAINER_JSON} is damaged ({type(err).__name__}: {err}); resume from "
                         "another step-* folder") from err


def _trainer_state(payload: dict[str, Any], tensors: dict[str, Tensor]) -> TrainerState:
    optimizer = None
    if payload["optimizer"] is not None:
        optimizer = unflatten_optimizer_state(tensors, payload["optimizer"])
    rng = []
    for rank, entry in enumerate(payload["rng"]):
        rng.append({"python": entry["python"], "numpy": entry["numpy"], "torch": tensors[f"rng/{rank}/torch"],
                    "cuda": [tensors[f"rng/{rank}/cuda/{d}"] for d in range(entry["cuda_devices"])]})
    known = {"format_version", "step", "epoch", "batch_index", "optimizer", "rng"}
    extra = {k: v for k, v in payload.items() if k not in known}
    return TrainerState(step=int(payload["step"]), epoch=int(payload["epoch"]),
                        batch_index=int(payload["batch_index"]), optimizer=optimizer, rng=rng, extra=extra)


def resolve_resume(resume_from: str | Path | bool | None, output_dir: str) -> Path | None:
    """``True``/``"latest"`` -> newest checkpoint under ``output_dir`` (None if there is none yet); a path ->
    that folder (a run folder containing ``step-*`` folders resolves to its newest); None/False -> None."""
    if resume_from is None or resume_from is False:
        return None
    if resume_from is True or resume_from == "latest":
        if not output_dir:
            raise ValueError("resume_from='latest' needs output_dir to look in")
        return latest_checkpoint(output_dir)
    path = Path(resume_from)
    if (path / TRAINER_JSON).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise ValueError(f"{path} is neither a checkpoint folder (with {TRAINER_JSON}) nor a folder of "
                         f"step-* checkpoints")
    return latest
