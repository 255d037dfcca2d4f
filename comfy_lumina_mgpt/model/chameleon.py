"""The Chameleon decoder as Lumina-mGPT uses it, written for fast sampling and for training.

Module and parameter names mirror transformers' Chameleon checkpoints (``model.layers.{i}.self_attn.q_proj``,
``lm_head`` ...), so the official safetensors load with no key remapping and what we save is the published
layout. Differences from transformers' class, on purpose (LUMINA_SPEC §1.1):

* image-token logits are never masked (Lumina generates them), and logits are fp32;
* q/k-norm parameters keep their stored row count (``[1, D]`` for 7B, ``[4, D]`` for 34B, ``[n_heads, D]``
  for newer conversions) and are broadcast over heads at run time;
* a preallocated KV cache (``setup_caches``) indexed by per-row positions, so classifier-free guidance can run
  its conditional and unconditional rows, whose positions differ, in one batched forward.

Two entry points: ``forward(tokens)`` is the plain causal pass over whole sequences (training, tests);
``step(tokens, input_pos)`` reads and writes the KV cache (inference).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig
from .fusion import project


class RMSNorm(nn.Module):
    """RMS norm computed in fp32 and cast back before the weight multiply (as the checkpoints expect)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class QKNorm(nn.Module):
    """Per-head LayerNorm over ``head_dim`` with affine rows shared by groups of heads.

    Parameters are ``[rows, head_dim]``; row ``r`` serves heads ``r*g .. r*g+g-1`` with ``g = heads // rows``.
    """

    def __init__(self, rows: int, heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.heads_per_row = heads // rows
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(rows, head_dim))
        self.bias = nn.Parameter(torch.zeros(rows, head_dim))

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[B, T, heads, head_dim]`` -> same shape."""
        y = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        w = self.weight.repeat_interleave(self.heads_per_row, dim=0)
        b = self.bias.repeat_interleave(self.heads_per_row, dim=0)
        return y * w + b


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Rotary tables for ``positions [B, T]`` -> cos, sin ``[B, 1, T, head_dim]`` (rotate-half layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
                                / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # [B, T, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: ``[B, H, T, D]``; the checkpoints' q/k rows are pre-permuted for the rotate-half form."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class KVCache(nn.Module):
    """Static key/value cache: ``[batch, kv_heads, max_len, head_dim]`` per layer, written at given positions."""

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str | None) -> None:
        super().__init__()
        shape = (batch, kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: Tensor, k: Tensor, v: Tensor, rows: Tensor | None, kv_len: int
               ) -> tuple[Tensor, Tensor]:
        """Write ``k, v [b, Hkv, T, D]`` at ``input_pos [b, T]`` of cache ``rows [b]`` (all rows when None).

        Returns the cached keys/values of those rows up to ``kv_len``: ``[b, Hkv, kv_len, D]``.
        """
        idx_rows = torch.arange(k.shape[0], device=k.device) if rows is None else rows
        # Advanced indices around a slice put the indexed dims first: target is [b, T, Hkv, D].
        self.k[idx_rows[:, None], :, input_pos] = k.transpose(1, 2)
        self.v[idx_rows[:, None], :, input_pos] = v.transpose(1, 2)
        if rows is None:
            return self.k[: k.shape[0], :, :kv_len], self.v[: k.shape[0], :, :kv_len]
        return self.k[rows, :, :kv_len], self.v[rows, :, :kv_len]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.q_norm = QKNorm(cfg.qk_norm_rows, cfg.n_heads, cfg.head_dim)
        self.k_norm = QKNorm(cfg.qk_norm_rows, cfg.n_kv_heads, cfg.head_dim)
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None,
                input_pos: Tensor | None = None, rows: Tensor | None = None, kv_len: int = 0) -> Tensor:
        """x: ``[B, T, dim]``. Without ``input_pos`` the pass is plain causal and the cache is untouched."""
        bsz, seqlen, _ = x.shape
        q, k, v = project(x, (self.q_proj, self.k_proj, self.v_proj))
        q = self.q_norm(q.view(bsz, seqlen, self.n_heads, self.head_dim))
        k = self.k_norm(k.view(bsz, seqlen, self.n_kv_heads, self.head_dim))
        v = v.view(bsz, seqlen, self.n_kv_heads, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        gqa = self.n_heads != self.n_kv_heads
        if input_pos is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            if self.kv_cache is None:
                raise RuntimeError("step() needs caches: call model.setup_caches(batch, max_len) first")
            k, v = self.kv_cache.update(input_pos, k, v, rows, kv_len)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.o_proj(out.transpose(1, 2).reshape(bsz, seqlen, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = project(x, (self.gate_proj, self.up_proj))
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    """Pre-norm (7B) or, with ``swin_norm``, post-norm (34B) block with residual dropout."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.swin_norm = cfg.swin_norm
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None,
                input_pos: Tensor | None = None, rows: Tensor | None = None, kv_len: int = 0) -> Tensor:
        if self.swin_norm:
            h = x + self.dropout(self.input_layernorm(self.self_attn(x, cos, sin, mask, input_pos, rows, kv_len)))
            return h + self.dropout(self.post_attention_layernorm(self.mlp(h)))
        h = x + self.dropout(self.self_attn(self.input_layernorm(x), cos, sin, mask, input_pos, rows, kv_len))
        return h + self.dropout(self.mlp(self.post_attention_layernorm(h)))


