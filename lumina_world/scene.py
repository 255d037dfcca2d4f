"""The synthetic world: scenes of flat-coloured circles, squares and triangles.

A scene is a list of objects drawn back to front on a light grey canvas without anti-aliasing, so that every
fact a caption states (colour, shape, size, position, count) can be read back exactly from the pixels by
``analyser.py``. Objects sit on the ``CELL``-px grid of the bundled model's VQGAN (a small object fills one
cell, a large one a 2 x 2 block, each with a 1-px gap at its top-left) at the block nearest their position's
anchor: every picture is then made of a small alphabet of patches that a small VQGAN reproduces exactly and a
small language model can learn to place. Sampling rejects scenes whose objects would be ambiguous: two
objects of the same colour and shape, two objects in the same position region, an object hidden by more
than ``max_occlusion`` of its area, or two objects of the same colour touching.

All geometry is in pixels; an object of radius ``r`` centred on integer ``(cx, cy)`` covers the inclusive box
``[cx - r, cx + r] x [cy - r, cy + r]`` (side ``2r + 1``) for every shape.
"""

from __future__ import annotations

import logging
import math
import random
import re
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

#: Candidate canvas sizes (width, height); multiples of 16 px.
WORLD_SIZES: list[tuple[int, int]] = [(48, 48), (64, 32), (32, 64), (64, 48), (48, 64), (80, 48), (48, 80)]
DEFAULT_CANVAS = (64, 48)  # the main job's size
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: World colours (RGB), defined once; pairwise distances >= 170 so nearest-colour matching is safe.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)
BACKGROUND_RGB: tuple[int, int, int] = (240, 240, 240)
#: Side of one grid cell in pixels (the world VQGAN's downsampling factor).
CELL = 8
#: Object radius in pixels (box side ``2r + 1``): a small object fills one cell, a large one 2 x 2 cells.
SIZE_RADII: dict[str, int] = {"small": 3, "large": 7}
SIZES: tuple[str, ...] = tuple(SIZE_RADII)
#: Position regions: anchor point in normalised (x, y); an object sits on the grid block whose centre is
#: nearest its anchor, and the nearest anchor to an object's centre names its region.
POSITION_ANCHORS: dict[str, tuple[float, float]] = {
    "left": (0.2, 0.5),
    "right": (0.8, 0.5),
    "top": (0.5, 0.2),
    "bottom": (0.5, 0.8),
    "centre": (0.5, 0.5),
}
POSITIONS: tuple[str, ...] = tuple(POSITION_ANCHORS)
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
    "centre": "in the centre",
}
MAX_OBJECTS = 4
MAX_OCCLUSION = 0.25
SAME_COLOUR_GAP = 2  # px between two objects of the same colour, so they never merge into one blob


