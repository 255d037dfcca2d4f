"""Weight-only int8 / fp8 linear layers for inference, and ``quantize_model_`` that swaps them in.

Every ``nn.Linear`` of the decoder layers and the LM head becomes an ``Int8Linear`` (int8 weight) or an
``Fp8Linear`` (float8_e4m3fn weight), each with one symmetric scale per output row; the embedding and the norms
stay in the compute dtype. Activations are not quantized (except on the guarded fp8 ``_scaled_mm`` path below),
so a layer's output differs from the float layer only by the rounding of its weights: per weight at most half a
step, i.e. ``amax_row / 254`` for int8 and 2^-4 relative (3 mantissa bits) for e4m3.

Scales are rounded to values a bfloat16 holds exactly, so they survive a cast of the model to bf16/fp16/fp32 and
the CPU kernel (which takes bf16 scales) sees the same numbers whatever the compute dtype.

Kernel choice (measured on the team's AMD EPYC CPU, AVX512-VNNI + AVX512-BF16, torch 2.14.1, 1 thread, best of
7-9 on a shared, loaded machine; ``scripts/quant_bench.py``). The seven projection matrices of one 7B layer
(202 M weights) with 2 input rows (one guidance pair):

=============================================================  ===============
bf16 ``F.linear`` (oneDNN, the unquantized baseline)            34.8 ms
int8 ``torch._weight_int8pack_mm`` (bf16 activations)           21.1 ms (1.65x)
fp8 chunked dequantization (``copy_`` to bf16) + ``F.linear``   840 ms
int8 ``.to(bf16)`` of the whole weight, then ``F.linear``       235 ms (exploratory run)
int8 ``_weight_int8pack_mm`` with fp32 activations              351 ms (exploratory run)
int8 ``torch._int_mm`` (W8A8, VNNI), 11008x4096, 2 rows         16.0 ms vs 5.3 ms packed
=============================================================  ===============

One whole decode step of a 2-layer 7B-width slice (vocabulary 65536, full LM head, 2 rows at position 1000):
bf16 140.8 ms, int8 99.4 ms (1.42x: attention and the other non-matmul work do not shrink), fp8 2869 ms.
Packed vs chunked by input rows (11008x4096): 8 rows 12.4 vs 12.8 ms, 12 rows 18.1 vs 15.0, 32 rows 50.3 vs
40.6, hence ``CPU_PACK_MAX_ROWS = 8``.

* CPU, int8: ``_weight_int8pack_mm`` is the only vectorised int8 kernel (its AVX512 path exists for bf16 only;
  fp16/fp32 run a scalar loop), so activations are cast to bf16 for it and the result back. It re-reads the
  weight for every 4 input rows, so past ``CPU_PACK_MAX_ROWS`` rows (prefill, long speculative windows) the
  weight is instead dequantized in cache-sized row chunks (``copy_`` into a reused buffer is ~7x faster than
  ``.to``) and multiplied by oneDNN. The kernel needs ``in_features % 16 == 0`` and a 32-byte aligned input;
  other shapes take the chunked path.
* CPU, fp8: no CPU kernel reads e4m3 fast (the conversion alone is ~4 ns a weight), so fp8 on a CPU is a
  memory option only: half the bytes of bf16, ~25x slower than bf16 per layer. Use int8 on CPUs.
* CUDA, int8 and fp8: ``F.linear(x, w.to(x.dtype) * scales[:, None])``. torch 2.14's CUDA
  ``_weight_int8pack_mm`` is one thread per output element reading its own weight row (uncoalesced) with fp32
  activations, so it is not used. In eager mode dequantizing costs an extra write and read of a bf16 copy of each
  weight (slower than bf16, half the memory); under ``torch.compile`` the dequantization fuses into the matmul
  (gpt-fast's formulation). Not measured here: no GPU was available.
* CUDA, fp8, compute capability >= 8.9 with bf16 activations: ``torch._scaled_mm`` with per-row scales on both
  sides. The activations are then quantized per row to e4m3 too (W8A8), as fp8 serving does; any error from the
  kernel (an unsupported shape or build) falls back to dequantization, once, with a warning.

Training never goes through these modules: they hold buffers, not parameters, and refuse a forward in training
mode or with an input that needs gradients.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

QUANT_MODES = ("none", "int8", "fp8")
INT8_MAX = 127.0
FP8_MAX = 448.0  # largest finite float8_e4m3fn
CPU_PACK_MAX_ROWS = 8  # above this many input rows, dequantize + oneDNN beats _weight_int8pack_mm on the CPU
DEQUANT_CHUNK_ELEMENTS = 1 << 22  # 8 MiB of bf16 per dequantized chunk: stays in L2/L3 while it is multiplied
_SCALE_FLOOR = float(torch.finfo(torch.bfloat16).tiny)  # an all-zero row gets this scale, not 0/0


def fp8_dtype() -> torch.dtype | None:
    """``torch.float8_e4m3fn`` when this torch build has it, else None."""
    return getattr(torch, "float8_e4m3fn", None)


def quant_choices(device: str | torch.device) -> list[str]:
    """The ``quant`` modes this torch build can run on ``device`` (``"none"`` and ``"int8"`` everywhere)."""
    device = torch.device(device)
    choices = ["none", "int8"]
    if fp8_dtype() is not None and device.type in ("cpu", "cuda"):
        choices.append("fp8")
    return choices


def parse_quant(mode: str) -> str:
    """Validate a quant mode name; ValueError listing the valid ones."""
    if mode not in QUANT_MODES:
        raise ValueError(f"Unknown quant mode {mode!r}; choose one of {list(QUANT_MODES)}")
    return mode


def _row_scales(weight: Tensor, qmax: float) -> Tensor:
    """fp32 ``[out]`` scales ``amax_row / qmax``, rounded to bf16-representable values."""
    amax = weight.abs().amax(dim=1).float()
    return (amax / qmax).clamp_min(_SCALE_FLOOR).to(torch.bfloat16).float()


def _chunk_rows(in_features: int) -> int:
    return max(1, DEQUANT_CHUNK_ELEMENTS // max(1, in_features))


def quantize_rows(weight: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Per-output-row symmetric quantization of a float ``[out, in]`` weight.

    Rows are converted in chunks, so the transient fp32 copy stays small even for the 65536-row LM head.

    Returns:
        ``(q [out, in]`` int8 or float8_e4m3fn, ``scales [out]`` in the weight's dtype).
    """
    if weight.ndim != 2 or not weight.is_floating_point():
        raise ValueError(f"quantize_rows needs a float [out, in] weight, got {weight.dtype} {list(weight.shape)}")
    if mode == "int8":
        qdtype, qmax = torch.int8, INT8_MAX
    elif mode == "fp8":
        qdtype, qmax = fp8_dtype(), FP8_MAX
        if qdtype is None:
            raise ValueError(f"torch {torch.__version__} has no float8_e4m3fn; use quant='int8' or upgrade torch")
    else:
        raise ValueError(f"quantize_rows mode must be 'int8' or 'fp8', got {mode!r}")
    q = torch.empty(weight.shape, dtype=qdtype, device=weight.device)
    scales = torch.empty(weight.shape[0], dtype=torch.float32, device=weight.device)
    step = _chunk_rows(weight.shape[1])
    for start in range(0, weight.shape[0], step):
        rows = weight[start:start + step].float()  # may be the caller's tensor itself: no in-place op on it
        scale = scales[start:start + step] = _row_scales(rows, qmax)
        rows = rows / scale[:, None]
        # The bf16 rounding of a scale may push |w/s| a hair past qmax; clamp (float8 would turn it into NaN).
        rows = rows.clamp_(-qmax, qmax)
        q[start:start + step] = rows.round_() if mode == "int8" else rows
    return q, scales.to(weight.dtype)


