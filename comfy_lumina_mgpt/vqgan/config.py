"""VQGAN hyper-parameters as stored in ``vqgan.yaml`` (Chameleon / taming layout).

The file nests them like this (other keys such as ``target``, ``lossconfig`` or ``ckpt_path`` are ignored)::

    model:
      params:
        embed_dim: 256
        n_embed: 8192
        ddconfig: {double_z: false, z_channels: 256, resolution: 512, in_channels: 3, out_ch: 3,
                   ch: 128, ch_mult: [1, 1, 2, 2, 4], num_res_blocks: 2, attn_resolutions: [], dropout: 0.0}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

GROUPNORM_GROUPS = 32

_TOP_KEYS = ("embed_dim", "n_embed")
_DD_KEYS = ("double_z", "z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult",
            "num_res_blocks", "attn_resolutions", "dropout")
# Optional taming ``ddconfig`` switches this implementation supports only at the value shown.
_DD_FIXED = {"resamp_with_conv": True, "give_pre_end": False, "tanh_out": False, "use_linear_attn": False,
             "attn_type": "vanilla"}


@dataclass(frozen=True)
class VQGANConfig:
    """Architecture of a Chameleon-style VQGAN; the defaults are Meta's Chameleon image tokenizer.

    ``ch_mult`` gives the channel multiplier of every resolution level (``len(ch_mult) - 1`` downsamplings);
    ``attn_resolutions`` lists the feature-map sizes (counted from ``resolution``) that get per-level
    attention.
    """

    embed_dim: int = 256
    n_embed: int = 8192
    double_z: bool = False
    z_channels: int = 256
    resolution: int = 512
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0

    def __post_init__(self) -> None:
        # Accept lists for the tuple fields (frozen: go through object.__setattr__).
        for name in ("ch_mult", "attn_resolutions"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        problems = _validate(self)
        if problems:
            raise ValueError("invalid VQGAN config: " + "; ".join(problems))

    @property
    def downsample(self) -> int:
        """Pixels per latent position along each side (16 for Chameleon)."""
        return 2 ** (len(self.ch_mult) - 1)

    # ------------------------------------------------------------------ dict / yaml

    @classmethod
    def from_dict(cls, params: dict[str, Any], *, source: str = "VQGAN config") -> VQGANConfig:
        """Build from ``model.params`` (``embed_dim``, ``n_embed`` and a nested ``ddconfig``).

        Every key of the dataclass is required; ``source`` names the file in error messages.
        """
        if not isinstance(params, dict):
            raise ValueError(f"{source}: expected a mapping with embed_dim, n_embed and ddconfig, "
                             f"got {type(params).__name__}")
        dd = params.get("ddconfig")
        if not isinstance(dd, dict):
            raise ValueError(f"{source}: missing or invalid 'ddconfig' mapping "
                             f"(it holds {', '.join(_DD_KEYS)})")
        missing = [k for k in _TOP_KEYS if k not in params]
        missing += [f"ddconfig.{k}" for k in _DD_KEYS if k not in dd]
        if missing:
            raise ValueError(f"{source}: missing key(s) {', '.join(missing)}")
        for key, wanted in _DD_FIXED.items():
            if key in dd and dd[key] != wanted:
                raise ValueError(f"{source}: ddconfig.{key}={dd[key]!r} is not supported (only {wanted!r})")
        unknown = sorted(set(dd) - set(_DD_KEYS) - set(_DD_FIXED))
        if unknown:
            logger.warning("%s: ignoring unknown ddconfig key(s) %s", source, ", ".join(unknown))

        values: dict[str, Any] = {}
        for key in _TOP_KEYS:
            values[key] = _check_int(params[key], key, source)
        for key in ("z_channels", "resolution", "in_channels", "out_ch", "ch", "num_res_blocks"):
            values[key] = _check_int(dd[key], f"ddconfig.{key}", source)
        if not isinstance(dd["double_z"], bool):
            raise ValueError(f"{source}: ddconfig.double_z must be true or false, got {dd['double_z']!r}")
        values["double_z"] = dd["double_z"]
        dropout = dd["dropout"]
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise ValueError(f"{source}: ddconfig.dropout must be a number, got {dropout!r}")
        values["dropout"] = float(dropout)
        for key in ("ch_mult", "attn_resolutions"):
            seq = dd[key]
            if seq is None and key == "attn_resolutions":
                seq = []
            if not isinstance(seq, (list, tuple)):
                raise ValueError(f"{source}: ddconfig.{key} must be a list of integers, got {seq!r}")
            values[key] = tuple(_check_int(v, f"ddconfig.{key}[{i}]", source) for i, v in enumerate(seq))
        try:
            return cls(**values)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> VQGANConfig:
        """Read ``model.params`` of a ``vqgan.yaml`` (``yaml.safe_load``); ValueError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"VQGAN config {path} was not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ValueError(f"VQGAN config {path} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"VQGAN config {path}: expected a mapping with model.params, "
                             f"got {type(data).__name__}")
        if isinstance(data.get("model"), dict) and "params" in data["model"]:
            params = data["model"]["params"]
        elif "params" in data:
            params = data["params"]
        elif "ddconfig" in data:
            params = data
        else:
            raise ValueError(f"VQGAN config {path}: no 'model.params' section "
                             f"(expected model: params: embed_dim, n_embed, ddconfig)")
        return cls.from_dict(params, source=f"VQGAN config {path}")

    def to_yaml_dict(self) -> dict[str, Any]:
        """The nested ``{"model": {"params": {..., "ddconfig": {...}}}}`` layout that ``from_yaml`` reads."""
        dd: dict[str, Any] = {}
        for f in fields(self):
            if f.name in _TOP_KEYS:
                continue
            value = getattr(self, f.name)
            dd[f.name] = list(value) if isinstance(value, tuple) else value
        return {"model": {"params": {"embed_dim": self.embed_dim, "n_embed": self.n_embed, "ddconfig": dd}}}


def _check_int(value: Any, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{source}: {key} must be an integer, got {value!r}")
    return value


def _validate(cfg: VQGANConfig) -> list[str]:
    problems = []
    for name in ("embed_dim", "n_embed", "z_channels", "resolution", "in_channels", "out_ch", "ch",
                 "num_res_blocks"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(cfg.ch_mult, tuple) or not cfg.ch_mult:
        problems.append(f"ch_mult must be a non-empty tuple of positive integers, got {cfg.ch_mult!r}")
    elif any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in cfg.ch_mult):
        problems.append(f"ch_mult must hold positive integers, got {cfg.ch_mult!r}")
    elif isinstance(cfg.ch, int) and cfg.ch > 0:
        bad = sorted({cfg.ch * m for m in cfg.ch_mult if (cfg.ch * m) % GROUPNORM_GROUPS})
        if bad:
            problems.append(f"channel counts {bad} (ch * ch_mult) must be multiples of {GROUPNORM_GROUPS} "
                            f"for GroupNorm; change ch or ch_mult")
    if not isinstance(cfg.attn_resolutions, tuple) or any(
            isinstance(r, bool) or not isinstance(r, int) for r in cfg.attn_resolutions):
        problems.append(f"attn_resolutions must be a tuple of integers, got {cfg.attn_resolutions!r}")
    if cfg.double_z is not False:
        problems.append("double_z must be false for a VQGAN (the quantiser takes z_channels channels)")
    dropout = cfg.dropout
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        problems.append(f"dropout must be in [0, 1), got {cfg.dropout!r}")
    return problems
