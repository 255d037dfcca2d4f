"""The training loop, nanoGPT-shaped, as one function: ``train(model, dataset, cfg) -> TrainResult``.

Per optimizer step: set the learning rate from the pure ``lr_at(step, cfg)``; run ``grad_accum``
micro-batches, each loss divided by ``grad_accum`` (gradients are all-reduced only on the last one); clip the
global norm; step; ``zero_grad(set_to_none=True)``. Everything the loop changes on the model (dropout rates,
gradient checkpointing, ``requires_grad``, fp32 master copies of low-precision trainable weights, train mode)
is put back in ``finally``; LoRA adapters, when ``cfg.lora`` is set, stay in the returned model because they
are the result (``lora.merge_lora`` / ``lora.unload_lora`` remove them).

ComfyUI runs nodes under ``torch.inference_mode()``; ``train`` leaves it for its own duration and replaces any
parameter that was created under it (an inference tensor cannot take part in autograd) by a normal copy.

Reproducibility: Python, NumPy and torch are seeded from ``cfg.seed`` (+ rank); the data order is a pure
function of (seed, epoch) and condition dropout of (seed, rank, step, micro-batch), and checkpoints carry the
RNG states, so a run resumed from step k reaches step n with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..model.loading import checkpoint_files, write_model_files
from . import checkpoint as ckpt
from . import distributed as dist
from .config import TrainConfig
from .data import BatchStream, TokenDataset, TokenExample, collate
from .lora import apply_lora, has_lora, load_lora_state, lora_state_dict, write_lora_files
from .objective import drop_condition, lm_loss
from .resume import checked_resume_point

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ..vocab import LuminaVocab

logger = logging.getLogger(__name__)

# on_step(step, total_steps, metrics) after every optimizer step; raising aborts training (nothing saved).
OnStep = Callable[[int, int, dict[str, float]], None]


class NonFiniteError(ValueError):
    """The loss, a gradient or a weight became NaN or infinite: the run stopped before that reached the
    weights (loss, gradients) or any checkpoint (weights)."""


def _adamw(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def _sgd(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.betas[0], weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], TrainConfig], torch.optim.Optimizer]] = {
    "adamw": _adamw,
    "sgd": _sgd,
}


@dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        model: the trained model (unwrapped; with its LoRA adapters when ``cfg.lora`` was set).
        history: one dict per optimizer step: step, loss, ce, z, lr, grad_norm, tokens_per_s (+ eval_loss).
        last_checkpoint: the newest checkpoint folder written, or None.
        stopped_early: True when ``should_stop`` ended the run before ``max_steps``.
        step: optimizer steps done in total (including those before a resume).
    """

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    last_checkpoint: Path | None = None
    stopped_early: bool = False
    step: int = 0


def half_cosine(progress: float) -> float:
    """1 at ``progress`` 0, falling along half a cosine to 0 at 1: the shape of every decay schedule here."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up to ``lr`` over ``warmup_steps``,
    then a half cosine down to ``min_lr_ratio * lr`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + half_cosine(progress) * (cfg.lr - cfg.min_lr)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` over the trainable parameters.

    Weight decay applies to weight matrices only: not to biases, and not to norms of any shape (Chameleon's
    qk-norms are ``[1, head_dim]`` or ``[heads, head_dim]``: decaying them shrinks every attention logit).
    """
    try:
        factory = OPTIMIZERS[cfg.optimizer]
    except KeyError:
        raise ValueError(f"Unknown optimizer {cfg.optimizer!r}; choose one of {sorted(OPTIMIZERS)}") from None
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameter")
    decayed = [p for n, p in trainable if is_weight_matrix(n, p)]
    kept = [p for n, p in trainable if not is_weight_matrix(n, p)]
    groups = [{"params": decayed, "weight_decay": cfg.weight_decay}, {"params": kept, "weight_decay": 0.0}]
    return factory([g for g in groups if g["params"]], cfg)


