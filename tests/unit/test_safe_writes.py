"""Writes that never destroy: existing model/LoRA/run folders are refused unless overwriting is asked for, and an
overwrite keeps every file it does not write (real safetensors files, real model folders)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from comfy_lumina_mgpt.atomic import atomic_folder, claim_new_folder
from comfy_lumina_mgpt.config import ModelConfig
from comfy_lumina_mgpt.model.chameleon import LuminaMGPT
from comfy_lumina_mgpt.model.loading import load_model, save_model
from comfy_lumina_mgpt.training import lora as lora_mod
from comfy_lumina_mgpt.training.config import LoraSettings

FOREIGN = {"tokenizer.json": "{\"tok\": 1}", "vqgan.yaml": "embed_dim: 8\n", "vqgan.safetensors": "vq-bytes",
           "patch_alphabet.json": "{}", "my-notes.txt": "mine, not the trainer's"}


def tiny_model(seed: int) -> LuminaMGPT:
    torch.manual_seed(seed)
    return LuminaMGPT(ModelConfig(vocab_size=64, dim=32, intermediate_size=64, n_layers=1, n_heads=4,
                                  n_kv_heads=4, max_seq_len=64))


def digest(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def model_folder_with_foreign_files(folder: Path) -> Path:
    save_model(tiny_model(0), folder)
    for name, text in FOREIGN.items():
        (folder / name).write_text(text)
    (folder / "extras").mkdir()
    (folder / "extras" / "sample.png").write_bytes(b"\x89PNG fake")
    return folder


def test_existing_model_folder_is_refused_and_left_byte_identical(tmp_path):
    folder = model_folder_with_foreign_files(tmp_path / "world")
    before = digest(folder)
    with pytest.raises(ValueError, match="already exists.*overwrite"):
        save_model(tiny_model(1), folder)
    assert digest(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]  # no temporary folder left behind


def test_overwrite_replaces_weights_and_keeps_every_other_file(tmp_path):
    folder = model_folder_with_foreign_files(tmp_path / "world")
    before = digest(folder)
    new = tiny_model(1)
    save_model(new, folder, overwrite=True)
    after = digest(folder)
    kept = {k: v for k, v in before.items() if k not in ("model.safetensors", "config.json")}
    assert {k: after[k] for k in kept} == kept
    assert after["model.safetensors"] != before["model.safetensors"]
    loaded = load_model(folder)
    for key, value in new.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_overwrite_drops_the_old_shards_so_they_cannot_shadow_the_new_file(tmp_path):
    folder = tmp_path / "m"
    save_model(tiny_model(0), folder, max_shard_bytes=20_000)
    assert (folder / "model.safetensors.index.json").is_file()
    (folder / "tokenizer.json").write_text("{}")
    new = tiny_model(2)
    save_model(new, folder, overwrite=True)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.json", "model.safetensors", "tokenizer.json"]
    torch.testing.assert_close(load_model(folder).state_dict()["lm_head.weight"], new.state_dict()["lm_head.weight"])


def test_an_empty_folder_is_not_something_to_lose(tmp_path):
    (tmp_path / "empty").mkdir()
    save_model(tiny_model(0), tmp_path / "empty")
    assert (tmp_path / "empty" / "model.safetensors").is_file()


def test_symlinked_or_file_targets_are_refused_even_with_overwrite(tmp_path):
    real = model_folder_with_foreign_files(tmp_path / "real")
    before = digest(real)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        save_model(tiny_model(1), tmp_path / "link", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        save_model(tiny_model(1), tmp_path / "file", overwrite=True)
    assert digest(real) == before


def test_failed_overwrite_leaves_the_old_folder(tmp_path):
    folder = model_folder_with_foreign_files(tmp_path / "world")
    before = digest(folder)
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_folder(folder, overwrite=True) as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("disk full (simulated)")
    assert digest(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_lora_folder_refused_then_overwritten_keeping_other_files(tmp_path):
    from peft.tuners.lora import LoraLayer  # noqa: F401  (peft must be importable for LoRA)

    settings = LoraSettings(rank=2, alpha=4, dropout=0.0)
    model = lora_mod.apply_lora(tiny_model(0), settings)
    folder = lora_mod.save_lora(model, settings, tmp_path / "style")
    (folder / "README.md").write_text("my adapter")
    before = digest(folder)
    with pytest.raises(ValueError, match="LoRA folder .* already exists"):
        lora_mod.save_lora(model, settings, folder)
    assert digest(folder) == before
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.add_(1.0)
    lora_mod.save_lora(model, settings, folder, overwrite=True)
    after = digest(folder)
    assert after["README.md"] == before["README.md"]
    assert after["adapter_model.safetensors"] != before["adapter_model.safetensors"]


def test_run_folders_get_a_unique_suffix(tmp_path):
    first = claim_new_folder(tmp_path, "run")
    (first / "step-00000001").mkdir()
    second = claim_new_folder(tmp_path, "run")
    third = claim_new_folder(tmp_path, "run")
    assert [first.name, second.name, third.name] == ["run", "run-2", "run-3"]
    assert (first / "step-00000001").is_dir() and not any(second.iterdir())


def test_demo_model_command_refuses_an_existing_folder(tmp_path, capsys):
    from lumina_tools.demo_model import main

    folder = model_folder_with_foreign_files(tmp_path / "demo")
    before = digest(folder)
    assert main([str(folder)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert digest(folder) == before
    assert main([str(folder), "--overwrite"]) == 0
    after = digest(folder)
    assert after["my-notes.txt"] == before["my-notes.txt"] and after["extras/sample.png"] == before["extras/sample.png"]
    assert json.loads((folder / "tokenizer.json").read_text()) != {"tok": 1}  # the demo writes its own tokenizer


# --- the train command ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_yaml(tmp_path_factory):
    """A demo model, three captioned pictures and a two-step LoRA config writing to ``<dir>/run``."""
    from PIL import Image

    from lumina_tools.demo_model import write_demo_model

    root = tmp_path_factory.mktemp("train_cli")
    model = write_demo_model(root / "demo", dim=32)
    data = root / "images"
    data.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (80 * i, 100, 50)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(f"a picture number {i}")
    config = root / "train.yaml"
    config.write_text(f"model_dir: {model}\ndata: {data}\noutput_dir: {root / 'run'}\ntarget_size: 64\n"
                      "max_steps: 2\nbatch_size: 2\nsave_every: 1\nkeep_last: 2\nlora:\n  rank: 2\nlr: 1.0e-3\n"
                      "gradient_checkpointing: false\n")
    return config


def test_train_command_refuses_an_earlier_run_and_overwrite_moves_it_aside(train_yaml, capsys):
    from lumina_tools import train as cli

    out = train_yaml.parent / "run"
    assert cli.main(["--config", str(train_yaml)]) == 0
    first = digest(out)
    assert cli.main(["--config", str(train_yaml)]) == 2
    assert "already holds a run" in capsys.readouterr().err and digest(out) == first
    assert cli.main(["--config", str(train_yaml), "--overwrite"]) == 0
    (aside,) = [p for p in out.iterdir() if p.name.startswith("replaced-")]
    moved = {k.removeprefix(aside.name + "/"): v for k, v in digest(out).items() if k.startswith(aside.name)}
    assert moved == {k: v for k, v in first.items() if not k.startswith("token_cache/")}
    assert (out / "step-00000002" / "trainer_state.json").is_file()


def test_train_command_resume_past_nan_checkpoint_then_stops_clearly(train_yaml, tmp_path, capsys, caplog):
    """A NaN resume: the damaged newest checkpoint is passed over (saying so), and a run that turns non-finite
    ends with one clear error line and leaves the good checkpoints as they were."""
    from safetensors.torch import load_file, save_file

    from comfy_lumina_mgpt.training import checkpoint as ckpt
    from lumina_tools import train as cli

    config = tmp_path / "train.yaml"
    config.write_text(train_yaml.read_text().replace(str(train_yaml.parent / "run"), str(tmp_path / "run")))
    out = tmp_path / "run"
    assert cli.main(["--config", str(config)]) == 0
    adapter = out / "step-00000002" / "adapter_model.safetensors"
    tensors = {k: v.clone() for k, v in load_file(str(adapter)).items()}
    for v in tensors.values():
        v.fill_(float("nan"))
    save_file(tensors, str(adapter))
    with caplog.at_level("WARNING"):
        assert cli.main(["--config", str(config), "--set", "max_steps=3", "--resume"]) == 0
    assert "cannot resume from" in caplog.text and "holds NaN" in caplog.text and "step-00000001" in caplog.text
    assert ckpt.passed_finite_check(out / "step-00000003")
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [2, 3]
    capsys.readouterr()
    kept = digest(out)
    # the same run with a learning rate that overflows: one clear line, and every checkpoint it had is kept
    rc = cli.main(["--config", str(config), "--set", "max_steps=8", "--set", "lr=1.0e+30", "--set", "keep_last=0",
                   "--resume"])
    err = capsys.readouterr().err
    match = re.match(r"error: training stopped at step (\d+): ", err)
    assert rc == 2 and match and "Traceback" not in err and "Lower the learning rate" in err
    after = digest(out)
    assert {k: after.get(k) for k in kept if k.startswith("step-")} == {k: v for k, v in kept.items()
                                                                      if k.startswith("step-")}
    assert not (out / ckpt.step_dir_name(int(match.group(1)))).exists()
