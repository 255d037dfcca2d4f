"""One progress bar per node, however many generations the node runs: it only moves forward, it carries an
ETA in the node's progress text, and its last preview is the finished picture."""

from __future__ import annotations

import logging
import time

import comfy.utils
import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

STEPS = 1000  # the bar's resolution: values are thousandths of the whole job
TEXT_EVERY_S = 0.5  # progress texts are throttled (each is a websocket message) to this or a tenth of the job


def pil_preview(image: torch.Tensor, fmt: str = "JPEG", max_size: int | None = 512
                ) -> tuple[str, Image.Image, int | None]:
    """ComfyUI's preview tuple for an IMAGE ``[H, W, 3]`` in [0, 1], quantised as SaveImage does (truncating),
    so that a PNG preview of the output holds the same pixels as the saved file. ``max_size`` None: unscaled."""
    pixels = np.clip(255.0 * image.cpu().float().numpy(), 0, 255).astype(np.uint8)
    return fmt, Image.fromarray(pixels), max_size


def _send_text(text: str) -> None:
    """Show ``text`` under the running node (ComfyUI's progress text); silently skipped outside a prompt."""
    from comfy_execution.utils import get_executing_context
    from server import PromptServer

    context = get_executing_context()
    if context is not None and PromptServer.instance is not None:
        PromptServer.instance.send_progress_text(text, context.node_id)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class JobProgress:
    """The progress of one node's job of ``parts`` generations (images of a batch, views, answers).

    ``on_step(part, step, total)`` takes the engine's token counts of generation ``part``; the bar shows
    ``(part + step / total) / parts`` and never goes back when an estimate of ``total`` grows. A job whose
    length is known in advance (``exact_total`` tokens in one generation: multiview) uses that instead of the
    engine's estimate, which restarts with every image.
    """

    def __init__(self, parts: int = 1, label: str = "", exact_total: int | None = None) -> None:
        if parts < 1:
            raise ValueError(f"a job has at least one part; got {parts}")
        self.parts = parts
        self.label = label
        self.exact_total = exact_total
        self.shown = 0
        self.started = time.monotonic()
        self.last_text = 0.0
        self.last_decile = 0
        self.bar = comfy.utils.ProgressBar(STEPS)

    def on_step(self, part: int, step: int, total: int, preview=None) -> None:
        total = self.exact_total or total
        fraction = (part + min(1.0, step / max(total, 1))) / self.parts
        value = max(self.shown, min(STEPS - 1, int(fraction * STEPS)))  # the finished state is `finish`'s
        self.shown = value
        self.bar.update_absolute(value, STEPS, preview)
        now = time.monotonic()
        decile = value * 10 // STEPS  # short jobs still get a text every tenth of the way
        if now - self.last_text >= TEXT_EVERY_S or decile > self.last_decile:
            self.last_text, self.last_decile = now, decile
            _send_text(self.text(value / STEPS, now - self.started, part, step, total))

    def text(self, fraction: float, elapsed: float, part: int, step: int, total: int) -> str:
        what = f"{self.label} {part + 1} of {self.parts}, " if self.parts > 1 else ""
        eta = f", about {_clock(elapsed * (1 - fraction) / fraction)} left" if fraction > 0.02 else ""
        return f"{fraction:.0%}: {what}token {step} of ~{total}{eta}"

    def finish(self, image: torch.Tensor | None = None) -> None:
        """Fill the bar; ``image`` ``[H, W, 3]`` (the node's output picture) becomes the last preview."""
        preview = pil_preview(image, "PNG", None) if image is not None else None  # lossless, unscaled
        self.shown = STEPS
        self.bar.update_absolute(STEPS, STEPS, preview)
        elapsed = time.monotonic() - self.started
        _send_text(f"done in {_clock(elapsed)}")
        logger.info("Lumina-mGPT: %s done in %.1f s", self.label or "generation", elapsed)


class DownloadProgress:
    """The bar and text of a download: ``update(done_bytes, total_bytes, file)`` from the download loop."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.last_text = 0.0
        self.bar = comfy.utils.ProgressBar(STEPS)
        logger.info("Lumina-mGPT: downloading %s", label)

    def update(self, done: int, total: int, file: str) -> None:
        fraction = done / total if total else 1.0
        self.bar.update_absolute(min(STEPS, int(fraction * STEPS)), STEPS)
        now = time.monotonic()
        if now - self.last_text >= TEXT_EVERY_S or done >= total:
            self.last_text = now
            elapsed = now - self.started
            eta = f", about {_clock(elapsed * (1 - fraction) / fraction)} left" if 0.02 < fraction < 1 else ""
            _send_text(f"downloading {self.label}: {done / 1e9:.2f} of {total / 1e9:.2f} GB ({file}){eta}")