def is_weight_matrix(name: str, param: torch.Tensor) -> bool:
    """Whether parameter ``name`` is a weight matrix (weight-decayed, randomly initialised): not a bias, not a
    vector, and not a norm of any shape (Chameleon's qk-norms are ``[1, head_dim]`` matrices)."""
    parts = name.rsplit(".", 2)
    module = parts[-2] if len(parts) >= 2 else ""
    return param.ndim >= 2 and parts[-1] != "bias" and "norm" not in module


# --- model patching, undone in train()'s finally ----------------------------------------------------------
@dataclass
class _ModelPatch:
    training: bool
    checkpointing: bool
    dropout: list[tuple[nn.Dropout, float]]
    params: list[tuple[nn.Parameter, torch.dtype, bool]]


def _make_autograd_ready(model: nn.Module) -> None:
    """Replace parameters and buffers created under ``inference_mode`` by normal copies.

    An inference tensor has no version counter, so autograd cannot save it for the backward pass; assigning
    to ``.data`` keeps the inference flag on the ``Parameter`` itself, hence new ``Parameter`` objects (shared
    ones stay shared).
    """
    replaced: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and p.is_inference():
                if id(p) not in replaced:
                    replaced[id(p)] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
                module._parameters[name] = replaced[id(p)]
        for name, b in list(module._buffers.items()):
            if b is not None and b.is_inference():
                module._buffers[name] = b.clone()


def _patch_model(model: nn.Module, cfg: TrainConfig) -> _ModelPatch:
    """Freeze/unfreeze, add LoRA, promote trainable weights to fp32, set dropout and checkpointing."""
    patch = _ModelPatch(model.training, bool(getattr(model, "gradient_checkpointing", False)), [],
                        [(p, p.dtype, p.requires_grad) for p in model.parameters()])
    if cfg.lora is not None:
        if not has_lora(model):
            apply_lora(model, cfg.lora)
    else:
        if has_lora(model):
            raise ValueError("the model carries LoRA adapters but lora is null (full finetune); "
                             "merge_lora or unload_lora it first, or train the adapter with a lora setting")
        model.requires_grad_(True)
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.float()  # fp32 master weights: bf16 cannot hold lr-sized updates
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout) and "lora_dropout" not in name:
            patch.dropout.append((module, module.p))
            module.p = cfg.dropout
    model.gradient_checkpointing = cfg.gradient_checkpointing
    model.train()
    return patch


def _unpatch_model(model: nn.Module, patch: _ModelPatch, restore_dtype: bool) -> None:
    for module, p in patch.dropout:
        module.p = p
    model.gradient_checkpointing = patch.checkpointing
    for param, dtype, requires_grad in patch.params:
        if restore_dtype and param.dtype != dtype:
            param.data = param.data.to(dtype)
        param.requires_grad_(requires_grad)
    model.eval()


# --- batches ----------------------------------------------------------------------------------------------
def _micro_batch(examples: list[TokenExample], vocab: LuminaVocab | None, cfg: TrainConfig, key: str,
                 device: torch.device) -> tuple[Tensor, Tensor, int]:
    """Condition dropout, then padding.

    Returns:
        ``ids [B, T]``, ``labels [B, T]`` on ``device``, and the number of real tokens.
    """
    rng = random.Random(key)  # noqa: S311  seeded, not a secret
    pairs: list[tuple[Any, Any]] = []
    for ex in examples:
        if cfg.cfg_drop_prob > 0 and vocab is not None:
            pairs.append(drop_condition(ex.ids.tolist(), ex.labels.tolist(), vocab, cfg.cfg_drop_prob, rng))
        else:
            pairs.append((ex.ids, ex.labels))
    ids, labels = collate(pairs, device)
    return ids, labels, sum(len(p[0]) for p in pairs)