def _check_inference(module: nn.Module, x: Tensor) -> None:
    if module.training or (torch.is_grad_enabled() and x.requires_grad):
        raise RuntimeError(f"{type(module).__name__} is inference-only: its weights are quantized buffers "
                           "without gradients. Train or finetune the float model (Model Loader quant=none) and "
                           "quantize it afterwards.")


def _dequant_linear(x: Tensor, weight: Tensor, scales: Tensor) -> Tensor:
    """``x [M, in] @ (weight * scales[:, None]).T`` in x's dtype, the weight dequantized in one go (CUDA).

    The scale is applied to the weight, not the output, so fp16 never sees int8-sized products overflow.
    """
    return F.linear(x, weight.to(x.dtype) * scales.to(x.dtype)[:, None])


def _dequant_linear_chunked(x: Tensor, weight: Tensor, scales: Tensor) -> Tensor:
    """Same product with the weight dequantized a few rows at a time into one reused buffer (CPU).

    ``copy_`` into a preallocated buffer converts int8 ~7x faster than ``.to`` on this CPU, and a chunk that
    fits in cache is multiplied while still hot.
    """
    out_features, in_features = weight.shape
    out = torch.empty(x.shape[0], out_features, dtype=x.dtype, device=x.device)
    step = _chunk_rows(in_features)
    buf = torch.empty(min(step, out_features), in_features, dtype=x.dtype, device=x.device)
    scales = scales.to(x.dtype)
    # fp16 would overflow on sums of int8-sized products, so it scales the weight; bf16/fp32 scale the output.
    prescale = x.dtype == torch.float16
    for start in range(0, out_features, step):
        stop = min(start + step, out_features)
        w = buf[: stop - start].copy_(weight[start:stop])
        if prescale:
            w.mul_(scales[start:stop, None])
        out[:, start:stop] = F.linear(x, w)
    return out if prescale else out.mul_(scales)


