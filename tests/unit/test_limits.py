"""Bounded work: requests the model or the machine cannot hold are refused before any allocation, ``native``
sizes are capped at the model's largest grid, and the long loops stop when ``check_cancel`` raises."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from comfy_lumina_mgpt import codec, limits, unirep
from comfy_lumina_mgpt.tokenizer_bundle import load_tokenizer_bundle
from comfy_lumina_mgpt.answers import ask
from comfy_lumina_mgpt.conversation import Conversation
from comfy_lumina_mgpt.model.loading import load_model
from comfy_lumina_mgpt.sampling.settings import SamplerConfig
from comfy_lumina_mgpt.training.data import SourceItem, pretokenize

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "models" / "lumina_mgpt" / "lumina-mgpt-world"


class Cancelled(Exception):
    pass


def cancel_after(n: int):
    """A check_cancel that lets ``n`` calls pass and raises on the next."""
    calls = {"n": 0}

    def check() -> None:
        calls["n"] += 1
        if calls["n"] > n:
            raise Cancelled()
    check.calls = calls
    return check


@pytest.fixture(scope="module")
def bundle():
    return load_tokenizer_bundle(BUNDLED)


@pytest.fixture(scope="module")
def model():
    return load_model(BUNDLED)


def test_35000_emoji_prompt_refused_fast_without_a_cache(bundle, model):
    start = time.perf_counter()
    prompt = codec.text_to_image_prompt(bundle, "😀" * 35000, 64, 64)
    settings = SamplerConfig(force_size=(4, 4), force_images=1, max_new_tokens=300)
    with pytest.raises(ValueError, match=r"the prompt is \d+ tokens but the model's context holds 1024"):
        limits.check_generation(model, [list(prompt.ids)], bundle.vocab, settings)
    assert time.perf_counter() - start < 5
    assert model.cache_len == 0  # nothing was allocated


def test_ask_checks_before_generating(bundle, model):
    history = Conversation()
    for _ in range(3):  # a long carried conversation
        history = history.add_user("a " * 200).add_assistant("b " * 200)
    with pytest.raises(ValueError, match="shorten the text or the conversation"):
        ask(model, bundle, history, "a " * 300, [], SamplerConfig(max_new_tokens=10))
    assert model.cache_len == 0


def test_kv_cache_must_fit_in_free_memory(bundle, model):
    ids = [list(codec.text_to_image_prompt(bundle, "a cat", 64, 64).ids)] * 64
    settings = SamplerConfig(cfg_scale=4.0, max_new_tokens=16000)
    need = limits.generation_bytes(model.config, 64, True, len(ids[0]), 16000, 4)
    with pytest.raises(ValueError, match=r"needs about [\d.]+ GiB.*128 rows.*lower max_new_tokens or batch_size"):
        limits.check_generation(model, ids, bundle.vocab, settings, free_bytes=need // 2)
    limits.check_generation(model, ids, bundle.vocab, settings, free_bytes=need * 2)  # fits: no error


def test_forced_size_beyond_the_size_tokens(bundle, model):
    settings = SamplerConfig(force_size=(48, 48), force_images=1)
    with pytest.raises(ValueError, match="48x48 grid.*size tokens up to 5"):
        limits.check_generation(model, [[bundle.vocab.bos_id]], bundle.vocab, settings)


@pytest.mark.parametrize("target", [300000, 1 << 40, 768, 8, 0])
def test_vq_encode_target_refused_before_work(bundle, target):
    img = Image.new("RGB", (64, 64), "red")
    start = time.perf_counter()
    with pytest.raises(ValueError, match="target size .* outside what this model can draw: 16 to 80 px"):
        codec.encode_images(bundle, [img], target)
    assert time.perf_counter() - start < 2


def test_native_is_capped_at_the_largest_grid(bundle):
    assert limits.capped_native_size(10000, 10000, 16, bundle.vocab) == (80, 80)
    assert limits.capped_native_size(10000, 2500, 16, bundle.vocab) == (80, 16)
    assert limits.capped_native_size(64, 48, 16, bundle.vocab) == (64, 48)  # small images keep their size
    huge = Image.new("RGB", (10000, 10000), (200, 30, 30))
    start = time.perf_counter()
    (codes,) = codec.encode_images(bundle, [huge], None)
    assert tuple(codes.shape) == (10, 10)  # 80 px = 5 size tokens = 10 latent cells
    assert time.perf_counter() - start < 30


def test_encode_and_decode_stop_on_cancel(bundle):
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]
    check = cancel_after(1)
    with pytest.raises(Cancelled):
        codec.encode_images(bundle, images, None, check_cancel=check)
    assert check.calls["n"] == 2
    codes = codec.encode_images(bundle, images, None)
    blocks = tuple(tuple(unirep.image_block(c, bundle.vocab)) for c in codes)
    batch = codec.TokenBatch(blocks)
    assert len(codec.decode_batch(bundle, batch)) == 3
    with pytest.raises(Cancelled):
        codec.decode_batch(bundle, batch, check_cancel=cancel_after(2))


def test_trainer_data_prep_stops_on_cancel_and_checks_the_target(bundle, tmp_path):
    items = [SourceItem(f"t{i}", turns=("hi", f"answer {i}")) for i in range(5)]
    with pytest.raises(Cancelled):
        pretokenize(items, bundle, tmp_path / "cache", target_size=64, seed=0, check_cancel=cancel_after(2))
    with pytest.raises(ValueError, match="target size 300000"):
        pretokenize(items, bundle, tmp_path / "cache", target_size=300000, seed=0)


def test_loading_stops_on_cancel():
    with pytest.raises(Cancelled):
        load_model(BUNDLED, check_cancel=cancel_after(0))
    assert load_model(BUNDLED, check_cancel=cancel_after(10)).config.dim == 192


def test_available_bytes_on_cpu():
    free = limits.available_bytes("cpu")
    assert free is None or free > 0
    assert limits.available_bytes(torch.device("meta")) is None
