"""Which image sizes a loaded model can draw, and how a wish (auto, an aspect ratio, a typed size) is snapped.

A model's sizes follow what it was trained on, in pixels ``(W, H)``:

- an official checkpoint (7B/34B, its folder named with 512, 768 or 1024: the family): every size on its
  tokenizer's size grid (32 px) with at most ``(family / 32)**2`` grid steps and at least a quarter of that,
  aspect ratio at most 4 (LUMINA_SPEC 2.5: the candidate list holds the largest of these per ratio); its own
  default is ``family x family``;
- a model that lists its sizes (``"canvas_sizes": [[W, H], ...]`` and ``"default_size"`` in config.json, as
  the bundled world model does): exactly those;
- any other model (tests, home-made ones): every multiple of the tokenizer's patch up to its largest size token,
  aspect ratio at most 4; default the largest square whose image fits in half the model's context.

Nothing here loads weights: a ``ModelLayout`` is read from config.json and the folder name, the patch and the
largest size token come from the tokenizer.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from . import unirep

FAMILIES = (512, 768, 1024)
MAX_RATIO = 4.0
AUTO = "auto"
CUSTOM = "custom"
#: Labelled aspect-ratio choices, grouped square / landscape / portrait: label -> width / height.
RATIOS: dict[str, float] = {
    "square 1:1": 1.0,
    "landscape 4:3": 4 / 3, "landscape 3:2": 3 / 2, "landscape 16:9": 16 / 9, "landscape 2:1": 2.0,
    "portrait 3:4": 3 / 4, "portrait 2:3": 2 / 3, "portrait 9:16": 9 / 16, "portrait 1:2": 1 / 2,
}
CHOICES: list[str] = [AUTO, *RATIOS, CUSTOM]


@dataclass(frozen=True)
class ModelLayout:
    """What a model folder says about its sizes: ``family`` 512/768/1024 for official checkpoints."""

    name: str
    family: int | None = None
    max_seq_len: int = 4096
    canvas_sizes: tuple[tuple[int, int], ...] = ()  # a model that draws only these (W, H)
    default_size: tuple[int, int] | None = None


def read_layout(folder: str | Path) -> ModelLayout:
    """The layout of a model folder, from its config.json and its name (no weights are read)."""
    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {folder / 'config.json'}: {err}") from None
    return layout_from_config(folder.name, cfg)


def layout_from_config(name: str, cfg: dict) -> ModelLayout:
    """A layout from a folder name and a parsed config.json."""
    canvas = _size_list(cfg.get("canvas_sizes"), "canvas_sizes")
    default = _size_list([cfg["default_size"]], "default_size")[0] if cfg.get("default_size") else None
    found = re.findall(r"(?<!\d)(512|768|1024)(?!\d)", name)
    family = int(found[-1]) if found and not canvas else None
    return ModelLayout(name, family, int(cfg.get("max_position_embeddings", 4096)), canvas, default)


def _size_list(value, key: str) -> tuple[tuple[int, int], ...]:
    """``[[W, H], ...]`` from config.json as a tuple of pairs; ValueError naming ``key`` when malformed."""
    if value is None:
        return ()
    try:
        pairs = tuple((int(w), int(h)) for w, h in value)
    except (TypeError, ValueError):
        raise ValueError(f"config.json: {key} must be a list of [width, height] pairs, got {value!r}") from None
    if any(w <= 0 or h <= 0 for w, h in pairs):
        raise ValueError(f"config.json: {key} holds a size that is not positive: {value!r}")
    return pairs


@dataclass(frozen=True)
class ModelSizes:
    """The sizes ``(W, H)`` one model draws with one tokenizer (``patch`` px per size step)."""

    name: str
    patch: int
    sizes: tuple[tuple[int, int], ...]
    default: tuple[int, int]
    limits: str  # the rule in words, for messages
    fit: tuple[tuple[int, int], ...] | None = None  # sizes input pictures are fitted to; None: their own size

    @property
    def max_area(self) -> int:
        return max(w * h for w, h in self.sizes)

    def nearest(self, width: int, height: int) -> tuple[int, int]:
        """The valid size closest to ``width x height`` in aspect ratio first, then in area."""
        ratio = max(width, 1) / max(height, 1)
        area = min(max(width * height, 1), self.max_area)
        return _closest(self.sizes, ratio, area)

    def check(self, width: int, height: int, widget: str = "custom_size") -> None:
        """ValueError naming the model's limits and the nearest valid size unless it draws ``width x height``."""
        if (width, height) in self.sizes:
            return
        near = self.nearest(width, height)
        raise ValueError(f"{self.name} cannot draw {width}x{height}: {self.limits}. The nearest size it draws "
                         f"is {near[0]}x{near[1]}; set {widget} to {near[0]}x{near[1]} or choose 'auto' or an "
                         f"aspect ratio in resolution.")

    def choose(self, resolution: str, scale: float = 1.0, custom_size: str = "") -> tuple[int, int]:
        """The size for a resolution choice: ``auto`` (the default, or its ratio at ``scale`` of the largest
        area), a labelled aspect ratio at ``scale``, or ``custom`` (``custom_size`` checked as typed)."""
        if resolution == CUSTOM:
            width, height = parse_size(custom_size)
            self.check(width, height)
            return width, height
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1]; got {scale}")
        if resolution == AUTO:
            if scale == 1.0:
                return self.default
            ratio = self.default[0] / self.default[1]
        elif resolution in RATIOS:
            ratio = RATIOS[resolution]
        else:
            raise ValueError(f"resolution {resolution!r} is not one of {', '.join(CHOICES)}")
        return _closest(self.sizes, ratio, scale * self.max_area)

    def fit_candidates(self) -> list[tuple[int, int]] | None:
        """Sizes an input picture is fitted to (the official candidate list for an official checkpoint, the
        canvas sizes for the world model), or None to keep its own size on the patch grid."""
        return list(self.fit) if self.fit is not None else None