@dataclass(frozen=True)
class WorldObject:
    """One object. ``depth`` is its drawing order (0 = furthest back; later objects are in front)."""

    shape: str
    colour: str
    size: str
    position: str
    cx: int
    cy: int
    radius: int
    depth: int

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Inclusive pixel box ``(x0, y0, x1, y1)``."""
        return (self.cx - self.radius, self.cy - self.radius, self.cx + self.radius, self.cy + self.radius)

    @property
    def name(self) -> str:
        """``"red circle"``: unique within a scene."""
        return f"{self.colour} {self.shape}"

    def describe(self) -> str:
        """``"a large red circle"``."""
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A canvas of ``width x height`` pixels and its objects, sorted back to front."""

    width: int
    height: int
    objects: tuple[WorldObject, ...]

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, PIL order."""
        return (self.width, self.height)

    def find(self, colour: str, shape: str) -> WorldObject | None:
        """The object of that colour and shape, or None."""
        return next((o for o in self.objects if o.colour == colour and o.shape == shape), None)

    def to_dict(self) -> dict:
        """JSON-ready form (``from_dict`` reads it back)."""
        return {"width": self.width, "height": self.height, "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        """The scene ``to_dict`` wrote."""
        objects = tuple(WorldObject(**o) for o in data["objects"])
        return cls(int(data["width"]), int(data["height"]), objects)


def object_radius(size: str, width: int = 0, height: int = 0) -> int:
    """Pixel radius of a ``"small"``/``"large"`` object (the same on every canvas; ``width``/``height`` are
    accepted so callers need not know that)."""
    if size not in SIZE_RADII:
        raise ValueError(f"Unknown size {size!r}; choose one of {SIZES}")
    return SIZE_RADII[size]


def size_threshold(width: int, height: int) -> float:
    """Radius separating small from large on this canvas (midway between the two)."""
    return 0.5 * (object_radius("small", width, height) + object_radius("large", width, height))


def nearest_position(x: float, y: float, width: int, height: int) -> str:
    """Name of the position region whose anchor is nearest to pixel ``(x, y)``."""
    u, v = (x + 0.5) / width, (y + 0.5) / height
    return min(POSITIONS, key=lambda p: (POSITION_ANCHORS[p][0] - u) ** 2 + (POSITION_ANCHORS[p][1] - v) ** 2)


def shape_polygon(shape: str, cx: float, cy: float, radius: float,
                  angle: float = 0.0) -> list[tuple[float, float]]:
    """Vertices of a square/triangle, rotated by ``angle`` degrees (clockwise on screen) about its centre."""
    if shape == "square":
        pts = [(-radius, -radius), (radius, -radius), (radius, radius), (-radius, radius)]
    elif shape == "triangle":
        pts = [(0.0, -radius), (radius, radius), (-radius, radius)]
    else:
        raise ValueError(f"{shape!r} has no polygon; only square and triangle do")
    if angle == 0.0:
        return [(cx + x, cy + y) for x, y in pts]
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(round(cx + x * c - y * s, 3), round(cy + x * s + y * c, 3)) for x, y in pts]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, fill,
               angle: float = 0.0) -> None:
    """Rasterise one shape with PIL (aliased) onto ``draw``."""
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    elif shape in ("square", "triangle"):
        draw.polygon(shape_polygon(shape, cx, cy, radius, angle), fill=fill)
    else:
        raise ValueError(f"Unknown shape {shape!r}; choose one of {SHAPES}")


def shape_mask(shape: str, cx: int, cy: int, radius: int, width: int, height: int,
               angle: float = 0.0) -> np.ndarray:
    """Boolean ``[H, W]`` mask of one shape, rasterised exactly as the renderer draws it."""
    im = Image.new("L", (width, height), 0)
    draw_shape(ImageDraw.Draw(im), shape, cx, cy, radius, 255, angle)
    return np.asarray(im) > 0


@lru_cache(maxsize=256)
def shape_template(shape: str, radius: int) -> np.ndarray:
    """Boolean ``[2r+1, 2r+1]`` mask of an upright shape filling its box (read-only, cached)."""
    t = shape_mask(shape, radius, radius, radius, 2 * radius + 1, 2 * radius + 1)
    t.setflags(write=False)
    return t


def label_map(scene: Scene) -> np.ndarray:
    """``[H, W]`` int array: index in ``scene.objects`` of the visible object per pixel, -1 = background."""
    out = np.full((scene.height, scene.width), -1, dtype=np.int64)
    for i, o in enumerate(scene.objects):
        out[shape_mask(o.shape, o.cx, o.cy, o.radius, scene.width, scene.height)] = i
    return out


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean ``[H, W]`` mask.

    Returns ``(labels, n)``: labels 1..n ordered by each component's first pixel in raster order, 0 outside.
    Uses ``scipy.ndimage`` when importable, else a numpy union-find; both give identical labels.
    """
    mask = np.asarray(mask, dtype=bool)
    ndimage = _scipy_ndimage()
    if ndimage is not None:
        raw, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        return _canonical_labels(raw, n)
    return label_components_numpy(mask)


@lru_cache(maxsize=1)
def _scipy_ndimage():
    try:
        from scipy import ndimage
    except ImportError:
        logger.debug("scipy not importable; using the numpy connected-component labelling")
        return None
    return ndimage