def _aligned(t: Tensor, boundary: int = 64) -> bool:
    return t.data_ptr() % boundary == 0


def _int8_linear_cpu(x: Tensor, weight: Tensor, scales: Tensor) -> Tensor:
    """The CPU product for ``x [M, in]``: the packed int8 kernel for a few rows, chunked dequantization else."""
    rows, in_features = x.shape
    if 0 < rows <= CPU_PACK_MAX_ROWS and in_features % 16 == 0 and _aligned(weight, 16):
        xb = x.to(torch.bfloat16).contiguous()
        if not _aligned(xb):  # the kernel's aligned 256-bit loads would fault on an odd view
            xb = xb.clone()
        return torch._weight_int8pack_mm(xb, weight, scales.to(torch.bfloat16)).to(x.dtype)
    return _dequant_linear_chunked(x, weight, scales)


def _fp8_scaled_mm(x: Tensor, weight: Tensor, scales: Tensor) -> Tensor:
    """W8A8 product with ``torch._scaled_mm``: x quantized per row to e4m3, per-row scales on both sides.

    Args:
        x: ``[M, in]`` activations; weight: ``[out, in]`` float8_e4m3fn; scales: ``[out]``.
    Returns:
        ``[M, out]`` in x's dtype.
    """
    x_scale = (x.abs().amax(dim=1, keepdim=True).float() / FP8_MAX).clamp_min(_SCALE_FLOOR)  # [M, 1]
    x8 = (x.float() / x_scale).clamp_(-FP8_MAX, FP8_MAX).to(weight.dtype)
    w_scale = scales.float()[None, :]  # [1, out]
    return torch._scaled_mm(x8, weight.T, scale_a=x_scale, scale_b=w_scale, out_dtype=x.dtype)


def _scaled_mm_eligible(x: Tensor, weight: Tensor) -> bool:
    if not x.is_cuda or x.dtype != torch.bfloat16 or x.shape[0] == 0:
        return False
    if weight.shape[0] % 16 or weight.shape[1] % 16:
        return False
    return torch.cuda.get_device_capability(x.device) >= (8, 9)