def _autocast(cfg: TrainConfig, device: torch.device, accelerator: Accelerator | None
              ) -> AbstractContextManager:
    if accelerator is None and cfg.bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, dataset: TokenDataset, cfg: TrainConfig, device: torch.device,
             accelerator: Accelerator | None = None) -> float:
    """Mean cross-entropy over ``dataset`` in eval mode (no dropout, no condition dropout)."""
    was_training = model.training
    model.eval()
    losses = []
    try:
        for start in range(0, len(dataset), cfg.batch_size):
            chunk = dataset.examples[start:start + cfg.batch_size]
            ids, labels = collate([(ex.ids, ex.labels) for ex in chunk], device)
            with _autocast(cfg, device, accelerator):
                logits = model(ids)
            losses.append(lm_loss(logits, labels, 0.0)[1].item())
    finally:
        model.train(was_training)
    return float(np.mean(losses)) if losses else float("nan")


# --- checkpoints ------------------------------------------------------------------------------------------
class _StateView:
    """Looks enough like a ``LuminaMGPT`` for ``write_model_files``: a config and a (gathered) state dict."""

    def __init__(self, config: Any, state: dict[str, Tensor]) -> None:
        self.config, self._state = config, state

    def state_dict(self) -> dict[str, Tensor]:
        return self._state


def _trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _all_finite(tensors: list[Tensor], accelerator: Accelerator | None) -> bool:
    """Whether every tensor is free of NaN/infinity on every process (one device sync per call)."""
    local = True
    if tensors:
        local = bool(torch.stack([torch.isfinite(t.detach()).all() for t in tensors]).all())
    return not dist.any_across(not local, accelerator)


def _stop_message(what: str, step: int, cfg: TrainConfig) -> str:
    lora = f", lora alpha {cfg.lora.alpha} / rank {cfg.lora.rank}" if cfg.lora is not None else ""
    return (f"training stopped at step {step}: {what} is NaN or infinite, so no checkpoint was written from it "
            f"(earlier checkpoints in {cfg.output_dir or 'no output_dir'} are untouched). Lower the learning "
            f"rate (now {cfg.lr:g}{lora}), check the data, or resume from the last checkpoint")


def _check_weights(model: nn.Module, cfg: TrainConfig, step: int, accelerator: Accelerator | None) -> None:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not _all_finite(trainable, accelerator):
        raise NonFiniteError(_stop_message("a trained weight", step, cfg))


def _save_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int,
                     stream: BatchStream, accelerator: Accelerator | None) -> Path:
    """Write ``step-{step}`` (main process), with every process contributing its RNG state."""
    inner = dist.unwrap(model, accelerator)
    lora = has_lora(inner)
    _check_weights(model, cfg, step, accelerator)  # a poisoned state never becomes a checkpoint
    if dist.is_fsdp(accelerator):
        weights: Any = dist.full_state_dict(model, accelerator)
    else:
        weights = None
    opt_state = dist.full_optimizer_state(model, optimizer, accelerator)
    rngs = dist.gather_objects(ckpt.capture_rng(), accelerator)
    path = Path(cfg.output_dir) / ckpt.step_dir_name(step)
    if dist.is_main(accelerator):
        _, world = dist.rank_and_world(accelerator)
        epoch, index = stream.position
        state = ckpt.TrainerState(step=step, epoch=epoch, batch_index=index, optimizer=opt_state, rng=rngs,
                                  extra={"lora": lora, "world_size": world, "finite": True,
                                         "scheduler": {"lr_next": lr_at(step, cfg), "warmup_steps":
                                                       cfg.warmup_steps, "max_steps": cfg.max_steps,
                                                       "min_lr": cfg.min_lr},
                                         "trainable": _trainable_names(inner), "config": cfg.to_dict()})

        def writer(folder: Path) -> None:
            if lora:
                assert cfg.lora is not None  # noqa: S101  narrows the type: lora is set only when cfg.lora is
                write_lora_files(folder, lora_state_dict(weights if weights is not None else inner), cfg.lora)
            else:
                write_model_files(inner if weights is None else _StateView(inner.config, weights), folder)
            ckpt.save_trainer_state(folder, state)

        path = ckpt.write_checkpoint(cfg.output_dir, step, writer, cfg.keep_last)
        logger.info("checkpoint written: %s", path)
    dist.barrier(accelerator)
    return path


