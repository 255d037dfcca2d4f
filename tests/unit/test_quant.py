"""Weight-only int8 / fp8 layers: error bounds against the float layer, row narrowing, model quantization,
quantized loading, and the bundled world model's predictions with int8 weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from comfy_lumina_mgpt.model import quant
from comfy_lumina_mgpt.model.chameleon import LuminaMGPT
from comfy_lumina_mgpt.model.loading import load_model, save_model
from comfy_lumina_mgpt.model.quant import Fp8Linear, Int8Linear, quantize_model_

from .test_model import randomized, tiny_config

WORLD = Path(__file__).resolve().parents[2] / "models" / "lumina_mgpt" / "lumina-mgpt-world"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# Rows 1-2: the guidance pair (packed int8 kernel on the CPU); 40: past CPU_PACK_MAX_ROWS (chunked dequantization).
ROWS = [1, 2, 40]
# Rounding of the compute itself, on top of the weight rounding: the int8 CPU kernel casts fp32/fp16 inputs to
# bf16 (relative 2^-9), and bf16/fp16 outputs and the output scaling each round once more (2^-9 each). 2^-7
# covers the three together with margin; it multiplies sum|x||w| and |y|, which bound what gets rounded.
COMPUTE_REL = 2.0 ** -7


def float_layer(out_f: int = 96, in_f: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_f, in_f, generator=g) * 0.05


def inputs(rows: int, in_f: int, dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    return torch.randn(rows, in_f, generator=torch.Generator().manual_seed(seed)).to(dtype)


def error_bound(x: torch.Tensor, w: torch.Tensor, per_weight: torch.Tensor) -> torch.Tensor:
    """Worst-case ``|y_q - y|`` ``[rows, out]`` given each weight's worst rounding error ``per_weight [out, in]``."""
    xa, wa = x.float().abs(), w.abs()
    y = x.float() @ w.T
    return xa @ per_weight.T + COMPUTE_REL * (xa @ wa.T + y.abs()) + 1e-6


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows", ROWS)
def test_int8_linear_within_rounding_bound(dtype, rows):
    """Each int8 weight is off by at most half a step (scale/2), so |y_q - y| <= sum_k |x_k| s/2 + compute
    rounding; typical relative error is ~0.5 %, far below the bound's worst case, so 1 % RMS is checked too."""
    w = float_layer().to(dtype).float()
    layer = Int8Linear.from_float(w.to(dtype))
    assert layer.weight.dtype == torch.int8 and layer.scales.dtype == dtype
    assert (layer.in_features, layer.out_features) == (64, 96)
    x = inputs(rows, 64, dtype)
    y = layer(x)
    assert y.dtype == dtype and y.shape == (rows, 96)
    ref = x.float() @ w.T
    scale = layer.scales.float()[:, None].expand_as(w)
    assert ((y.float() - ref).abs() <= error_bound(x, w, scale / 2)).all()
    assert (y.float() - ref).norm() / ref.norm() < 0.01


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows", ROWS)
def test_fp8_linear_within_rounding_bound(dtype, rows):
    """e4m3 keeps 3 mantissa bits: a normal weight is off by at most 2^-4 of itself, a subnormal one by half
    the subnormal step (2^-10 in units of the row scale). Typical relative output error ~2.5 %; 4 % RMS."""
    w = float_layer().to(dtype).float()
    layer = Fp8Linear.from_float(w.to(dtype))
    assert layer.weight.dtype == torch.float8_e4m3fn
    x = inputs(rows, 64, dtype)
    y = layer(x)
    assert y.dtype == dtype and y.shape == (rows, 96)
    ref = x.float() @ w.T
    scale = layer.scales.float()[:, None]
    per_weight = w.abs() * 2.0 ** -4 + scale * 2.0 ** -10
    assert ((y.float() - ref).abs() <= error_bound(x, w, per_weight)).all()
    assert (y.float() - ref).norm() / ref.norm() < 0.04


@pytest.mark.parametrize("cls", [Int8Linear, Fp8Linear])
def test_quantizing_leaves_the_float_weight_alone(cls):
    w = float_layer()
    kept = w.clone()
    cls.from_float(w)
    assert torch.equal(w, kept)


@pytest.mark.parametrize("cls", [Int8Linear, Fp8Linear])
@pytest.mark.parametrize("rows", ROWS)
def test_narrow_rows_equals_slice_and_shares_storage(cls, rows):
    layer = cls.from_float(float_layer(out_f=128).to(torch.bfloat16))
    x = inputs(rows, 64, torch.bfloat16)
    part = layer.narrow_rows(32, 96)
    assert type(part) is cls and (part.in_features, part.out_features) == (64, 64)
    assert torch.equal(part(x), layer(x)[:, 32:96])
    assert part.weight.untyped_storage().data_ptr() == layer.weight.untyped_storage().data_ptr()
    assert part.scales.untyped_storage().data_ptr() == layer.scales.untyped_storage().data_ptr()
    with pytest.raises(ValueError, match="outside"):
        layer.narrow_rows(96, 200)


