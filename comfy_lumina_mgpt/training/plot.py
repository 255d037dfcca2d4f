"""A loss-curve picture drawn with Pillow alone (the Trainer node outputs it as an image)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
AXIS = (60, 60, 60)
GRID = (225, 225, 225)
RAW = (160, 190, 230)
SMOOTH = (20, 80, 180)
EVAL = (210, 90, 30)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1/2/5 x 10^k steps)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    value = first
    while value <= hi + 1e-12 * abs(hi):
        ticks.append(round(value, 12))
        value += step
    return ticks


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.1e}"
    return f"{value:.3g}"


def _ema(values: Sequence[float], alpha: float) -> list[float]:
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def loss_curve_image(history: Sequence[dict[str, float]], width: int = 512, height: int = 256,
                     key: str = "loss") -> Image.Image:
    """Draw ``history[i][key]`` against ``history[i]["step"]``: axes, ticks, the raw curve, a smoothed one
    (exponential moving average) and ``eval_loss`` points where present.

    Returns:
        an RGB ``PIL.Image`` of ``width x height``.
    """
    if width < 64 or height < 64:
        raise ValueError(f"the loss plot needs at least 64x64 pixels, got {width}x{height}")
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 52, width - 12, 12, height - 28
    points = [(float(h["step"]), float(h[key])) for h in history
              if key in h and "step" in h and math.isfinite(float(h[key]))]
    evals = [(float(h["step"]), float(h["eval_loss"])) for h in history
             if "eval_loss" in h and math.isfinite(float(h["eval_loss"]))]
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXIS, width=1)
    if not points:
        draw.text(((left + right) // 2 - 24, (top + bottom) // 2), "no data", fill=AXIS, font=font)
        return img
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + [e[1] for e in evals]
    x_lo, x_hi = min(xs), max(max(xs), min(xs) + 1)
    y_lo, y_hi = min(ys), max(ys)
    if y_hi - y_lo < 1e-12:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    pad = 0.05 * (y_hi - y_lo)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_lo) / (x_hi - x_lo) * (right - left),
                bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top))

    for tick in _nice_ticks(y_lo, y_hi):
        _, py = to_px(x_lo, tick)
        draw.line([(left + 1, py), (right, py)], fill=GRID)
        draw.line([(left - 4, py), (left, py)], fill=AXIS)
        label = _fmt(tick)
        draw.text((left - 6 - draw.textlength(label, font=font), py - 6), label, fill=AXIS, font=font)
    for tick in _nice_ticks(x_lo, x_hi):
        px, _ = to_px(tick, y_lo)
        draw.line([(px, bottom), (px, bottom + 4)], fill=AXIS)
        label = str(int(tick)) if float(tick).is_integer() else _fmt(tick)
        draw.text((px - draw.textlength(label, font=font) / 2, bottom + 6), label, fill=AXIS, font=font)
    raw = [to_px(x, y) for x, y in points]
    smooth = [to_px(x, y) for x, y in zip(xs, _ema([p[1] for p in points], alpha=min(1.0, 10 / len(points))))]
    if len(raw) == 1:
        px, py = raw[0]
        draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=SMOOTH)
    else:
        draw.line(raw, fill=RAW, width=1)
        draw.line(smooth, fill=SMOOTH, width=2)
    for x, y in evals:
        px, py = to_px(x, y)
        draw.ellipse([px - 3, py - 3, px + 3, py + 3], outline=EVAL, width=2)
    draw.text((left + 6, top + 2), f"{key} (last {_fmt(points[-1][1])})", fill=AXIS, font=font)
    draw.text((right - draw.textlength("step", font=font), bottom - 14), "step", fill=AXIS, font=font)
    return img