def _load_weights(model: nn.Module, folder: Path, lora: bool) -> None:
    """Weights of a checkpoint folder into the (unwrapped) model."""
    if lora:
        load_lora_state(model, folder)
        return
    from safetensors.torch import load_file

    expected = set(model.state_dict())
    seen: set[str] = set()
    for f in checkpoint_files(folder):
        shard = load_file(str(f))
        model.load_state_dict(shard, strict=False)
        seen.update(shard)
    if expected - seen or seen - expected:
        raise ValueError(f"checkpoint {folder} does not match the model: missing "
                         f"{sorted(expected - seen)[:3]}, unexpected {sorted(seen - expected)[:3]}")


# --- the loop ---------------------------------------------------------------------------------------------
def train(model: nn.Module, dataset: TokenDataset, cfg: TrainConfig, *, on_step: OnStep | None = None,
          should_stop: Callable[[], bool] | None = None, accelerator: Accelerator | None = None,
          resume_from: str | Path | bool | None = None, eval_dataset: TokenDataset | None = None
          ) -> TrainResult:
    """Finetune ``model`` (LoRA when ``cfg.lora`` is set, else every weight) on ``dataset``.

    Args:
        model: a ``LuminaMGPT`` on the device to train on (with an accelerator: anywhere, ``prepare`` moves
            it).
        dataset: tokenised examples (``data.prepare_dataset`` or ``TokenDataset.from_sequences``);
            ``dataset.vocab`` enables condition dropout.
        cfg: the run's settings.
        on_step: called after every optimizer step with ``(step, cfg.max_steps, metrics)``.
        should_stop: polled after every step; True saves a checkpoint (if ``cfg.output_dir``) and returns
            with ``stopped_early=True``.
        accelerator: an ``accelerate.Accelerator`` for multi-process runs (``distributed.make_accelerator``).
        resume_from: a checkpoint folder, a run folder, or True/"latest" for the newest under
            ``cfg.output_dir``; continues from its step with its optimizer, RNG and data position.
        eval_dataset: evaluated every ``cfg.eval_every`` steps (``eval_loss`` in the history).
    Returns:
        ``TrainResult``. Checkpoints go to ``cfg.output_dir/step-*`` every ``cfg.save_every`` steps, on stop
        and at the end (none when ``output_dir`` is empty).
    """
    with torch.inference_mode(False), torch.enable_grad():
        rank, world = dist.rank_and_world(accelerator)
        seed_everything(cfg.seed + rank)
        _make_autograd_ready(model)
        patch = _patch_model(model, cfg)
        try:
            return _run(model, dataset, cfg, on_step, should_stop, accelerator, resume_from, eval_dataset)
        finally:
            _unpatch_model(model, patch, restore_dtype=not dist.is_fsdp(accelerator))


