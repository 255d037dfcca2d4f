"""Several processes through ``accelerate``: the launcher, the accelerator, and state that spans ranks.

One device::

    python -m lumina_tools train --config train.yaml

Several processes (data parallel; each process gets a slice of every global batch)::

    accelerate launch --multi_gpu --num_processes 8 -m lumina_tools train --config train.yaml

Sharded (FSDP), the way the official recipe trains the 7B model (LUMINA_SPEC §6): every ``DecoderLayer`` is
its own FSDP unit, chosen by accelerate's transformer-based auto-wrap policy naming our class::

    accelerate launch --config_file docs/accelerate_fsdp.yaml -m lumina_tools train --config train.yaml

``FSDP_ACCELERATE_CONFIG`` below is that file's content. ``use_orig_params`` must stay true for LoRA (frozen
and trainable parameters share flat FSDP units). bf16 is accelerate's mixed precision there (fp32 master
weights, bf16 compute), like the official ``MixedPrecision(param=bf16)`` setup.

Gradient accumulation: the loop divides the loss by ``grad_accum`` itself and skips the gradient all-reduce
(``accelerator.no_sync``) on all but the last micro-batch, so the accelerator is created with
``gradient_accumulation_steps=1``; accelerate's own counter would otherwise be one more piece of hidden state
to checkpoint. Checkpoints are written by the main process only, from full (gathered) state dicts.

Tested: data parallel over gloo on CPU (two processes, tests/unit/test_training_accelerate.py). The FSDP path
(wrapping, gathered state dicts, ``torch.distributed.checkpoint`` optimizer state) needs GPUs: accelerate's
FSDP plugin refuses to run on the CPU.
"""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from accelerate import Accelerator

    from .config import TrainConfig

logger = logging.getLogger(__name__)

WRAP_CLASS = "DecoderLayer"

FSDP_ACCELERATE_CONFIG = """\
# accelerate launch --config_file docs/accelerate_fsdp.yaml -m lumina_tools train --config train.yaml
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
mixed_precision: bf16
num_machines: 1
num_processes: 8
machine_rank: 0
main_training_function: main
rdzv_backend: static
same_network: true
use_cpu: false
fsdp_config:
  fsdp_version: 1
  fsdp_sharding_strategy: FULL_SHARD
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: DecoderLayer
  fsdp_use_orig_params: true
  fsdp_sync_module_states: true
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_backward_prefetch: BACKWARD_PRE
  fsdp_forward_prefetch: false
  fsdp_offload_params: false
  fsdp_cpu_ram_efficient_loading: false
  fsdp_activation_checkpointing: false
"""


def launched_world_size() -> int:
    """How many processes the launcher started (1 when run plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """The ``Accelerator`` for a launched run; settings from ``accelerate launch`` win over ``cfg``.

    bf16 mixed precision is requested only when ``cfg.bf16`` is set, CUDA is present and the launch config
    did not choose already. The FSDP wrap class is filled in when the launch config enables FSDP without one.
    Without CUDA the processes run on the CPU over gloo: launch them with ``accelerate launch --multi_gpu
    --num_processes N`` (accelerate's ``--cpu`` flag starts several processes only through ``mpirun``).
    """
    from accelerate import Accelerator

    kwargs: dict[str, Any] = {"gradient_accumulation_steps": 1}
    if not torch.cuda.is_available():
        # accelerate only forms a CPU process group (gloo) when told it runs on the CPU.
        kwargs["cpu"] = True
    if "ACCELERATE_MIXED_PRECISION" not in os.environ:
        kwargs["mixed_precision"] = "bf16" if cfg.bf16 and torch.cuda.is_available() else "no"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and \
            not os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP"):
        os.environ["FSDP_AUTO_WRAP_POLICY"] = "TRANSFORMER_BASED_WRAP"
        os.environ["FSDP_TRANSFORMER_CLS_TO_WRAP"] = WRAP_CLASS
    return Accelerator(**kwargs)


# --- helpers the loop uses; each works with accelerator=None ----------------------------------------------
def rank_and_world(accelerator: Accelerator | None) -> tuple[int, int]:
    if accelerator is None:
        return 0, 1
    return accelerator.process_index, accelerator.num_processes


def is_main(accelerator: Accelerator | None) -> bool:
    return accelerator is None or accelerator.is_main_process


def barrier(accelerator: Accelerator | None) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def is_fsdp(accelerator: Accelerator | None) -> bool:
    if accelerator is None:
        return False
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def unwrap(model: nn.Module, accelerator: Accelerator | None) -> nn.Module:
    return model if accelerator is None else accelerator.unwrap_model(model)


def no_sync(model: nn.Module, accelerator: Accelerator | None, sync: bool) -> AbstractContextManager:
    """Skip the gradient all-reduce on accumulation micro-batches (``sync=False``)."""
    if accelerator is None or sync or accelerator.num_processes == 1:
        return nullcontext()
    return accelerator.no_sync(model)


def backward(loss: Tensor, accelerator: Accelerator | None) -> None:
    if accelerator is None:
        loss.backward()
    else:
        accelerator.backward(loss)


def clip_grad_norm(model: nn.Module, params: list[nn.Parameter], max_norm: float,
                   accelerator: Accelerator | None) -> float:
    """Clip the global gradient norm (over all shards under FSDP); returns the norm before clipping."""
    if accelerator is None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        norm = accelerator.clip_grad_norm_(model.parameters() if is_fsdp(accelerator) else params, max_norm)
    return float(norm) if norm is not None else float("nan")


def mean_across(values: list[float], accelerator: Accelerator | None) -> list[float]:
    """Mean of per-process numbers (identity for one process)."""
    if accelerator is None or accelerator.num_processes == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(t, reduction="mean").tolist()


def any_across(flag: bool, accelerator: Accelerator | None) -> bool:
    """True when any process says True (so every process stops at the same step)."""
    if accelerator is None or accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


def gather_objects(obj: Any, accelerator: Accelerator | None) -> list[Any]:
    """One entry per process (in rank order)."""
    if accelerator is None or accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def full_state_dict(model: nn.Module, accelerator: Accelerator | None) -> dict[str, Tensor]:
    """The complete, unsharded model state dict on CPU (collective under FSDP; main process gets it)."""
    if accelerator is None:
        state = model.state_dict()
    else:
        state = accelerator.get_state_dict(model, unwrap=True)
    return {k: v.detach().to("cpu", copy=True) for k, v in (state or {}).items()}


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, accelerator: Accelerator | None
                         ) -> dict[str, Any]:
    """The optimizer ``state_dict`` with every tensor whole (collective under FSDP)."""
    if is_fsdp(accelerator):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, _inner(optimizer),
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return _inner(optimizer).state_dict()


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                         accelerator: Accelerator | None) -> None:
    """Inverse of ``full_optimizer_state`` (every process passes the same full state)."""
    if is_fsdp(accelerator):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, _inner(optimizer), state,
                                 options=StateDictOptions(full_state_dict=True))
        return
    _inner(optimizer).load_state_dict(state)


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)
