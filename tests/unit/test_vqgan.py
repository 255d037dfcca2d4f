"""VQGAN: shapes, checkpoint layout, safe .ckpt reading, conversion, load errors, yaml, training gradients."""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from comfy_lumina_mgpt.vqgan import (VQGAN, VQGANConfig, convert_ckpt_to_safetensors, find_vqgan_files,
                                     load_state_dict_file, load_vqgan, save_vqgan)

# ch_mult (1, 2): 2x downsampling; attention at the 16-px level (encoder level 1, decoder level 1).
TINY = VQGANConfig(embed_dim=8, n_embed=64, z_channels=8, resolution=32, ch=32, ch_mult=(1, 2),
                   num_res_blocks=1, attn_resolutions=(16,), dropout=0.0)


@pytest.fixture(scope="module")
def tiny() -> VQGAN:
    torch.manual_seed(0)
    model = VQGAN(TINY).eval()
    with torch.no_grad():  # spread the codebook so encode uses many codes
        model.quantize.embedding.weight.normal_()
    return model


def _write_yaml(folder: Path, cfg: VQGANConfig = TINY) -> Path:
    path = folder / "vqgan.yaml"
    data = cfg.to_yaml_dict()
    data["model"]["target"] = "some.module.VQModel"
    data["model"]["params"]["lossconfig"] = {"target": "x.Loss", "params": {"disc_start": 1}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- architecture


def test_key_layout_matches_meta_checkpoint(tiny):
    keys = set(tiny.state_dict())
    expected = """
        encoder.conv_in.weight encoder.down.0.block.0.conv1.weight encoder.down.0.downsample.conv.weight
        encoder.down.1.block.0.nin_shortcut.weight encoder.down.1.attn.0.q.weight
        encoder.mid.block_1.norm1.weight
        encoder.mid.attn_1.proj_out.bias encoder.mid.block_2.conv2.bias encoder.norm_out.weight
        encoder.conv_out.weight decoder.conv_in.weight decoder.mid.attn_1.k.weight
        decoder.up.0.block.1.conv2.weight decoder.up.1.block.1.norm2.bias decoder.up.1.attn.1.v.weight
        decoder.up.1.upsample.conv.weight decoder.up.0.block.0.nin_shortcut.weight decoder.norm_out.bias
        decoder.conv_out.weight quant_conv.weight post_quant_conv.bias quantize.embedding.weight
    """.split()
    for key in expected:
        assert key in keys, key
    assert "encoder.down.1.downsample.conv.weight" not in keys  # last level: no downsample
    assert "decoder.up.0.upsample.conv.weight" not in keys  # level 0: no upsample
    assert not any(k.startswith(("encoder.down.0.attn", "decoder.up.0.attn")) for k in keys)
    assert tiny.quantize.embedding.weight.shape == (64, 8)
    assert len(tiny.decoder.up[0].block) == 2  # num_res_blocks + 1


def test_chameleon_defaults_key_count():
    cfg = VQGANConfig()
    assert cfg.downsample == 16
    with torch.device("meta"):
        model = VQGAN(cfg)
    keys = model.state_dict()
    assert keys["quantize.embedding.weight"].shape == (8192, 256)
    assert {k.split(".")[2] for k in keys if k.startswith("encoder.down.")} == {"0", "1", "2", "3", "4"}
    assert "encoder.down.4.downsample.conv.weight" not in keys
    assert "encoder.down.3.downsample.conv.weight" in keys
    assert "decoder.up.4.block.2.conv1.weight" in keys and "decoder.up.1.upsample.conv.weight" in keys
    assert not any(".attn." in k for k in keys)  # attn_resolutions = []


def test_encode_decode_shapes_non_square(tiny):
    images = torch.rand(2, 3, 12, 20) * 2 - 1
    codes = tiny.encode(images)
    assert codes.shape == (2, 6, 10) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 64
    out = tiny.decode_codes(codes)
    assert out.shape == (2, 3, 12, 20) and out.dtype == torch.float32


def test_encode_rejects_bad_sizes(tiny):
    with pytest.raises(ValueError, match="multiple of 2"):
        tiny.encode(torch.zeros(1, 3, 13, 20))
    with pytest.raises(ValueError, match="channels"):
        tiny.encode(torch.zeros(1, 4, 12, 20))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        tiny.decode_codes(torch.full((1, 2, 2), 64))


def test_quantizer_is_nearest_raster(tiny):
    z = torch.randn(1, 8, 3, 5)
    codes = tiny.quantize.nearest(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    brute = torch.cdist(flat, tiny.quantize.embedding.weight).argmin(dim=1).reshape(1, 3, 5)
    assert torch.equal(codes, brute)


def test_forward_gradients_reach_encoder():
    torch.manual_seed(1)
    model = VQGAN(TINY).train()
    images = torch.rand(2, 3, 8, 12) * 2 - 1
    recon, vq_loss, codes = model(images)
    assert recon.shape == images.shape and codes.shape == (2, 4, 6) and vq_loss.ndim == 0
    ((recon - images).pow(2).mean() + vq_loss).backward()
    for name in ("encoder.conv_in.weight", "quant_conv.weight", "quantize.embedding.weight",
                 "decoder.conv_out.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # straight-through: reconstruction alone also reaches the encoder
    model.zero_grad()
    recon, _, _ = model(images)
    recon.sum().backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- config / yaml


def test_yaml_round_trip(tmp_path):
    path = _write_yaml(tmp_path)
    assert VQGANConfig.from_yaml(path) == TINY
    raw = yaml.safe_load(path.read_text())
    assert raw["model"]["params"]["ddconfig"]["ch_mult"] == [1, 2]
    assert VQGANConfig.from_dict(TINY.to_yaml_dict()["model"]["params"]) == TINY


def test_yaml_errors_name_file_and_key(tmp_path):
    data = TINY.to_yaml_dict()
    del data["model"]["params"]["ddconfig"]["z_channels"]
    bad = tmp_path / "missing.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"missing\.yaml.*ddconfig\.z_channels"):
        VQGANConfig.from_yaml(bad)
    data = TINY.to_yaml_dict()
    data["model"]["params"]["n_embed"] = "many"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"missing\.yaml.*n_embed must be an integer"):
        VQGANConfig.from_yaml(bad)
    with pytest.raises(ValueError, match="multiples of 32"):
        VQGANConfig(ch=48)


# ---------------------------------------------------------------------------- safe checkpoint reading

_FAKE_MODULES = ("pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing",
                 "omegaconf", "omegaconf.dictconfig")
RAN: list[str] = []  # any method of the fake classes that runs during *loading* records itself here


class AttributeDict(dict):
    def __setitem__(self, key, value):
        RAN.append("AttributeDict.__setitem__")
        super().__setitem__(key, value)

    def __setstate__(self, state):
        RAN.append("AttributeDict.__setstate__")


class DictConfig:
    def __init__(self, content):
        self._content = content

    def __setstate__(self, state):
        RAN.append("DictConfig.__setstate__")


AttributeDict.__module__ = "pytorch_lightning.utilities.parsing"
DictConfig.__module__ = "omegaconf.dictconfig"


def _save_lightning_ckpt(model: VQGAN, path: Path) -> None:
    """torch.save a Lightning-style checkpoint whose extras name classes of modules that do not exist."""
    fakes = {name: types.ModuleType(name) for name in _FAKE_MODULES}
    fakes["pytorch_lightning.utilities.parsing"].AttributeDict = AttributeDict
    fakes["omegaconf.dictconfig"].DictConfig = DictConfig
    hparams = AttributeDict()
    dict.update(hparams, {"lr": 4.5e-6, "ddconfig": DictConfig({"ch": 32}), "n_embed": 64})
    state = dict(model.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 3, 3)
    ckpt = {
        "epoch": 3, "global_step": np.int64(1200), "pytorch-lightning_version": "1.9.0",
        "state_dict": state, "hyper_parameters": hparams,
        "args": argparse.Namespace(base=["x.yaml"], seed=23),
        "callbacks": {"ModelCheckpoint": {"best_model_score": np.float64(0.1),
                                          "dirpath": Path("/logs/ckpt")}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4}]}],
    }
    absent = object()
    saved = {k: sys.modules.get(k, absent) for k in _FAKE_MODULES}
    sys.modules.update(fakes)
    try:
        torch.save(ckpt, path)
    finally:
        for name, previous in saved.items():
            if previous is absent:
                del sys.modules[name]
            else:
                sys.modules[name] = previous


