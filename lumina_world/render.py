"""Pixels of a world scene: the picture itself and the target of every Omni-SFT task.

Every function returns a PIL RGB image of the scene's size, drawn without anti-aliasing so the analyser can
read it back exactly. Palettes are defined once here.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .scene import (
    BACKGROUND_RGB,
    COLOUR_RGB,
    WORLD_SIZES,
    Scene,
    WorldObject,
    draw_shape,
    label_map,
    object_radius,
    place,
    shape_mask,
)

#: Semantic segmentation: one colour per shape class; background black.
SEGMENTATION_RGB: dict[str, tuple[int, int, int]] = {
    "circle": (255, 0, 255),
    "square": (0, 255, 255),
    "triangle": (255, 255, 0),
}
SEGMENTATION_BACKGROUND_RGB = (0, 0, 0)
#: Depth: grey level by layer counted from the front (nearest = brightest); background black.
DEPTH_LEVELS: tuple[int, ...] = (255, 195, 135, 75, 45)
#: Surface normals (camera space, x right, y up, z towards the viewer); background black = no surface.
SQUARE_NORMAL = (0.0, 0.0, 1.0)
TRIANGLE_NORMAL = (0.0, 0.5, math.sqrt(0.75))  # a plane tilted 30 degrees to face upwards
#: Pose: joints at fixed fractions (u, v) of the object's box, limbs as coloured 1-px lines on black.
POSE_JOINTS: dict[str, tuple[float, float]] = {
    "head": (0.5, 0.0), "neck": (0.5, 0.3), "left_hand": (0.0, 0.5), "right_hand": (1.0, 0.5),
    "hip": (0.5, 0.65), "left_foot": (0.2, 1.0), "right_foot": (0.8, 1.0),
}
POSE_LIMBS: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("head", "neck", (255, 0, 0)),
    ("neck", "left_hand", (255, 170, 0)),
    ("neck", "right_hand", (170, 255, 0)),
    ("neck", "hip", (0, 255, 85)),
    ("hip", "left_foot", (0, 170, 255)),
    ("hip", "right_foot", (170, 0, 255)),
)
#: Detection: the target's box, 2 px wide, in a colour no world object has.
DETECTION_BOX_RGB = (255, 0, 255)
DETECTION_BOX_WIDTH = 2
DETECTION_MARGIN = 2
#: Multiview: the circle's marker dot is its colour x MARKER_SHADE (the analyser reads it as unknown).
MARKER_SHADE = 0.45
CONDITION_KINDS: tuple[str, ...] = ("segmentation", "depth", "normals", "pose")
#: Canvases multiview uses: a small triangle turning on a 32-px side is too few pixels to keep its shape.
MULTIVIEW_SIZES: list[tuple[int, int]] = [s for s in WORLD_SIZES if min(s) >= 48]


def _canvas(scene: Scene, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=np.uint8), (scene.height, scene.width, 3)).copy()


def render_image(scene: Scene) -> Image.Image:
    """The picture: flat world colours on the light grey background, back to front."""
    out = _canvas(scene, BACKGROUND_RGB)
    labels = label_map(scene)
    for i, o in enumerate(scene.objects):
        out[labels == i] = COLOUR_RGB[o.colour]
    return Image.fromarray(out, "RGB")


def render_segmentation(scene: Scene) -> Image.Image:
    """Visible pixels of each object in its shape class colour (``SEGMENTATION_RGB``), background black."""
    out = _canvas(scene, SEGMENTATION_BACKGROUND_RGB)
    labels = label_map(scene)
    for i, o in enumerate(scene.objects):
        out[labels == i] = SEGMENTATION_RGB[o.shape]
    return Image.fromarray(out, "RGB")


def occlusion_layers(scene: Scene) -> list[int]:
    """Per object (``scene.objects`` order), how many layers of visible cover lie in front of it: 0 when no
    object covers any of its shape, else one more than the deepest layer of the objects that do (an object
    covers another where its visible pixels lie inside the other's shape).

    This is the layer order a picture shows. The drawing order of objects that do not touch is hidden, so a
    depth map that encoded it asked for what no model can read (with it, the depth suite's best possible
    expected score was 0.57 on benchmark seed 0 and 0.49 on seed 1).
    """
    labels = label_map(scene)
    masks = [shape_mask(o.shape, o.cx, o.cy, o.radius, scene.width, scene.height) for o in scene.objects]
    layers = [0] * len(scene.objects)
    for i in reversed(range(len(scene.objects))):
        covering = [j for j in range(i + 1, len(scene.objects)) if (labels[masks[i]] == j).any()]
        layers[i] = 1 + max(layers[j] for j in covering) if covering else 0
    return layers


def render_depth(scene: Scene) -> Image.Image:
    """Grey depth map: each visible object at its occlusion layer's level (``occlusion_layers``: uncovered
    objects 255, each layer of cover further back darker), background black."""
    out = _canvas(scene, (0, 0, 0))
    labels = label_map(scene)
    for i, layer in enumerate(occlusion_layers(scene)):
        out[labels == i] = DEPTH_LEVELS[min(layer, len(DEPTH_LEVELS) - 1)]
    return Image.fromarray(out, "RGB")


def _normals_to_rgb(n: np.ndarray) -> np.ndarray:
    return np.clip(np.round((n + 1.0) * 0.5 * 255.0), 0, 255).astype(np.uint8)


def render_normals(scene: Scene) -> Image.Image:
    """Normal map, RGB = (n + 1) / 2: circles as spheres, squares facing the camera, triangles tilted up."""
    out = _canvas(scene, (0, 0, 0))
    labels = label_map(scene)
    ys, xs = np.mgrid[0: scene.height, 0: scene.width].astype(np.float64)
    for i, o in enumerate(scene.objects):
        sel = labels == i
        if o.shape == "circle":
            nx = (xs[sel] - o.cx) / (o.radius + 0.5)
            ny = -(ys[sel] - o.cy) / (o.radius + 0.5)
            nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
            n = np.stack([nx, ny, nz], axis=-1)
            n /= np.linalg.norm(n, axis=-1, keepdims=True)
        else:
            n = np.asarray(SQUARE_NORMAL if o.shape == "square" else TRIANGLE_NORMAL)[None, :]
        out[sel] = _normals_to_rgb(n)
    return Image.fromarray(out, "RGB")


def pose_joints(obj: WorldObject) -> dict[str, tuple[int, int]]:
    """Pixel position of every joint of ``obj``'s stick figure."""
    x0, y0, x1, y1 = obj.bbox
    return {k: (round(x0 + u * (x1 - x0)), round(y0 + v * (y1 - y0))) for k, (u, v) in POSE_JOINTS.items()}


