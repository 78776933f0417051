"""HopVQA's synthetic scenes: colored shapes and icons, some in containers, some with printed labels.

A scene is pure data (`Scene`, JSON round-trippable) drawn from `Draw(seed, 3, attempt)`, and
`render` paints it deterministically, so questions can be asked and checked against the data while
the agent only sees pixels. Nothing hides anything: object boxes never overlap, grouped objects lie
fully inside their container and loose ones outside every container. Labels on small objects are
printed small and, on every other one (odd ids), in low contrast, so reading them rewards zooming in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any, NamedTuple

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFont

from turngym.envs.draw import Draw

STREAM = 3  # this generator's stream number in Draw(seed, STREAM, attempt)


@cache
def vocabulary() -> dict[str, Any]:
    """assets/hopvqa/scene.yaml: kinds, colors, size classes and label words."""
    return yaml.safe_load(resources.files("turngym.assets").joinpath("hopvqa/scene.yaml").read_text())


CATEGORIES: tuple[str, ...] = tuple(vocabulary()["categories"])
CONTAINERS: tuple[str, ...] = tuple(vocabulary()["containers"])
COLORS: tuple[str, ...] = tuple(vocabulary()["colors"])
SIZES: tuple[str, ...] = ("small", "medium", "large")

RGB: dict[str, tuple[int, int, int]] = {name: tuple(rgb) for name, rgb in vocabulary()["colors"].items()}
BACKGROUND: tuple[int, int, int] = tuple(vocabulary()["background"])
SIZE_PX: dict[str, tuple[int, int]] = {name: tuple(r) for name, r in vocabulary()["sizes"].items()}
ASPECT: dict[str, tuple[float, float]] = {name: tuple(a) for name, a in vocabulary()["aspect"].items()}
LABEL_INSIDE: frozenset[str] = frozenset(vocabulary()["label_inside"])
WORDS: tuple[str, ...] = tuple(vocabulary()["words"])
CONTAINER_LABELS: tuple[str, ...] = tuple(vocabulary()["container_labels"])

# Geometry in pixels at a 768-pixel image; everything scales with the image size.
REF = 768
FONT_PX = {"small": 11, "medium": 14, "large": 18}
CONTAINER_FONT_PX = 16
LABEL_GAP = 2  # between an object and the label printed below it
OBJ_GAP = 5  # between any two objects' footprints (box plus label)
CONTAINER_GAP = 14  # between containers, and between a container and loose objects
MARGIN = 6  # between anything and the image border
HEADER = 22  # container strip that holds the container's label (and a shelf's top board)
PAD = 8  # container border to its grid of cells
CELL_INSET = 4
MIN_OBJECTS, MAX_OBJECTS = 8, 30
LABEL_P, CONTAINER_LABEL_P, WORD_P = 0.35, 0.6, 0.3


@dataclass(frozen=True)
class Obj:
    """One drawn thing. `box` is its pixel extent; a label printed below it lies outside the box."""

    id: int
    category: str
    color: str
    size: str
    box: tuple[int, int, int, int]
    label: str | None
    container: int | None

    @property
    def is_container(self) -> bool:
        return self.category in CONTAINERS

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass(frozen=True)
class Scene:
    """A size x size image's worth of objects, ordered by id: containers first, then each
    container's group, then the loose objects."""

    seed: int
    size: int
    objects: tuple[Obj, ...]

    def get(self, obj_id: int) -> Obj:
        if not 0 <= obj_id < len(self.objects):
            raise KeyError(f"Scene has no object {obj_id}; ids run from 0 to {len(self.objects) - 1}.")
        return self.objects[obj_id]

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "size": self.size,
            "objects": [
                {"id": o.id, "category": o.category, "color": o.color, "size": o.size, "box": list(o.box),
                 "label": o.label, "container": o.container}
                for o in self.objects
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> Scene:
        objects = tuple(
            Obj(o["id"], o["category"], o["color"], o["size"], tuple(o["box"]), o["label"], o["container"])
            for o in data["objects"]
        )
        return cls(data["seed"], data["size"], objects)


Rect = tuple[int, int, int, int]


def _px(value: float, size: int) -> int:
    return max(1, round(value * size / REF))


@lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=px)