def test_int8_kernel_paths_agree():
    """The packed kernel (few rows), the chunked path (many rows, odd widths) and an unaligned input view give
    the same numbers up to bf16 output rounding; a 3-D input keeps its leading dims."""
    w = float_layer(out_f=80, in_f=64).to(torch.bfloat16)
    layer = Int8Linear.from_float(w)
    x = inputs(2, 64, torch.bfloat16)
    packed = layer(x)
    chunked = quant._dequant_linear_chunked(x, layer.weight, layer.scales)
    torch.testing.assert_close(packed, chunked, rtol=2 ** -7, atol=1e-3)
    flat = torch.cat([torch.zeros(1, dtype=torch.bfloat16), x.flatten()])
    unaligned = flat[1:].view(2, 64)  # 2 bytes past an aligned start: the kernel must not see it
    assert unaligned.data_ptr() % 64 != 0
    assert torch.equal(layer(unaligned), packed)
    assert torch.equal(layer(x.view(1, 2, 64)), packed.view(1, 2, 80))
    odd = Int8Linear.from_float(float_layer(out_f=80, in_f=60).to(torch.bfloat16))  # 60 % 16 != 0
    assert odd(inputs(2, 60, torch.bfloat16)).shape == (2, 80)


def test_fp8_scaled_mm_path_close_to_dequantized():
    """The CUDA >= 8.9 path (W8A8 through torch._scaled_mm) computed by torch's CPU kernel: activations rounded
    to e4m3 as well add at most another 2^-4 relative per product, so it stays within 6 % RMS of float."""
    w = float_layer(out_f=96, in_f=64)
    layer = Fp8Linear.from_float(w.to(torch.bfloat16))
    x = inputs(4, 64, torch.bfloat16)
    y = quant._fp8_scaled_mm(x, layer.weight, layer.scales)
    ref = x.float() @ w.T
    assert y.dtype == torch.bfloat16 and y.shape == (4, 96)
    assert (y.float() - ref).norm() / ref.norm() < 0.06


def test_quantized_layers_refuse_training_and_bad_input():
    layer = Int8Linear.from_float(float_layer())
    with pytest.raises(ValueError, match="expects 64 input features"):
        layer(torch.randn(2, 32))
    with pytest.raises(RuntimeError, match="inference-only"):
        layer(torch.randn(2, 64, requires_grad=True))
    layer.train()
    with pytest.raises(RuntimeError, match="quant=none"):
        layer(torch.randn(2, 64))


def test_fp8_weight_survives_a_dtype_cast():
    layer = Fp8Linear.from_float(float_layer())
    layer.to(torch.bfloat16)
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.scales.dtype == torch.bfloat16


def tiny_model() -> LuminaMGPT:
    return randomized(LuminaMGPT(tiny_config(vocab_size=128, dim=64, intermediate_size=128)))


@pytest.mark.parametrize("mode", ["int8", "fp8"])
def test_quantize_model_replaces_projections_and_head_only(mode):
    model = tiny_model()
    embed, norm = model.model.embed_tokens.weight, model.model.norm.weight
    names = quant.quantizable_linears(model)
    assert len(names) == 2 * 7 + 1 and names[-1] == "lm_head"
    tokens = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(0))
    ref = model(tokens)
    assert quantize_model_(model, mode) is model
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert all(isinstance(model.get_submodule(n), quant.QUANT_LINEARS[mode]) for n in names)
    assert model.model.embed_tokens.weight is embed and model.model.norm.weight is norm
    assert quant.is_quantized(model)
    out = model(tokens)
    # A random model (weights ~0.3) amplifies each product's rounding (~0.5 % int8, ~2.5 % fp8) through its 15
    # quantized products: 2.2 % / 11.5 % measured. A wrong layer (transposed, unscaled) would give ~100 %.
    assert (out - ref).norm() / ref.norm() < (0.05 if mode == "int8" else 0.25)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model_(model, "int8")
    model.model.embed_tokens.weight.requires_grad_(True)  # what a finetune would do: refused, clearly
    with pytest.raises(RuntimeError, match="inference-only"):
        model(tokens)


def test_quantize_model_errors_and_none(monkeypatch):
    model = tiny_model()
    with pytest.raises(ValueError, match="Unknown quant mode 'int4'"):
        quantize_model_(model, "int4")
    assert quantize_model_(model, "none") is model and not quant.is_quantized(model)
    monkeypatch.setattr(quant, "fp8_dtype", lambda: None)  # a torch build without float8
    assert quant.quant_choices("cpu") == ["none", "int8"]
    with pytest.raises(ValueError, match="not supported"):
        quantize_model_(model, "fp8")
    assert not quant.is_quantized(model)