def _run(model: nn.Module, dataset: TokenDataset, cfg: TrainConfig, on_step: OnStep | None,
         should_stop: Callable[[], bool] | None, accelerator: Accelerator | None,
         resume_from: str | Path | bool | None, eval_dataset: TokenDataset | None) -> TrainResult:
    rank, world = dist.rank_and_world(accelerator)
    lora = has_lora(model)
    optimizer = build_optimizer(model, cfg)
    folder = ckpt.resolve_resume(resume_from, cfg.output_dir)
    state = None
    if folder is not None:
        point = checked_resume_point(folder, model, optimizer, lora, _trainable_names(model),
                                     check_optimizer_shapes=not dist.is_fsdp(accelerator))
        folder, state = point.folder, point.state
        _load_weights(model, folder, lora)
    inner = model
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device if accelerator is not None else next(inner.parameters()).device
    step, epoch, index = 0, 0, 0
    if state is not None:
        if state.optimizer is not None:
            dist.load_optimizer_state(model, optimizer, state.optimizer, accelerator)
        if state.extra.get("world_size", 1) != world:
            logger.warning("resuming a %s-process run with %d processes: the data order will differ",
                           state.extra.get("world_size"), world)
        if len(state.rng) == world:
            ckpt.restore_rng(state.rng[rank])
        step, epoch, index = state.step, state.epoch, state.batch_index
        logger.info("resumed from %s at step %d", folder, step)
    stream = BatchStream(dataset, cfg.batch_size, cfg.seed, window=cfg.bucket_window, rank=rank, world=world,
                         epoch=epoch, index=index)
    trainable = [p for p in model.parameters() if p.requires_grad]
    result = TrainResult(inner, step=step, last_checkpoint=folder)
    while step < cfg.max_steps:
        metrics = _train_step(model, optimizer, stream, dataset.vocab, cfg, step, trainable, device,
                              accelerator)
        step += 1
        if eval_dataset is not None and cfg.eval_every and step % cfg.eval_every == 0:
            metrics["eval_loss"] = evaluate(model, eval_dataset, cfg, device, accelerator)
        result.history.append(metrics)
        result.step = step
        if step % cfg.log_every == 0 and dist.is_main(accelerator):
            logger.info("step %d/%d loss %.4f ce %.4f lr %.3g %.0f tok/s", step, cfg.max_steps,
                        metrics["loss"], metrics["ce"], metrics["lr"], metrics["tokens_per_s"])
        if on_step is not None:
            on_step(step, cfg.max_steps, metrics)
        stop = dist.any_across(bool(should_stop is not None and should_stop()), accelerator)
        periodic = bool(cfg.save_every) and step % cfg.save_every == 0
        if cfg.output_dir and (stop or periodic or step == cfg.max_steps):
            result.last_checkpoint = _save_checkpoint(model, optimizer, cfg, step, stream, accelerator)
        if stop:
            result.stopped_early = step < cfg.max_steps
            break
    if result.last_checkpoint is None or result.last_checkpoint.name != ckpt.step_dir_name(step):
        _check_weights(model, cfg, step, accelerator)  # the caller saves the returned model
    return result


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, stream: BatchStream,
                vocab: LuminaVocab | None, cfg: TrainConfig, step: int, trainable: list[nn.Parameter],
                device: torch.device, accelerator: Accelerator | None) -> dict[str, float]:
    """One optimizer step over ``cfg.grad_accum`` micro-batches; returns the step's metrics."""
    rank, world = dist.rank_and_world(accelerator)
    start = time.perf_counter()
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    totals = torch.zeros(3, dtype=torch.float64)
    tokens = 0
    for micro in range(cfg.grad_accum):
        ids, labels, n = _micro_batch(next(stream), vocab, cfg, f"{cfg.seed}:{rank}:{step}:{micro}", device)
        tokens += n
        with dist.no_sync(model, accelerator, sync=micro == cfg.grad_accum - 1):
            with _autocast(cfg, device, accelerator):
                logits = model(ids)
            loss, ce, z = lm_loss(logits, labels, cfg.z_loss_weight)
            dist.backward(loss / cfg.grad_accum, accelerator)
        totals += torch.tensor([loss.item(), ce.item(), z.item()], dtype=torch.float64)
        del logits, loss
    # checked before the optimizer step, so a NaN never reaches the weights
    if dist.any_across(not bool(torch.isfinite(totals).all()), accelerator):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteError(_stop_message(f"the loss ({(totals / cfg.grad_accum)[0].item()})", step + 1, cfg))
    if not _all_finite([p.grad for p in trainable if p.grad is not None], accelerator):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteError(_stop_message("a gradient", step + 1, cfg))
    grad_norm = float("nan")
    if cfg.grad_clip > 0:
        grad_norm = dist.clip_grad_norm(model, trainable, cfg.grad_clip, accelerator)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss_v, ce_v, z_v = dist.mean_across((totals / cfg.grad_accum).tolist(), accelerator)
    elapsed = max(time.perf_counter() - start, 1e-9)
    return {"step": step + 1, "loss": loss_v, "ce": ce_v, "z": z_v, "lr": lr, "grad_norm": grad_norm,
            "tokens_per_s": tokens * world / elapsed}
