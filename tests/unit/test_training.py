"""The trainer: objective, data pipeline, loop, LoRA, checkpoints and resume, on tiny CPU models."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from comfy_lumina_mgpt.config import ModelConfig
from comfy_lumina_mgpt.model.chameleon import LuminaMGPT
from comfy_lumina_mgpt.training import checkpoint as ckpt
from comfy_lumina_mgpt.training import lora as lora_mod
from comfy_lumina_mgpt.training.config import DEFAULT_LORA_TARGETS, LoraSettings, TrainConfig
from comfy_lumina_mgpt.training.data import (TokenDataset, collate, iter_source, load_dataset, plan_batches,
                                             prepare_dataset, pretokenize)
from comfy_lumina_mgpt.training.loop import lr_at, train
from comfy_lumina_mgpt.training.objective import IGNORE_INDEX, drop_condition, lm_loss
from comfy_lumina_mgpt.training.plot import loss_curve_image

VOCAB = SimpleNamespace(boi_id=5, eoi_id=6)  # what drop_condition reads, for synthetic sequences
BOI, EOI = VOCAB.boi_id, VOCAB.eoi_id


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices gain nothing from intra-op threads, and on a busy CPU the thread barriers cost 3-4x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, vocab: int = 64, dim: int = 32) -> LuminaMGPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, dim=dim, intermediate_size=2 * dim, n_layers=2, n_heads=4,
                      n_kv_heads=4, max_seq_len=128)
    model = LuminaMGPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.05)
    return model


def synthetic_dataset(n: int = 12, length: int = 20) -> TokenDataset:
    """``[BOS, prompt..., BOI, body..., EOI]``: prompt masked, the 'image' supervised; two length buckets."""
    ids, buckets = [], []
    for i in range(n):
        step = 1 + i % 3
        body = [(30 + step * k) % 24 + 30 for k in range(length - 5 + (i % 2) * 4)]
        ids.append([0, 10 + step, 20 + i % 4, BOI, *body, EOI])
        buckets.append("a" if i % 2 else "b")
    labels = [[IGNORE_INDEX] * 3 + seq[3:] for seq in ids]
    return TokenDataset.from_sequences(ids, labels=labels, buckets=buckets, vocab=VOCAB)


def quick_cfg(**kw) -> TrainConfig:
    base = dict(lr=3e-3, warmup_steps=2, max_steps=6, min_lr_ratio=0.1, batch_size=2, grad_accum=1,
                gradient_checkpointing=False, dropout=0.0, cfg_drop_prob=0.0, lora=None, save_every=0,
                keep_last=0, seed=0)
    base.update(kw)
    return TrainConfig.from_dict(base)


def params_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


# --- config -----------------------------------------------------------------------------------------------
def test_config_from_yaml(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lr: 1.0e-4\nbetas: [0.9, 0.99]\nlora:\n  rank: 4\n  target_modules: [q_proj, v_proj]\n"
                    "max_steps: 7\n")
    cfg = TrainConfig.from_yaml(path)
    assert cfg.lr == 1e-4 and cfg.betas == (0.9, 0.99) and cfg.max_steps == 7
    assert cfg.lora == LoraSettings(rank=4, target_modules=("q_proj", "v_proj"))
    assert TrainConfig.from_dict({"lora": None}).lora is None
    assert TrainConfig().lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                 "up_proj", "down_proj")
    path.write_text("lr: 1.0e-4\nlearning_rate: 3\n")
    with pytest.raises(ValueError, match=r"learning_rate.*valid keys.*'lr'"):
        TrainConfig.from_yaml(path)
    path.write_text("lora: {rnk: 3}\n")
    with pytest.raises(ValueError, match="rnk"):
        TrainConfig.from_yaml(path)


def test_example_configs_parse():
    from comfy_lumina_mgpt.training.distributed import FSDP_ACCELERATE_CONFIG, WRAP_CLASS

    docs = Path(__file__).resolve().parents[2] / "docs"
    cfg = TrainConfig.from_yaml(docs / "train_example.yaml")
    assert cfg.lora is not None and cfg.betas == (0.9, 0.95)
    assert (docs / "accelerate_fsdp.yaml").read_text() == FSDP_ACCELERATE_CONFIG
    import yaml

    fsdp = yaml.safe_load(FSDP_ACCELERATE_CONFIG)["fsdp_config"]
    layer = tiny_model().model.layers[0]
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == WRAP_CLASS == type(layer).__name__
    assert fsdp["fsdp_use_orig_params"] is True


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, max_steps=14, min_lr_ratio=0.1)
    assert [lr_at(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, cfg) == pytest.approx(1.0)
    assert lr_at(9, cfg) == pytest.approx(0.55)
    assert lr_at(14, cfg) == pytest.approx(0.1)
    flat = TrainConfig(lr=2e-5, warmup_steps=0, max_steps=10, min_lr_ratio=1.0)
    assert {lr_at(s, flat) for s in range(10)} == {2e-5}


# --- objective --------------------------------------------------------------------------------------------
def test_weight_decay_spares_norms_of_any_shape_and_biases():
    from comfy_lumina_mgpt.training.loop import build_optimizer

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, dim=32, intermediate_size=64, n_layers=1, n_heads=4, n_kv_heads=4,
                      max_seq_len=64, qk_norm_rows=1)
    model = LuminaMGPT(cfg)
    opt = build_optimizer(model, quick_cfg(weight_decay=0.1))
    by_id = {id(p): n for n, p in model.named_parameters()}
    decayed = {by_id[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    spared = {by_id[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert "model.layers.0.self_attn.q_norm.weight" in spared  # a [1, head_dim] matrix, still a norm
    assert "model.layers.0.self_attn.k_norm.bias" in spared
    assert "model.layers.0.input_layernorm.weight" in spared
    assert "model.layers.0.self_attn.q_proj.weight" in decayed and "lm_head.weight" in decayed
    assert decayed | spared == set(by_id.values()) and not decayed & spared


def test_z_loss_equals_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g) * 3
    labels = torch.tensor([[-100, 1, 2, -100, 4], [-100, -100, 6, 0, -100]])
    total, ce, z = lm_loss(logits, labels, z_loss_weight=0.25)
    rows = [(0, 0, 1), (0, 1, 2), (0, 3, 4), (1, 1, 6), (1, 2, 0)]  # (b, position predicting, target)
    lse = torch.stack([torch.logsumexp(logits[b, t], -1) for b, t, _ in rows])
    logp = torch.stack([logits[b, t, y] for b, t, y in rows]) - lse
    torch.testing.assert_close(z, (lse ** 2).mean())
    torch.testing.assert_close(ce, -logp.mean())
    torch.testing.assert_close(total, ce + 0.25 * z)
    zero = lm_loss(logits, torch.full((2, 5), -100), 0.25)[0]
    assert zero.item() == 0.0


def test_labels_ignored_exactly_on_prompt(tiny_tokenizer):
    from comfy_lumina_mgpt.conversation import build_training_example
    from comfy_lumina_mgpt.unirep import image_block

    vocab = tiny_tokenizer.vocab
    human_codes = torch.arange(16).view(4, 4) % vocab.num_codes
    answer_codes = (torch.arange(16).view(4, 4) * 3) % vocab.num_codes
    turns = ["Describe the image in detail. <|image|>", "<|image|>"]
    ids, labels = build_training_example(tiny_tokenizer, turns, [human_codes, answer_codes])
    human = ([vocab.bos_id] + tiny_tokenizer.encode("Describe the image in detail. ")
             + image_block(human_codes, vocab) + [vocab.sep_id])
    answer = image_block(answer_codes, vocab) + [vocab.sep_id]
    assert ids == human + answer
    assert labels == [IGNORE_INDEX] * len(human) + answer
    # The loss depends only on the logits that predict the answer tokens.
    ids_t, labels_t = torch.tensor([ids]), torch.tensor([labels])
    logits = torch.randn(1, len(ids), vocab.vocab_size, generator=torch.Generator().manual_seed(0))
    base = lm_loss(logits, labels_t, 1e-4)[0]
    noisy = logits.clone()
    noisy[:, : len(human) - 1] += 5 * torch.randn(1, len(human) - 1, vocab.vocab_size)
    torch.testing.assert_close(lm_loss(noisy, labels_t, 1e-4)[0], base)
    noisy[:, len(human) - 1] += 1.0 * torch.arange(vocab.vocab_size)
    assert not torch.allclose(lm_loss(noisy, labels_t, 1e-4)[0], base)
    assert ids_t.shape == labels_t.shape


def test_drop_condition_keeps_only_the_image_block():
    ids = [0, 11, 12, 7, BOI, 40, 41, 42, EOI, 7, 13]
    labels = [IGNORE_INDEX] * 4 + ids[4:]
    assert drop_condition(ids, labels, VOCAB, 1.0, random.Random(0)) == (ids[4:9], labels[4:9])
    assert drop_condition(ids, labels, VOCAB, 0.0, random.Random(0)) == (ids, labels)
    # an image in the human turn is context, not the answer: it is never what remains
    human_image = [0, BOI, 40, EOI, 7, 12, 7]
    human_labels = [IGNORE_INDEX] * 5 + [12, 7]
    kept = drop_condition(human_image, human_labels, VOCAB, 1.0, random.Random(0))
    assert kept == (human_image, human_labels)
    rng = random.Random(3)
    hits = sum(len(drop_condition(ids, labels, VOCAB, 0.3, rng)[0]) == 5 for _ in range(2000))
    assert 500 < hits < 700


# --- batches ----------------------------------------------------------------------------------------------
def test_collate_pads_right():
    ids, labels = collate([([1, 2, 3], [-100, 2, 3]), ([4], [4])])
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert labels.tolist() == [[-100, 2, 3], [4, -100, -100]]


def test_batches_group_buckets_and_lengths():
    ds = synthetic_dataset(n=24)
    plan = plan_batches(ds, 4, seed=1, epoch=0, window=2)
    assert sorted(i for b in plan for i in b) == list(range(24))
    for batch in plan:
        assert len({ds[i].bucket for i in batch}) == 1
    assert plan == plan_batches(ds, 4, seed=1, epoch=0, window=2)
    assert plan != plan_batches(ds, 4, seed=1, epoch=1, window=2)
    r0 = plan_batches(ds, 2, seed=1, epoch=0, rank=0, world=2)
    r1 = plan_batches(ds, 2, seed=1, epoch=0, rank=1, world=2)
    assert len(r0) == len(r1) and not {i for b in r0 for i in b} & {i for b in r1 for i in b}


# --- loop -------------------------------------------------------------------------------------------------
def test_loss_falls():
    ds = synthetic_dataset(n=12)
    result = train(tiny_model(), ds, quick_cfg(max_steps=80, lr=5e-3, warmup_steps=5, batch_size=4))
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 80 and not result.stopped_early
    assert sum(losses[-10:]) / 10 < 0.35 * losses[0]
    assert set(result.history[0]) >= {"step", "loss", "ce", "z", "lr", "tokens_per_s"}
    assert not result.model.training


def test_train_restores_model_state():
    model = tiny_model()
    drop = model.model.layers[0].dropout
    cfg = quick_cfg(max_steps=2, dropout=0.3, gradient_checkpointing=True)
    result = train(model, synthetic_dataset(), cfg)
    assert result.model is model
    assert drop.p == 0.0 and model.gradient_checkpointing is False and not model.training


def test_train_inside_inference_mode():
    with torch.inference_mode():
        model = tiny_model()
        ds = synthetic_dataset()
        before = params_of(model)
        steps = []
        result = train(model, ds, quick_cfg(max_steps=3, lora=None),
                       on_step=lambda step, total, m: steps.append((step, total)))
        assert torch.is_inference_mode_enabled()
    assert steps == [(1, 3), (2, 3), (3, 3)]
    after = params_of(result.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with torch.inference_mode():
        model2 = tiny_model()
        train(model2, synthetic_dataset(), quick_cfg(max_steps=2, lora={"rank": 2}))


# --- LoRA -------------------------------------------------------------------------------------------------
def lora_cfg(**kw) -> TrainConfig:
    return quick_cfg(lora={"rank": 4, "alpha": 8, "dropout": 0.0}, lr=1e-2, **kw)


def test_lora_trains_only_adapter_weights():
    model = tiny_model()
    base = params_of(model)
    result = train(model, synthetic_dataset(), lora_cfg(max_steps=4))
    after = dict(result.model.named_parameters())
    adapter = {k for k in after if ".lora_" in k}
    assert adapter and all(k.endswith(".weight") for k in adapter)
    assert len(adapter) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    for name, value in base.items():
        new_name = name.rsplit(".", 1)
        new_name = f"{new_name[0]}.base_layer.{new_name[1]}" if new_name[0].endswith(
            DEFAULT_LORA_TARGETS) else name
        assert torch.equal(after[new_name].detach(), value), name
    assert any(after[k].abs().sum() > 0 for k in adapter if ".lora_B." in k)


def test_merged_weights_equal_model_plus_adapter(tmp_path):
    model = tiny_model()
    result = train(model, synthetic_dataset(), lora_cfg(max_steps=4))
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        adapted = result.model(tokens)
        base_logits = tiny_model()(tokens)
    folder = lora_mod.save_lora(result.model, LoraSettings(rank=4, alpha=8, dropout=0.0), tmp_path / "lora")
    assert {p.name for p in folder.iterdir()} == {"adapter_model.safetensors", "adapter_config.json"}
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 4
    merged = lora_mod.merge_lora(result.model)
    assert not lora_mod.has_lora(merged) and set(merged.state_dict()) == set(tiny_model().state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(tokens), adapted, atol=1e-5, rtol=0)
        reloaded = lora_mod.load_lora(tiny_model(), folder, strength=1.0).eval()
        torch.testing.assert_close(reloaded(tokens), adapted, atol=1e-5, rtol=0)
        off = lora_mod.load_lora(tiny_model(), folder, strength=0.0).eval()
        torch.testing.assert_close(off(tokens), base_logits, atol=1e-6, rtol=0)
        half = lora_mod.load_lora(tiny_model(), folder, strength=0.5).eval()
        assert not torch.allclose(half(tokens), adapted, atol=1e-4)
        unloaded = lora_mod.unload_lora(half)
        assert not lora_mod.has_lora(unloaded)
        torch.testing.assert_close(unloaded(tokens), base_logits, atol=1e-6, rtol=0)
    deltas = lora_mod.lora_weight_deltas(folder, strength=1.0)
    base_state = tiny_model().state_dict()
    merged_state = merged.state_dict()
    for key, delta in deltas.items():
        torch.testing.assert_close(base_state[key] + delta, merged_state[key], atol=1e-6, rtol=0)


# --- checkpoints ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
def test_resume_gives_the_uninterrupted_result(tmp_path, use_lora):
    extra = dict(dropout=0.2, cfg_drop_prob=0.5, grad_accum=2, max_steps=6, save_every=0)
    if use_lora:
        extra["lora"] = {"rank": 4, "alpha": 8, "dropout": 0.1}
    ds = synthetic_dataset(n=10)
    straight = train(tiny_model(), ds, quick_cfg(output_dir=str(tmp_path / "a"), **extra))
    calls = []
    stopped = train(tiny_model(), ds, quick_cfg(output_dir=str(tmp_path / "b"), **extra),
                    should_stop=lambda: calls.append(1) or len(calls) == 3)
    assert stopped.stopped_early and stopped.step == 3
    assert stopped.last_checkpoint == tmp_path / "b" / "step-00000003"
    resumed = train(tiny_model(), ds, quick_cfg(output_dir=str(tmp_path / "b"), **extra),
                    resume_from="latest")
    assert resumed.step == 6 and [h["step"] for h in resumed.history] == [4, 5, 6]
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history[3:]],
                                                                 abs=1e-6)
    a, b = params_of(straight.model), params_of(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0)
    assert ckpt.latest_checkpoint(tmp_path / "b").name == "step-00000006"


def test_checkpoint_layout_full_model_loads(tmp_path):
    from comfy_lumina_mgpt.model.loading import load_model

    result = train(tiny_model(), synthetic_dataset(), quick_cfg(max_steps=2, output_dir=str(tmp_path)))
    folder = result.last_checkpoint
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "trainer_state.json", "trainer_state.safetensors"} <= names
    state = json.loads((folder / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["rng"][0]["python"][0] == 3
    loaded = load_model(folder)
    for k, v in result.model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)


def test_interrupted_checkpoint_leaves_previous_usable(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = quick_cfg(max_steps=4, save_every=2, output_dir=str(out), keep_last=1)
    real = ckpt._write_trainer_json

    def failing(path, payload):
        if payload["step"] == 4:
            raise OSError("disk full (simulated)")
        real(path, payload)

    monkeypatch.setattr(ckpt, "_write_trainer_json", failing)
    with pytest.raises(OSError, match="simulated"):
        train(tiny_model(), synthetic_dataset(), cfg)
    monkeypatch.setattr(ckpt, "_write_trainer_json", real)
    assert [p.name for p in out.iterdir()] == ["step-00000002"]
    # a writer killed outright leaves its temporary folder behind; it is never taken for a checkpoint
    partial = out / ".step-00000004.tmp-crash"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"partial")
    assert ckpt.latest_checkpoint(out) == out / "step-00000002"
    resumed = train(tiny_model(), synthetic_dataset(), cfg, resume_from=True)
    assert resumed.step == 4 and [h["step"] for h in resumed.history] == [3, 4]
    assert ckpt.latest_checkpoint(out) == out / "step-00000004"
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-00000004"]  # keep_last=1


def test_optimizer_state_roundtrip():
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], betas=(0.9, 0.95))
    p.grad = torch.ones_like(p)
    opt.step()
    tensors, meta = ckpt.flatten_optimizer_state(opt.state_dict())
    json.dumps(meta)
    back = ckpt.unflatten_optimizer_state(tensors, meta)
    opt2 = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone())])
    opt2.load_state_dict(back)
    assert opt2.param_groups[0]["betas"] == (0.9, 0.95)
    torch.testing.assert_close(opt2.state[opt2.param_groups[0]["params"][0]]["exp_avg"],
                               opt.state[p]["exp_avg"])


# --- data pipeline on real files --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    from lumina_tools.demo_model import write_demo_model

    return write_demo_model(tmp_path_factory.mktemp("demo") / "lumina-mgpt-demo", dim=32)


@pytest.fixture(scope="module")
def bundle(demo_folder):
    from comfy_lumina_mgpt.tokenizer_bundle import load_tokenizer_bundle

    return load_tokenizer_bundle(demo_folder)


def write_image(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    img = Image.new("RGB", size, color)
    img.paste((255 - color[0], 40, 90), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    img.save(path)


def test_folder_dataset_skips_corrupt_images(tmp_path, bundle):
    data = tmp_path / "images"
    data.mkdir()
    write_image(data / "wide.png", (96, 48), (200, 30, 30))
    write_image(data / "square.jpg", (70, 70), (30, 200, 30))
    (data / "wide.txt").write_text("a red circle on the left\n")
    (data / "square.txt").write_text("a small green triangle")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
    (data / "broken.png").write_bytes(buf.getvalue()[:60])  # truncated file
    (data / "broken.txt").write_text("a blue square")
    (data / "junk.webp").write_bytes(b"not an image at all")
    (data / "junk.txt").write_text("noise")
    write_image(data / "nocaption.png", (64, 64), (9, 9, 9))

    cache = tmp_path / "cache"
    ds, report = prepare_dataset(data, bundle, cache, target_size=64, seed=0)
    assert len(ds) == 2 and report.encoded == 2 and report.total == 5
    assert sorted(n for n, _ in ds.skipped) == ["broken.png", "junk.webp", "nocaption.png"]
    assert all(reason for _, reason in ds.skipped)
    by_name = {ex.name: ex for ex in ds.examples}
    wide = by_name["wide.png"]
    width, height = map(int, wide.bucket.split("x"))
    assert width > height and width % bundle.patch == 0 and height % bundle.patch == 0
    text = bundle.text.decode(wide.ids.tolist())
    assert f"Generate an image of {width}x{height} according to the following prompt:\na red circle" in text
    vocab = bundle.vocab
    boi = wide.ids.tolist().index(vocab.boi_id)
    assert (wide.labels[:boi] == IGNORE_INDEX).all() and torch.equal(wide.labels[boi:], wide.ids[boi:])
    assert wide.ids[boi + 1].item() == vocab.size_token(height // bundle.patch)

    # a second run reuses every record; two shards give the same examples as one
    again, report2 = prepare_dataset(data, bundle, cache, target_size=64, seed=0)
    assert report2.encoded == 0 and report2.reused == 5
    assert [torch.equal(a.ids, b.ids) for a, b in zip(ds.examples, again.examples)] == [True, True]
    items = iter_source(data)
    for rank in range(2):
        folder, _ = pretokenize(items, bundle, cache, target_size=64, seed=0, rank=rank, world=2)
    sharded = load_dataset(folder, world=2)
    assert [ex.name for ex in sharded.examples] == [ex.name for ex in ds.examples]
    short = load_dataset(folder, world=2, max_seq_len=10)
    assert len(short) == 0 and len(short.skipped) == 5


def test_conversation_json_dataset(tmp_path, bundle):
    write_image(tmp_path / "in.png", (64, 64), (10, 120, 200))
    write_image(tmp_path / "out.png", (64, 32), (200, 120, 10))
    items = [
        {"conversations": [{"from": "human", "value": "Depth estimation. <|image|>"},
                           {"from": "gpt", "value": "<|image|>"}], "image": ["in.png", "out.png"]},
        {"conversations": [{"from": "human", "value": "Describe the image in detail. <|image|>"},
                           {"from": "gpt", "value": "a red circle"}], "image": ["in.png"]},
        {"conversations": [{"from": "human", "value": "two? <|image|> <|image|>"},
                           {"from": "gpt", "value": "no"}], "image": ["in.png"]},
        {"conversations": [{"from": "gpt", "value": "wrong order"}]},
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(i) for i in items) + "\nnot json\n")
    ds, report = prepare_dataset(tmp_path / "data.jsonl", bundle, tmp_path / "cache", target_size=64, seed=1)
    assert [ex.name for ex in ds.examples] == ["data.jsonl#0", "data.jsonl#1"]
    assert len(ds.skipped) == 3
    depth = ds.examples[0]
    from comfy_lumina_mgpt.preprocess import best_crop_size
    from comfy_lumina_mgpt.unirep import crop_size_list

    w, h = best_crop_size(64, 32, crop_size_list(64, bundle.patch), random.Random(0))
    assert depth.bucket == f"64x64+{w}x{h}" and w > h
    ids = depth.ids.tolist()
    first_sup = next(i for i, v in enumerate(depth.labels.tolist()) if v != IGNORE_INDEX)
    assert ids[first_sup] == bundle.vocab.boi_id and ids.count(bundle.vocab.boi_id) == 2
    caption = ds.examples[1]
    answer = bundle.text.decode([i for i, lab in zip(caption.ids.tolist(), caption.labels.tolist())
                                 if lab != IGNORE_INDEX], skip_special=True)
    assert answer.strip() == "a red circle"


def test_cli_trains_and_resumes(tmp_path, demo_folder):
    from lumina_tools import train as cli

    data = tmp_path / "images"
    data.mkdir()
    for i in range(3):
        write_image(data / f"{i}.png", (64, 64), (80 * i, 100, 50))
        (data / f"{i}.txt").write_text(f"a red circle number {i}")
    out = tmp_path / "run"
    (tmp_path / "train.yaml").write_text(
        f"model_dir: {demo_folder}\ndata: {data}\noutput_dir: {out}\ntarget_size: 64\nmax_steps: 2\n"
        f"batch_size: 2\nsave_every: 1\nkeep_last: 2\ngradient_checkpointing: true\nlora:\n  rank: 2\n"
        f"save_merged: true\nlr: 1.0e-3\n")
    assert cli.main(["--config", str(tmp_path / "train.yaml")]) == 0
    assert (out / "lora" / "adapter_model.safetensors").is_file()
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()
    assert (out / "loss.png").is_file() and len(json.loads((out / "history.json").read_text())) == 2
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-00000001", "step-00000002"]
    from comfy_lumina_mgpt.model.loading import load_model
    from comfy_lumina_mgpt.tokenizer_bundle import load_tokenizer_bundle

    load_model(out / "model")
    load_tokenizer_bundle(out / "model")
    assert cli.main(["--config", str(tmp_path / "train.yaml"), "--set", "max_steps=3", "--resume"]) == 0
    assert json.loads((out / "history.json").read_text())[0]["step"] == 3
    (tmp_path / "bad.yaml").write_text("model_dir: x\nlearning_rate: 1\n")
    assert cli.main(["--config", str(tmp_path / "bad.yaml")]) == 2


# --- plot / bench -----------------------------------------------------------------------------------------
def test_loss_curve_image():
    history = [{"step": i + 1, "loss": 5.0 / (i + 1)} for i in range(40)]
    history[-1]["eval_loss"] = 0.3
    img = loss_curve_image(history, width=320, height=160)
    assert img.size == (320, 160) and img.mode == "RGB"
    assert len(img.getcolors(maxcolors=4096) or []) > 3
    assert loss_curve_image([]).size == (512, 256)
    with pytest.raises(ValueError):
        loss_curve_image(history, width=10, height=10)


def test_bench_train_times_the_steps_after_warm_up():
    from lumina_tools import bench

    res = bench.bench_train(bench.parse_args(["--train", "--steps", "1", "--dim", "32", "--layers", "1",
                                              "--seq-len", "16", "--vocab", "64", "--device", "cpu"]))
    assert res["name"] == "train" and res["steps"] == 1 and res["device"] == "cpu"
    assert res["tokens_per_s"] > 0 and res["wall_s"] > 0
