"""A deterministic pixel analyser for world images (no learned judge).

``detect_objects`` reads back what a picture shows: every pixel is matched to the nearest world colour (or
background) within ``max_colour_distance``; pixels further from all of them (blurred edges of a VQ
reconstruction, markers) stay *unknown*. Each 8-connected blob of one colour is explained by the best
upright circle / square / triangle template: the fit minimises the visible pixels the template misses plus the
background pixels it covers, while pixels of other objects and unknown pixels cost nothing (they may hide the
object's rest), so partly occluded objects keep their true shape, size and centre.

The scores compare a picture with the scene it should show, GenEval-style (0/1 per prompt and sub-score),
and the dense-task metrics compare predicted maps with the world's own targets (``render.py``).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .render import DETECTION_BOX_RGB, SEGMENTATION_BACKGROUND_RGB, SEGMENTATION_RGB
from .scene import (
    BACKGROUND_RGB,
    COLOUR_RGB,
    COLOURS,
    SHAPES,
    Scene,
    WorldObject,
    label_components,
    nearest_position,
    object_radius,
    parse_caption,
    shape_template,
    size_threshold,
)

logger = logging.getLogger(__name__)

ImageLike = Image.Image | np.ndarray
MAX_COLOUR_DISTANCE = 130.0
MAX_FIT_ERROR = 0.35
MAX_HIDDEN = 0.4
MAX_ANALYSIS_SIDE = 128  # larger pictures are subsampled by an integer factor before the template fit
_WORLD_PALETTE = np.asarray([BACKGROUND_RGB] + [COLOUR_RGB[c] for c in COLOURS], dtype=np.float32)


@dataclass(frozen=True)
class DetectedObject:
    """One object read from a picture.

    ``bbox`` is the fitted full box ``(x0, y0, x1, y1)`` (inclusive, may extend behind occluders), ``area``
    the visible pixel count, ``fit_error`` the template misfit per visible pixel (0 = exact).
    """

    colour: str
    shape: str
    size: str
    position: str
    bbox: tuple[int, int, int, int]
    area: int
    fit_error: float = 0.0


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """``[H, W, 3]`` float32 in 0..255 from a PIL image or an array (uint8 0..255, or float 0..1)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"expected an image [H, W, 3] (or a PIL image), got an array of shape {arr.shape}")
    arr = arr[..., :3]
    if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0:
        arr = arr * 255.0
    return arr.astype(np.float32)


def classify_pixels(arr: np.ndarray, palette: np.ndarray, max_distance: float) -> np.ndarray:
    """``[H, W]`` int: index of the nearest ``palette`` row per pixel, -1 where none is within range."""
    d2 = ((arr[:, :, None, :] - palette[None, None, :, :]) ** 2).sum(-1)
    idx = d2.argmin(-1)
    ok = np.take_along_axis(d2, idx[..., None], -1)[..., 0] <= max_distance**2
    return np.where(ok, idx, -1)


def _dilate1(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1)
    out = np.zeros_like(mask)
    h, w = mask.shape
    for dy in range(3):
        for dx in range(3):
            out |= p[dy: dy + h, dx: dx + w]
    return out


