"""Sampling settings, validated once so nodes and the CLI report bad values the same way."""

from __future__ import annotations

from dataclasses import dataclass

MAX_JACOBI_WINDOW = 64  # drafts per pass; past ~32 a pass costs more than it saves even on a GPU


@dataclass(frozen=True)
class SamplerConfig:
    """How to pick each next token.

    Text and image tokens are sampled with separate top-k / top-p / temperature (the sampler switches when
    ``<racm3:break>`` starts an image and back after ``<eoss>``). Guidance (``cfg_scale``) applies to image
    codes only, against a context made of the image's start and size tokens alone.

    Attributes:
        cfg_scale: classifier-free guidance scale; 1.0 disables guidance (and its extra batch rows).
        image_top_k, image_top_p, image_temperature: for size tokens and image codes.
        text_top_k, text_top_p, text_temperature: for everything outside images.
        max_new_tokens: hard cap on generated tokens (an image cut off by it is dropped).
        force_size: ``(h_grid, w_grid)`` size tokens to force after ``<racm3:break>`` (None: the model picks,
            guided by the ``WxH`` of the prompt).
        force_images: answer with exactly this many images (``<racm3:break>`` forced to start each, the
            turn separator forced after the last); 0 lets the model decide what to write.
        jacobi_window: > 0 decodes image bodies by speculative Jacobi decoding with this many draft tokens
            per model pass (16 is the SJD paper's choice); the images follow the same distribution as plain
            sampling and greedy decoding gives the same tokens. 0 decodes one token per pass.
        compiled: run image decode steps through ``torch.compile`` (CUDA graphs on a GPU); the first image of
            each batch shape pays a compile of tens of seconds.
    """

    cfg_scale: float = 4.0
    image_top_k: int = 2000
    image_top_p: float = 1.0
    image_temperature: float = 1.0
    text_top_k: int = 10
    text_top_p: float = 1.0
    text_temperature: float = 1.0
    max_new_tokens: int = 8192
    force_size: tuple[int, int] | None = None
    force_images: int = 0
    jacobi_window: int = 0
    compiled: bool = False

    def __post_init__(self) -> None:
        # NaN passes every range test below (all comparisons with it are false): refuse it and infinities first
        for name in ("cfg_scale", "image_top_p", "text_top_p", "image_temperature", "text_temperature"):
            value = getattr(self, name)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"{name} must be a finite number; got {value}")
        for name in ("image_top_k", "text_top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (1 = always the most likely token); "
                                 f"got {getattr(self, name)}")
        for name in ("image_top_p", "text_top_p"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]; got {getattr(self, name)}")
        for name in ("image_temperature", "text_temperature"):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        if self.cfg_scale < 0.0:
            raise ValueError(f"cfg_scale must be >= 0 (1.0 = no guidance); got {self.cfg_scale}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1; got {self.max_new_tokens}")
        if self.force_images < 0:
            raise ValueError(f"force_images must be >= 0; got {self.force_images}")
        if not 0 <= self.jacobi_window <= MAX_JACOBI_WINDOW:
            raise ValueError(f"jacobi_window must be in 0..{MAX_JACOBI_WINDOW} (0 = off, 16 = the SJD default); "
                             f"got {self.jacobi_window}")
        if self.force_size is not None and min(self.force_size) < 1:
            raise ValueError(f"force_size must be two positive grid counts; got {self.force_size}")

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0