def _canonical_labels(raw: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    if n == 0:
        return np.zeros(raw.shape, dtype=np.int64), 0
    flat = raw.ravel()
    idx = np.flatnonzero(flat)
    firsts = np.full(n + 1, flat.size, dtype=np.int64)
    np.minimum.at(firsts, flat[idx], idx)
    order = np.argsort(firsts[1:], kind="stable")  # label (order[k] + 1) becomes k + 1
    remap = np.zeros(n + 1, dtype=np.int64)
    remap[order + 1] = np.arange(1, n + 1)
    return remap[raw], int(n)


def label_components_numpy(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The numpy fallback of :func:`label_components` (min-label propagation with pointer jumping)."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    src, dst = [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ny, nx = ys + dy, xs + dx
        ok = (ny < h) & (nx >= 0) & (nx < w)
        ok[ok] = mask[ny[ok], nx[ok]]
        src.append(ys[ok] * w + xs[ok])
        dst.append(ny[ok] * w + nx[ok])
    ea, eb = np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64)
    lab = np.arange(h * w, dtype=np.int64)
    while True:
        la, lb = lab[ea], lab[eb]
        m = np.minimum(la, lb)
        new = lab.copy()
        for target in (la, lb):
            np.minimum.at(new, target, m)
        while True:
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, lab):
            break
        lab = new
    raw = np.where(mask.ravel(), lab + 1, 0)
    roots = np.unique(raw[raw > 0])  # sorted root ids == raster order of each component's first pixel
    out = np.zeros(h * w, dtype=np.int64)
    if roots.size:
        out[mask.ravel()] = np.searchsorted(roots, raw[mask.ravel()]) + 1
    return out.reshape(h, w), int(roots.size)


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:, :] |= out[:-1, :]
        grown[:-1, :] |= out[1:, :]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        grown[1:, 1:] |= out[:-1, :-1]
        grown[:-1, :-1] |= out[1:, 1:]
        grown[1:, :-1] |= out[:-1, 1:]
        grown[:-1, 1:] |= out[1:, :-1]
        out = grown
    return out


def scene_problem(scene: Scene, max_occlusion: float = MAX_OCCLUSION) -> str | None:
    """Why ``scene`` is not a valid (unambiguous) world scene, or None if it is."""
    w, h, objs = scene.width, scene.height, scene.objects
    if not 1 <= len(objs) <= len(POSITIONS):
        return f"{len(objs)} objects (1..{len(POSITIONS)} allowed)"
    if len({o.name for o in objs}) != len(objs):
        return "two objects share colour and shape"
    if len({o.position for o in objs}) != len(objs):
        return "two objects share a position"
    if [o.depth for o in objs] != list(range(len(objs))):
        return "objects are not sorted by depth 0..n-1"
    masks = []
    for o in objs:
        if o.shape not in SHAPES or o.colour not in COLOUR_RGB or o.size not in SIZE_RADII:
            return f"unknown attribute in {o}"
        if o.radius != object_radius(o.size, w, h):
            return f"{o.name} has radius {o.radius}, size {o.size} needs {object_radius(o.size, w, h)}"
        x0, y0, x1, y1 = o.bbox
        if x0 < 1 or y0 < 1 or x1 > w - 1 or y1 > h - 1:
            return f"{o.name} leaves the canvas"
        if (x0 - 1) % CELL or (y0 - 1) % CELL:
            return f"{o.name} is off the {CELL}-px grid (its box must start 1 px into a cell)"
        if nearest_position(o.cx, o.cy, w, h) != o.position:
            return f"{o.name} centre is not in region {o.position}"
        masks.append(shape_mask(o.shape, o.cx, o.cy, o.radius, w, h))
    labels = label_map(scene)
    for i, (o, m) in enumerate(zip(objs, masks)):
        visible = labels == i
        if visible.sum() < (1.0 - max_occlusion) * m.sum():
            return f"{o.name} is more than {max_occlusion:.0%} hidden"
        if label_components(visible)[1] != 1:
            return f"{o.name} is split into pieces"
        for j in range(i + 1, len(objs)):
            if objs[j].colour == o.colour and (_dilate(m, SAME_COLOUR_GAP) & masks[j]).any():
                return f"{o.name} touches {objs[j].name}"
    return None