def _fit(comp: np.ndarray, neutral: np.ndarray, spill: np.ndarray) -> tuple[int, int, str, int, int, int]:
    """Best template for one blob: ``(cost, hidden, shape, radius, cx, cy)``; cost = visible pixels missed +
    background covered, hidden = template pixels on other objects or unknown pixels (the tie-break)."""
    ys, xs = np.nonzero(comp)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    w, h = x1 - x0 + 1, y1 - y0 + 1
    side = max(w, h)
    occluded = w != h or bool((_dilate1(comp) & neutral).any())
    if occluded:
        r_lo, r_hi, tol = max(1, (side - 1) // 2 - 1), math.ceil(0.75 * side) + 1, 1
    else:
        r_lo, r_hi, tol = max(1, (side - 1) // 2 - 1), (side - 1) // 2 + 1, 1
    pad = 2 * r_hi + 2
    planes = [np.pad(comp, pad).astype(np.float32),
              np.pad(neutral, pad, constant_values=True).astype(np.float32),  # outside the picture: unknown
              np.pad(spill, pad).astype(np.float32)]
    total = float(comp.sum())
    best: tuple[int, int, int, int, int, int] | None = None  # cost, hidden, shape index, r, tx, ty
    for r in range(r_lo, r_hi + 1):
        s = 2 * r + 1
        tx_a, tx_b = sorted((x1 - s + 1 - tol, x0 + tol))
        ty_a, ty_b = sorted((y1 - s + 1 - tol, y0 + tol))
        region = (slice(ty_a + pad, ty_b + pad + s), slice(tx_a + pad, tx_b + pad + s))
        wins = [np.lib.stride_tricks.sliding_window_view(p[region], (s, s)) for p in planes]
        for k, shape in enumerate(SHAPES):
            t = shape_template(shape, r).astype(np.float32)
            hit, hid, spl = (np.rint(np.tensordot(win, t, axes=([2, 3], [0, 1]))).astype(np.int64)
                             for win in wins)
            cost = (int(total) - hit) + spl
            key = cost * (1 << 24) + hid
            j = int(key.argmin())
            iy, ix = divmod(j, key.shape[1])
            cand = (int(cost[iy, ix]), int(hid[iy, ix]), k, r, tx_a + ix, ty_a + iy)
            if best is None or cand[:2] < best[:2]:
                best = cand
    assert best is not None  # noqa: S101  narrows the type: the loops above always set best
    cost, hidden, k, r, tx, ty = best
    return cost, hidden, SHAPES[k], r, tx + r, ty + r


def detect_objects(image: ImageLike, *, max_colour_distance: float = MAX_COLOUR_DISTANCE,
                   min_area: int | None = None, max_fit_error: float = MAX_FIT_ERROR,
                   max_hidden: float = MAX_HIDDEN) -> list[DetectedObject]:
    """Objects in a world picture (PIL, or ``[H, W, 3]`` uint8 0..255 / float 0..1), by colour, then raster.

    ``min_area`` (visible pixels) defaults to 60% of a small triangle's area on this canvas. Blobs are dropped
    when their best template has a radius under 3/4 of the small radius, misfits more than ``max_fit_error``
    per visible pixel, or lies more than ``max_hidden`` on other objects / unknown pixels.
    """
    arr = to_rgb_array(image)
    height, width = arr.shape[:2]
    step = max(1, math.ceil(max(height, width) / MAX_ANALYSIS_SIDE))
    cls = classify_pixels(arr[::step, ::step], _WORLD_PALETTE, max_colour_distance)
    r_small = object_radius("small", width, height)
    if min_area is None:
        min_area = max(4, int(0.3 * (2 * r_small + 1) ** 2))  # 60% of the smallest triangle
    min_radius = math.ceil(0.75 * r_small) / step
    min_area_here = max(1, round(min_area / (step * step)))
    found = []
    for ci, colour in enumerate(COLOURS):
        same = cls == ci + 1
        labels, n = label_components(same)
        if n == 0:
            continue
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        neutral = (cls != 0) & ~same
        for lab in range(1, n + 1):
            if areas[lab] < min_area_here:
                continue
            comp = labels == lab
            cost, hidden, shape, r, cx, cy = _fit(comp, neutral, same & ~comp | (cls == 0))
            error = cost / float(areas[lab])
            too_hidden = hidden > max_hidden * shape_template(shape, r).sum()
            if error > max_fit_error or too_hidden or r < min_radius:
                continue
            cx_full, cy_full, r_full = cx * step + (step - 1) / 2, cy * step + (step - 1) / 2, r * step
            found.append(DetectedObject(
                colour=colour, shape=shape,
                size="large" if r_full > size_threshold(width, height) else "small",
                position=nearest_position(cx_full, cy_full, width, height),
                bbox=(round(cx_full - r_full), round(cy_full - r_full), round(cx_full + r_full),
                      round(cy_full + r_full)),
                area=int(areas[lab]) * step * step, fit_error=round(error, 4)))
    return found


def _has(dets: Sequence[DetectedObject], o: WorldObject, *fields: str) -> bool:
    return any(all(getattr(d, f) == getattr(o, f) for f in fields) for d in dets)


def score_text_to_image(image: ImageLike, scene: Scene,
                        detections: Sequence[DetectedObject] | None = None) -> dict[str, float]:
    """GenEval-style 0/1 sub-scores of a picture generated for ``caption(scene)`` at ``scene.size``.

    Always: ``aspect_ratio`` (picture size == requested), ``counting`` (as many objects as asked),
    ``colour_attribution`` (every colour+shape pair present), ``position`` (each at its region), ``size``
    (each at its size class), ``overall`` (all of these but aspect ratio). Only for 1-object prompts:
    ``single_object`` (the shape is there); only for 2-object prompts: ``two_objects`` (both shapes are).
    """
    dets = list(detect_objects(image) if detections is None else detections)
    if isinstance(image, Image.Image):
        size = image.size
    else:
        height, width = to_rgb_array(image).shape[:2]
        size = (width, height)
    objs = scene.objects
    out = {"aspect_ratio": float(tuple(size) == scene.size)}
    shapes_found = Counter(d.shape for d in dets)
    if len(objs) == 1:
        out["single_object"] = float(shapes_found[objs[0].shape] >= 1)
    if len(objs) == 2:
        wanted = Counter(o.shape for o in objs)
        out["two_objects"] = float(all(shapes_found[s] >= n for s, n in wanted.items()))
    out["counting"] = float(len(dets) == len(objs))
    out["colour_attribution"] = float(all(_has(dets, o, "colour", "shape") for o in objs))
    out["position"] = float(all(_has(dets, o, "colour", "shape", "position") for o in objs))
    out["size"] = float(all(_has(dets, o, "colour", "shape", "size") for o in objs))
    out["overall"] = float(all(v == 1.0 for k, v in out.items() if k != "aspect_ratio"))
    return out


def summarise_scores(scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each sub-score over the prompts that have it."""
    keys = sorted({k for s in scores for k in s})
    return {k: float(np.mean([s[k] for s in scores if k in s])) for k in keys}


def edit_score(pred_img: ImageLike, edited_scene: Scene) -> float:
    """F1 between the objects seen in ``pred_img`` and the edited scene's, matched on colour, shape, size and
    position (1.0 = exactly the edited scene)."""
    seen = Counter((d.colour, d.shape, d.size, d.position) for d in detect_objects(pred_img))
    want = Counter((o.colour, o.shape, o.size, o.position) for o in edited_scene.objects)
    tp = sum((seen & want).values())
    denom = sum(seen.values()) + sum(want.values())
    return 1.0 if denom == 0 else 2.0 * tp / denom


def iou(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of one shape (1.0 when both are empty)."""
    a, b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def _pair(pred: ImageLike, target: ImageLike) -> tuple[np.ndarray, np.ndarray]:
    t = to_rgb_array(target)
    p = pred if isinstance(pred, Image.Image) else Image.fromarray(np.clip(to_rgb_array(pred), 0, 255)
                                                                   .astype(np.uint8))
    if p.size != (t.shape[1], t.shape[0]):
        p = p.convert("RGB").resize((t.shape[1], t.shape[0]), Image.NEAREST)
    return to_rgb_array(p), t


def segmentation_iou(pred_img: ImageLike, target_img: ImageLike, max_distance: float = 100.0) -> float:
    """Mean IoU over the shape classes present in either map, pixels matched to ``SEGMENTATION_RGB``."""
    p, t = _pair(pred_img, target_img)
    palette = np.asarray([SEGMENTATION_BACKGROUND_RGB] + [SEGMENTATION_RGB[s] for s in SHAPES], np.float32)
    pc, tc = classify_pixels(p, palette, max_distance), classify_pixels(t, palette, max_distance)
    ious = [iou(pc == k, tc == k) for k in range(1, len(palette)) if (pc == k).any() or (tc == k).any()]
    return 1.0 if not ious else float(np.mean(ious))


def depth_error(pred: ImageLike, target: ImageLike) -> float:
    """Mean absolute error of the grey levels, in [0, 1]."""
    p, t = _pair(pred, target)
    return float(np.abs(p.mean(-1) - t.mean(-1)).mean() / 255.0)


def depth_accuracy(pred: ImageLike, target: ImageLike, tolerance: float = 15.0) -> float:
    """Share of surface pixels (a surface in the target or in the prediction) whose grey level is within
    ``tolerance`` of the target's: the world's depth layers are >= 30 levels apart, so this is the share of
    pixels put at the right layer. 1.0 when neither map shows any surface."""
    p, t = _pair(pred, target)
    pg, tg = p.mean(-1), t.mean(-1)
    surface = (tg > tolerance) | (pg > tolerance)
    if not surface.any():
        return 1.0
    return float((np.abs(pg - tg) <= tolerance)[surface].mean())


def normals_error(pred: ImageLike, target: ImageLike) -> float:
    """Mean angular error in degrees over the target's surface pixels (non-black), RGB = (n + 1) / 2."""
    p, t = _pair(pred, target)
    valid = t.max(-1) > 32
    if not valid.any():
        raise ValueError("the target normal map has no surface pixels (all black)")

    def unit(a: np.ndarray) -> np.ndarray:
        n = a[valid].astype(np.float64) / 255.0 * 2.0 - 1.0
        return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)

    cos = np.clip((unit(p) * unit(t)).sum(-1), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def pose_f1(pred: ImageLike, target: ImageLike, threshold: int = 64) -> float:
    """F1 of the stick figures' limb pixels (any channel above ``threshold`` on black), a pixel counting as
    found when the other map has a limb pixel within 1 px (the limbs are 1-px lines, so an exact-pixel
    IoU would punish a line drawn one pixel off as a total miss). 1.0 when neither map has a limb."""
    p, t = _pair(pred, target)
    pm, tm = p.max(-1) > threshold, t.max(-1) > threshold
    if not pm.any() and not tm.any():
        return 1.0
    if not pm.any() or not tm.any():
        return 0.0
    recall = float((_dilate1(pm) & tm).sum() / tm.sum())
    precision = float((_dilate1(tm) & pm).sum() / pm.sum())
    return 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)

def box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """IoU of two inclusive pixel boxes ``(x0, y0, x1, y1)``."""
    ix = min(a[2], b[2]) - max(a[0], b[0]) + 1
    iy = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(0, ix) * max(0, iy)
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / area if area > 0 else 0.0


def find_detection_box(pred_img: ImageLike, max_distance: float = 100.0) -> tuple[int, int, int, int] | None:
    """Extent of the largest blob drawn in ``DETECTION_BOX_RGB``, or None if there is none."""
    arr = to_rgb_array(pred_img)
    hit = classify_pixels(arr, np.asarray([DETECTION_BOX_RGB], np.float32), max_distance) == 0
    labels, n = label_components(hit)
    if n == 0:
        return None
    biggest = int(np.bincount(labels.ravel())[1:].argmax()) + 1
    ys, xs = np.nonzero(labels == biggest)
    return (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def detection_iou(pred_img: ImageLike, target_box: Sequence[int]) -> float:
    """IoU of the box drawn in ``pred_img`` with ``target_box`` (see ``render.detection_box``); 0 if none."""
    found = find_detection_box(pred_img)
    return 0.0 if found is None else box_iou(found, target_box)


def detection_keeps_picture(pred_img: ImageLike, target_img: ImageLike) -> bool:
    """Whether a detection answer shows, its box aside, the objects the world's answer ``target_img`` shows.

    A detection answer redraws the whole picture, so a right box can come with another object recoloured,
    moved or gone. Box pixels are painted background in both images first (the parts of objects a box
    covers are then missing from both alike), and the objects seen are compared by colour, shape, size and
    place.
    """
    def seen(img: ImageLike) -> Counter:
        arr = to_rgb_array(img).copy()
        palette = np.concatenate([np.asarray([DETECTION_BOX_RGB], np.float32), _WORLD_PALETTE])
        arr[classify_pixels(arr, palette, math.inf) == 0] = BACKGROUND_RGB
        return Counter((d.colour, d.shape, d.size, d.position) for d in detect_objects(arr.astype(np.uint8)))

    return seen(pred_img) == seen(target_img)


_NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_SYNONYMS = {"center": "centre", "middle": "centre", "color": "colour", "gray": "grey"}


def normalise_answer(text: str) -> str:
    """Lower case, no punctuation, articles or position prepositions; number words as digits."""
    words = re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()
    words = [_SYNONYMS.get(_NUMBERS.get(w, w), _NUMBERS.get(w, w)) for w in words]
    while words and words[0] in ("a", "an", "the", "on", "at", "in", "it", "is", "its"):
        words = words[1:]
    return " ".join(words)


def vqa_accuracy(answers: Sequence[str], targets: Sequence[str]) -> float:
    """Fraction of answers equal to their target after ``normalise_answer``."""
    if len(answers) != len(targets):
        raise ValueError(f"{len(answers)} answers for {len(targets)} targets; pass one answer per question")
    if not targets:
        return 0.0
    return sum(normalise_answer(a) == normalise_answer(t) for a, t in zip(answers, targets)) / len(targets)


def _boxes_touch(a: WorldObject, b: WorldObject) -> bool:
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    return ax0 <= bx1 and bx0 <= ax1 and ay0 <= by1 and by0 <= ay1


def caption_matches(text: str, scene: Scene) -> bool:
    """Whether a caption names exactly the scene's objects (size, colour, shape, position).

    Captions name objects back to front, but that order is visible only where objects overlap: for two
    objects apart, either order describes the same picture, so only overlapping pairs must be named in
    their depth order. Text that names no world object, or an impossible scene, does not match.
    """
    try:
        named = parse_caption(text, scene.width, scene.height).objects
    except ValueError:
        return False

    def key(o: WorldObject) -> tuple[str, str, str, str]:
        return (o.size, o.colour, o.shape, o.position)

    if Counter(map(key, named)) != Counter(map(key, scene.objects)):
        return False
    order = {o.name: k for k, o in enumerate(named)}
    return all(order[back.name] < order[front.name]
               for i, back in enumerate(scene.objects) for front in scene.objects[i + 1:]
               if _boxes_touch(back, front))

def _fill_holes(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    labels, _ = label_components(~padded)
    outside = labels == labels[0, 0]
    return (~outside)[1:-1, 1:-1]


def main_object(image: ImageLike, max_colour_distance: float = MAX_COLOUR_DISTANCE) -> tuple[str, str] | None:
    """``(colour, shape)`` of the largest blob, with a rotation-invariant shape test (for multiview frames).

    Shape from compactness area / (pi * R^2), R the furthest pixel from the centroid (holes filled):
    circle ~1.0, square ~0.64, triangle ~0.36.
    """
    arr = to_rgb_array(image)
    cls = classify_pixels(arr, _WORLD_PALETTE, max_colour_distance)
    best: tuple[int, str, np.ndarray] | None = None
    for ci, colour in enumerate(COLOURS):
        labels, n = label_components(cls == ci + 1)
        if n:
            areas = np.bincount(labels.ravel())
            k = int(areas[1:].argmax()) + 1
            if best is None or areas[k] > best[0]:
                best = (int(areas[k]), colour, labels == k)
    h, w = arr.shape[:2]
    r_small = object_radius("small", w, h)
    if best is None or best[0] < max(4, 0.4 * math.pi * r_small * r_small):
        return None
    mask = _fill_holes(best[2])
    ys, xs = np.nonzero(mask)
    rmax = float(np.sqrt((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2).max()) + 0.5
    compact = mask.sum() / (math.pi * rmax * rmax)
    return best[1], "circle" if compact >= 0.78 else "square" if compact >= 0.45 else "triangle"


def multiview_consistency(frames: Sequence[ImageLike], obj: WorldObject | None = None) -> float:
    """Fraction of frames showing the same object (colour and shape) as ``obj``, or as most frames do."""
    if not frames:
        raise ValueError("multiview_consistency needs at least one frame")
    seen = [main_object(f) for f in frames]
    if obj is not None:
        ref = (obj.colour, obj.shape)
    else:
        counts = Counter(s for s in seen if s is not None)
        if not counts:
            return 0.0
        ref = counts.most_common(1)[0][0]
    return sum(s == ref for s in seen) / len(seen)