@lru_cache(maxsize=4096)
def _text_bbox(text: str, px: int, anchor: str) -> Rect:
    return _font(px).getbbox(text, anchor=anchor)


def _prints_inside(category: str, size: str, box: Rect, label: str, image_size: int) -> bool:
    """Labels go on the face of solid kinds when they fit well inside it, else below the object."""
    if category not in LABEL_INSIDE:
        return False
    left, _, right, _ = _text_bbox(label, _px(FONT_PX[size], image_size), "mm")
    return right - left <= 0.7 * (box[2] - box[0])


def _label_anchor(
    category: str, size: str, box: Rect, label: str, image_size: int
) -> tuple[tuple[float, float], int, str]:
    """Where and how big a label is printed: (x, y), font pixels and PIL text anchor."""
    px = _px(CONTAINER_FONT_PX if category in CONTAINERS else FONT_PX[size], image_size)
    if category in CONTAINERS:
        return (box[0] + _px(PAD, image_size), box[1] + _px(HEADER, image_size) / 2), px, "lm"
    if _prints_inside(category, size, box, label, image_size):
        return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), px, "mm"
    return ((box[0] + box[2]) / 2, box[3] + _px(LABEL_GAP, image_size)), px, "mt"


def _label_rect(category: str, size: str, box: Rect, label: str, image_size: int) -> Rect:
    (x, y), px, anchor = _label_anchor(category, size, box, label, image_size)
    left, top, right, bottom = _text_bbox(label, px, anchor)
    return (math.floor(x + left), math.floor(y + top), math.ceil(x + right), math.ceil(y + bottom))


def label_box(obj: Obj, image_size: int) -> Rect | None:
    """Pixel box of `obj`'s printed label in a render of an image_size scene, None if unlabeled."""
    return None if obj.label is None else _label_rect(obj.category, obj.size, obj.box, obj.label, image_size)


def _footprint(category: str, size: str, box: Rect, label: str | None, image_size: int) -> Rect:
    """The box plus the label printed below it: what must stay clear of other objects."""
    if label is None or _prints_inside(category, size, box, label, image_size):
        return box
    lab = _label_rect(category, size, box, label, image_size)
    return (min(box[0], lab[0]), min(box[1], lab[1]), max(box[2], lab[2]), max(box[3], lab[3]))


def _clear(rect: Rect, others: list[Rect], gap: int) -> bool:
    return all(
        rect[2] + gap <= o[0] or o[2] + gap <= rect[0] or rect[3] + gap <= o[1] or o[3] + gap <= rect[1] for o in others
    )


class _Builder:
    """Accumulates a scene's objects while drawing them in a fixed order from one stream."""

    def __init__(self, draw: Draw, size: int) -> None:
        self.draw, self.size = draw, size
        self.objects: list[Obj] = []
        self.used_labels: set[str] = set()

    def px(self, value: float) -> int:
        return _px(value, self.size)

    def label(self) -> str | None:
        """A label or None; labels are distinct within a scene, so "the object labeled 7" is unique."""
        if self.draw.random() >= LABEL_P:
            return None
        words = self.draw.random() < WORD_P
        for _ in range(20):
            text = self.draw.pick(WORDS) if words else str(self.draw.between(0, 99))
            if text not in self.used_labels:
                self.used_labels.add(text)
                return text
        return None

    def dims(self, category: str, size: str) -> tuple[int, int]:
        """Width and height of a new object of a kind and size class."""
        low, high = SIZE_PX[size]
        d = self.draw.uniform(self.px(low), self.px(high))
        aw, ah = ASPECT.get(category, (1.0, 1.0))
        return max(4, round(d * aw)), max(4, round(d * ah))

    def shape(self, size: str) -> tuple[str, str, int, int, str | None]:
        """Category, color, width, height and label of a new object of a size class."""
        category, color = self.draw.pick(CATEGORIES), self.draw.pick(COLORS)
        w, h = self.dims(category, size)
        return category, color, w, h, self.label()

    def add(self, category: str, color: str, size: str, box: Rect, label: str | None, container: int | None) -> int:
        self.objects.append(Obj(len(self.objects), category, color, size, box, label, container))
        return len(self.objects) - 1


