"""The decoder: cached decoding, transformers' Chameleon as an oracle, checkpoint loading."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from comfy_lumina_mgpt.config import ModelConfig
from comfy_lumina_mgpt.model.chameleon import LuminaMGPT
from comfy_lumina_mgpt.model.loading import load_model, save_model

LAYOUTS = {
    "prenorm_mha": dict(swin_norm=False, n_kv_heads=4),
    "postnorm_gqa": dict(swin_norm=True, n_kv_heads=2),
    "prenorm_gqa": dict(swin_norm=False, n_kv_heads=1),
}


def tiny_config(**kw) -> ModelConfig:
    base = dict(vocab_size=96, dim=32, intermediate_size=64, n_layers=2, n_heads=4, n_kv_heads=4,
                max_seq_len=64, qk_norm_rows=1)
    base.update(kw)
    return ModelConfig(**base)


def randomized(model: LuminaMGPT, seed: int = 0) -> LuminaMGPT:
    """Random weights everywhere, norms included, so no parameter is trivially 1 or 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
    return model.eval()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_cached_decode_equals_full_forward(layout):
    cfg = tiny_config(**LAYOUTS[layout], qk_norm_rows=2 if LAYOUTS[layout]["n_kv_heads"] % 2 == 0 else 1)
    model = randomized(LuminaMGPT(cfg))
    tokens = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    full = model(tokens)
    model.setup_caches(batch=2, max_len=16)
    # prefill 5 tokens in one pass, then one token at a time
    pos = torch.arange(5).expand(2, -1)
    out = [model.step(tokens[:, :5], pos)]
    for t in range(5, 12):
        out.append(model.step(tokens[:, t:t + 1], torch.full((2, 1), t)))
    cached = torch.cat(out, dim=1)
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-4)


def test_rows_at_different_positions_are_independent():
    """CFG runs rows at unrelated positions in one batch; each must equal its own single-row pass."""
    cfg = tiny_config()
    model = randomized(LuminaMGPT(cfg))
    g = torch.Generator().manual_seed(2)
    long_seq = torch.randint(0, cfg.vocab_size, (1, 9), generator=g)
    short_seq = torch.randint(0, cfg.vocab_size, (1, 3), generator=g)
    ref_long, ref_short = model(long_seq)[0, -1], model(short_seq)[0, -1]

    model.setup_caches(batch=2, max_len=16)
    model.step(long_seq[:, :8], torch.arange(8)[None], cache_rows=torch.tensor([0]))
    model.step(short_seq[:, :2], torch.arange(2)[None], cache_rows=torch.tensor([1]))
    both = model.step(torch.stack([long_seq[0, 8:], short_seq[0, 2:]]), torch.tensor([[8], [2]]))
    torch.testing.assert_close(both[0, -1], ref_long, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both[1, -1], ref_short, atol=1e-4, rtol=1e-4)


