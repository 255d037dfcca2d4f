"""Training configuration: one frozen dataclass, readable from YAML.

The defaults follow the official 7B finetuning recipe (LUMINA_SPEC §6: AdamW lr 2e-5, betas 0.9/0.95, weight
decay 0.1, dropout 0.05, z-loss 1e-5, clip 4, max_seq_len 4096) with two changes suited to finetuning on one
GPU: LoRA on by default, and a cosine decay to ``min_lr_ratio * lr`` (the official runs keep the rate flat
after warm-up, i.e. ``min_lr_ratio: 1.0``). ``cfg_drop_prob`` is ours: the official code never drops the
condition, but a finetune that never sees the bare image context would lose classifier-free guidance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ..checks import number_problem, require

FLOAT_FIELDS = ("lr", "weight_decay", "min_lr_ratio", "grad_clip", "z_loss_weight", "dropout", "cfg_drop_prob")
INT_FIELDS = ("warmup_steps", "max_steps", "grad_accum", "batch_size", "seed", "save_every", "keep_last",
              "log_every", "eval_every", "max_seq_len", "target_size", "bucket_window")
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter shape: ``W + (alpha / rank) * B @ A`` on every module whose name ends in a target.

    Attributes:
        rank: inner dimension of A ``[rank, in]`` and B ``[out, rank]``.
        alpha: scale numerator (the update is scaled by ``alpha / rank``).
        dropout: dropout on the adapter input.
        target_modules: module-name suffixes to adapt (attention and MLP projections by default).
    """

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_LORA_TARGETS

    def __post_init__(self) -> None:
        require(number_problem(self.rank, "lora.rank", integer=True, minimum=1))
        require(number_problem(self.alpha, "lora.alpha", minimum=0.0))
        require(number_problem(self.dropout, "lora.dropout", minimum=0.0, maximum=1.0))
        if self.alpha == 0:
            raise ValueError("lora.alpha must be > 0 (the update is scaled by alpha / rank; 0 trains nothing)")
        if not self.target_modules:
            raise ValueError("lora.target_modules is empty; name at least one module, e.g. q_proj")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        object.__setattr__(self, "alpha", float(self.alpha))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraSettings:
        return cls(**_checked(cls, data, "lora"))


@dataclass(frozen=True)
class TrainConfig:
    """Everything one finetuning run needs.

    Optimisation: ``lr``, ``betas``, ``weight_decay`` (on >= 2-D parameters only), ``optimizer`` (a name in
    ``loop.OPTIMIZERS``), ``warmup_steps`` (linear from 0), ``max_steps`` (optimizer steps), ``min_lr_ratio``
    (cosine floor as a fraction of ``lr``), ``grad_clip`` (global norm, 0 = off), ``grad_accum``
    (micro-batches per step), ``batch_size`` (sequences per micro-batch and process).
    Objective: ``z_loss_weight``, ``dropout`` (set on the model's dropout modules while training),
    ``cfg_drop_prob`` (chance that an example is cut down to its bare image block, see
    ``objective.drop_condition``).
    Numerics / memory: ``bf16`` (bf16 autocast, only on CUDA), ``gradient_checkpointing``.
    Bookkeeping: ``seed``, ``save_every`` (steps, 0 = only at the end and on cancel), ``keep_last``,
    ``log_every``, ``eval_every``, ``output_dir`` (empty = write no checkpoints).
    Adapter: ``lora`` (``LoraSettings``) or None for a full finetune.
    Data: ``max_seq_len`` (longer examples are skipped and counted), ``target_size`` (512/768/1024 resolution
    family of the crops), ``data`` (image folder with .txt captions, or a conversation .json/.jsonl),
    ``cache_dir`` (pre-tokenised cache; default ``<output_dir>/token_cache``), ``bucket_window`` (batches per
    sort window).
    Command line only: ``model_dir``, ``tokenizer_dir`` (default ``model_dir``), ``model_dtype``, ``device``,
    ``save_merged`` (also write a merged full model after a LoRA run).
    """

    lr: float = 2e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    optimizer: str = "adamw"
    warmup_steps: int = 0
    max_steps: int = 1000
    min_lr_ratio: float = 0.1
    grad_clip: float = 4.0
    grad_accum: int = 1
    batch_size: int = 1
    z_loss_weight: float = 1e-5
    dropout: float = 0.05
    cfg_drop_prob: float = 0.1
    bf16: bool = True
    gradient_checkpointing: bool = True
    seed: int = 0
    save_every: int = 500
    keep_last: int = 2
    log_every: int = 1
    eval_every: int = 0
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    max_seq_len: int = 4096
    target_size: int = 768
    bucket_window: int = 50
    output_dir: str = ""
    data: str = ""
    cache_dir: str = ""
    model_dir: str = ""
    tokenizer_dir: str = ""
    model_dtype: str = "auto"
    device: str = "auto"
    save_merged: bool = False

    def __post_init__(self) -> None:
        # NaN passes every comparison below (they are all false), so finiteness is checked first
        for name in FLOAT_FIELDS:
            require(number_problem(getattr(self, name), name))
        for name in INT_FIELDS:
            require(number_problem(getattr(self, name), name, integer=True))
        positive = ("max_steps", "grad_accum", "batch_size", "max_seq_len", "target_size", "bucket_window",
                    "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_every", "eval_every", "keep_last", "grad_clip", "weight_decay",
                     "z_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("dropout", "cfg_drop_prob", "min_lr_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers, got {self.betas!r}")
        for i, beta in enumerate(self.betas):
            require(number_problem(beta, f"betas[{i}]", minimum=0.0, maximum=1.0))
        object.__setattr__(self, "betas", (float(self.betas[0]), float(self.betas[1])))
        if isinstance(self.lora, dict):
            object.__setattr__(self, "lora", LoraSettings.from_dict(self.lora))

    @property
    def min_lr(self) -> float:
        return self.lr * self.min_lr_ratio

    @property
    def token_cache_dir(self) -> str:
        """Where pre-tokenised items go (``cache_dir``, else ``<output_dir>/token_cache``)."""
        if self.cache_dir:
            return self.cache_dir
        if not self.output_dir:
            raise ValueError("set cache_dir or output_dir: the pre-tokenised data needs a folder")
        return str(Path(self.output_dir) / "token_cache")

    def with_(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-safe) of every field."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        if self.lora is not None:
            out["lora"]["target_modules"] = list(self.lora.target_modules)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise ``ValueError`` listing the valid ones."""
        kwargs = _checked(cls, data, "train config")
        if "lora" in kwargs and kwargs["lora"] is not None and not isinstance(kwargs["lora"], LoraSettings):
            if kwargs["lora"] is False:
                kwargs["lora"] = None
            elif kwargs["lora"] is True:
                kwargs["lora"] = LoraSettings()
            elif isinstance(kwargs["lora"], dict):
                kwargs["lora"] = LoraSettings.from_dict(kwargs["lora"])
            else:
                raise ValueError(f"lora must be a mapping (rank, alpha, dropout, target_modules), null or "
                                 f"false; got {kwargs['lora']!r}")
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML mapping (``yaml.safe_load``); relative paths in it stay as written."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"cannot read train config {path}: {err}") from err
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a YAML mapping of settings, got {type(data).__name__}")
        return cls.from_dict(data)


def _checked(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what} key(s) {unknown}; valid keys are {valid}")
    return dict(data)
