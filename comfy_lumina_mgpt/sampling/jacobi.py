"""Speculative Jacobi decoding (SJD, Teng et al., ICLR 2025) of image bodies.

A window of draft tokens rides along with the last committed token in one model pass; the pass yields the
model's distribution ``p`` at every window slot, and the drafts are verified left to right as in speculative
sampling: draft ``d_j`` drawn from ``q_j`` is kept with probability ``min(1, p_j(d_j) / q_j(d_j))``; at the first
rejection the slot is drawn from ``norm(max(0, p_j - q_j))`` instead. Every kept or redrawn token is
distributed exactly as plain sampling would draw it, so images follow the ordinary sampling distribution (and
greedy decoding gives the greedy tokens). Slots after the first rejection are not thrown away: each takes a
fresh token drawn from this pass's ``p`` (its new ``q``), the Jacobi iteration that gives the method its name.
New slots start as uniform random image codes (one-hot ``q``), the paper's default.

Every row of a batch commits as many tokens as the row that kept the fewest (stopping early is valid for a row
that kept more; its next token is then one it had kept); rows may sit at different places of images of
different sizes, as long as every row is inside a body. The static KV cache needs no rollback:
the next pass rewrites the slots after the committed prefix, and the per-row position mask hides stale ones.
End-of-line tokens inside the window are forced, and the window ends before ``<eoss>``.

Shapes: ``B`` rows, ``W`` window slots, ``n`` image codes (the columns of ``columns.ImageColumns``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .grid import Phase
from .processors import draw
from .transfer import to_device

if TYPE_CHECKING:
    from .generate import ProducedTokens, StepCallback, _Run


def _active(run: _Run) -> list:
    return [s for s in run.states if s.phase != Phase.DONE]


def ready(run: _Run) -> bool:
    """Whether the next tokens can be decoded by Jacobi windows: every unfinished row inside an image body with
    at least two body tokens left before ``<eoss>`` (the window never reaches it). Finished rows ride along."""
    active = _active(run)
    if not active or not all(s.in_body for s in active):
        return False
    return min(s.body_left for s in active) >= 2 and run.budget - run.step >= 3


class _Window:
    """The draft slots after the committed prefix: token ids ``[B, W]`` and the draft distributions
    ``q [B, W, n]`` they were drawn from (one-hot for random ones)."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.n = run.columns.ids.numel()
        self.ids = torch.empty(run.bsz, 0, dtype=torch.long, device=run.device)
        self.q = torch.empty(run.bsz, 0, self.n, device=run.device)

    def top_up(self, width: int, generator: torch.Generator | None) -> None:
        """Cut or extend to ``width`` slots; new slots are uniform random image codes."""
        self.ids, self.q = self.ids[:, :width], self.q[:, :width]
        extra = width - self.ids.shape[1]
        if extra <= 0:
            return
        codes = torch.randint(self.n, (self.run.bsz, extra), generator=generator, device=self.run.device)
        q = torch.zeros(self.run.bsz, extra, self.n, device=self.run.device)
        q.scatter_(-1, codes[..., None], 1.0)
        self.ids = torch.cat([self.ids, self.run.columns.ids[codes]], dim=1)
        self.q = torch.cat([self.q, q], dim=1)


def _forced_slots(run: _Run, width: int) -> tuple[Tensor, Tensor]:
    """Which of slots ``0..width`` each row must fill with a forced token (EOL), and that token:
    ``is_forced [B, width+1]`` bool and ``ids [B, width+1]`` long (0 where not forced). Slot ``j`` is ``j``
    tokens after the committed prefix."""
    sep = run.vocab.sep_id  # a finished row keeps feeding its separator, as in plain decoding
    forced = [[s.body_forced(j) if s.phase != Phase.DONE else sep for j in range(width + 1)] for s in run.states]
    flat_ids = [f or 0 for row in forced for f in row]
    flat_mask = [int(f is not None) for row in forced for f in row]
    both = to_device(flat_ids + flat_mask, run.device).view(2, run.bsz, width + 1)
    return both[1].bool(), both[0]


def decode_body(run: _Run, last: Tensor, generator: torch.Generator | None, on_step: StepCallback | None,
                produced: ProducedTokens) -> Tensor:
    """Decode the current image bodies by Jacobi windows while ``ready(run)``.

    Args:
        run: the generation in progress, every row inside an image body.
        last: ``[B]`` the latest committed token of each row, not yet fed to the model.
    Returns:
        ``[B]`` the latest committed token after the windows (not yet fed), for plain decoding to go on from.
    """
    window = _Window(run)
    n_slots = run.settings.jacobi_window
    while ready(run):
        width = min(n_slots, min(s.body_left for s in _active(run)) - 1)
        is_forced_all, forced_ids = _forced_slots(run, width)
        window.top_up(width, generator)
        is_forced = is_forced_all[:, :width]
        window.ids = torch.where(is_forced, forced_ids[:, :width], window.ids)

        logits = run.forward(torch.cat([last[:, None], window.ids], dim=1), head="image")  # [B(*2), W+1, n]
        p = run.image_probs(logits)  # [B, W+1, n]: p[:, j] is the distribution of slot j

        codes = run.code_table[window.ids].clamp(min=0)  # [B, W]; forced slots read a harmless column
        p_of_draft = p[:, :width].gather(-1, codes[..., None])[..., 0]
        q_of_draft = window.q.gather(-1, codes[..., None])[..., 0]
        u = torch.rand(p_of_draft.shape, generator=generator, device=run.device)
        keep = (u * q_of_draft < p_of_draft) | is_forced  # u < p/q without dividing by a zero q
        kept = int(keep.long().cumprod(dim=1).sum(dim=1).min())  # the one host sync of a window

        if kept == width:  # every draft kept: the slot after the window comes free from this pass
            drawn = run.columns.ids[draw(p[:, width], generator)]
            nxt = torch.where(is_forced_all[:, width], forced_ids[:, width], drawn)
        else:  # rows that rejected slot `kept` redraw it from the residual; the others keep their draft
            residual = (p[:, kept] - window.q[:, kept]).clamp(min=0)
            mass = residual.sum(-1, keepdim=True)
            residual = torch.where(mass > 0, residual / mass.clamp(min=1e-30), p[:, kept])
            redrawn = run.columns.ids[draw(residual, generator)]
            nxt = torch.where(keep[:, kept], window.ids[:, kept], redrawn)
        committed = torch.cat([window.ids[:, :kept], nxt[:, None]], dim=1)
        run.commit_body(committed)
        last = nxt

        # Jacobi refill: the slots after the committed ones take fresh draws from this pass.
        rest = slice(kept + 1, width)
        fresh_codes = draw(p[:, rest], generator)
        window.ids = run.columns.ids[fresh_codes]
        window.q = p[:, rest]
        if on_step is not None:
            on_step(run.step, run.expected_total(), produced)
    return last
