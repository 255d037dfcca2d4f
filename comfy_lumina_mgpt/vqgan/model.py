"""Chameleon's image tokenizer: a convolutional VQGAN (encoder, vector quantiser, decoder).

Module names follow the checkpoint layout of Meta's ``vqgan.ckpt`` so its ``state_dict`` loads unchanged:
``encoder.down.{i}.block.{j}``, ``encoder.down.{i}.downsample.conv``,
``encoder.mid.{block_1,attn_1,block_2}``,
``decoder.up.{i}.block.{j}`` (``num_res_blocks + 1`` blocks per level), ``decoder.up.{i}.upsample.conv``,
``quant_conv``, ``post_quant_conv`` and ``quantize.embedding.weight``.

Pixels are ``[B, 3, H, W]`` floats in [-1, 1]; codes are ``[B, H / d, W / d]`` int64 in raster order
(``d = config.downsample``).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import GROUPNORM_GROUPS, VQGANConfig

logger = logging.getLogger(__name__)

# Rows of the flattened latent compared against the codebook at once (bounds the distance matrix).
_QUANTIZE_CHUNK = 8192


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPNORM_GROUPS, channels, eps=1e-6, affine=True)


def _swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """norm -> swish -> conv3x3 -> norm -> swish -> dropout -> conv3x3, plus a (1x1 when needed) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions (1x1 q/k/v/proj_out convs), residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x)
        q = self.q(h).flatten(2)  # [B, C, N]
        k = self.k(h).flatten(2)
        v = self.v(h).flatten(2)
        # Explicit softmax(q^T k / sqrt(C)) so the numerics follow the reference formulation.
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * (1.0 / math.sqrt(c)), dim=2)  # [B, Nq, Nk]
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, hgt, wid)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Zero-pad right/bottom by one, then conv3x3 stride 2 (halves H and W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then conv3x3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _MidBlock(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One level: ``block`` (ResnetBlocks), ``attn`` (empty or one per block), optional resampler."""

    def __init__(self, blocks: list[ResnetBlock], attns: list[AttnBlock]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run_blocks(self, h: Tensor) -> Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[j](h)
        return h


class Encoder(nn.Module):
    """``[B, in_channels, H, W]`` -> ``[B, z_channels, H / d, W / d]``."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        n_levels = len(cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        levels = []
        block_in = cfg.ch
        res = cfg.resolution
        for i, mult in enumerate(cfg.ch_mult):
            block_out = cfg.ch * mult
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _Level(blocks, attns)
            if i != n_levels - 1:
                level.downsample = Downsample(block_in)
                res //= 2
            levels.append(level)
        self.down = nn.ModuleList(levels)
        self.mid = _MidBlock(block_in, cfg.dropout)
        self.norm_out = _norm(block_in)
        z_out = 2 * cfg.z_channels if cfg.double_z else cfg.z_channels
        self.conv_out = nn.Conv2d(block_in, z_out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level.run_blocks(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    """``[B, z_channels, h, w]`` -> ``[B, out_ch, h * d, w * d]`` (no output squashing)."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        n_levels = len(cfg.ch_mult)
        block_in = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (n_levels - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = _MidBlock(block_in, cfg.dropout)
        levels: list[_Level] = [None] * n_levels  # type: ignore[list-item]
        for i in reversed(range(n_levels)):
            block_out = cfg.ch * cfg.ch_mult[i]
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _Level(blocks, attns)
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels[i] = level
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level.run_blocks(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest codebook entry by squared L2 distance; ``embedding.weight`` is ``[n_embed, embed_dim]``."""

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.n_embed = n_embed
        self.embed_dim = embed_dim
        self.beta = beta
        # Passing the weight skips Embedding's own init (which, on the meta device, imports torch._dynamo).
        self.embedding = nn.Embedding(n_embed, embed_dim, _weight=torch.empty(n_embed, embed_dim))
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    @torch.no_grad()
    def nearest(self, z: Tensor) -> Tensor:
        """``z [B, embed_dim, h, w]`` -> codes ``[B, h, w]`` int64 (argmin of ||z||^2 + ||e||^2 - 2 z.e)."""
        b, c, hgt, wid = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)  # raster order: row by row
        book = self.embedding.weight
        book_sq = book.pow(2).sum(dim=1)
        codes = torch.empty(flat.shape[0], dtype=torch.long, device=z.device)
        for start in range(0, flat.shape[0], _QUANTIZE_CHUNK):
            rows = flat[start:start + _QUANTIZE_CHUNK]
            dist = rows.pow(2).sum(dim=1, keepdim=True) + book_sq - 2.0 * (rows @ book.t())
            codes[start:start + rows.shape[0]] = dist.argmin(dim=1)
        return codes.reshape(b, hgt, wid)

    def lookup(self, codes: Tensor) -> Tensor:
        """codes ``[B, h, w]`` -> latents ``[B, embed_dim, h, w]``."""
        return self.embedding(codes).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``z [B, embed_dim, h, w]`` -> (straight-through ``z_q`` [B, embed_dim, h, w], loss scalar,
        codes [B, h, w]).

        loss = mean((z_q - sg[z])^2) + beta * mean((z - sg[z_q])^2): the first term moves the codebook, the
        second (commitment) keeps the encoder near its codes.
        """
        codes = self.nearest(z)
        z_q = self.lookup(codes)
        loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z, z_q.detach())
        z_q = z + (z_q - z).detach()
        return z_q, loss, codes


class VQGAN(nn.Module):
    """Chameleon-style VQGAN built from a :class:`VQGANConfig`.

    ``encode`` maps pixels ``[B, 3, H, W]`` in [-1, 1] to codes ``[B, H/d, W/d]``; ``decode_codes`` maps
    codes back to pixels; ``forward`` is the training step (reconstruction, codebook loss, codes).
    """

    def __init__(self, config: VQGANConfig, *, beta: float = 0.25) -> None:
        super().__init__()
        if not isinstance(config, VQGANConfig):
            raise ValueError(f"VQGAN needs a VQGANConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim, beta=beta)

    @property
    def downsample(self) -> int:
        """Pixels per code along each side."""
        return self.config.downsample

    def _check_images(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"VQGAN expects images [B, {self.config.in_channels}, H, W], got {shape}")
        b, c, hgt, wid = images.shape
        if c != self.config.in_channels:
            raise ValueError(f"VQGAN expects {self.config.in_channels} channels (images [B, C, H, W]), "
                             f"got {c}; pass channels-first RGB")
        d = self.downsample
        if hgt % d or wid % d or hgt == 0 or wid == 0:
            raise ValueError(f"image size {wid}x{hgt} (WxH) is not a multiple of {d}; crop or resize it to "
                             f"{max(d, wid // d * d)}x{max(d, hgt // d * d)} or another multiple of {d}")
        if not images.is_floating_point():
            raise ValueError(f"VQGAN expects float images in [-1, 1], got dtype {images.dtype}")
        p = self.quant_conv.weight
        return images.to(device=p.device, dtype=p.dtype)

    def encode_latents(self, images: Tensor) -> Tensor:
        """images ``[B, 3, H, W]`` in [-1, 1] -> pre-quantisation latents ``[B, embed_dim, H/d, W/d]``."""
        return self.quant_conv(self.encoder(self._check_images(images)))

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """images ``[B, 3, H, W]`` in [-1, 1] (H, W multiples of ``d``) -> codes ``[B, H/d, W/d]`` int64."""
        return self.quantize.nearest(self.encode_latents(images))

    def decode(self, quant: Tensor) -> Tensor:
        """Quantised latents ``[B, embed_dim, h, w]`` -> images ``[B, 3, h*d, w*d]`` (unclamped, ~[-1, 1])."""
        return self.decoder(self.post_quant_conv(quant))

    def decode_codes(self, codes: Tensor) -> Tensor:
        """codes ``[B, h, w]`` (ints in ``[0, n_embed)``) -> images ``[B, 3, h*d, w*d]`` (unclamped)."""
        if not isinstance(codes, Tensor) or codes.ndim != 3:
            shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise ValueError(f"decode_codes expects codes [B, h, w], got {shape}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"decode_codes expects integer codes, got dtype {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.config.n_embed):
            raise ValueError(f"codes must lie in [0, {self.config.n_embed}), got {int(codes.min())}.."
                             f"{int(codes.max())}; is this the VQGAN the codes were made with?")
        codes = codes.to(device=self.quantize.embedding.weight.device, dtype=torch.long)
        return self.decode(self.quantize.lookup(codes))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training step: images ``[B, 3, H, W]`` in [-1, 1] ->
        (reconstruction ``[B, 3, H, W]``, codebook loss scalar, codes ``[B, H/d, W/d]``).

        Gradients reach the encoder through the straight-through estimator.
        """
        z_q, loss, codes = self.quantize(self.encode_latents(images))
        return self.decode(z_q), loss, codes