class _QuantLinearBase(nn.Module):
    """Shared buffers (``weight [out, in]``, ``scales [out]``, optional ``bias [out]``) and helpers."""

    mode = ""

    def __init__(self, weight: Tensor, scales: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        if weight.ndim != 2 or scales.shape != weight.shape[:1]:
            raise ValueError(f"weight must be [out, in] and scales [out]; got {list(weight.shape)} and "
                             f"{list(scales.shape)}")
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)
        self.train(False)  # inference-only: starts (and must stay) in eval mode

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @classmethod
    def from_float(cls, weight: Tensor, bias: Tensor | None = None):
        """Quantize a float ``[out, in]`` weight; scales (and bias) keep the weight's dtype."""
        q, scales = quantize_rows(weight.detach(), cls.mode)
        return cls(q, scales, None if bias is None else bias.detach().clone())

    def narrow_rows(self, start: int, stop: int):
        """The same layer restricted to output features ``start..stop-1``; shares storage (views)."""
        if not 0 <= start < stop <= self.out_features:
            raise ValueError(f"narrow_rows({start}, {stop}) is outside 0..{self.out_features}")
        bias = None if self.bias is None else self.bias[start:stop]
        return type(self)(self.weight[start:stop], self.scales[start:stop], bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[..., in_features]`` (bf16/fp16/fp32) -> ``[..., out_features]`` in x's dtype."""
        _check_inference(self, x)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__} expects {self.in_features} input features, got "
                             f"{x.shape[-1]}")
        y = self._matmul(x.reshape(-1, self.in_features))
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def _matmul(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Linear(_QuantLinearBase):
    """Weight-only int8 linear: ``y = x @ (weight * scales[:, None]).T (+ bias)``.

    Buffers: ``weight`` int8 ``[out, in]``, ``scales`` ``[out]`` in the compute dtype, ``bias`` ``[out]`` or None.
    See the module docstring for which kernel runs where and why.
    """

    mode = "int8"

    def _matmul(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu":
            return _int8_linear_cpu(x, self.weight, self.scales)
        return _dequant_linear(x, self.weight, self.scales)


class Fp8Linear(_QuantLinearBase):
    """Weight-only float8_e4m3fn linear with per-row scales (half the bytes of bf16).

    On a CPU it is a memory option only (dequantized per chunk, slower than bf16). On CUDA it dequantizes, or
    with compute capability >= 8.9 and bf16 activations runs ``torch._scaled_mm`` (activations then quantized
    per row to e4m3); a kernel error there switches this layer to dequantization for good, with one warning.
    """

    mode = "fp8"

    def __init__(self, weight: Tensor, scales: Tensor, bias: Tensor | None = None) -> None:
        super().__init__(weight, scales, bias)
        self.use_scaled_mm = True

    def narrow_rows(self, start: int, stop: int) -> Fp8Linear:
        narrowed = super().narrow_rows(start, stop)
        narrowed.use_scaled_mm = self.use_scaled_mm
        return narrowed

    def _matmul(self, x: Tensor) -> Tensor:
        if self.use_scaled_mm and _scaled_mm_eligible(x, self.weight):
            try:
                return _fp8_scaled_mm(x, self.weight, self.scales)
            except RuntimeError:
                logger.warning("torch._scaled_mm failed for a %dx%d fp8 layer; dequantizing from now on",
                               self.out_features, self.in_features, exc_info=True)
                self.use_scaled_mm = False
        if x.device.type == "cpu":
            return _dequant_linear_chunked(x, self.weight, self.scales)
        return _dequant_linear(x, self.weight, self.scales)

    def _apply(self, fn, recurse=True):
        # ``model.to(torch.bfloat16)`` casts every floating buffer, and float8 counts as floating: hand ``fn``
        # a uint8 view of the weight so device moves apply and dtype casts leave the fp8 bytes alone.
        self._buffers["weight"] = self._buffers["weight"].view(torch.uint8)
        try:
            return super()._apply(fn, recurse)
        finally:
            self._buffers["weight"] = self._buffers["weight"].view(fp8_dtype())


QUANT_LINEARS: dict[str, type[_QuantLinearBase]] = {"int8": Int8Linear, "fp8": Fp8Linear}


def is_quantized(model: nn.Module) -> bool:
    """True when any module of ``model`` is an ``Int8Linear`` or ``Fp8Linear``."""
    return any(isinstance(m, _QuantLinearBase) for m in model.modules())


def quantizable_linears(model: nn.Module) -> list[str]:
    """Qualified names of the ``nn.Linear`` modules ``quantize_model_`` replaces, in layer order.

    Those under ``model.layers`` (attention and MLP projections, fused or not) and ``lm_head``; the embedding
    and the norms are never quantized.
    """
    names = [f"model.layers.{name}" for name, m in model.model.layers.named_modules() if isinstance(m, nn.Linear)]
    if isinstance(model.lm_head, nn.Linear):
        names.append("lm_head")
    return names


def replace_module_(model: nn.Module, name: str, module: nn.Module) -> None:
    """Set the submodule at dotted ``name`` (e.g. ``model.layers.3.mlp.up_proj``) to ``module``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def quantize_linear(linear: nn.Linear, mode: str) -> _QuantLinearBase:
    """The quantized copy of one ``nn.Linear`` (``mode`` ``"int8"`` or ``"fp8"``)."""
    return QUANT_LINEARS[mode].from_float(linear.weight, linear.bias)


def check_quant_supported(mode: str, device: str | torch.device = "cpu") -> str:
    """Validate ``mode`` for ``device``; ValueError saying what to choose instead."""
    mode = parse_quant(mode)
    if mode not in quant_choices(device):
        raise ValueError(f"quant={mode!r} is not supported on {torch.device(device)} with torch "
                         f"{torch.__version__}; choose one of {quant_choices(device)}")
    return mode


@torch.no_grad()
def quantize_model_(model: nn.Module, mode: str) -> nn.Module:
    """Replace the decoder layers' and the LM head's ``nn.Linear`` modules in place; return the model, frozen.

    One module at a time: each float weight is released (when nothing else holds it) as soon as its quantized
    copy exists, so memory never exceeds the float model plus one chunk of fp32 rows.

    Args:
        model: a ``LuminaMGPT`` in eval mode.
        mode: ``"none"`` (no change), ``"int8"`` or ``"fp8"``.
    Raises:
        ValueError: unknown mode, fp8 without torch support, or a model that is already quantized.
    """
    mode = parse_quant(mode)
    if mode == "none":
        return model
    if is_quantized(model):
        raise ValueError("the model is already quantized; quantize a float model once (load it again with "
                         "the quant you want instead of quantizing twice)")
    check_quant_supported(mode, model.lm_head.weight.device)
    for name in quantizable_linears(model):
        replace_module_(model, name, quantize_linear(model.get_submodule(name), mode))
    return freeze_(model)


def freeze_(model: nn.Module) -> nn.Module:
    """A quantized model is inference-only: its float parameters (embedding, norms) stop requiring grad, so a
    plain forward outside ``torch.no_grad`` works and only an explicit attempt to train is refused."""
    return model.requires_grad_(False)