class ChameleonBackbone(nn.Module):
    """Embeddings, decoder layers and the final norm (the ``model.*`` keys of a checkpoint)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


class LuminaMGPT(nn.Module):
    """Lumina-mGPT / Chameleon decoder with fp32, unmasked logits.

    Attributes:
        config: the ``ModelConfig`` it was built from.
        gradient_checkpointing: recompute layer activations in the backward pass (training memory).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = ChameleonBackbone(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.gradient_checkpointing = False
        self.cache_batch = 0
        self.cache_len = 0

    # --- caches -------------------------------------------------------------------------------------
    def setup_caches(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> None:
        """Allocate (or reuse, when big enough and of the same dtype/device) the static KV cache."""
        param = self.lm_head.weight
        dtype = dtype or param.dtype
        layer0 = self.model.layers[0].self_attn.kv_cache if len(self.model.layers) else None
        if (layer0 is not None and self.cache_batch >= batch and self.cache_len >= max_len
                and layer0.k.dtype == dtype and layer0.k.device == param.device):
            return
        self.clear_caches()
        for layer in self.model.layers:
            layer.self_attn.kv_cache = KVCache(batch, self.config.n_kv_heads, max_len, self.config.head_dim,
                                               dtype, param.device)
        self.cache_batch, self.cache_len = batch, max_len

    def clear_caches(self) -> None:
        """Drop the KV cache so its memory is released."""
        for layer in self.model.layers:
            layer.self_attn.kv_cache = None
        self.cache_batch = self.cache_len = 0

    # --- passes -------------------------------------------------------------------------------------
    def forward(self, tokens: Tensor) -> Tensor:
        """Causal pass over whole sequences, no cache.

        Args:
            tokens: ``[B, T]`` token ids.
        Returns:
            fp32 logits ``[B, T, vocab_size]``.
        """
        return self.lm_head(self.hidden_states(tokens)).float()

    def hidden_states(self, tokens: Tensor) -> Tensor:
        """Final-norm hidden states ``[B, T, dim]`` of the causal pass."""
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
        h = self.model.embed_tokens(tokens)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, h.dtype)
        for layer in self.model.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(layer, h, cos, sin, use_reentrant=False)
            else:
                h = layer(h, cos, sin)
        return self.model.norm(h)

    def step(self, tokens: Tensor, input_pos: Tensor, cache_rows: Tensor | None = None,
             logits_index: Tensor | None = None, kv_len: int | None = None,
             head: Callable[[Tensor], Tensor | None] | None = None) -> Tensor | None:
        """Cached pass: attend to what the cache holds at positions ``<= input_pos`` of each row.

        Rows are independent sequences that may sit at different positions (CFG's unconditional rows start
        at 0 while the conditional rows are deep in the prompt), so the mask is built per row.

        Args:
            tokens: ``[B, T]`` new token ids.
            input_pos: ``[B, T]`` their positions; keys/values are written there.
            cache_rows: ``[B]`` which cache rows these sequences use (default ``0..B-1``).
            logits_index: ``[B]`` return logits only at this index of T (saves the lm_head on prefill).
            kv_len: ``input_pos.max() + 1`` when the caller knows it (saves a device-to-host sync per step).
            head: maps the final hidden states ``[B, T, dim]`` to what is returned (default: the full LM head);
                the sampler passes a head restricted to the image codes inside an image body.
        Returns:
            fp32 logits ``[B, T, V]``, or ``[B, V]`` with ``logits_index`` (V = the head's columns).
        """
        if kv_len is None:
            kv_len = int(input_pos.max()) + 1
        if kv_len > self.cache_len:
            raise RuntimeError(f"position {kv_len - 1} is past the KV cache length {self.cache_len}; "
                               "call setup_caches with a larger max_len")
        key_pos = torch.arange(kv_len, device=tokens.device)
        mask = (key_pos <= input_pos[..., None])[:, None]  # [B, 1, T, kv_len]
        h = self.model.embed_tokens(tokens)
        cos, sin = rope_cos_sin(input_pos, self.config.head_dim, self.config.rope_theta, h.dtype)
        for layer in self.model.layers:
            h = layer(h, cos, sin, mask, input_pos, cache_rows, kv_len)
        if logits_index is not None:
            h = h[torch.arange(h.shape[0], device=h.device), logits_index]
        h = self.model.norm(h)
        return self.lm_head(h).float() if head is None else head(h)