def _grids(k: int) -> list[tuple[int, int]]:
    """(columns, rows) grids with room for k objects and at most two spare cells."""
    return [(c, r) for r in (1, 2, 3) for c in (1, 2, 3, 4) if k <= c * r <= k + 2]


class _Group(NamedTuple):
    """A placed container and the grid of cells its k objects go into."""

    cid: int
    box: Rect
    cols: int
    rows: int
    cell_w: float
    cell_h: float
    k: int


def _place_containers(b: _Builder, count: int) -> list[_Group]:
    """Places up to `count` non-overlapping containers, skipping those that find no room."""
    placed: list[_Group] = []
    margin = b.px(MARGIN)
    for _ in range(count):
        kind, color = b.draw.pick(CONTAINERS), b.draw.pick(COLORS)
        k = b.draw.between(2, 6)
        cols, rows = b.draw.pick(_grids(k))
        cell_w = b.draw.uniform(b.px(74), b.px(88))
        cell_h = cell_w + b.px(20)  # room for a label below a medium object
        w = round(cols * cell_w + 2 * b.px(PAD))
        h = round(rows * cell_h + b.px(HEADER) + b.px(PAD))
        label = b.draw.pick(CONTAINER_LABELS) if b.draw.random() < CONTAINER_LABEL_P else None
        if label in b.used_labels:
            label = None
        for _ in range(60):
            x0 = b.draw.between(margin, b.size - margin - w)
            y0 = b.draw.between(margin, b.size - margin - h)
            box = (x0, y0, x0 + w, y0 + h)
            if _clear(box, [g.box for g in placed], b.px(CONTAINER_GAP)):
                break
        else:
            continue
        if label is not None:
            b.used_labels.add(label)
        size = "small" if cols * rows <= 2 else "medium" if cols * rows <= 4 else "large"
        placed.append(_Group(b.add(kind, color, size, box, label, None), box, cols, rows, cell_w, cell_h, k))
    return placed


def _fill_container(b: _Builder, g: _Group) -> None:
    """Puts k objects in k distinct cells of the container's grid; shelf objects stand on their plank."""
    kind, box, cols, cell_w, cell_h = b.objects[g.cid].category, g.box, g.cols, g.cell_w, g.cell_h
    inset, plank = b.px(CELL_INSET), b.px(4)
    top = box[1] + b.px(HEADER)
    left = box[0] + b.px(PAD)
    for cell in b.draw.sample(range(cols * g.rows), g.k):
        c, r = cell % cols, cell // cols
        cx0, cy0 = round(left + c * cell_w) + inset, round(top + r * cell_h) + inset
        cx1, cy1 = round(left + (c + 1) * cell_w) - inset, round(top + (r + 1) * cell_h) - inset
        if kind == "shelf":
            cy1 = round(top + (r + 1) * cell_h) - plank - b.px(2)
        size = "small" if b.draw.random() < 0.5 else "medium"
        category, color, w, h, label = b.shape(size)
        foot = _footprint(category, size, (0, 0, w, h), label, b.size)
        if foot[2] - foot[0] > cx1 - cx0 or foot[3] - foot[1] > cy1 - cy0:
            # A word label wider or longer than the cell allows: keep the object, print no label.
            b.used_labels.discard(label)
            label, foot = None, (0, 0, w, h)
        fw, fh = foot[2] - foot[0], foot[3] - foot[1]
        x = cx0 + round(b.draw.uniform(0, cx1 - cx0 - fw)) - foot[0]
        y = cy1 - fh - foot[1] if kind == "shelf" else cy0 + round(b.draw.uniform(0, cy1 - cy0 - fh)) - foot[1]
        b.add(category, color, size, (x, y, x + w, y + h), label, g.cid)


