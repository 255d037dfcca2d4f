"""Files checked before use: every broken or forged model, tokenizer, VQGAN and LoRA file gives a ValueError that
names the file and the problem, before any tensor is read; symlinked model folders load."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lumina_tools import hostile_files as hostile
from comfy_lumina_mgpt.config import ModelConfig
from lumina_tools.demo_model import demo_vqgan_config, write_demo_model
from comfy_lumina_mgpt.file_checks import check_zip_checkpoint, confined_child, safetensors_header
from comfy_lumina_mgpt.model.loading import load_model
from comfy_lumina_mgpt.tokenizer_bundle import load_tokenizer_bundle
from comfy_lumina_mgpt.tokenizer import TextTokenizer
from comfy_lumina_mgpt.training import lora as lora_lib
from comfy_lumina_mgpt.training.config import LoraSettings
from comfy_lumina_mgpt.vqgan import VQGAN, load_state_dict_file, save_vqgan


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return write_demo_model(tmp_path_factory.mktemp("demo") / "demo", dim=32, n_layers=1)


@pytest.fixture()
def model_copy(demo, tmp_path) -> Path:
    return hostile.copy_folder(demo, tmp_path / "copy")


def test_a_sound_file_passes(demo):
    header = safetensors_header(demo / "model.safetensors")
    assert "lm_head.weight" in header and header["lm_head.weight"].dtype == "F32"
    assert load_model(demo).config.dim == 32


@pytest.mark.parametrize("damage, message", [
    (hostile.empty_file, "is empty"),
    (lambda p: hostile.truncate(p, 0.5), "claims bytes|header claims"),
    (lambda p: hostile.truncate(p, 0.0001), "too short|header claims"),
    (hostile.forge_huge_tensor, "claims bytes 0..4398046511104"),
    (hostile.forge_header_length, "header claims 1099511627776 bytes"),
    (hostile.garbage, "header claims|not valid JSON"),
])
def test_broken_weights_are_refused_naming_the_file(model_copy, damage, message):
    damage(model_copy / "model.safetensors")
    with pytest.raises(ValueError, match=message) as err:
        load_model(model_copy)
    assert "model.safetensors" in str(err.value)


def test_overlapping_and_mis_sized_tensors(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(4), "b": torch.zeros(4)}, str(path))
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8: 8 + n])
    body = data[8 + n:]

    def write(h: dict) -> None:
        raw = json.dumps(h).encode()
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)

    header["b"]["data_offsets"] = header["a"]["data_offsets"]
    write(header)
    with pytest.raises(ValueError, match="overlap"):
        safetensors_header(path)
    header["b"]["shape"] = [5]
    write(header)
    with pytest.raises(ValueError, match="needs 20 bytes"):
        safetensors_header(path)


def test_config_that_disagrees_with_the_weights_fails_before_reading_them(model_copy):
    hostile.edit_json(model_copy / "config.json", hidden_size=64, intermediate_size=128)
    with pytest.raises(ValueError, match="config implies"):
        load_model(model_copy)


@pytest.mark.parametrize("changes, message", [
    ({"num_attention_heads": 0}, "num_attention_heads must be in 1..1024, got 0"),
    ({"hidden_size": "32"}, "hidden_size must be an integer, got '32'"),
    ({"num_hidden_layers": 1.5}, "num_hidden_layers must be an integer"),
    ({"vocab_size": True}, "vocab_size must be an integer"),
    ({"max_position_embeddings": 1 << 40}, "max_position_embeddings must be in"),
    ({"rms_norm_eps": float("nan")}, "rms_norm_eps must be a finite number"),
    ({"rope_theta": -1.0}, "rope_theta must be in"),
    ({"num_key_value_heads": -4}, "num_key_value_heads must be in"),
])
def test_config_fields_are_type_and_range_checked(model_copy, changes, message):
    hostile.edit_json(model_copy / "config.json", **changes)
    with pytest.raises(ValueError, match=message) as err:
        load_model(model_copy)
    assert "config.json" in str(err.value)


def test_defaults_still_valid():
    assert ModelConfig().n_heads == 32


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "..\\..\\secret.safetensors",
                                  "C:\\Windows\\x.safetensors", "sub/../../x.safetensors"])
def test_index_shards_stay_inside_the_folder(model_copy, name):
    hostile.traversal_index(model_copy, name)
    with pytest.raises(ValueError, match="points outside"):
        load_model(model_copy)


def test_confined_child_allows_subfolders(tmp_path):
    assert confined_child(tmp_path, "a/b.safetensors", "x") == tmp_path / "a" / "b.safetensors"
    for bad in ("", "\x00", None, 5):
        with pytest.raises(ValueError):
            confined_child(tmp_path, bad, "x")


def test_symlinked_model_folder_loads(demo, tmp_path):
    link = tmp_path / "linked"
    os.symlink(demo, link)
    assert load_model(link).config.dim == 32
    assert load_tokenizer_bundle(link).vocab.num_codes == 64


def test_tokenizer_without_specials_is_refused_at_load(model_copy):
    hostile.strip_special_tokens(model_copy / "tokenizer.json")
    with pytest.raises(ValueError, match="tokenizer.json: the tokenizer lacks the tokens <s>"):
        TextTokenizer.from_file(model_copy / "tokenizer.json")


@pytest.mark.parametrize("content", ["[]", "{", '{"model": 5}', '{"model": {"type": "BPE", "vocab": 7}}'])
def test_malformed_tokenizer_json(model_copy, content):
    (model_copy / "tokenizer.json").write_text(content)
    with pytest.raises(ValueError, match="tokenizer"):
        TextTokenizer.from_file(model_copy / "tokenizer.json")


def test_zip_bomb_checkpoint_refused_before_inflating(tmp_path):
    bomb = hostile.zip_bomb_checkpoint(tmp_path / "vqgan.ckpt", inflated_bytes=1 << 28)
    assert bomb.stat().st_size < (1 << 28) // 100
    with pytest.raises(ValueError, match="compressed.*zip bomb"):
        load_state_dict_file(bomb)


def test_plain_torch_checkpoint_passes_the_zip_check(tmp_path):
    path = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}}, path)
    assert check_zip_checkpoint(path)
    assert torch.equal(load_state_dict_file(path)["w"], torch.ones(3))


def test_vqgan_weights_checked_against_the_config(model_copy):
    hostile.forge_huge_tensor(model_copy / "vqgan.safetensors")
    with pytest.raises(ValueError, match="vqgan.safetensors.*claims bytes"):
        load_tokenizer_bundle(model_copy)


def test_vqgan_codebook_must_match_the_tokenizer(model_copy):
    cfg = dataclasses.replace(demo_vqgan_config(), n_embed=32)
    save_vqgan(VQGAN(cfg), model_copy)
    with pytest.raises(ValueError, match="32 codes but the tokenizer.*64 image tokens"):
        load_tokenizer_bundle(model_copy)


@pytest.fixture()
def adapter(demo, tmp_path) -> Path:
    model = load_model(demo)
    settings = LoraSettings(rank=2, alpha=4.0, dropout=0.0)
    lora_lib.apply_lora(model, settings)
    return lora_lib.save_lora(model, settings, tmp_path / "adapter")


def test_lora_shapes_checked_before_the_product(adapter, demo):
    shapes = {k: tuple(v.shape) for k, v in load_model(demo).state_dict().items()}
    assert lora_lib.lora_weight_deltas(adapter, weight_shapes=shapes)
    hostile.forge_lora_shapes(adapter)
    with pytest.raises(ValueError, match="trained for another model size"):
        lora_lib.lora_weight_deltas(adapter, weight_shapes=shapes)


@pytest.mark.parametrize("changes, message", [({"r": "16"}, "'r' must be an integer"), ({"r": 0}, "'r' must be"),
                                               ({"lora_alpha": "x"}, "lora_alpha"), ({"r": None}, "'r' must be")])
def test_lora_config_fields_checked(adapter, changes, message):
    hostile.edit_json(adapter / "adapter_config.json", **changes)
    with pytest.raises(ValueError, match=message):
        lora_lib.read_lora_settings(adapter)


def test_truncated_lora_weights(adapter):
    hostile.truncate(adapter / "adapter_model.safetensors", 0.5)
    with pytest.raises(ValueError, match="adapter_model.safetensors"):
        lora_lib.lora_weight_deltas(adapter)
