"""Training that stops before it poisons: non-finite loss/gradients/weights stop the run before any checkpoint,
keep_last never drops the newest checked checkpoint, and resume falls back past damaged checkpoints."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfy_lumina_mgpt.config import ModelConfig
from comfy_lumina_mgpt.model.chameleon import LuminaMGPT
from comfy_lumina_mgpt.training import checkpoint as ckpt
from comfy_lumina_mgpt.training.config import TrainConfig
from comfy_lumina_mgpt.training.data import TokenDataset
from comfy_lumina_mgpt.training.loop import NonFiniteError, train


def tiny_model() -> LuminaMGPT:
    torch.manual_seed(0)
    return LuminaMGPT(ModelConfig(vocab_size=64, dim=32, intermediate_size=64, n_layers=2, n_heads=4,
                                  n_kv_heads=4, max_seq_len=64))


def synthetic_dataset() -> TokenDataset:
    """Eight short sequences over a 64-token vocabulary, every token supervised."""
    return TokenDataset.from_sequences([[(3 * i + 5 * k) % 60 + 1 for k in range(16)] for i in range(8)])


def quick_cfg(**kw) -> TrainConfig:
    base = dict(lr=3e-3, warmup_steps=1, max_steps=3, batch_size=2, gradient_checkpointing=False, dropout=0.0,
                cfg_drop_prob=0.0, lora=None, save_every=0, keep_last=0, seed=0)
    base.update(kw)
    return TrainConfig.from_dict(base)


def run_dir_hashes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_nan_weight_in_the_model_stops_at_the_first_loss_without_checkpoint(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match="step 1: the loss .* NaN or infinite.*no checkpoint"):
        train(model, synthetic_dataset(), quick_cfg(max_steps=3, save_every=1, output_dir=str(out)))
    assert ckpt.list_checkpoints(out) == []


def test_weights_that_overflow_stop_before_the_checkpoint_and_keep_earlier_ones(tmp_path):
    out = tmp_path / "run"
    model = tiny_model()
    good: dict[str, bytes] = {}

    def overflow_after_step_2(step: int, total: int, metrics: dict) -> None:
        if step == 2:  # as an update too large for fp32 would: loss and gradients of the step were finite
            good.update(run_dir_hashes(out))
            with torch.no_grad():
                model.lm_head.weight[0, 0] = float("inf")

    cfg = quick_cfg(max_steps=3, save_every=1, output_dir=str(out), keep_last=1)
    with pytest.raises(NonFiniteError, match="step 2: a trained weight"):
        train(model, synthetic_dataset(), cfg, on_step=overflow_after_step_2)
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-00000001"]
    assert run_dir_hashes(out) == good and ckpt.passed_finite_check(out / "step-00000001")


def test_non_finite_settings_are_refused_up_front():
    for bad in ({"lr": float("nan")}, {"lora": {"alpha": float("nan")}}, {"lora": {"alpha": float("inf")}},
                {"grad_clip": float("inf")}, {"dropout": float("nan")}, {"max_steps": 2.5}):
        with pytest.raises(ValueError, match="must be"):
            TrainConfig.from_dict(bad)


def fake_checkpoint(root: Path, step: int, finite: bool | None) -> Path:
    folder = root / ckpt.step_dir_name(step)
    folder.mkdir(parents=True)
    payload = {"step": step} if finite is None else {"step": step, "finite": finite}
    (folder / ckpt.TRAINER_JSON).write_text(json.dumps(payload))
    return folder


def test_keep_last_never_prunes_the_newest_checked_checkpoint(tmp_path):
    checked = [fake_checkpoint(tmp_path, s, True) for s in (1, 2)]
    unchecked = [fake_checkpoint(tmp_path, s, None) for s in (3, 4)]
    pruned = ckpt.checkpoints_to_prune(tmp_path, keep_last=2)
    assert pruned == [checked[0]]  # step 2 stays: the newest one known to be finite
    assert ckpt.checkpoints_to_prune(tmp_path, keep_last=1) == [checked[0], unchecked[0]]


# --- resume past damaged checkpoints ----------------------------------------------------------------------
def nan_weight(folder: Path) -> None:
    path = folder / ("adapter_model.safetensors" if (folder / "adapter_model.safetensors").exists()
                     else "model.safetensors")
    tensors = load_file(str(path))
    key = sorted(tensors)[-1]
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, str(path), metadata={"format": "pt"})


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(8, path.stat().st_size // 3)])


def edit_state_json(folder: Path, change) -> None:
    path = folder / ckpt.TRAINER_JSON
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))


def edit_state_tensors(folder: Path, change) -> None:
    path = folder / ckpt.TRAINER_TENSORS
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def _first_optimizer_key(tensors: dict, name: str) -> str:
    return next(k for k in sorted(tensors) if k.startswith("optimizer/") and k.endswith("/" + name))


DAMAGE = {
    "nan weights": nan_weight,
    "truncated weights": lambda f: truncate(f / "model.safetensors"),
    "missing weights": lambda f: (f / "model.safetensors").unlink(),
    "state json not json": lambda f: (f / ckpt.TRAINER_JSON).write_text("{not json"),
    "state json missing rng": lambda f: edit_state_json(f, lambda p: p.pop("rng")),
    "state json step not a number": lambda f: edit_state_json(f, lambda p: p.update(step="abc")),
    "state tensors truncated": lambda f: truncate(f / ckpt.TRAINER_TENSORS),
    "rng state wrong size": lambda f: edit_state_tensors(
        f, lambda t: t.update({"rng/0/torch": t["rng/0/torch"][:100].clone()})),
    "optimizer state nan": lambda f: edit_state_tensors(
        f, lambda t: t[_first_optimizer_key(t, "exp_avg")].view(-1).__setitem__(0, float("nan"))),
    "optimizer state wrong shape": lambda f: edit_state_tensors(
        f, lambda t: t.update({_first_optimizer_key(t, "exp_avg_sq"): torch.zeros(3)})),
}


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    train(tiny_model(), synthetic_dataset(), quick_cfg(max_steps=3, save_every=1, output_dir=str(out)))
    return out


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_falls_back_past_a_damaged_checkpoint(damage, three_checkpoints, tmp_path, caplog):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(three_checkpoints, out)
    DAMAGE[damage](out / "step-00000003")
    good = {k: v for k, v in run_dir_hashes(out).items() if not k.startswith("step-00000003/")}
    with caplog.at_level(logging.WARNING, logger="comfy_lumina_mgpt.training.resume"):
        result = train(tiny_model(), synthetic_dataset(), quick_cfg(max_steps=4, save_every=1, output_dir=str(out)),
                       resume_from="latest")
    assert [h["step"] for h in result.history] == [3, 4]  # continued from step 2
    assert "cannot resume from" in caplog.text and "step-00000003" in caplog.text
    assert "resuming from" in caplog.text and "step-00000002" in caplog.text
    after = run_dir_hashes(out)
    assert {k: after[k] for k in good} == good  # the good checkpoints are untouched
    assert ckpt.passed_finite_check(out / "step-00000003")  # rewritten, now checked


def test_resume_with_no_usable_checkpoint_says_why_for_each(three_checkpoints, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(three_checkpoints, out)
    for step, damage in ((1, "nan weights"), (2, "state json not json"), (3, "truncated weights")):
        DAMAGE[damage](out / ckpt.step_dir_name(step))
    with pytest.raises(ValueError, match="no usable checkpoint") as err:
        train(tiny_model(), synthetic_dataset(), quick_cfg(max_steps=4, output_dir=str(out)), resume_from=True)
    message = str(err.value)
    assert all(f"step-0000000{s}" in message for s in (1, 2, 3)) and "NaN" in message


def test_lora_resume_skips_a_nan_adapter(tmp_path):
    cfg = quick_cfg(max_steps=2, save_every=1, output_dir=str(tmp_path / "run"),
                    lora={"rank": 2, "alpha": 4, "dropout": 0.0})
    train(tiny_model(), synthetic_dataset(), cfg)
    nan_weight(tmp_path / "run" / "step-00000002")
    result = train(tiny_model(), synthetic_dataset(), cfg.with_(max_steps=3), resume_from=True)
    assert [h["step"] for h in result.history] == [2, 3]