def grid_centre(anchor: float, radius: int, extent: int) -> int:
    """Centre (px, one axis) of the grid-aligned object of ``radius`` nearest the normalised ``anchor``.

    Boxes start 1 px into a cell (``CELL * k + 1``) and must end inside ``extent``; ties go to the lower k.
    """
    side = 2 * radius + 1
    starts = range(1, extent - side + 1, CELL)
    if not starts:
        raise ValueError(f"a {side}-px object does not fit on a {extent}-px side")
    best = min(starts, key=lambda x0: (abs(x0 + radius + 0.5 - anchor * extent), x0))
    return best + radius


def place(position: str, radius: int, width: int, height: int) -> tuple[int, int]:
    """Pixel centre ``(cx, cy)`` of an object of ``radius`` at ``position`` on a ``width x height`` canvas."""
    if position not in POSITION_ANCHORS:
        raise ValueError(f"Unknown position {position!r}; choose one of {POSITIONS}")
    ax, ay = POSITION_ANCHORS[position]
    return grid_centre(ax, radius, width), grid_centre(ay, radius, height)


def _as_rng(rng: random.Random | int) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, int):
        return random.Random(rng)  # noqa: S311  seeded, not a secret
    raise ValueError(f"rng must be a random.Random or an int seed, got {type(rng).__name__}")


def sample_scene(rng: random.Random | int, size: tuple[int, int] | None = None, n_objects: int | None = None,
                 *, max_occlusion: float = MAX_OCCLUSION, max_tries: int = 2000) -> Scene:
    """Draw a valid scene: canvas ``size`` (W, H) from ``WORLD_SIZES`` and 1..4 objects unless given."""
    rng = _as_rng(rng)
    if n_objects is not None and not 1 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be in 1..{MAX_OBJECTS}, got {n_objects}")
    width, height = size if size is not None else rng.choice(WORLD_SIZES)
    if width < 16 or height < 16:
        raise ValueError(f"canvas {width}x{height} is too small; use at least 16x16")
    n = n_objects if n_objects is not None else rng.randint(1, MAX_OBJECTS)
    kinds = [(c, s) for c in COLOURS for s in SHAPES]
    for _ in range(max_tries):
        objs = []
        placed = zip(rng.sample(POSITIONS, n), rng.sample(kinds, n))
        for depth, (position, (colour, shape)) in enumerate(placed):
            size_name = rng.choice(SIZES)
            radius = object_radius(size_name)
            cx, cy = place(position, radius, width, height)
            objs.append(WorldObject(shape, colour, size_name, position, cx, cy, radius, depth))
        scene = Scene(width, height, tuple(objs))
        if scene_problem(scene, max_occlusion) is None:
            return scene
    raise RuntimeError(f"no valid {n}-object scene on {width}x{height} after {max_tries} tries")


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene) -> str:
    """``"a large red circle on the left and a small blue square at the top"`` (objects back to front)."""
    if not scene.objects:
        return "an empty grey picture"
    return _join([f"{o.describe()} {POSITION_PHRASES[o.position]}" for o in scene.objects])


def edit_scene(scene: Scene, rng: random.Random | int) -> tuple[str, Scene]:
    """One random edit of ``scene``: ``(instruction, edited_scene)``.

    Recolour ("Change the red circle to blue."), remove ("Remove the blue square."; only with 2+ objects) or
    move ("Move the green triangle to the left."); the other objects keep their pixels exactly.
    """
    rng = _as_rng(rng)
    ops = ["recolour", "move"] + (["remove"] if len(scene.objects) > 1 else [])
    rng.shuffle(ops)
    for op in ops:
        targets = list(scene.objects)
        rng.shuffle(targets)
        for target in targets:
            result = _try_edit(scene, target, op, rng)
            if result is not None:
                return result
    raise RuntimeError(f"no valid edit of scene {caption(scene)!r}")


#: The first word of each edit instruction ``edit_scene`` writes, and the kind of edit it names.
EDIT_KINDS: dict[str, str] = {"Change": "recolour", "Remove": "remove", "Move": "move"}


def edit_kind(instruction: str) -> str:
    """``"recolour"``, ``"remove"`` or ``"move"``: the kind of an ``edit_scene`` instruction.

    Raises:
        ValueError: the instruction is not one ``edit_scene`` writes.
    """
    kind = EDIT_KINDS.get(instruction.split(" ", 1)[0])
    if kind is None:
        raise ValueError(f"{instruction!r} is not a world edit; it starts with one of {sorted(EDIT_KINDS)}")
    return kind