@pytest.fixture()
def block_fake_imports(monkeypatch):
    """Make any import of the fake modules fail during loading (None in sys.modules blocks the import)."""
    for name in _FAKE_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    RAN.clear()
    yield
    assert RAN == []


def test_lightning_ckpt_loads_without_running_code(tiny, tmp_path, block_fake_imports):
    ckpt = tmp_path / "vqgan.ckpt"
    _save_lightning_ckpt(tiny, ckpt)
    globals_needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt))
    assert "pytorch_lightning.utilities.parsing.AttributeDict" in globals_needed
    assert sys.modules["pytorch_lightning"] is None  # still blocked: loading cannot import the real classes
    safe_before = set(map(repr, torch.serialization.get_safe_globals()))
    tensors = load_state_dict_file(ckpt)
    assert set(tensors) == set(tiny.state_dict())  # loss.* and non-tensors dropped
    yaml_path = _write_yaml(tmp_path)
    assert find_vqgan_files(tmp_path) == (yaml_path, ckpt)
    loaded = load_vqgan(yaml_path, ckpt)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    codes = torch.randint(0, 64, (1, 4, 6))
    with torch.no_grad():
        assert torch.equal(loaded.decode_codes(codes), tiny.decode_codes(codes))
    assert set(map(repr, torch.serialization.get_safe_globals())) == safe_before  # placeholders removed again