def _closest(sizes: tuple[tuple[int, int], ...], ratio: float, area: float) -> tuple[int, int]:
    # Aspect ratio counts four times as much as area: a wish for 1:2 should stay tall even if smaller.
    def cost(s: tuple[int, int]) -> tuple[float, int]:
        w, h = s
        return abs(math.log((w / h) / ratio)) + 0.25 * abs(math.log(w * h / area)), -(w * h)

    return min(sizes, key=cost)


def parse_size(text: str, what: str = "custom_size") -> tuple[int, int]:
    """``"768x512"`` -> (768, 512) as (width, height); ValueError naming ``what`` (the widget or flag) with the
    expected form otherwise."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) <= 0:
        raise ValueError(f"{what} must look like 768x768 (width x height, both positive); got {text!r}")
    return int(parts[0]), int(parts[1])


def model_sizes(layout: ModelLayout, patch: int, max_grid: int) -> ModelSizes:
    """The sizes ``layout``'s model draws with a tokenizer of ``patch`` px per size step and size tokens
    ``0..max_grid``. ValueError if none is left (the tokenizer does not belong to the model)."""
    fits = _grid_sizes(patch, max_grid)
    if layout.canvas_sizes:
        sizes = [s for s in layout.canvas_sizes if s in fits]
        default = layout.default_size or layout.canvas_sizes[0]
        fit = tuple(sizes)
        limits = "it draws only its canvas sizes " + ", ".join(f"{w}x{h}" for w, h in sizes)
    elif layout.family is not None:
        budget = (layout.family // patch) ** 2
        sizes = [(w, h) for w, h in fits if budget // 4 <= (w // patch) * (h // patch) <= budget]
        default = (layout.family, layout.family)
        fit = tuple(unirep.crop_size_list(layout.family, patch))
        limits = (f"its sizes are multiples of {patch} px with at most {budget} size steps of {patch}x{patch} px "
                  f"(e.g. {layout.family}x{layout.family}) and at least a quarter of that, aspect ratio at most "
                  f"{MAX_RATIO:g}")
    else:
        sizes = fits
        side = _largest_square(patch, max_grid, layout.max_seq_len // 2)
        default, fit = (side, side), None
        limits = (f"its sizes are multiples of {patch} px up to {max_grid * patch} px a side, aspect ratio at most "
                  f"{MAX_RATIO:g}")
    if not sizes or default not in sizes:
        raise ValueError(f"{layout.name}: the tokenizer (size steps of {patch} px, up to {max_grid}) cannot write "
                         f"this model's sizes; load the tokenizer that belongs to the model")
    return ModelSizes(layout.name, patch, tuple(sizes), default, limits, fit)


def _grid_sizes(patch: int, max_grid: int) -> list[tuple[int, int]]:
    return [(wg * patch, hg * patch) for wg in range(1, max_grid + 1) for hg in range(1, max_grid + 1)
            if max(wg, hg) / min(wg, hg) <= MAX_RATIO]


def _largest_square(patch: int, max_grid: int, token_budget: int) -> int:
    side = 1
    for n in range(1, max_grid + 1):
        if unirep.block_length(2 * n, 2 * n) <= token_budget:
            side = n
    return side * patch
