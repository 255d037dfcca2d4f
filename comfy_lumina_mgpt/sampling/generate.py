"""Autoregressive generation: prefill, then one batched decode step per token (or per Jacobi window).

Guidance runs in the same forward as the conditional rows: the model batch is ``[cond rows; uncond rows]``
(2B rows) and each unconditional row holds only ``[<racm3:break>, H, W, codes...]`` of the image its
conditional row is drawing, at positions 0, 1, 2, ... (per-row positions are what the static cache supports).
Before an image starts, an unconditional row writes a throw-away entry at position 0, which the image's
``<racm3:break>`` then overwrites. With ``cfg_scale == 1`` the unconditional rows are not run at all.

Why it is fast (issue: decode step at the memory-bandwidth limit):

* Inside an image body the LM head computes only the image-code rows (``columns.ImageColumns``) and sampling
  runs over those 8192 columns; a step whose every row is forced (end-of-line) computes no logits at all.
* The grid state machine runs on the host from what it already knows: inside a body every token is an image
  code or forced, so sampled values are never read back there. Tokens collect in a device buffer read once at
  the end; only text and size steps, whose value decides the next state, read their token back.
* Positions, forced tokens and masks are small device tensors reused from step to step; ``kv_len`` comes from
  the host, so a step makes no device-to-host sync.
* ``settings.jacobi_window > 0`` decodes image bodies by speculative Jacobi decoding (``jacobi.py``).
* ``settings.compiled`` runs image steps through ``torch.compile`` (CUDA graphs on a GPU; ``compiled.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..model.chameleon import LuminaMGPT
from ..unirep import forced_images_tokens
from ..vocab import LuminaVocab
from . import jacobi
from .columns import ImageColumns, image_columns
from .compiled import compiled_image_step
from .grid import Constraint, GridState, Phase
from .processors import draw, guide, probabilities, sample, top_k_mask, top_p_mask
from .settings import SamplerConfig
from .transfer import to_device

logger = logging.getLogger(__name__)


class ProducedTokens:
    """What each row has produced so far, handed to step callbacks.

    Reading ``tokens[b]`` copies row ``b`` to the host (a sync: fine for a callback that needs it, avoided by
    ``image_rows`` which stays on the device).
    """

    def __init__(self, run: _Run) -> None:
        self._run = run

    def __len__(self) -> int:
        return self._run.bsz

    def __getitem__(self, b: int) -> list[int]:
        return self._run.buffer[b, : self._run.lengths[b]].tolist()

    def __iter__(self):
        return (self[b] for b in range(len(self)))

    def image_rows(self, b: int) -> Tensor | None:
        """VQ codes ``[rows, w_lat]`` (on the model's device) of the finished rows of row ``b``'s latest image,
        or None before its first row is done. Read from what the grid state knows; nothing is parsed."""
        return self._run.image_rows(b)


# on_step(step, total, tokens): called after every committed step; ``tokens`` is a ``ProducedTokens``
# (``tokens[b]`` is everything row b produced so far). Raise to cancel.
StepCallback = Callable[[int, int, ProducedTokens], None]


@dataclass
class GenerationResult:
    """New tokens per batch row (the closing ``<reserved08706>`` removed) and decoding statistics.

    Attributes:
        tokens: the new token ids of each row.
        forwards: model passes after the prefill (one per token without Jacobi decoding).
        steps: tokens committed per row (the longest row), the ``forwards`` of plain decoding.
    """

    tokens: list[list[int]]
    forwards: int = 0
    steps: int = 0

    @property
    def tokens_per_forward(self) -> float:
        return self.steps / max(1, self.forwards)


def _mask_table(vocab: LuminaVocab, vocab_size: int, device: torch.device) -> Tensor:
    """``[3, V]`` bool: the tokens allowed for each ``Allowed`` kind."""
    image = vocab.image_id_mask(vocab_size).clone()
    size = vocab.size_id_mask(vocab_size).clone()
    size[vocab.size_token(0)] = False  # a zero-sized image is never valid
    text = ~image
    text[[vocab.eol_id, vocab.eoi_id]] = False
    table = torch.stack([text, size, image])
    return table.to(device)


def new_tokens_budget(settings: SamplerConfig) -> int:
    """Most tokens a request can produce: the forced images' exact length when sizes are forced, else
    ``max_new_tokens`` (the KV cache is sized from this, not from the cap alone)."""
    if settings.force_size is not None and settings.force_images:
        return min(settings.max_new_tokens, forced_images_tokens(settings.force_size, settings.force_images))
    return settings.max_new_tokens


class _Ints:
    """A small list of ints kept on the device (the rows' positions). When every entry moved by the same amount,
    as positions do from one step to the next, the device copy is shifted in place of a new transfer."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.host: list[int] = []
        self.tensor: Tensor | None = None

    def set(self, values: list[int]) -> Tensor:
        if self.tensor is not None and len(values) == len(self.host):
            delta = {v - h for v, h in zip(values, self.host)}
            if delta == {0}:
                return self.tensor
            if len(delta) == 1:  # every entry moved by the same amount (all positions advanced by one)
                self.tensor = self.tensor + delta.pop()
                self.host = list(values)
                return self.tensor
        self.host = list(values)
        self.tensor = to_device(values, self.device)
        return self.tensor


@dataclass
class _Run:
    """Everything one ``generate`` call tracks: the batch layout, per-row grid states and the token buffer."""

    model: LuminaMGPT
    vocab: LuminaVocab
    settings: SamplerConfig
    prompts: list[list[int]]
    negatives: list[list[int]] | None
    device: torch.device = field(init=False)
    bsz: int = field(init=False)
    guided: bool = field(init=False)
    states: list[GridState] = field(init=False)
    lengths: list[int] = field(init=False)
    budget: int = field(init=False)
    buffer: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.device = self.model.lm_head.weight.device
        self.bsz = len(self.prompts)
        self.guided = self.settings.guided
        bases = [len(n) for n in self.negatives] if self.negatives else [0] * self.bsz
        s = self.settings
        self.states = [GridState(self.vocab, s.force_size, s.force_images, base) for base in bases]
        self.lengths = [0] * self.bsz
        self.image_start = [-1] * self.bsz  # buffer index of each row's latest <racm3:break>
        self.budget = new_tokens_budget(s)
        self.buffer = torch.zeros(self.bsz, self.budget, dtype=torch.long, device=self.device)
        self.masks = _mask_table(self.vocab, self.model.config.vocab_size, self.device)
        self.columns: ImageColumns = image_columns(self.model, self.vocab)
        self.code_table = self.vocab._id_to_code_table.to(self.device)
        self.positions = _Ints(self.device)
        self.consts: dict[tuple, Tensor] = {}
        self.pos_c = [len(p) for p in self.prompts]  # next conditional position of each row
        self.step = 0
        self.forwards = 0

    # --- small device constants ---------------------------------------------------------------------------
    def const(self, values: tuple, dtype: torch.dtype = torch.long) -> Tensor:
        key = (values, dtype)
        if key not in self.consts:
            self.consts[key] = to_device(values, self.device).to(dtype)
        return self.consts[key]

    # --- phases -------------------------------------------------------------------------------------------
    def image_step(self) -> bool:
        """Whether every unfinished row's next token is an image code or forced inside a body (image columns
        suffice; finished rows are forced to repeat their separator)."""
        active = [s for s in self.states if s.phase != Phase.DONE]
        return bool(active) and all(s.in_body for s in active)

    def done(self) -> bool:
        return all(s.phase == Phase.DONE for s in self.states)

    def finished(self) -> bool:
        """Every row is done, or the token budget is spent."""
        return self.done() or self.step >= self.budget

    def next_head(self) -> str:
        """The LM head the next step needs: "image" (code columns) inside image bodies, "none" when every row's
        next token is forced there anyway, else "full"."""
        if not self.image_step():
            return "full"
        return "none" if all(s.constraint().forced is not None for s in self.states) else "image"

    # --- the model ----------------------------------------------------------------------------------------
    def prefill(self) -> Tensor:
        """Run the prompts (and negative prompts) into the cache; logits of the first new token ``[B, V]``."""
        capacity = max(len(p) for p in [*self.prompts, *(self.negatives or [])]) + self.budget + 1
        window = self.settings.jacobi_window
        self.model.setup_caches(2 * self.bsz if self.guided else self.bsz, capacity + window + 1)
        if capacity > self.model.config.max_seq_len:
            logger.debug("sequence may reach %d tokens, past max_position_embeddings=%d (RoPE has no hard limit)",
                         capacity, self.model.config.max_seq_len)
        logits = prefill(self.model, self.prompts, self.device)
        if self.negatives:
            prefill(self.model, self.negatives, self.device, first_row=self.bsz)
        return logits

    def forward(self, tokens: Tensor, head: str = "full") -> Tensor | None:
        """Feed ``tokens [B, T]`` at each row's next ``T`` positions; logits ``[B(*2), T, cols]`` or None.

        ``head``: "full" (every vocabulary column), "image" (image codes only) or "none" (no logits).
        """
        feed_c = [p - 1 for p in self.pos_c]
        feed_u = [s.uncond_pos for s in self.states]
        start = self.positions.set(feed_c + (feed_u if self.guided else []))
        t = tokens.shape[1]
        positions = start[:, None] + self.const(tuple(range(t)))[None] if t > 1 else start[:, None]
        kv_len = max(feed_c + (feed_u if self.guided else [])) + t
        fn = None if head == "full" else (self.columns.head if head == "image" else _no_logits)
        self.forwards += 1
        feed = tokens.repeat(2, 1) if self.guided else tokens
        if self.settings.compiled and head == "image" and t == 1:
            return compiled_image_step(self.model, self.columns)(feed, positions)
        return self.model.step(feed, positions, kv_len=kv_len, head=fn)

    # --- sampling -----------------------------------------------------------------------------------------
    def choose(self, logits: Tensor | None, head: str, generator: torch.Generator | None) -> tuple[Tensor, list]:
        """Pick each row's next token: ``(ids [B] on the device, host values or None per row)``."""
        cons = [s.constraint() for s in self.states]
        forced = [c.forced for c in cons]
        if all(f is not None for f in forced):
            return self.const(tuple(forced)), list(forced)
        if head == "image":
            sampled = self.columns.ids[self.sample_image(logits, generator)]
        else:
            sampled = self.sample_full(logits, cons, generator)
        if any(f is not None for f in forced):
            is_forced = self.const(tuple(f is not None for f in forced), torch.bool)
            sampled = torch.where(is_forced, self.const(tuple(f or 0 for f in forced)), sampled)
        need = any(st.needs_value and f is None for st, f in zip(self.states, forced))
        values = sampled.tolist() if need else forced
        return sampled, values

    def image_probs(self, logits: Tensor) -> Tensor:
        """Image-code logits ``[2B or B, ..., n_codes]`` -> the sampling distribution ``[B, ..., n_codes]``:
        guidance, image top-k, top-p and temperature applied."""
        s = self.settings
        scores = guide(logits[: self.bsz], logits[self.bsz:], s.cfg_scale) if self.guided else logits
        scores = top_k_mask(scores, s.image_top_k)
        if s.image_top_p < 1.0:
            flat = scores.reshape(-1, scores.shape[-1])
            p = torch.full((flat.shape[0],), s.image_top_p, device=self.device, dtype=flat.dtype)
            scores = top_p_mask(flat, p).view(scores.shape)
        return probabilities(scores, s.image_temperature)

    def sample_image(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        """Image-code columns ``[2B or B, n_codes]`` -> the sampled code of each row ``[B]``."""
        return draw(self.image_probs(logits), generator)

    def sample_full(self, logits: Tensor, cons: list[Constraint], generator: torch.Generator | None) -> Tensor:
        """Full-vocabulary logits -> sampled token ids ``[B]``, each row under its own constraint."""
        s = self.settings
        logits_c = logits[: self.bsz]
        scores = logits_c
        guided_rows = tuple(c.guide_step for c in cons)
        if self.guided and any(guided_rows):
            use = self.const(guided_rows, torch.bool)
            scores = torch.where(use[:, None], guide(logits_c, logits[self.bsz:], s.cfg_scale), logits_c)
        allowed = self.masks[self.const(tuple(int(c.allowed) for c in cons))]
        scores = scores.masked_fill(~allowed, float("-inf"))
        img = tuple(c.image_params for c in cons)
        if all(img) or not any(img) or s.image_top_k == s.text_top_k:
            scores = top_k_mask(scores, s.image_top_k if img[0] else s.text_top_k)  # one k: a cheap topk
        else:
            k = self.const(tuple(s.image_top_k if i else s.text_top_k for i in img))
            scores = top_k_mask(scores, k)  # per-row k: a full sort
        top_p = [s.image_top_p if i else s.text_top_p for i in img]
        if any(p < 1.0 for p in top_p):
            scores = top_p_mask(scores, torch.tensor(top_p, device=self.device, dtype=scores.dtype))
        temps = [s.image_temperature if i else s.text_temperature for i in img]
        temperature = temps[0] if len(set(temps)) == 1 else torch.tensor(temps, device=self.device)
        return sample(scores, temperature, generator)

    # --- bookkeeping --------------------------------------------------------------------------------------
    def commit(self, tokens: Tensor, values: list) -> None:
        """Append one token per row (``tokens [B]`` on the device; ``values`` what the host knows of them)."""
        if self.step >= self.budget:
            raise RuntimeError("sampler ran past its token budget")
        self.buffer[:, self.step] = tokens
        self.step += 1
        for i, (state, value) in enumerate(zip(self.states, values)):
            if state.phase == Phase.DONE:
                continue
            if value == self.vocab.boi_id and state.phase == Phase.TEXT:
                self.image_start[i] = self.lengths[i]
            state.advance(value)
            self.lengths[i] += 1
            self.pos_c[i] += 1

    def commit_body(self, tokens: Tensor) -> None:
        """Append ``tokens [B, k]`` of image bodies (codes and forced tokens) to every unfinished row."""
        k = tokens.shape[1]
        if self.step + k > self.budget:
            raise RuntimeError("sampler ran past its token budget")
        self.buffer[:, self.step:self.step + k] = tokens
        self.step += k
        for i, state in enumerate(self.states):
            if state.phase == Phase.DONE:
                continue
            for _ in range(k):
                state.advance(state.body_forced(0))
            self.lengths[i] += k
            self.pos_c[i] += k

    def expected_total(self) -> int:
        """Best guess of the total step count for progress bars: exact once every image's size is known."""
        hints = [s.remaining_hint() for s in self.states if s.phase != Phase.DONE]
        if not hints:
            return self.step
        if any(h is None for h in hints):
            return self.budget
        return min(self.budget, self.step + max(h for h in hints if h is not None))

    def image_rows(self, b: int) -> Tensor | None:
        start = self.image_start[b]
        if start < 0:
            return None
        state = self.states[b]
        if state.phase == Phase.BODY:
            h, w, done = state.h_lat, state.w_lat, state.body_done
        elif self.lengths[b] >= start + 3:  # the latest image is finished
            size = self.buffer[b, start + 1:start + 3].tolist()
            h, w = (2 * self.vocab.size_of(t) for t in size)
            done = h * (w + 1)
        else:
            return None
        rows = min(done // (w + 1), h)
        if rows == 0:
            return None
        body = self.buffer[b, start + 3:start + 3 + rows * (w + 1)].view(rows, w + 1)[:, :w]
        return self.code_table[body]

    def result(self) -> GenerationResult:
        sep = self.vocab.sep_id
        rows = self.buffer[:, : max(self.lengths, default=0)].tolist()
        out = [r[:n] for r, n in zip(rows, self.lengths)]
        return GenerationResult([t[:-1] if t and t[-1] == sep else t for t in out], self.forwards, self.step)


def _no_logits(h: Tensor) -> None:
    return None


@torch.no_grad()
def prefill(model: LuminaMGPT, prompts: Sequence[Sequence[int]], device: torch.device, first_row: int = 0
            ) -> Tensor:
    """Run right-padded prompts through cache rows ``first_row..first_row+B-1``; next-token logits ``[B, V]``."""
    lengths = [len(p) for p in prompts]
    width = max(lengths)
    tokens = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    # Padding is written past each prompt's end; decoding overwrites those slots before they are visible.
    positions = torch.arange(width).expand(len(prompts), -1)
    rows = torch.arange(first_row, first_row + len(prompts))
    last = torch.tensor(lengths) - 1
    return model.step(tokens.to(device), positions.to(device), cache_rows=rows.to(device),
                      logits_index=last.to(device), kv_len=width)


@torch.no_grad()
def generate(model: LuminaMGPT, prompts: Sequence[Sequence[int]], vocab: LuminaVocab, settings: SamplerConfig,
             *, generator: torch.Generator | None = None, on_step: StepCallback | None = None,
             negative_prompts: Sequence[Sequence[int]] | None = None) -> GenerationResult:
    """Sample continuations of a batch of prompts.

    Args:
        model: the decoder (any device/dtype; inputs follow its parameters).
        prompts: B token-id lists (BOS included), e.g. from ``conversation.build_prompt_ids``.
        vocab: special-token ids of the model's tokenizer.
        settings: sampling settings.
        generator: the source of randomness (same seed -> same tokens); on the model's device.
        on_step: called after every committed step with ``(step, total, tokens_so_far)``; raising cancels.
        negative_prompts: B token lists that replace the empty guidance context (each image's guidance
            sequence is then ``negative + [<racm3:break>, H, W, ...]``).
    Returns:
        ``GenerationResult`` with the new tokens of each row and the number of model passes.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (the BOS)")
    negatives = [list(n) for n in negative_prompts] if (settings.guided and negative_prompts) else None
    if negatives is not None and len(negatives) != len(prompts):
        raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
    run = _Run(model, vocab, settings, [list(p) for p in prompts], negatives)
    try:
        logits, head = run.prefill(), "full"
        while True:
            tokens = decode_one_token(run, logits, head, generator, on_step)
            if run.finished():
                break
            if settings.jacobi_window and jacobi.ready(run):
                tokens = jacobi.decode_body(run, tokens, generator, on_step, ProducedTokens(run))
            head = run.next_head()
            logits = run.forward(tokens[:, None], head=head)
            logits = logits[:, -1] if logits is not None else None
    finally:
        model.clear_caches()
    return run.result()


def decode_one_token(run: _Run, logits: Tensor | None, head: str, generator: torch.Generator | None,
                     on_step: StepCallback | None) -> Tensor:
    """Choose every row's next token from ``logits`` (``[B(*2), cols]`` of ``head``), commit it and report the
    step; returns the tokens ``[B]`` (on the device) to feed next."""
    tokens, values = run.choose(logits, head, generator)
    run.commit(tokens, values)
    if on_step is not None:
        on_step(run.step, run.expected_total(), ProducedTokens(run))
    return tokens
