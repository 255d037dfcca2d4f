"""Model configuration, read from the ``config.json`` of a published Lumina-mGPT checkpoint.

The official checkpoints carry transformers' Chameleon keys plus Lumina's own (``mask_image_logits``,
``dropout``, ``z_loss_weight``, ``vq_config``, ``vocabulary_map``); unknown keys are kept in ``extra`` so a
checkpoint we re-save keeps them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .file_checks import read_json_file

# Inclusive bounds of the integer fields: far above any released model, low enough that a forged config cannot
# make the engine build a model (even on the meta device) or a cache of absurd size.
_INT_RANGES = {
    "vocab_size": (1, 1 << 20),
    "dim": (1, 1 << 16),
    "intermediate_size": (1, 1 << 18),
    "n_layers": (1, 1024),
    "n_heads": (1, 1024),
    "n_kv_heads": (1, 1024),
    "max_seq_len": (1, 1 << 20),
    "model_parallel_size": (1, 1024),
    "qk_norm_rows": (1, 1024),
}
_FIELD_TO_HF: dict[str, str] = {}  # filled below from _HF_KEYS: the name a user sees in config.json


def _check_fields(cfg: ModelConfig) -> list[str]:
    """Type and range problems of a config, each naming the config.json key."""
    problems = []
    for name, (lo, hi) in _INT_RANGES.items():
        value = getattr(cfg, name)
        key = _FIELD_TO_HF.get(name, name)
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{key} must be an integer, got {value!r}")
        elif not lo <= value <= hi:
            problems.append(f"{key} must be in {lo}..{hi}, got {value}")
    for name, lo, hi, lo_open in (("norm_eps", 0.0, 1.0, True), ("rope_theta", 0.0, 1e12, True),
                                  ("dropout", 0.0, 1.0, False), ("z_loss_weight", 0.0, 1e6, False)):
        value = getattr(cfg, name)
        key = _FIELD_TO_HF.get(name, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            problems.append(f"{key} must be a finite number, got {value!r}")
        elif value > hi or value < lo or (lo_open and value == lo):
            problems.append(f"{key} must be in {'(' if lo_open else '['}{lo}, {hi}], got {value}")
    if not isinstance(cfg.swin_norm, bool):
        problems.append(f"swin_norm must be true or false, got {cfg.swin_norm!r}")
    return problems


# config.json key -> ModelConfig field (the Chameleon names as transformers writes them).
_HF_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "dim",
    "intermediate_size": "intermediate_size",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads",
    "rms_norm_eps": "norm_eps",
    "rope_theta": "rope_theta",
    "max_position_embeddings": "max_seq_len",
    "swin_norm": "swin_norm",
    "dropout": "dropout",
    "z_loss_weight": "z_loss_weight",
    "model_parallel_size": "model_parallel_size",
}
_FIELD_TO_HF.update({v: k for k, v in _HF_KEYS.items()})


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Chameleon-style decoder as Lumina-mGPT uses it.

    ``qk_norm_rows`` is how many rows the stored q/k-norm parameters have: 1 for the converted 7B checkpoints
    (one vector shared by all heads), ``model_parallel_size`` (4) for 34B, ``n_heads`` for checkpoints saved by
    recent transformers. Each row is shared by ``n_heads // qk_norm_rows`` consecutive heads.
    """

    vocab_size: int = 65536
    dim: int = 4096
    intermediate_size: int = 11008
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int = 32
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 4096
    swin_norm: bool = False
    dropout: float = 0.0
    z_loss_weight: float = 0.0
    model_parallel_size: int = 1
    qk_norm_rows: int = 1
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        problems = _check_fields(self)
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))
        if self.dim % self.n_heads:
            raise ValueError(f"hidden_size {self.dim} is not divisible by num_attention_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"num_attention_heads {self.n_heads} is not a multiple of "
                             f"num_key_value_heads {self.n_kv_heads}")
        for heads, what in ((self.n_heads, "query"), (self.n_kv_heads, "key")):
            if heads % self.qk_norm_rows:
                raise ValueError(f"q/k-norm weights have {self.qk_norm_rows} rows, which does not divide the "
                                 f"{heads} {what} heads")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def from_hf_dict(cls, cfg: dict[str, Any], qk_norm_rows: int | None = None) -> ModelConfig:
        """Build from a transformers-style Chameleon ``config.json`` dict (extra keys are kept)."""
        missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
                   if k not in cfg]
        if missing:
            raise ValueError(f"config.json lacks {missing}; is this a Lumina-mGPT / Chameleon checkpoint?")
        kwargs: dict[str, Any] = {}
        for hf_key, name in _HF_KEYS.items():
            if cfg.get(hf_key) is not None:
                kwargs[name] = cfg[hf_key]
        kwargs.setdefault("n_kv_heads", kwargs["n_heads"])
        kwargs.setdefault("intermediate_size", 4 * kwargs["dim"])
        if cfg.get("rope_scaling"):
            raise ValueError(f"rope_scaling={cfg['rope_scaling']!r} is not supported (Lumina-mGPT uses none)")
        if qk_norm_rows is not None:
            kwargs["qk_norm_rows"] = qk_norm_rows
        kwargs["extra"] = {k: v for k, v in cfg.items() if k not in _HF_KEYS}
        return cls(**kwargs)

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` dict in the published layout (Lumina keys included)."""
        out: dict[str, Any] = {
            "architectures": ["ChameleonXLLMXForConditionalGeneration"],
            "model_type": "chameleon",
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": False,
            "hidden_act": "silu",
            "mask_image_logits": False,
            "rope_scaling": None,
        }
        out.update(self.extra)
        mine = asdict(self)
        for hf_key, name in _HF_KEYS.items():
            out[hf_key] = mine[name]
        return out

    @classmethod
    def from_json(cls, path: str | Path, qk_norm_rows: int | None = None) -> ModelConfig:
        path = Path(path)
        cfg = read_json_file(path, dict, "model config")
        try:
            return cls.from_hf_dict(cfg, qk_norm_rows=qk_norm_rows)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def with_(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