def test_step_logits_index_and_cache_errors():
    model = randomized(LuminaMGPT(tiny_config()))
    tokens = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    with pytest.raises(RuntimeError, match="setup_caches"):
        model.step(tokens, torch.arange(4).expand(2, -1))
    model.setup_caches(batch=2, max_len=4)
    last = model.step(tokens, torch.arange(4).expand(2, -1), logits_index=torch.tensor([2, 1]))
    assert last.shape == (2, 96) and last.dtype == torch.float32
    torch.testing.assert_close(last[0], model(tokens[:1, :3])[0, -1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(last[1], model(tokens[1:, :2])[0, -1], atol=1e-4, rtol=1e-4)
    with pytest.raises(RuntimeError, match="past the KV cache"):
        model.step(tokens[:, :1], torch.full((2, 1), 4))


def _hf_model(cfg: ModelConfig):
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.ChameleonConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
        swin_norm=cfg.swin_norm, attention_dropout=0.0,
        vq_config=dict(embed_dim=4, num_embeddings=8, latent_channels=4, base_channels=32,
                       channel_multiplier=[1], num_res_blocks=1, attn_resolutions=[], resolution=8),
        vocabulary_map={"<image>": 3},
    )
    hf_cfg._attn_implementation = "eager"
    return transformers.ChameleonModel(hf_cfg).eval()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_logits_equal_transformers_chameleon(layout):
    cfg = tiny_config(**LAYOUTS[layout])
    torch.manual_seed(3)
    hf = _hf_model(cfg)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # LayerNorm/RMSNorm weights away from 1, biases away from 0
    lm_head = torch.randn(cfg.vocab_size, cfg.dim)
    hf_state = {f"model.{k}": v for k, v in hf.state_dict().items() if not k.startswith("vqmodel.")}
    hf_state["lm_head.weight"] = lm_head
    # transformers stores q/k-norm as [n_heads, head_dim]; our model keeps whatever row count it gets
    ours = LuminaMGPT(cfg.with_(qk_norm_rows=cfg.n_heads if cfg.n_kv_heads == cfg.n_heads else 1))
    if ours.config.qk_norm_rows == 1:
        # give the oracle one shared q/k-norm row per layer, as the official 7B checkpoints do
        for key in [k for k in hf_state if "_norm." in k and "self_attn" in k]:
            hf_state[key] = hf_state[key][:1].clone()
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if "self_attn" in name and "_norm." in name:
                    p.copy_(hf_state[f"model.{name}"].expand_as(p))
    ours.load_state_dict(hf_state)
    ours.eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = hf(input_ids=tokens).last_hidden_state @ lm_head.T
        got = ours(tokens)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def _write_official_layout(model: LuminaMGPT, folder):
    """Two shards + index + Lumina config keys, q/k-norm stored [1, head_dim] like the 7B release."""
    folder.mkdir()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: state[k] for k in ks}, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(ks, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    cfg = model.config.to_hf_dict()
    cfg.update(mask_image_logits=False, dropout=0.05, z_loss_weight=1e-5, vocabulary_map={"<s>": 0},
               vq_config={"ch": 128}, torch_dtype="bfloat16")
    (folder / "config.json").write_text(json.dumps(cfg))


def test_official_layout_loads_and_matches(tmp_path):
    model = randomized(LuminaMGPT(tiny_config(qk_norm_rows=1)))
    assert model.model.layers[0].self_attn.q_norm.weight.shape == (1, 8)
    _write_official_layout(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt", dtype="fp32")
    assert loaded.config.qk_norm_rows == 1 and loaded.config.z_loss_weight == 1e-5
    assert loaded.config.dropout == 0.05 and loaded.config.extra["mask_image_logits"] is False
    tokens = torch.randint(0, 96, (1, 7))
    torch.testing.assert_close(loaded(tokens), model(tokens))
    assert not any(p.is_meta for p in loaded.parameters())


def test_save_model_round_trip_sharded(tmp_path):
    model = randomized(LuminaMGPT(tiny_config(swin_norm=True, n_kv_heads=2, qk_norm_rows=2)))
    save_model(model, tmp_path / "out", max_shard_bytes=20_000)
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    loaded = load_model(tmp_path / "out")
    tokens = torch.randint(0, 96, (2, 5))
    torch.testing.assert_close(loaded(tokens), model(tokens))
    assert not list(tmp_path.glob(".out.*")), "temporary folders must not be left behind"


def test_bf16_load_and_vqmodel_keys_ignored(tmp_path):
    model = randomized(LuminaMGPT(tiny_config()))
    state = dict(model.state_dict())
    state["model.vqmodel.encoder.conv_in.weight"] = torch.zeros(2, 3, 3, 3)
    (tmp_path / "c").mkdir()
    save_file(state, str(tmp_path / "c" / "model.safetensors"))
    (tmp_path / "c" / "config.json").write_text(json.dumps(model.config.to_hf_dict()))
    loaded = load_model(tmp_path / "c", dtype="bf16")
    assert loaded.lm_head.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("damage,message", [
    ("missing", "missing"),
    ("unexpected", "unexpected tensor 'model.layers.9.mlp.up_proj.weight'"),
    ("shape", "model.norm.weight"),
    ("corrupt", "corrupt"),
    ("noconfig", "no config.json"),
])
def test_bad_checkpoints_give_clear_errors(tmp_path, damage, message):
    model = randomized(LuminaMGPT(tiny_config()))
    folder = tmp_path / "bad"
    folder.mkdir()
    state = dict(model.state_dict())
    if damage == "missing":
        del state["lm_head.weight"]
    elif damage == "unexpected":
        state["model.layers.9.mlp.up_proj.weight"] = torch.zeros(1)
    elif damage == "shape":
        state["model.norm.weight"] = torch.zeros(33)
    save_file(state, str(folder / "model.safetensors"))
    if damage == "corrupt":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[:100])
    if damage != "noconfig":
        (folder / "config.json").write_text(json.dumps(model.config.to_hf_dict()))
    with pytest.raises(ValueError, match=message):
        load_model(folder)


def test_missing_folder_message(tmp_path):
    with pytest.raises(ValueError, match="models/lumina_mgpt"):
        load_model(tmp_path / "nope")


def test_stacked_projections_keep_names_values_and_saving(tmp_path):
    """Inference stacks q/k/v and gate/up into one matmul each; the checkpoint's parameters keep their names
    and values, logits equal the unstacked pass, and the model still saves and loads."""
    from comfy_lumina_mgpt.model.fusion import stacked_weight

    torch.manual_seed(5)
    model = LuminaMGPT(tiny_config()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = torch.randint(0, 96, (2, 7))
    with torch.enable_grad():
        expected = model(tokens)  # grad mode: every projection on its own
    with torch.no_grad():
        got = model(tokens)
    attn = model.model.layers[0].self_attn
    assert stacked_weight((attn.q_proj, attn.k_proj, attn.v_proj)) is not None
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert all(torch.equal(loaded.state_dict()[k], before[k]) for k in before)
    model.to(torch.float64)  # a move gives each parameter its own storage again; the next pass re-stacks
    assert stacked_weight((attn.q_proj, attn.k_proj, attn.v_proj)) is None
    with torch.no_grad():
        model(tokens)
    assert stacked_weight((attn.q_proj, attn.k_proj, attn.v_proj)).dtype == torch.float64