def render_pose(scene: Scene) -> Image.Image:
    """One stick figure per object (limbs as 1-px lines, ``POSE_LIMBS`` colours) on black, back to front."""
    im = Image.new("RGB", scene.size, (0, 0, 0))
    draw = ImageDraw.Draw(im)
    for o in scene.objects:
        joints = pose_joints(o)
        for a, b, rgb in POSE_LIMBS:
            draw.line([joints[a], joints[b]], fill=rgb, width=1)
    return im


def detection_box(scene: Scene, obj: WorldObject) -> tuple[int, int, int, int]:
    """Inclusive outer box ``(x0, y0, x1, y1)`` the detection target draws around ``obj``."""
    x0, y0, x1, y1 = obj.bbox
    m = DETECTION_MARGIN
    return (max(0, x0 - m), max(0, y0 - m), min(scene.width - 1, x1 + m), min(scene.height - 1, y1 + m))


def render_detection(scene: Scene, target_object: WorldObject) -> Image.Image:
    """The picture with ``target_object``'s box drawn in ``DETECTION_BOX_RGB``, 2 px wide, inside the box."""
    if target_object not in scene.objects:
        raise ValueError(f"{target_object.name} is not in the scene; pass one of scene.objects")
    im = render_image(scene)
    ImageDraw.Draw(im).rectangle(detection_box(scene, target_object), outline=DETECTION_BOX_RGB,
                                 width=DETECTION_BOX_WIDTH)
    return im


#: Angle after which each shape looks the same again (degrees).
SYMMETRY_PERIOD: dict[str, float] = {"circle": 360.0, "square": 90.0, "triangle": 360.0}


def multiview_angles(shape: str, views: int) -> list[float]:
    """Turn angle (degrees) of each view: ``views`` even steps over one symmetry period of ``shape``
    (a full turn; a quarter turn for the square), so consecutive views differ and the sequence loops."""
    if shape not in SYMMETRY_PERIOD:
        raise ValueError(f"Unknown shape {shape!r}; choose one of {sorted(SYMMETRY_PERIOD)}")
    return [SYMMETRY_PERIOD[shape] * k / views for k in range(views)]


def render_multiview(obj: WorldObject, views: int, size: tuple[int, int]) -> list[Image.Image]:
    """``views`` frames of one object turning a full circle, centred on a ``size`` (W, H) canvas.

    The camera orbits the object seen from above (a turntable): squares and triangles rotate in the image
    plane about their centre; a circle carries a dark marker dot that goes round with it.
    Every object is shown as a close-up at the large size on the centre block (a small one has too few
    pixels to show a turn); ``obj``'s size and position are ignored.
    """
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    width, height = size
    radius = object_radius("large")
    cx, cy = place("centre", radius, width, height)
    if radius * math.sqrt(2) + 1 > min(cx, cy, width - 1 - cx, height - 1 - cy):
        raise ValueError(f"canvas {width}x{height} is too small for a turning object; use one of {MULTIVIEW_SIZES}")
    rgb = COLOUR_RGB[obj.colour]
    dark = tuple(round(c * MARKER_SHADE) for c in rgb)
    marker_r = round(0.15 * radius)  # 0 = one pixel; the marker always stays inside the outline
    frames = []
    for angle in multiview_angles(obj.shape, views):
        im = Image.new("RGB", (width, height), BACKGROUND_RGB)
        draw = ImageDraw.Draw(im)
        draw_shape(draw, obj.shape, cx, cy, radius, rgb, angle)
        if obj.shape == "circle":
            a = math.radians(angle)
            mx, my = round(cx + 0.45 * radius * math.sin(a)), round(cy - 0.45 * radius * math.cos(a))
            draw.ellipse([mx - marker_r, my - marker_r, mx + marker_r, my + marker_r], fill=dark)
        frames.append(im)
    return frames


def render_condition(scene: Scene, kind: str) -> Image.Image:
    """The spatial condition of ``kind`` (one of ``CONDITION_KINDS``) for condition-to-image."""
    renderers = {"segmentation": render_segmentation, "depth": render_depth, "normals": render_normals,
                 "pose": render_pose}
    if kind not in renderers:
        raise ValueError(f"Unknown condition {kind!r}; choose one of {CONDITION_KINDS}")
    return renderers[kind](scene)


def render_condition_pairs(scene: Scene) -> list[tuple[str, Image.Image, Image.Image]]:
    """``(kind, condition image, target picture)`` for every condition kind."""
    picture = render_image(scene)
    return [(kind, render_condition(scene, kind), picture) for kind in CONDITION_KINDS]