def test_ckpt_and_converted_safetensors_decode_identically(tiny, tmp_path, block_fake_imports):
    ckpt = tmp_path / "vqgan.ckpt"
    _save_lightning_ckpt(tiny, ckpt)
    yaml_path = _write_yaml(tmp_path)
    st = convert_ckpt_to_safetensors(ckpt)
    assert st == tmp_path / "vqgan.safetensors" and not list(tmp_path.glob("*.tmp"))
    assert find_vqgan_files(tmp_path) == (yaml_path, st)  # safetensors preferred
    codes = torch.randint(0, 64, (2, 3, 5))
    with torch.no_grad():
        a = load_vqgan(yaml_path, ckpt).decode_codes(codes)
        b = load_vqgan(yaml_path, st).decode_codes(codes)
    assert torch.equal(a, b)


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(ValueError, match=r"evil\.ckpt.*'posix\.system'.*convert"):
        load_state_dict_file(path)
    assert not marker.exists()

    class EvalCall:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w')",))

    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": EvalCall()}, path)
    with pytest.raises(ValueError, match="builtins.eval"):
        load_state_dict_file(path)
    # protocol 4 (STACK_GLOBAL) cannot hide the call either
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, path, pickle_protocol=4)
    with pytest.raises(ValueError, match=r"evil\.ckpt"):
        load_state_dict_file(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------- load errors, save


def test_load_errors_name_the_key(tiny, tmp_path):
    yaml_path = _write_yaml(tmp_path)
    save_vqgan(tiny, tmp_path / "ok")
    good = load_state_dict_file(tmp_path / "ok" / "vqgan.safetensors")
    bad = tmp_path / "bad.ckpt"

    state = dict(good)
    del state["decoder.up.1.upsample.conv.weight"]
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"bad\.ckpt.*missing.*decoder\.up\.1\.upsample\.conv\.weight"):
        load_vqgan(yaml_path, bad)

    state = dict(good, **{"encoder.extra.weight": torch.zeros(2), "loss.logvar": torch.zeros(())})
    torch.save({"state_dict": state}, bad)
    with pytest.raises(ValueError, match=r"unexpected.*encoder\.extra\.weight") as info:
        load_vqgan(yaml_path, bad)
    assert "loss.logvar" not in str(info.value)

    state = dict(good, **{"quantize.embedding.weight": torch.zeros(32, 8)})
    torch.save(state, bad)
    shape_msg = r"wrong shape.*quantize\.embedding\.weight \(file \(32, 8\), config \(64, 8\)\)"
    with pytest.raises(ValueError, match=shape_msg):
        load_vqgan(yaml_path, bad)


def test_save_vqgan_round_trip_and_find_errors(tiny, tmp_path):
    folder = tmp_path / "vq"
    config_path, weights_path = save_vqgan(tiny, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["vqgan.safetensors", "vqgan.yaml"]
    loaded = load_vqgan(config_path, weights_path)
    assert loaded.config == TINY
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    (folder / "vqgan.yaml").unlink()
    with pytest.raises(ValueError, match=r"needs vqgan\.yaml.*found: vqgan\.safetensors"):
        find_vqgan_files(folder)
    with pytest.raises(ValueError, match="does not exist"):
        find_vqgan_files(tmp_path / "nope")
