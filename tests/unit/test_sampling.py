"""The sampler: well-formed image blocks, guidance batching, determinism, cancel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from comfy_lumina_mgpt import unirep
from comfy_lumina_mgpt.model.chameleon import LuminaMGPT
from comfy_lumina_mgpt.sampling.generate import _mask_table, generate
from comfy_lumina_mgpt.sampling.grid import Allowed, GridState, Phase
from comfy_lumina_mgpt.sampling.processors import guide, sample, top_k_mask, top_p_mask
from comfy_lumina_mgpt.sampling.settings import SamplerConfig


@pytest.fixture(scope="module")
def tok(tiny_tok):
    return tiny_tok


@pytest.fixture(scope="module")
def model(peaked_model):
    return peaked_model(0)


def prompt_ids(tok, text="a red circle"):
    return [tok.vocab.bos_id] + tok.encode(text) + [tok.vocab.sep_id]


def check_block(tokens, vocab, size=None):
    """The response starts with one well-formed image block; returns its codes."""
    assert tokens[0] == vocab.boi_id
    h, w = 2 * vocab.size_of(tokens[1]), 2 * vocab.size_of(tokens[2])
    if size is not None:
        assert (h // 2, w // 2) == size
    block = tokens[: unirep.block_length(h, w)]
    codes = unirep.parse_image_block(block, vocab)  # raises on a missing EOL or a non-image id in a row
    assert codes.shape == (h, w)
    assert block[-1] == vocab.eoi_id
    body = block[3:-1]
    for r in range(h):
        row = body[r * (w + 1): (r + 1) * (w + 1)]
        assert row[-1] == vocab.eol_id
        assert all(vocab.image_id_mask(vocab.vocab_size)[t] for t in row[:-1])
    return codes


def test_fifty_seeds_give_well_formed_blocks(tok, model):
    vocab = tok.vocab
    cfg = SamplerConfig(cfg_scale=3.0, image_top_k=20, text_top_k=5, max_new_tokens=400, force_images=1)
    sizes = set()
    for first_seed in range(0, 50, 10):
        gen = torch.Generator().manual_seed(first_seed)
        out = generate(model, [prompt_ids(tok)] * 10, vocab, cfg, generator=gen)
        for tokens in out.tokens:
            codes = check_block(tokens, vocab)
            sizes.add(tuple(codes.shape))
    assert len(sizes) > 1, "free size sampling should not always produce the same grid"


def test_forced_size_is_honoured(tok, model):
    cfg = SamplerConfig(cfg_scale=2.0, image_top_k=30, max_new_tokens=200, force_size=(2, 3), force_images=1)
    out = generate(model, [prompt_ids(tok)] * 3, tok.vocab, cfg, generator=torch.Generator().manual_seed(5))
    for tokens in out.tokens:
        check_block(tokens, tok.vocab, size=(2, 3))


def reference_generate(model, prompt, vocab, cfg, generator, guided_always=False):
    """Unbatched, uncached reference: two full forwards per step, guidance context [boi, H, W, ...].

    It draws as the sampler documents: nothing on a forced step, over the image codes (in code order) for an
    image code, over the whole vocabulary elsewhere; so the same generator gives the same tokens.
    """
    masks = _mask_table(vocab, model.config.vocab_size, torch.device("cpu"))
    codes = torch.tensor(vocab.code_to_id)
    state = GridState(vocab, cfg.force_size, cfg.force_images)
    seq, uncond, out = list(prompt), [], []
    for _ in range(cfg.max_new_tokens):
        c = state.constraint()
        cond_logits = model(torch.tensor([seq]))[:, -1]
        scores = cond_logits
        if c.guide_step and (cfg.guided or guided_always):
            uncond_logits = model(torch.tensor([uncond]))[:, -1]
            scores = guide(cond_logits, uncond_logits, cfg.cfg_scale)
        if c.forced is not None:
            tok_id = c.forced
        elif c.allowed == Allowed.IMAGE:
            tok_id = int(codes[sample(top_k_mask(scores[:, codes], cfg.image_top_k), 1.0, generator)[0]])
        else:
            scores = scores.masked_fill(~masks[int(c.allowed)], float("-inf"))
            k = cfg.image_top_k if c.image_params else cfg.text_top_k
            scores = top_k_mask(scores, k)
            temp = torch.tensor([cfg.image_temperature if c.image_params else cfg.text_temperature])
            tok_id = int(sample(scores, temp, generator)[0])
        state.advance(tok_id)
        out.append(tok_id)
        seq.append(tok_id)
        if tok_id == vocab.boi_id:
            uncond = [tok_id]
        elif uncond:
            uncond.append(tok_id)
        if state.phase == Phase.DONE:
            break
    return out[:-1] if out[-1] == vocab.sep_id else out


@pytest.mark.parametrize("scale", [3.0, 1.0])
def test_batched_guidance_equals_unbatched_two_pass(tok, model, scale):
    """One batched forward (cond + uncond rows, static cache) gives the same tokens as two plain passes.

    With scale 1.0 the sampler skips the unconditional rows; the reference still computes them, so this
    also shows cfg=1 equals the unguided path.
    """
    cfg = SamplerConfig(cfg_scale=scale, image_top_k=15, text_top_k=5, max_new_tokens=60,
                        force_size=(2, 2), force_images=1)
    for seed in range(3):
        got = generate(model, [prompt_ids(tok)], tok.vocab, cfg, generator=torch.Generator().manual_seed(seed))
        want = reference_generate(model, prompt_ids(tok), tok.vocab, cfg, torch.Generator().manual_seed(seed),
                                  guided_always=True)
        assert got.tokens[0] == want


def test_same_seed_same_tokens_and_batch_items_differ(tok, model):
    cfg = SamplerConfig(cfg_scale=4.0, image_top_k=50, max_new_tokens=100, force_size=(2, 2), force_images=1)
    a = generate(model, [prompt_ids(tok)] * 2, tok.vocab, cfg, generator=torch.Generator().manual_seed(11))
    b = generate(model, [prompt_ids(tok)] * 2, tok.vocab, cfg, generator=torch.Generator().manual_seed(11))
    c = generate(model, [prompt_ids(tok)] * 2, tok.vocab, cfg, generator=torch.Generator().manual_seed(12))
    assert a.tokens == b.tokens
    assert a.tokens[0] != a.tokens[1]
    assert a.tokens != c.tokens


def test_prompts_of_different_lengths_in_one_batch(tok, model):
    """Right-padded prompts of different lengths decode exactly as each would alone (greedy, so no RNG)."""
    cfg = SamplerConfig(cfg_scale=2.0, image_top_k=1, text_top_k=1, max_new_tokens=40, force_size=(2, 2),
                        force_images=1)
    short, long = prompt_ids(tok, "a"), prompt_ids(tok, "a small green triangle in the centre")
    both = generate(model, [short, long], tok.vocab, cfg)
    for prompt, tokens in zip([short, long], both.tokens):
        assert tokens == reference_generate(model, prompt, tok.vocab, cfg, None)
        check_block(tokens, tok.vocab, size=(2, 2))


def test_negative_prompt_changes_guidance(tok, model):
    cfg = SamplerConfig(cfg_scale=6.0, image_top_k=40, max_new_tokens=60, force_size=(2, 2), force_images=1)
    plain = generate(model, [prompt_ids(tok)], tok.vocab, cfg, generator=torch.Generator().manual_seed(4))
    negative = generate(model, [prompt_ids(tok)], tok.vocab, cfg, generator=torch.Generator().manual_seed(4),
                        negative_prompts=[prompt_ids(tok, "blue square")])
    check_block(negative.tokens[0], tok.vocab, size=(2, 2))
    assert plain.tokens != negative.tokens


def test_callback_sees_progress_and_cancel_frees_cache(tok, model):
    cfg = SamplerConfig(cfg_scale=3.0, image_top_k=10, max_new_tokens=100, force_size=(2, 2), force_images=1)
    seen = []

    class Cancelled(Exception):
        pass

    def on_step(step, total, tokens):
        seen.append((step, total))
        if step == 8:
            raise Cancelled

    with pytest.raises(Cancelled):
        generate(model, [prompt_ids(tok)], tok.vocab, cfg, generator=torch.Generator().manual_seed(0),
                 on_step=on_step)
    assert model.cache_len == 0 and all(layer.self_attn.kv_cache is None for layer in model.model.layers)
    # once the size is known the total is exact: boi, H, W + 4 latent rows of (4 codes + eol) + eoi + sep
    assert seen[-1] == (8, 3 + 4 * 5 + 2)


def test_processors_return_new_tensors():
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.5], [0.0, 0.5, 5.0, 1.0]])
    before = scores.clone()
    k = top_k_mask(scores, 2)
    assert torch.equal(scores, before)
    assert torch.isinf(k[0, [0, 3]]).all() and torch.isfinite(k[0, [1, 2]]).all()
    per_row = top_k_mask(scores, torch.tensor([1, 3]))
    assert torch.isfinite(per_row[0]).sum() == 1 and torch.isfinite(per_row[1]).sum() == 3
    assert torch.isfinite(top_k_mask(torch.tensor([[2.0, 2.0, 1.0]]), 1)).sum() == 2  # ties at the k-th kept
    p = top_p_mask(torch.tensor([[10.0, 0.0, -10.0]]), torch.tensor([0.5]))
    assert torch.isfinite(p).tolist() == [[True, False, False]]


@pytest.mark.parametrize("bad", [dict(image_top_k=0), dict(text_top_k=0), dict(image_temperature=0.0),
                                 dict(image_top_p=0.0), dict(max_new_tokens=0), dict(cfg_scale=-1.0)])
def test_bad_settings_are_rejected(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplerConfig(**bad)


def test_bench_sample_reports_ours_baseline_and_floor():
    """The benchmark times our sampler and the upstream-style baseline on the same random model in one run and
    derives the two ratios from what it measured (figures are reported, never asserted as limits)."""
    from lumina_tools import bench

    res = bench.bench_sample(bench.parse_args(["--sample", "--config", "tiny", "--image", "64x64", "--max-steps",
                                               "8", "--device", "cpu"]))
    # 64x64 px = a 4x4 code grid: <racm3:break>, H, W, 4 rows of (4 codes + EOL), <eoss>
    assert res["tokens_per_image"] == 24 and res["timed_steps"] == 8 + 3
    assert res["speedup_vs_baseline"] == pytest.approx(res["tokens_per_s"] / res["baseline_tokens_per_s"])
    assert res["time_over_floor"] == pytest.approx(res["decode_ms_per_step"] / res["floor_ms_per_step"])
    assert res["time_over_matmuls"] == pytest.approx(res["decode_ms_per_step"] / res["matmul_ms_per_step"])
    assert res["floor_ms_per_step"] > 0 and res["peak_memory_gb"] > 0 and res["prefill_s"] > 0


def test_baseline_stamps_each_new_token_once(tmp_path):
    """The baseline's step times come from stamps of one run, one per new token (two separate runs of 1 and
    N tokens gave negative step times on a loaded CPU)."""
    from lumina_tools import bench
    from lumina_tools.bench_baseline import baseline_generate, hf_chameleon

    tok = bench._official_vocab(tmp_path)
    hf = hf_chameleon(bench._random_model("tiny", torch.float32, torch.device("cpu")))
    v = tok.vocab
    start = [v.bos_id, *tok.encode("a red fox"), v.sep_id, v.boi_id, v.size_token(2), v.size_token(2)]
    stamps = []
    out = baseline_generate(hf, v, start, 6, 3.0, on_token=lambda: stamps.append(len(stamps)))
    assert out.shape == (1, len(start) + 6) and stamps == list(range(6))
    res = bench.bench_sample(bench.parse_args(["--config", "tiny", "--image", "64x64", "--max-steps", "4",
                                               "--baseline-steps", "1", "--device", "cpu"]))
    assert res["baseline_decode_ms_per_step"] > 0 and res["baseline_prefill_s"] > 0  # one step is raised to two


def test_bench_table_names_every_figure():
    from lumina_tools import bench

    res = bench.bench_sample(bench.parse_args(["--config", "tiny", "--image", "64x64", "--max-steps", "4",
                                               "--device", "cpu", "--no-baseline", "--jacobi-window", "4"]))
    table = bench.format_sample(res)
    for figure in ("prefill s", "decode ms/step", "tokens/s", "s/image", "peak memory GB", "time_over_floor",
                   "matmuls ms/step", "time_over_matmuls"):
        assert figure in table
    assert "baseline_tokens_per_s" not in res  # --no-baseline times no baseline


@pytest.mark.slow
def test_compiled_image_steps_give_the_same_greedy_tokens(tok, model):
    """torch.compile of the image step (attention over the whole static cache) changes no greedy token."""
    cfg = SamplerConfig(cfg_scale=2.0, image_top_k=1, text_top_k=1, max_new_tokens=40, force_size=(2, 2),
                        force_images=1)
    eager = generate(model, [prompt_ids(tok)] * 2, tok.vocab, cfg)
    compiled = generate(model, [prompt_ids(tok)] * 2, tok.vocab, SamplerConfig(**{**cfg.__dict__, "compiled": True}))
    assert compiled.tokens == eager.tokens


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_image_head_logits_equal_the_full_heads_code_columns(tok, model, dtype, tol):
    """The image-code head computes exactly the full head's columns of the image codes (to the dtype's
    rounding), and the stacked inference projections equal the one-by-one training pass."""
    from comfy_lumina_mgpt.sampling.columns import image_columns

    m = LuminaMGPT(model.config).to(dtype).eval()
    m.load_state_dict({k: v.to(dtype) for k, v in model.state_dict().items()})
    tokens = torch.tensor([prompt_ids(tok) + [tok.vocab.boi_id, tok.vocab.size_token(1), tok.vocab.size_token(1)]])
    positions = torch.arange(tokens.shape[1])[None]
    cols = image_columns(m, tok.vocab)
    with torch.no_grad():
        m.setup_caches(1, 64)
        image = m.step(tokens, positions, head=cols.head)
        m.setup_caches(1, 64)
        full = m.step(tokens, positions)
        m.clear_caches()
    with torch.enable_grad():
        plain = m(tokens)  # every projection on its own, no cache
    codes = torch.tensor(tok.vocab.code_to_id)
    torch.testing.assert_close(image, full[..., codes], atol=tol, rtol=tol)
    torch.testing.assert_close(full, plain.detach(), atol=tol * 10, rtol=tol * 10)


@pytest.mark.parametrize("quantized", [False, True])
def test_image_head_reads_only_the_image_rows_of_the_official_vocabulary(official_tokenizer, quantized):
    """The official image ids fill 4..8195 in another order than the codes: the head (float or int8) multiplies
    by that row range only, never the whole 65536-row head, and returns the columns in code order."""
    from comfy_lumina_mgpt.model.quant import Int8Linear
    from comfy_lumina_mgpt.sampling.columns import ImageColumns

    vocab = official_tokenizer.vocab
    ids = list(vocab.code_to_id)
    assert ids != sorted(ids) and sorted(ids) == list(range(min(ids), min(ids) + len(ids)))
    torch.manual_seed(0)
    head = nn.Linear(16, vocab.vocab_size, bias=False).to(torch.bfloat16)
    if quantized:
        head = Int8Linear.from_float(head.weight)
    h = torch.randn(2, 1, 16, dtype=torch.bfloat16)
    with torch.no_grad():
        expected = head(h).float()[..., ids]
    head.register_forward_hook(lambda *_: pytest.fail("the whole head was computed"))
    with torch.no_grad():
        got = ImageColumns(head, vocab).head(h)
    torch.testing.assert_close(got, expected, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("size,images", [((1, 1), 1), ((2, 1), 2)])
def test_forced_images_write_exactly_the_one_token_budget(tok, model, size, images):
    """``unirep.forced_images_tokens`` (the budget every caller and the KV cache use) is what a forced
    generation really writes, the closing separator included."""
    settings = SamplerConfig(cfg_scale=2.0, image_top_k=1, text_top_k=1, max_new_tokens=4096, force_size=size,
                             force_images=images)
    result = generate(model, [prompt_ids(tok)], tok.vocab, settings)
    assert result.steps == unirep.forced_images_tokens(size, images) == len(result.tokens[0]) + 1
