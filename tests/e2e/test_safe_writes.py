"""Nothing lost, in a real ComfyUI 0.3.75: the Trainer and Save Merged nodes refuse an existing model or LoRA
folder unless 'overwrite' is on, an overwrite keeps every file it does not write, a second run never touches
the first run's folder, a run that turns non-finite writes nothing, and `train --resume` passes over a NaN
checkpoint.

The bundled model folder is never written to: the overwrite runs go to a copy of it under the server's models
folder, and the committed folder is hashed before and after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lumina_world import write_folder_dataset

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "models" / "lumina_mgpt" / "lumina-mgpt-world"
DEMO = "lumina-mgpt-demo"
KEPT = ("tokenizer.json", "vqgan.yaml", "vqgan.safetensors", "patch_alphabet.json", "my-notes.txt")


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def loaders(model: str) -> dict:
    return {"1": {"class_type": "LuminaMGPTModelLoader", "inputs": {"model_name": model, "dtype": "fp32"}},
            "2": {"class_type": "LuminaMGPTTokenizerLoader",
                  "inputs": {"tokenizer": f"lumina_mgpt/{model}", "vqgan": "(same as tokenizer)"}}}


def trainer(name: str, mode: str = "lora", seed: int = 0, **extra) -> dict:
    inputs = {"model": ["1", 0], "tokenizer": ["2", 0], "dataset": "safe_writes_t2i", "mode": mode, "steps": 2,
              "learning_rate": 1e-3, "batch_size": 2, "grad_accum": 1, "lora_rank": 2, "lora_alpha": 4.0,
              "target_size": "64", "save_every": 1, "seed": seed, "output_name": name}
    inputs.update(extra)
    return {"class_type": "LuminaMGPTTrainer", "inputs": inputs}


def with_preview(graph: dict, node: str, slot: int) -> dict:
    return {**graph, "9": {"class_type": "PreviewAny", "inputs": {"source": [node, slot]}}}


def save_merged(name: str, **extra) -> dict:
    return {"class_type": "LuminaMGPTSaveMerged", "inputs": {"model": ["1", 0], "name": name, **extra}}


def refused(server, graph: dict, *words: str) -> None:
    from comfyui_harness import ComfyHTTPError

    with pytest.raises(ComfyHTTPError) as err:
        server.post_prompt(graph)
    text = str(err.value.body)
    for word in words:
        assert word in text, text


@pytest.fixture(scope="module")
def server(comfy_server, demo_model, lumina_model):
    write_folder_dataset(comfy_server.input_dir / "safe_writes_t2i", n_scenes=4, seed=3)
    return comfy_server


@pytest.fixture()
def world_copy(server):
    """A copy of the bundled model (plus a user's file) under the server's models folder, named like it."""
    if not (BUNDLED / "config.json").is_file():
        pytest.skip("the bundled model folder is not in this checkout")
    folder = server.models_dir / "lumina_mgpt" / f"lumina-mgpt-world-copy-{uuid.uuid4().hex[:6]}"
    shutil.copytree(BUNDLED, folder)
    (folder / "my-notes.txt").write_text("the user's own file")
    yield folder
    shutil.rmtree(folder)  # the other tests list every model folder; leave them as they were


@pytest.fixture(scope="module")
def bundled_digest():
    before = digest(BUNDLED)
    yield before
    assert digest(BUNDLED) == before, "the committed bundled model folder changed"


def test_existing_model_folders_are_refused_before_anything_runs(server, world_copy, bundled_digest, safe_cases):
    before = digest(world_copy)
    for name in (world_copy.name, BUNDLED.name):
        with safe_cases.case(f"Trainer full -> existing {name}"):
            refused(server, with_preview({**loaders(DEMO), "3": trainer(name, mode="full")}, "3", 2),
                    "output_name", "already exists", "overwrite")
        with safe_cases.case(f"Save Merged -> existing {name}"):
            refused(server, {**loaders(DEMO), "3": save_merged(name)}, "already exists", "overwrite")
    assert digest(world_copy) == before
    assert digest(BUNDLED) == bundled_digest


def test_save_merged_overwrite_keeps_the_files_it_does_not_write(server, world_copy, bundled_digest,
                                                                 safe_cases):
    before = digest(world_copy)
    old_weights = os.stat(world_copy / "model.safetensors").st_ino
    with safe_cases.case("Save Merged overwrite into the bundled model's copy"):
        result = server.run({**loaders("lumina-mgpt-world"), "3": save_merged(world_copy.name, overwrite=True)},
                            timeout=300)
        assert result.ok, result.error
        after = digest(world_copy)
        assert {k: after[k] for k in KEPT} == {k: before[k] for k in KEPT}
        assert set(after) == set(before)
        assert os.stat(world_copy / "model.safetensors").st_ino != old_weights  # really written anew
        assert not [p for p in world_copy.parent.iterdir() if p.name.startswith(f".{world_copy.name}.")]
    assert digest(BUNDLED) == bundled_digest


def test_full_finetune_overwrite_keeps_tokenizer_vqgan_and_user_files(server, world_copy, safe_cases):
    before = digest(world_copy)
    with safe_cases.case("Trainer full overwrite into the bundled model's copy"):
        graph = with_preview({**loaders(DEMO), "3": trainer(world_copy.name, mode="full", overwrite=True)}, "3", 2)
        result = server.run(graph, timeout=600)
        assert result.ok, result.error
        after = digest(world_copy)
        assert {k: after[k] for k in KEPT} == {k: before[k] for k in KEPT}
        assert after["model.safetensors"] != before["model.safetensors"]  # the demo model's trained weights


def test_second_run_of_a_name_gets_its_own_run_folder(server, safe_cases):
    name = f"twice-{uuid.uuid4().hex[:6]}"
    runs = server.output_dir / "lumina_mgpt_training"
    first = server.run(with_preview({**loaders(DEMO), "3": trainer(name, seed=1)}, "3", 2), timeout=600)
    assert first.ok, first.error
    first_run = digest(runs / name)
    adapter = server.models_dir / "lumina_mgpt_lora" / name
    (adapter / "README.md").write_text("notes on this adapter")
    with safe_cases.case("Trainer lora -> existing LoRA folder"):
        refused(server, with_preview({**loaders(DEMO), "3": trainer(name, seed=2)}, "3", 2),
                "LoRA folder", "already exists")
    with safe_cases.case("second Trainer run of the same name, overwrite on"):
        second = server.run(with_preview({**loaders(DEMO), "3": trainer(name, seed=2, overwrite=True)}, "3", 2),
                            timeout=600)
        assert second.ok, second.error
        assert f"run folder {runs / (name + '-2')}" in second.executed["9"]["text"][0]
        assert digest(runs / name) == first_run
        assert (runs / f"{name}-2" / "step-00000002" / "adapter_model.safetensors").is_file()
        assert (adapter / "README.md").read_text() == "notes on this adapter"


@pytest.fixture()
def poisoned(server, demo_model):
    """A copy of the demo model with one NaN weight, under the server's models folder."""
    folder = server.models_dir / "lumina_mgpt" / f"poisoned-{uuid.uuid4().hex[:6]}"
    shutil.copytree(demo_model, folder)
    weights = load_file(str(folder / "model.safetensors"))
    key = next(k for k in sorted(weights) if k.endswith("mlp.up_proj.weight"))
    weights[key] = weights[key].clone()
    weights[key][0, 0] = float("nan")
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    yield folder
    shutil.rmtree(folder)


def test_a_run_that_turns_non_finite_writes_nothing(server, poisoned, safe_cases):
    name = f"nan-{uuid.uuid4().hex[:6]}"
    with safe_cases.case("Trainer on a model with a NaN weight"):
        result = server.run(with_preview({**loaders(poisoned.name), "3": trainer(name)}, "3", 2), timeout=600)
        assert result.status == "error"
        message = result.error["exception_message"]
        assert "training stopped at step 1: the loss" in message and "no checkpoint was written" in message
        run = server.output_dir / "lumina_mgpt_training" / name
        assert not list(run.glob("step-*"))
        assert not (server.models_dir / "lumina_mgpt_lora" / name).exists()


def test_train_command_resume_passes_over_a_nan_checkpoint(server, demo_model, tmp_path, safe_cases):
    """The issue's `train --resume` on a checkpoint with NaN weights, as a user runs it (a real process)."""
    out = tmp_path / "run"
    config = tmp_path / "train.yaml"
    config.write_text(f"model_dir: {demo_model}\ndata: {server.input_dir / 'safe_writes_t2i'}\noutput_dir: {out}\n"
                      "target_size: 64\nmax_steps: 2\nbatch_size: 2\nsave_every: 1\nkeep_last: 3\n"
                      "lora:\n  rank: 2\nlr: 1.0e-3\ngradient_checkpointing: false\n")
    command = [sys.executable, "-m", "lumina_tools", "train", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    adapter = out / "step-00000002" / "adapter_model.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(str(adapter)).items()}, str(adapter))
    good = digest(out / "step-00000001")
    with safe_cases.case("train --resume from a NaN checkpoint"):
        resumed = subprocess.run([*command, "--set", "max_steps=3", "--resume"], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "Traceback" not in resumed.stderr
        assert "cannot resume from" in resumed.stderr and "holds NaN or infinity" in resumed.stderr
        assert f"resuming from {out / 'step-00000001'} instead" in resumed.stderr
        assert digest(out / "step-00000001") == good
        assert "trained to step 3/3" in resumed.stdout
