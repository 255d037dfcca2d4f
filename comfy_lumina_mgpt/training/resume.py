"""Resume only from a checkpoint that is whole and finite, falling back to earlier steps when it is not.

A checkpoint can be damaged after it was written (a truncated copy, a disk error, a hand edit) or written by a
version that did not check its weights. ``checked_resume_point`` reads everything a resume needs (trainer state,
RNG states, optimizer tensors, weights) and checks it against the model *before* anything is loaded into it:
parseable files, the expected keys and shapes, and finite numbers. An unusable checkpoint is reported with its
reason and the next older ``step-*`` folder of the same run is tried; when none is usable, one ``ValueError``
lists every folder and why.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..model.loading import checkpoint_files
from . import checkpoint as ckpt
from .lora import read_lora_weights

logger = logging.getLogger(__name__)


@dataclass
class ResumePoint:
    """A checkpoint that passed every check: its folder, its trainer state, and the folders passed over."""

    folder: Path
    state: ckpt.TrainerState
    skipped: list[tuple[Path, str]]


def candidates(requested: Path) -> list[Path]:
    """``requested`` and then the older ``step-*`` checkpoints of the same run folder, newest first."""
    match = ckpt.STEP_DIR.fullmatch(requested.name)
    if match is None:
        return [requested]
    step = int(match.group(1))
    older = [p for p in ckpt.list_checkpoints(requested.parent)
             if int(ckpt.STEP_DIR.fullmatch(p.name).group(1)) < step]  # type: ignore[union-attr]
    return [requested, *reversed(older)]


def checked_resume_point(requested: Path, model: nn.Module, optimizer: torch.optim.Optimizer, lora: bool,
                         trainable: list[str], check_optimizer_shapes: bool = True) -> ResumePoint:
    """The newest usable checkpoint, starting at ``requested`` (see the module docstring).

    Args:
        model: the (unwrapped) model the weights must fit.
        optimizer: the fresh optimizer the saved state must fit (its parameter order and shapes).
        lora: whether the run trains a LoRA adapter (the checkpoint must be of the same kind).
        trainable: names of the trainable parameters, as the checkpoint records them.
        check_optimizer_shapes: False under FSDP, whose optimizer state is keyed differently.
    Raises:
        ValueError: when no checkpoint of the run is usable, naming each one and its problem.
    """
    skipped: list[tuple[Path, str]] = []
    for folder in candidates(requested):
        try:
            state = _checked_state(folder, optimizer, lora, trainable, check_optimizer_shapes)
            _check_weights(folder, model, lora)
        except ValueError as err:
            skipped.append((folder, str(err)))
            logger.warning("cannot resume from %s: %s", folder, err)
            continue
        if skipped:
            logger.warning("resuming from %s instead (the newer checkpoints above are unusable)", folder)
        return ResumePoint(folder, state, skipped)
    reasons = "; ".join(f"{p.name}: {why}" for p, why in skipped)
    raise ValueError(f"no usable checkpoint to resume from in {requested.parent}: {reasons}. Start without "
                     "resume (in a new output folder) or restore a good copy of a checkpoint")


def _checked_state(folder: Path, optimizer: torch.optim.Optimizer, lora: bool, trainable: list[str],
                   check_shapes: bool) -> ckpt.TrainerState:
    try:
        state = ckpt.load_trainer_state(folder)
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        raise ValueError(f"its trainer state is incomplete ({type(err).__name__}: {err})") from err
    for name in ("step", "epoch", "batch_index"):
        if getattr(state, name) < 0:
            raise ValueError(f"its trainer state has {name} = {getattr(state, name)}")
    if bool(state.extra.get("lora")) != lora:
        kind = "a LoRA" if state.extra.get("lora") else "a full-finetune"
        raise ValueError(f"it is {kind} checkpoint; set lora in the config to match it")
    if state.extra.get("trainable") != trainable:
        raise ValueError("it was trained with other trainable parameters (different LoRA targets or model); "
                         "resume with the config it was written with")
    for rng in state.rng:
        _check_rng(rng)
    if state.optimizer is not None:
        _check_optimizer(state.optimizer, optimizer, check_shapes)
    return state


def _check_rng(rng: dict) -> None:
    """Each saved RNG state restores into a scratch generator (so the real ones are never half-set)."""
    try:
        version, internal, gauss = rng["python"]
        random.Random().setstate((version, tuple(internal), gauss))  # noqa: S311  a scratch generator
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.RandomState().set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.Generator().set_state(rng["torch"].cpu())
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"its saved random-number state is damaged ({err})") from err


def _check_optimizer(saved: dict, optimizer: torch.optim.Optimizer, check_shapes: bool) -> None:
    inner = getattr(optimizer, "optimizer", optimizer)
    params = [p for group in inner.param_groups for p in group["params"]]
    if check_shapes and len(saved["param_groups"]) != len(inner.param_groups):
        raise ValueError(f"its optimizer state has {len(saved['param_groups'])} parameter groups, the run has "
                         f"{len(inner.param_groups)}")
    for key, entry in saved["state"].items():
        for name, value in entry.items():
            if not torch.is_tensor(value):
                continue
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"its optimizer state {name!r} of parameter {key} holds NaN or infinity")
            if check_shapes and value.ndim > 0:
                if not isinstance(key, int) or not 0 <= key < len(params):
                    raise ValueError(f"its optimizer state names parameter {key!r}, the run has {len(params)}")
                if value.shape != params[key].shape:
                    raise ValueError(f"its optimizer state {name!r} of parameter {key} has shape "
                                     f"{list(value.shape)}, the parameter {list(params[key].shape)}")


def _check_weights(folder: Path, model: nn.Module, lora: bool) -> None:
    """The checkpoint's weights fit ``model`` (keys, shapes) and are finite, read one tensor at a time."""
    if lora:
        params = {name.replace(".default.", "."): p for name, p in model.named_parameters()
                  if ".lora_A." in name or ".lora_B." in name}
        weights = read_lora_weights(folder)
        if {k + ".weight" for k in weights} != set(params):
            raise ValueError(f"its adapter has {len(weights)} tensors, the model {len(params)} adapter weights")
        for key, tensor in weights.items():
            _check_tensor(key, tensor, params[key + ".weight"].shape)
        return
    expected = {k: v.shape for k, v in model.state_dict().items()}
    seen = set()
    try:
        for f in checkpoint_files(folder):
            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():
                    if key not in expected:
                        raise ValueError(f"{f.name} holds {key!r}, which the model does not have")
                    _check_tensor(key, sf.get_tensor(key), expected[key])
                    seen.add(key)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"its weights cannot be read ({err})") from err
    missing = sorted(set(expected) - seen)
    if missing:
        raise ValueError(f"{len(missing)} weights are missing, e.g. {missing[:2]}")


def _check_tensor(key: str, tensor: torch.Tensor, shape: torch.Size) -> None:
    if tensor.shape != shape:
        raise ValueError(f"weight {key!r} has shape {list(tensor.shape)}, the model {list(shape)}")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"weight {key!r} holds NaN or infinity")