def _drop(b: _Builder, obj: tuple[str, str, str, int, int, str | None], containers: list[Rect],
          taken: list[Rect]) -> bool:
    """Tries random spots for a loose (category, color, size, w, h, label) whose footprint stays
    clear of containers and of the footprints `taken`; adds it at the first that works."""
    category, color, size, w, h, label = obj
    margin = b.px(MARGIN)
    foot = _footprint(category, size, (0, 0, w, h), label, b.size)
    fw, fh = foot[2] - foot[0], foot[3] - foot[1]
    for _ in range(80):
        fx = b.draw.between(margin, b.size - margin - fw)
        fy = b.draw.between(margin, b.size - margin - fh)
        rect = (fx, fy, fx + fw, fy + fh)
        if _clear(rect, containers, b.px(CONTAINER_GAP)) and _clear(rect, taken, b.px(OBJ_GAP)):
            x, y = fx - foot[0], fy - foot[1]
            b.add(category, color, size, (x, y, x + w, y + h), label, None)
            taken.append(rect)
            return True
    return False


def _place_loose(b: _Builder, count: int, containers: list[Rect], taken: list[Rect]) -> None:
    """Scatters up to `count` objects outside every container; an object that finds no room is
    tried once more at small size, then skipped."""
    for _ in range(count):
        roll = b.draw.random()
        size = "small" if roll < 0.35 else "medium" if roll < 0.75 else "large"
        category, color, w, h, label = b.shape(size)
        if _drop(b, (category, color, size, w, h, label), containers, taken):
            continue
        w, h = b.dims(category, "small")
        if not _drop(b, (category, color, "small", w, h, label), containers, taken):
            b.used_labels.discard(label)


def generate_scene(seed: int, *, size: int = 768, attempt: int = 0) -> Scene:
    """A scene of 8-30 objects: 1-3 containers holding 2-6 objects each, and loose objects around
    them. A pure function of (seed, size, attempt); callers bump `attempt` to get another scene for
    the same seed (e.g. when one admits no good question)."""
    if size < 256:
        raise ValueError(f"Scene size {size} is too small to fit 8 objects; use size >= 256.")
    b = _Builder(Draw(seed, STREAM, attempt), size)
    for group in _place_containers(b, b.draw.between(1, 3)):
        _fill_container(b, group)
    containers = [o.box for o in b.objects if o.is_container]
    taken = [_footprint(o.category, o.size, o.box, o.label, size) for o in b.objects if not o.is_container]
    count = max(b.draw.between(3, 14), MIN_OBJECTS - len(b.objects))
    _place_loose(b, min(count, MAX_OBJECTS - len(b.objects)), containers, taken)
    if len(b.objects) < MIN_OBJECTS:
        raise RuntimeError(f"Scene {seed} (attempt {attempt}) fit only {len(b.objects)} objects; use size >= 256.")
    return Scene(seed, size, tuple(b.objects))


# ---- rendering -------------------------------------------------------------------------------------


