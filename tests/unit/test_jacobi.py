"""Speculative Jacobi decoding: the same greedy tokens, the same sampling distribution, fewer passes."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from comfy_lumina_mgpt.sampling.generate import generate
from comfy_lumina_mgpt.sampling.processors import guide, top_k_mask
from comfy_lumina_mgpt.sampling.settings import SamplerConfig


@pytest.fixture(scope="module")
def tok(tiny_tok):
    return tiny_tok


@pytest.fixture(scope="module")
def model(peaked_model):
    return peaked_model(1)


def prompt_ids(tok, text="a red circle"):
    return [tok.vocab.bos_id] + tok.encode(text) + [tok.vocab.sep_id]


@pytest.mark.parametrize("cfg_scale,window,size", [(1.0, 16, (3, 2)), (3.0, 4, (3, 2)), (3.0, 16, (3, 2)),
                                                     (2.0, 8, None)])
def test_greedy_jacobi_gives_the_greedy_tokens(tok, model, cfg_scale, window, size):
    """With top-k 1 every draft is verified against the argmax, so the image is the plain greedy image (also
    when each row picks its own size, so rows sit at different places of different grids)."""
    plain = SamplerConfig(cfg_scale=cfg_scale, image_top_k=1, text_top_k=1, max_new_tokens=400,
                          force_size=size, force_images=1)
    sjd = SamplerConfig(**{**plain.__dict__, "jacobi_window": window})
    prompts = [prompt_ids(tok), prompt_ids(tok, "a small green triangle"), prompt_ids(tok, "blue")]
    want = generate(model, prompts, tok.vocab, plain)
    got = generate(model, prompts, tok.vocab, sjd)
    assert got.tokens == want.tokens
    assert want.forwards == want.steps - 1  # plain: one pass per token after the prefill's
    assert got.forwards < want.forwards


def _exact_first_two_codes(model, tok, cfg: SamplerConfig) -> dict[tuple[int, int], float]:
    """The model's exact distribution of the first two codes of a 2x2 image under guidance and top-k."""
    v = tok.vocab
    codes = torch.tensor(v.code_to_id)
    head = [v.boi_id, v.size_token(1), v.size_token(1)]
    cond, uncond = prompt_ids(tok) + head, list(head)

    def probs(extra):
        c = model(torch.tensor([cond + extra]))[0, -1, codes]
        u = model(torch.tensor([uncond + extra]))[0, -1, codes]
        return top_k_mask(guide(c, u, cfg.cfg_scale)[None], cfg.image_top_k)[0].softmax(-1)

    out = {}
    with torch.no_grad():
        p1 = probs([])
        for c1 in torch.nonzero(p1).flatten().tolist():
            p2 = probs([int(codes[c1])])
            for c2 in torch.nonzero(p2).flatten().tolist():
                out[(c1, c2)] = float(p1[c1] * p2[c2])
    return out


def test_sampled_jacobi_follows_the_sampling_distribution(tok, model):
    """Speculative acceptance keeps the distribution: over 1200 images, the first two codes' empirical
    distribution under SJD is as close to the model's exact one as plain sampling's is."""
    cfg = SamplerConfig(cfg_scale=2.0, image_top_k=3, max_new_tokens=20, force_size=(1, 1), force_images=1)
    exact = _exact_first_two_codes(model, tok, cfg)
    id_to_code = {t: c for c, t in enumerate(tok.vocab.code_to_id)}

    def empirical(settings):
        counts: Counter = Counter()
        for seed in range(6):
            out = generate(model, [prompt_ids(tok)] * 200, tok.vocab, settings,
                           generator=torch.Generator().manual_seed(seed))
            counts.update((id_to_code[t[3]], id_to_code[t[4]]) for t in out.tokens)
        total = sum(counts.values())
        return {k: n / total for k, n in counts.items()}

    def tv(a, b):
        return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))

    plain = empirical(cfg)
    sjd = empirical(SamplerConfig(**{**cfg.__dict__, "jacobi_window": 4}))
    # sampling noise of 1200 draws over <= 9 outcomes is ~0.03; a wrong acceptance rule (always keeping the
    # uniform drafts, or never redrawing from the residual) lands far outside 0.08
    assert tv(plain, exact) < 0.08
    assert tv(sjd, exact) < 0.08
    assert set(sjd) <= set(exact)  # nothing outside the top-k is ever kept


def test_jacobi_window_is_validated():
    with pytest.raises(ValueError, match="jacobi_window"):
        SamplerConfig(jacobi_window=-1)
    with pytest.raises(ValueError, match="jacobi_window"):
        SamplerConfig(jacobi_window=1000)