def _try_edit(scene: Scene, target: WorldObject, op: str, rng: random.Random) -> tuple[str, Scene] | None:
    others = [o for o in scene.objects if o is not target]
    if op == "remove":
        objs = [replace(o, depth=i) for i, o in enumerate(others)]
        return f"Remove the {target.name}.", Scene(scene.width, scene.height, tuple(objs))
    if op == "recolour":
        colours = [c for c in COLOURS if c != target.colour]
        rng.shuffle(colours)
        for colour in colours:
            edited = _with(scene, target, replace(target, colour=colour))
            if scene_problem(edited) is None:
                return f"Change the {target.name} to {colour}.", edited
        return None
    if op == "move":
        free = [p for p in POSITIONS if p not in {o.position for o in scene.objects}]
        rng.shuffle(free)
        for position in free:
            cx, cy = place(position, target.radius, scene.width, scene.height)
            edited = _with(scene, target, replace(target, position=position, cx=cx, cy=cy))
            if scene_problem(edited) is None:
                return f"Move the {target.name} to the {position}.", edited
        return None
    raise ValueError(f"Unknown edit {op!r}; choose recolour, remove or move")


def _with(scene: Scene, old: WorldObject, new: WorldObject) -> Scene:
    return Scene(scene.width, scene.height, tuple(new if o is old else o for o in scene.objects))


def vqa_pairs(scene: Scene) -> dict[str, list[tuple[str, str]]]:
    """Every unambiguous question about ``scene`` with its one-word answer, grouped by kind.

    Kinds: colour ("What colour is the circle?" -> "red"), shape ("What shape is the blue object?" ->
    "square"), count ("How many objects are there?" -> "3"), position ("Where is the red circle?" -> "left"),
    size ("Is the red circle large or small?" -> "large").
    """
    objs = scene.objects
    out: dict[str, list[tuple[str, str]]] = {k: [] for k in ("colour", "shape", "count", "position", "size")}
    for shape in SHAPES:
        having = [o for o in objs if o.shape == shape]
        if len(having) == 1:
            out["colour"].append((f"What colour is the {shape}?", having[0].colour))
        out["count"].append((f"How many {shape}s are there?", str(len(having))))
    for colour in COLOURS:
        having = [o for o in objs if o.colour == colour]
        if len(having) == 1:
            out["shape"].append((f"What shape is the {colour} object?", having[0].shape))
    out["count"].insert(0, ("How many objects are there?", str(len(objs))))
    for o in objs:
        out["position"].append((f"Where is the {o.name}?", o.position))
        out["size"].append((f"Is the {o.name} large or small?", o.size))
    return {k: v for k, v in out.items() if v}


_OBJECT_PHRASE = re.compile(
    r"\ba (?P<size>{sizes}) (?P<colour>{colours}) (?P<shape>{shapes}) (?P<where>{places})".format(
        sizes="|".join(SIZES), colours="|".join(COLOURS), shapes="|".join(SHAPES),
        places="|".join(re.escape(p) for p in POSITION_PHRASES.values())))


def parse_caption(text: str, width: int, height: int) -> Scene:
    """The scene a world caption (``caption``'s wording, any case) describes on a ``width x height`` canvas.

    Objects are placed where the world puts them, in the order named (back to front). Used to score a
    picture generated from a free prompt against what it asked for.

    Raises:
        ValueError: the text names no world object, or names objects the world cannot show together
            (say which and why).
    """
    where = {phrase: pos for pos, phrase in POSITION_PHRASES.items()}
    objs = []
    for depth, m in enumerate(_OBJECT_PHRASE.finditer(text.lower())):
        radius = object_radius(m["size"])
        cx, cy = place(where[m["where"]], radius, width, height)
        objs.append(WorldObject(m["shape"], m["colour"], m["size"], where[m["where"]], cx, cy, radius, depth))
    if not objs:
        raise ValueError(f"{text!r} names no world object; write e.g. 'a large red circle on the left'")
    scene = Scene(width, height, tuple(objs))
    problem = scene_problem(scene)
    if problem is not None:
        raise ValueError(f"{text!r} on {width}x{height} is not a valid world scene: {problem}")
    return scene
