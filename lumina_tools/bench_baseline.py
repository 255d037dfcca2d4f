"""The upstream-style baseline of ``bench``: transformers' Chameleon ``generate`` as the official solver drives it.

The official inference code samples with transformers' ``generate()`` and three logits processors, in this
order (LUMINA_SPEC §4): classifier-free guidance that runs a *second, unbatched* forward of the unconditional
context with its own cache inside the processor; the Uni-Rep processor that forces end-of-line / end-of-image and
keeps image rows to image codes; and a top-k that switches between image and text values. Each processor finds
where it is by scanning ``input_ids`` every step. This module rebuilds that pipeline (our own code, same
algorithm) on the *same weights* as our model, so ``bench`` can time both in one run. transformers is a
development dependency: this module is imported only by the benchmark and tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from comfy_lumina_mgpt.model.chameleon import LuminaMGPT
from comfy_lumina_mgpt.vocab import LuminaVocab


def hf_chameleon(model: LuminaMGPT):
    """transformers' ``ChameleonForConditionalGeneration`` sharing ``model``'s weight tensors (no copy, except
    the q/k-norm rows, which transformers stores once per head)."""
    import transformers

    cfg = model.config
    hf_cfg = transformers.ChameleonConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=max(cfg.max_seq_len, 8192), rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
        swin_norm=cfg.swin_norm, attention_dropout=0.0,
        vq_config=dict(embed_dim=4, num_embeddings=8, latent_channels=4, base_channels=32,
                       channel_multiplier=[1], num_res_blocks=1, attn_resolutions=[], resolution=8),
        vocabulary_map={},  # no IMGIMG names: transformers would mask the image logits Lumina samples
    )
    hf_cfg._attn_implementation = "sdpa"
    param = model.lm_head.weight
    with torch.device("meta"):
        hf = transformers.ChameleonForConditionalGeneration(hf_cfg)
    state = {}
    for key, value in model.state_dict().items():
        if "_norm." in key and "self_attn" in key:
            heads = cfg.n_heads if "q_norm" in key else cfg.n_kv_heads
            value = value.repeat_interleave(heads // value.shape[0], dim=0)
        state[key] = value
    hf.load_state_dict(state, strict=False, assign=True)
    for module in hf.modules():  # what our weights do not cover (the unused VQ model, rotary tables)
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if any(t.is_meta for t in own):
            module.to_empty(device=param.device, recurse=False)
        if hasattr(module, "inv_freq"):  # rotary tables live in non-persistent buffers: compute them
            dim = module.inv_freq.numel() * 2
            steps = torch.arange(0, dim, 2, dtype=torch.float32, device=param.device) / dim
            module.inv_freq = 1.0 / (cfg.rope_theta ** steps)
            if hasattr(module, "original_inv_freq"):
                module.original_inv_freq = module.inv_freq
    return hf.to(param.dtype).eval()


class _Processors:
    """The three official processors as one callable (guidance, Uni-Rep forcing, interleaved top-k)."""

    def __init__(self, hf, vocab: LuminaVocab, cfg_scale: float, image_top_k: int, text_top_k: int) -> None:
        self.hf, self.vocab, self.scale = hf, vocab, cfg_scale
        self.image_top_k, self.text_top_k = image_top_k, text_top_k
        self.uncond_cache = None
        self.uncond_done = 0
        self.image_mask = vocab.image_id_mask(hf.config.vocab_size)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        v, seq = self.vocab, input_ids[0]
        starts = int((seq == v.boi_id).sum())
        ends = int((seq == v.eoi_id).sum())
        if starts == ends:
            self.uncond_cache, self.uncond_done = None, 0
            return self._top_k(scores, self.text_top_k)
        start = int((seq == v.boi_id).nonzero()[-1])
        if self.scale != 1.0:
            scores = self._guide(input_ids[:, start:], scores)
        scores = self._unirep(seq[start:], scores)
        return self._top_k(scores, self.image_top_k)

    def _guide(self, context: Tensor, scores: Tensor) -> Tensor:
        """A second forward of ``[<racm3:break>, H, W, codes...]`` alone, with its own cache."""
        from transformers import DynamicCache

        if self.uncond_cache is None:
            self.uncond_cache = DynamicCache()
        new = context[:, self.uncond_done:]
        out = self.hf(input_ids=new, past_key_values=self.uncond_cache, use_cache=True)
        self.uncond_done = context.shape[1]
        uncond = out.logits[:, -1].float()
        return uncond + self.scale * (scores - uncond)

    def _unirep(self, block: Tensor, scores: Tensor) -> Tensor:
        v = self.vocab
        if block.numel() < 3:
            return scores  # the size tokens are the model's to choose
        h, w = (2 * v.size_of(int(t)) for t in block[1:3])
        done = block.numel() - 3
        forced = v.eoi_id if done == h * (w + 1) else (v.eol_id if (done + 1) % (w + 1) == 0 else None)
        if forced is not None:
            out = torch.full_like(scores, float("-inf"))
            out[:, forced] = 0.0
            return out
        return scores.masked_fill(~self.image_mask.to(scores.device), float("-inf"))

    @staticmethod
    def _top_k(scores: Tensor, k: int) -> Tensor:
        kth = torch.topk(scores, min(k, scores.shape[-1]), dim=-1).values[..., -1:]
        return scores.masked_fill(scores < kth, float("-inf"))


def baseline_generate(hf, vocab: LuminaVocab, prompt: list[int], new_tokens: int, cfg_scale: float,
                      image_top_k: int = 2000, text_top_k: int = 10, seed: int = 0,
                      on_token: Callable[[], None] | None = None) -> Tensor:
    """``new_tokens`` tokens after ``prompt`` by ``hf.generate`` with the official processors; ``[1, T]``.

    ``on_token`` is called once per new token, after the processors have shaped its scores (so after both of
    that step's forwards): the benchmark times the steps from one run with it.
    """
    from transformers import LogitsProcessorList

    processors = [_Processors(hf, vocab, cfg_scale, image_top_k, text_top_k)]
    if on_token is not None:
        processors.append(_Notify(on_token))
    device = hf.lm_head.weight.device
    torch.manual_seed(seed)
    return hf.generate(torch.tensor([prompt], device=device), logits_processor=LogitsProcessorList(processors),
                       do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)


class _Notify:
    """A pass-through processor that calls ``callback`` at every step."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        self.callback()
        return scores