def _shade(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    """rgb scaled toward black (f < 1)."""
    return tuple(round(c * f) for c in rgb)  # type: ignore[return-value]


def _mix(rgb: tuple[int, int, int], other: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    """rgb moved a fraction f toward other."""
    return tuple(round(a + (b - a) * f) for a, b in zip(rgb, other, strict=True))  # type: ignore[return-value]


def _luma(rgb: tuple[int, int, int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _star(box: Rect) -> list[tuple[float, float]]:
    x0, y0, x1, _ = box
    r = (x1 - x0) / 2
    cx, cy = x0 + r, y0 + r
    return [
        (cx + (r if i % 2 == 0 else 0.4 * r) * math.sin(i * math.pi / 5),
         cy - (r if i % 2 == 0 else 0.4 * r) * math.cos(i * math.pi / 5))
        for i in range(10)
    ]


def _draw_object(img: Image.Image, d: ImageDraw.ImageDraw, o: Obj) -> None:
    """Paints one object inside its box with PIL primitives."""
    x0, y0, x1, y1 = o.box
    w, h = x1 - x0, y1 - y0
    cx, cy = x0 + w / 2, y0 + h / 2
    col = RGB[o.color]
    # PIL fills include the end pixel; draw to x1 - 1 / y1 - 1 so the paint stays inside the box.
    xe, ye = x1 - 1, y1 - 1
    kind = o.category
    if kind == "circle":
        d.ellipse((x0, y0, xe, ye), fill=col)
    elif kind == "square":
        d.rectangle((x0, y0, xe, ye), fill=col)
    elif kind == "triangle":
        d.polygon([(x0, ye), (xe, ye), (cx, y0)], fill=col)
    elif kind == "diamond":
        d.polygon([(cx, y0), (xe, cy), (cx, ye), (x0, cy)], fill=col)
    elif kind == "hexagon":
        q = w / 4
        d.polygon([(x0 + q, y0), (xe - q, y0), (xe, cy), (xe - q, ye), (x0 + q, ye), (x0, cy)], fill=col)
    elif kind == "star":
        d.polygon(_star((x0, y0, xe, ye)), fill=col)
    elif kind == "heart":
        r = 0.26 * w
        d.ellipse((x0, y0 + 0.3 * h - r, x0 + 2 * r, y0 + 0.3 * h + r), fill=col)
        d.ellipse((xe - 2 * r, y0 + 0.3 * h - r, xe, y0 + 0.3 * h + r), fill=col)
        d.polygon([(x0 + 0.02 * w, y0 + 0.42 * h), (xe - 0.02 * w, y0 + 0.42 * h), (cx, ye)], fill=col)
    elif kind == "arrow":
        d.rectangle((x0, cy - 0.16 * h, x0 + 0.6 * w, cy + 0.16 * h), fill=col)
        d.polygon([(x0 + 0.52 * w, y0), (xe, cy), (x0 + 0.52 * w, ye)], fill=col)
    elif kind == "cup":
        d.ellipse((x0 + 0.5 * w, y0 + 0.32 * h, xe, y0 + 0.74 * h), outline=col, width=max(2, round(0.09 * w)))
        d.polygon([(x0, y0 + 0.18 * h), (x0 + 0.72 * w, y0 + 0.18 * h), (x0 + 0.63 * w, ye), (x0 + 0.09 * w, ye)],
                  fill=col)
    elif kind == "house":
        d.rectangle((x0 + 0.12 * w, y0 + 0.44 * h, xe - 0.12 * w, ye), fill=col)
        d.polygon([(x0, y0 + 0.48 * h), (cx, y0), (xe, y0 + 0.48 * h)], fill=col)
        d.rectangle((cx - 0.1 * w, y0 + 0.7 * h, cx + 0.1 * w, ye), fill=_shade(col, 0.55))
    elif kind == "tree":
        d.rectangle((cx - 0.12 * w, y0 + 0.7 * w, cx + 0.12 * w, ye), fill=_shade(col, 0.55))
        d.ellipse((x0, y0, xe, y0 + w - 1), fill=col)
    elif kind == "moon":
        # A crescent: a disc minus an offset disc, cut in a mask so nothing outside the box is touched.
        mask = Image.new("L", (w, h), 0)
        md = ImageDraw.Draw(mask)
        md.ellipse((0, 0, w - 1, h - 1), fill=255)
        md.ellipse((0.38 * w, -0.08 * h, 1.3 * w, 0.92 * h), fill=0)
        img.paste(col, (x0, y0, x1, y1), mask)
    else:
        raise ValueError(f"Unknown category {kind!r}; add a drawing for it in hopvqa/scene.py.")


@lru_cache(maxsize=4096)
def _ink(category: str, width: int, height: int) -> int:
    """Pixels an object of this kind paints in a width x height box (drawn alone, no label)."""
    img = Image.new("RGB", (width, height), BACKGROUND)
    _draw_object(img, ImageDraw.Draw(img), Obj(0, category, "black", "small", (0, 0, width, height), None, None))
    return int((np.asarray(img) != BACKGROUND).any(axis=2).sum())


def drawn_area(obj: Obj) -> int:
    """How big `obj` looks: the pixels its shape paints (a star covers less of its box than a
    square), or a container's whole extent (it is seen as the region it encloses)."""
    x0, y0, x1, y1 = obj.box
    return obj.area if obj.is_container else _ink(obj.category, x1 - x0, y1 - y0)


def _surface(o: Obj) -> tuple[int, int, int]:
    """The color a container's contents stand on: a light tint of its own color, or open (shelf)."""
    tint = {"box": 0.9, "panel": 0.8}.get(o.category)
    return BACKGROUND if tint is None else _mix(RGB[o.color], BACKGROUND, tint)


def _draw_container(d: ImageDraw.ImageDraw, o: Obj, size: int) -> None:
    """A box (outline and lid line), a panel (tinted rounded board) or a shelf (posts and planks)."""
    x0, y0, x1, y1 = o.box
    xe, ye = x1 - 1, y1 - 1
    col = RGB[o.color]
    line = _px(3, size)
    top = y0 + _px(HEADER, size)
    if o.category == "box":
        d.rectangle((x0, y0, xe, ye), fill=_surface(o), outline=col, width=line)
        d.line((x0, top, xe, top), fill=col, width=max(1, line - 1))  # the lid
    elif o.category == "panel":
        d.rounded_rectangle((x0, y0, xe, ye), radius=_px(10, size), fill=_surface(o), outline=col,
                            width=max(1, line - 1))
    elif o.category == "shelf":
        d.rectangle((x0, y0, xe, top), fill=col)  # top board
        d.rectangle((x0, y0, x0 + line, ye), fill=col)
        d.rectangle((xe - line, y0, xe, ye), fill=col)
        # One plank under each row of cells; the rows follow from the generator's geometry.
        rows = _shelf_rows(o, size)
        cell_h = (y1 - top - _px(PAD, size)) / rows
        plank = _px(4, size)
        for r in range(1, rows):
            py = round(top + r * cell_h)
            d.rectangle((x0, py - plank, xe, py - 1), fill=col)
        d.rectangle((x0, round(top + rows * cell_h) - plank, xe, ye), fill=col)  # bottom plank and base
    else:
        raise ValueError(f"Unknown container {o.category!r}; add a drawing for it in hopvqa/scene.py.")


def _shelf_rows(o: Obj, size: int) -> int:
    """Rows of a shelf's grid, recovered from its height: cells are 94-108 px tall at 768 px, so the
    heights of one, two and three rows never overlap."""
    return max(1, round((o.box[3] - o.box[1] - _px(HEADER, size) - _px(PAD, size)) / _px(101, size)))


def _label_color(o: Obj, surface: tuple[int, int, int], scene_size: int) -> tuple[int, int, int]:
    """Ink for o's label: clear, except on every other small object (odd id), where it is faint."""
    faint = o.size == "small" and o.id % 2 == 1 and not o.is_container
    if o.is_container:
        if o.category == "shelf":  # printed on the shelf's top board
            return (250, 250, 250) if _luma(RGB[o.color]) < 150 else (20, 20, 20)
        return _shade(RGB[o.color], 0.55)
    if _prints_inside(o.category, o.size, o.box, o.label, scene_size):
        col = RGB[o.color]
        if faint:
            return _shade(col, 0.72) if _luma(col) >= 90 else _mix(col, (255, 255, 255), 0.3)
        return (255, 255, 255) if _luma(col) < 150 else (20, 20, 20)
    return _mix(surface, (0, 0, 0), 0.28) if faint else (40, 40, 40)


def render(scene: Scene) -> np.ndarray:
    """The scene as a (size, size, 3) uint8 RGB array; the same scene always gives the same pixels."""
    img = Image.new("RGB", (scene.size, scene.size), BACKGROUND)
    d = ImageDraw.Draw(img)
    for o in scene.objects:
        if o.is_container:
            _draw_container(d, o, scene.size)
    for o in scene.objects:
        if not o.is_container:
            _draw_object(img, d, o)
    for o in scene.objects:
        if o.label is not None:
            (x, y), px, anchor = _label_anchor(o.category, o.size, o.box, o.label, scene.size)
            surface = BACKGROUND if o.container is None else _surface(scene.get(o.container))
            d.text((x, y), o.label, font=_font(px), fill=_label_color(o, surface, scene.size), anchor=anchor)
    return np.array(img)