def test_quant_choices():
    assert quant.quant_choices("cpu") == ["none", "int8", "fp8"]
    assert quant.quant_choices(torch.device("mps")) == ["none", "int8"]


def test_load_model_quantizes_while_loading(tmp_path):
    """Quantizing tensor by tensor while reading gives the same buffers as quantizing the loaded model; a
    sharded folder works too; quant='none' keeps plain nn.Linear with the file's exact weights."""
    model = tiny_model()
    save_model(model, tmp_path / "m", max_shard_bytes=60_000)
    assert len(list((tmp_path / "m").glob("model-*.safetensors"))) > 1
    plain = load_model(tmp_path / "m", dtype="bf16")
    assert isinstance(plain.lm_head, nn.Linear)
    assert all(torch.equal(a, b.to(torch.bfloat16)) for a, b in
               zip(plain.state_dict().values(), model.state_dict().values()))
    loaded = load_model(tmp_path / "m", dtype="bf16", quant="int8")
    reference = quantize_model_(load_model(tmp_path / "m", dtype="bf16"), "int8")
    assert loaded.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with pytest.raises(ValueError, match="Unknown quant mode"):
        load_model(tmp_path / "m", quant="int4")
    with pytest.raises(ValueError, match="cannot save a quantized model"):
        save_model(loaded, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def world_sequences(model: LuminaMGPT) -> list[list[int]]:
    """Prompts of the bundled world's captions, each followed by the float model's greedy picture tokens."""
    from comfy_lumina_mgpt.codec import text_to_image_prompt
    from comfy_lumina_mgpt.tokenizer_bundle import load_tokenizer_bundle
    from comfy_lumina_mgpt.sampling.generate import generate
    from comfy_lumina_mgpt.sampling.settings import SamplerConfig
    from lumina_world.scene import caption, sample_scene

    bundle = load_tokenizer_bundle(WORLD)
    seqs = []
    for seed in range(6):
        prompt = text_to_image_prompt(bundle, caption(sample_scene(seed, size=(64, 48))), 64, 48)
        cfg = SamplerConfig(cfg_scale=1.0, image_top_k=1, text_top_k=1, force_size=prompt.grid_for(bundle.patch),
                            force_images=1, max_new_tokens=128)
        out = generate(model, [list(prompt.ids)], bundle.vocab, cfg, generator=torch.Generator().manual_seed(0))
        seqs.append(list(prompt.ids) + out.tokens[0])
    return seqs


@pytest.fixture(scope="module")
def world_models():
    return load_model(WORLD, dtype="bf16"), load_model(WORLD, dtype="bf16", quant="int8")


@torch.no_grad()
def test_world_model_int8_predicts_like_bf16(world_models):
    """Teacher-forced over 6 captions + their pictures (every position, prompt text included), the int8 model's
    top-1 is the bf16 model's at >= 99 % of the positions the bf16 model decides, and its logits stay within
    2 % of the largest logit's size.

    A position whose two best bf16 logits are within two bf16 steps of each other is a tie (bf16 cannot order
    them, so int8 rounding may flip them): on the prompt's own text, which training never supervises, the
    model sits on such ties. Ties are left out of the agreement but may be only a few of the positions."""
    ref, q = world_models
    agree = total = ties = 0
    for seq in world_sequences(ref):
        tokens = torch.tensor([seq])
        a, b = ref(tokens)[0], q(tokens)[0]
        top2 = a.float().topk(2, dim=-1).values  # (positions, 2)
        step = torch.finfo(torch.bfloat16).eps * torch.exp2(torch.floor(torch.log2(top2[:, 0].abs().clamp_min(1e-3))))
        decided = (top2[:, 0] - top2[:, 1]) > 2 * step
        agree += int((a.argmax(-1) == b.argmax(-1))[decided].sum())
        total += int(decided.sum())
        ties += int((~decided).sum())
        # int8 rounding errs in proportion to the logits' size, not their spread: a sequence the model finds
        # easy has logits near -20 that differ little (std 3.6 with the eight-cycle weights), where a bf16
        # step alone is 0.125
        assert (a - b).abs().max() < 0.02 * a.abs().max()
    assert total > 400 and ties <= 0.05 * (total + ties), (total, ties)
    assert agree / total >= 0.99, (agree, total)


def test_world_model_int8_generates_like_bf16(world_models):
    """Greedy pictures through the real sampler (KV cache in the compute dtype, not the head's int8)."""
    ref, q = world_models
    want, got = world_sequences(ref), world_sequences(q)
    same = sum(x == y for a, b in zip(want, got) for x, y in zip(a, b))
    assert [len(s) for s in got] == [len(s) for s in want]
    assert same / sum(len(s) for s in want) >= 0.99
    assert q.model.layers[0].self_attn.kv_cache is None  # freed after generate
