"""Street-scene layouts for the embedded segmentation domains: where each class is, before any colour.

A layout is a road scene in one-point perspective: sky, a skyline of buildings, a road narrowing
towards a vanishing point, sidewalks beside it, grass or facades beyond, trees, and objects
(vehicles on the road, people on the sidewalks, signs at the kerb) whose size grows with their
distance below the horizon. Separating layout from appearance lets one scene be drawn in a source
and a target style (:func:`render_pair_example`), and lets a domain shift be a change of layout
statistics (co-occurrence, object scale) as well as of looks. Everything is vectorised numpy
over the pixel grid; the only Python loops are over the handful of objects, each confined to its
bounding box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SCENE_CLASSES: tuple[str, ...] = (
    "sky",
    "building",
    "road",
    "sidewalk",
    "vegetation",
    "vehicle",
    "person",
    "sign",
)
SKY, BUILDING, ROAD, SIDEWALK, VEGETATION, VEHICLE, PERSON, SIGN = range(len(SCENE_CLASSES))

Range = tuple[float, float]


@dataclass(frozen=True)
class LayoutParams:
    """Statistics of a city's scenes. Lengths are fractions of the image size; ranges are uniform.

    ``object_scale`` multiplies every object's size (a camera with another focal length or a
    city with smaller cars); ``person_on_road`` is the chance a person stands on the road instead
    of a sidewalk (co-occurrence); ``building_side`` the chance each roadside is lined by facades
    rather than grass.
    """

    horizon: Range = (0.36, 0.48)
    vanishing_x: Range = (0.35, 0.65)
    building_height: Range = (0.10, 0.34)
    building_width: Range = (0.08, 0.22)
    building_gap: float = 0.15
    building_side: float = 0.5
    road_half_width: Range = (0.26, 0.40)
    sidewalk_width: Range = (0.16, 0.26)
    trees: tuple[int, int] = (1, 4)
    tree_radius: Range = (0.05, 0.10)
    vehicles: tuple[int, int] = (1, 4)
    persons: tuple[int, int] = (2, 5)
    signs: tuple[int, int] = (1, 3)
    object_scale: float = 1.0
    person_on_road: float = 0.05


@dataclass(frozen=True)
class SceneObject:
    """A thing drawn over the stuff classes. ``x``/``bottom`` (foot point), ``width``/``height`` are
    fractions of the image size; ``box`` is its (y0, y1, x0, x1) pixel box, end-exclusive."""

    label: int
    instance: int
    depth: float  # 0 at the horizon .. 1 at the image bottom
    box: tuple[int, int, int, int]
    x: float
    bottom: float
    width: float
    height: float
    form: int = 0  # signs: 0 square, 1 round, 2 diamond


@dataclass
class SceneLayout:
    """Per-pixel maps of one scene; ``part`` marks secondary parts (windows, heads, poles) for shading."""

    label: np.ndarray  # (H, W) uint8 class ids (SCENE_CLASSES)
    instance: np.ndarray  # (H, W) int16, 0 = stuff, k = objects[k - 1]
    part: np.ndarray  # (H, W) bool: glass/wheels of a vehicle, head of a person, pole of a sign
    depth: np.ndarray  # (H, W) float32 nearness: 0 = horizon/sky .. 1 = image bottom
    building_index: np.ndarray  # (W,) int: which skyline block each column belongs to (-1 = gap)
    horizon: float  # row of the horizon in pixels
    road_centre: np.ndarray  # (H,) column of the road's centre line per row, as a fraction of the width
    objects: list[SceneObject] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.label.shape[0]


class LayoutGenerator:
    """Draws :class:`SceneLayout` s of one size; holds the pixel grids so each scene reuses them."""

    def __init__(self, size: int) -> None:
        if size < 16:
            raise ValueError(f"scene size must be >= 16 pixels, got {size}")
        self.size = size
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.v, self.u = np.meshgrid(coords, coords, indexing="ij")  # row (down), column (right), in [0, 1)

    def generate(self, params: LayoutParams, rng: np.random.Generator) -> SceneLayout:
        size, u, v = self.size, self.u, self.v
        label = np.full((size, size), SKY, dtype=np.uint8)
        road = _Road(
            horizon=rng.uniform(*params.horizon),
            vanish=rng.uniform(*params.vanishing_x),
            bottom_centre=rng.uniform(0.35, 0.65),
            half_road_bottom=rng.uniform(*params.road_half_width),
            walk_bottom=rng.uniform(*params.sidewalk_width),
        )
        building_index = self._skyline(params, rng, label, road.horizon)

        # perspective depth: 0 at the horizon .. 1 at the bottom
        t = np.clip((v - road.horizon) / (1.0 - road.horizon), 0.0, 1.0)
        ground = v >= road.horizon
        offset = u - road.centre(t)
        beyond_is_facade = rng.random(2) < params.building_side  # left, right of the road
        label[ground] = np.where(np.where(offset < 0, *beyond_is_facade), BUILDING, VEGETATION)[ground]
        label[ground & (np.abs(offset) < road.half_road(t) + road.walk(t))] = SIDEWALK
        label[ground & (np.abs(offset) < road.half_road(t))] = ROAD
        self._trees(params, rng, label, road.horizon)

        depth = np.where(ground, t, 0.0).astype(np.float32)
        instance = np.zeros((size, size), dtype=np.int16)
        part = np.zeros((size, size), dtype=bool)
        objects = sorted(_place_objects(params, rng, road), key=lambda placed: placed.depth)  # far ones first
        objects = [
            SceneObject(o.label, number, o.depth, self._box(o), o.x, o.bottom, o.width, o.height, o.form)
            for number, o in enumerate(objects, start=1)
        ]
        for obj in objects:
            self._paint(obj, instance, part)
        if objects:
            things = instance > 0
            label[things] = np.array([0] + [o.label for o in objects], dtype=np.uint8)[instance[things]]
            depth[things] = np.array([0.0] + [o.depth for o in objects], dtype=np.float32)[instance[things]]
        road_centre = road.centre(t[:, 0]).astype(np.float32)
        return SceneLayout(
            label, instance, part, depth, building_index, road.horizon * size, road_centre, objects
        )

    def _skyline(
        self, params: LayoutParams, rng: np.random.Generator, label: np.ndarray, horizon: float
    ) -> np.ndarray:
        """Blocks of random width and height standing on the horizon; returns each column's block."""
        widths = rng.uniform(*params.building_width, size=int(np.ceil(1.0 / params.building_width[0])) + 1)
        edges = np.cumsum(widths) - rng.uniform(0, widths[0])
        heights = rng.uniform(*params.building_height, size=len(widths))
        present = rng.random(len(widths)) >= params.building_gap
        column_block = np.searchsorted(edges, self.u[0])
        tops = horizon - np.where(present, heights, 0.0)[column_block]
        label[(self.v >= tops[None, :]) & (self.v < horizon)] = BUILDING
        return np.where(present[column_block], column_block, -1)

    def _trees(
        self, params: LayoutParams, rng: np.random.Generator, label: np.ndarray, horizon: float
    ) -> None:
        """Round crowns near the horizon (never over the road), each rasterised inside its own box."""
        count = rng.integers(params.trees[0], params.trees[1] + 1)
        s = self.size
        for cx, cy, radius, squash in zip(
            rng.uniform(0.0, 1.0, count), horizon + rng.uniform(-0.12, 0.04, count),
            rng.uniform(*params.tree_radius, size=count), rng.uniform(0.8, 1.3, count), strict=True,
        ):  # fmt: skip
            y0, y1 = max(int((cy - radius * squash) * s), 0), min(int((cy + radius * squash) * s) + 1, s)
            x0, x1 = max(int((cx - radius) * s), 0), min(int((cx + radius) * s) + 1, s)
            if y1 <= y0 or x1 <= x0:
                continue
            u, v = self.u[y0:y1, x0:x1], self.v[y0:y1, x0:x1]
            crown = (u - cx) ** 2 + ((v - cy) / squash) ** 2 < radius**2
            region = label[y0:y1, x0:x1]
            region[crown & (region != ROAD)] = VEGETATION

    def _box(self, obj: SceneObject) -> tuple[int, int, int, int]:
        s = self.size

        def pixel(value: float, rounding) -> int:
            return min(max(int(rounding(value * s)), 0), s)

        return (
            pixel(obj.bottom - obj.height, math.floor),
            pixel(obj.bottom, math.ceil),
            pixel(obj.x - obj.width / 2, math.floor),
            pixel(obj.x + obj.width / 2, math.ceil),
        )

    def _paint(self, obj: SceneObject, instance: np.ndarray, part: np.ndarray) -> None:
        """Rasterise one object; later (nearer) objects overwrite earlier ones.

        Rectangles (car body, cabin, windows, wheels; sign poles and square plates) are filled as
        slices; only round shapes evaluate a mask, and only inside the object's box.
        """
        x, bottom, width, height = obj.x, obj.bottom, obj.width, obj.height
        if obj.label == VEHICLE:
            for top, low, half, secondary in (
                (0.6, 0.0, 0.5, False), (1.0, 0.6, 0.36, False),  # body, cabin
                (0.92, 0.6, 0.30, True), (0.12, 0.0, 0.5, True),  # windows; wheels and the shadow beneath
            ):  # fmt: skip
                rows, cols = self._rect(
                    bottom - top * height, bottom - low * height, x - half * width, x + half * width
                )
                instance[rows, cols] = obj.instance
                part[rows, cols] = secondary
            return
        y0, y1, x0, x1 = obj.box
        if y1 <= y0 or x1 <= x0:
            return
        du = self.u[y0:y1, x0:x1] - x
        up = bottom - self.v[y0:y1, x0:x1]  # height above the object's foot point
        if obj.label == PERSON:
            torso = (du / (width / 2)) ** 2 + ((up - height * 0.4) / (height * 0.4)) ** 2 <= 1.0
            head = du**2 + (up - height * 0.88) ** 2 <= (height * 0.11) ** 2
            inside, secondary = torso | head, head
        else:  # a sign: a plate of side `width` on a pole
            pole_height = height - width
            rows, cols = self._rect(bottom - pole_height, bottom, x - width * 0.12, x + width * 0.12)
            if cols.stop - cols.start < 1:  # keep thin poles one pixel wide
                column = min(max(int(x * self.size), 0), self.size - 1)
                cols = slice(column, column + 1)
            instance[rows, cols] = obj.instance
            part[rows, cols] = True
            dx, dy = np.abs(du) / (width / 2), np.abs(up - pole_height - width / 2) / (width / 2)
            inside = (np.maximum(dx, dy) <= 1.0, dx**2 + dy**2 <= 1.0, dx + dy <= 1.2)[obj.form]
            secondary = False
        region = (slice(y0, y1), slice(x0, x1))
        instance[region][inside] = obj.instance
        part[region][inside] = secondary if isinstance(secondary, bool) else secondary[inside]

    def _rect(self, top: float, bottom: float, left: float, right: float) -> tuple[slice, slice]:
        """Rows and columns whose pixel centres lie in [top, bottom] x [left, right] (normalised units)."""
        s = self.size

        def span(low: float, high: float) -> slice:
            return slice(max(math.ceil(low * s - 0.5), 0), max(math.floor(high * s - 0.5) + 1, 0))

        return span(top, bottom), span(left, right)


@dataclass(frozen=True)
class _Road:
    """The road in normalised coordinates as a function of the perspective depth t in [0, 1]."""

    horizon: float
    vanish: float
    bottom_centre: float
    half_road_bottom: float
    walk_bottom: float

    def centre(self, t):
        return self.vanish + (self.bottom_centre - self.vanish) * t

    def half_road(self, t):
        return 0.015 + (self.half_road_bottom - 0.015) * t

    def walk(self, t):
        return 0.01 + self.walk_bottom * t

    def row(self, t: float) -> float:
        return self.horizon + t * (1.0 - self.horizon)


def _place_objects(params: LayoutParams, rng: np.random.Generator, road: _Road) -> list[SceneObject]:
    """Objects in normalised units (boxes and instance numbers are filled in by the generator).

    Each kind's random numbers are drawn as one array: per-object scalar draws cost more than the
    drawing itself at 64 px.
    """
    scale = params.object_scale
    objects = []

    def add(kind: int, t: float, x: float, width: float, height: float, form: int = 0) -> None:
        objects.append(SceneObject(kind, 0, t, (0, 0, 0, 0), x, road.row(t), width, height, form))

    count = rng.integers(params.vehicles[0], params.vehicles[1] + 1)
    for t, lane, size, aspect in rng.uniform((0.15, -0.6, 0.26, 0.55), (1.0, 0.6, 0.40, 0.8), (count, 4)):
        add(
            VEHICLE, t, road.centre(t) + road.half_road(t) * lane, t * size * scale, t * size * scale * aspect
        )
    count = rng.integers(params.persons[0], params.persons[1] + 1)
    for t, side, on_road, spot, size in rng.uniform(
        (0.15, 0, 0, 0.15, 0.42), (1.0, 1, 1, 0.85, 0.58), (count, 5)
    ):
        side = 1.0 if side < 0.5 else -1.0
        if on_road < params.person_on_road:
            x = road.centre(t) + side * road.half_road(t) * spot
        else:
            x = road.centre(t) + side * (road.half_road(t) + road.walk(t) * spot)
        add(PERSON, t, x, t * size * scale * 0.32, t * size * scale)
    count = rng.integers(params.signs[0], params.signs[1] + 1)
    for t, side, size, form in rng.uniform((0.2, 0, 0.18, 0), (0.95, 1, 0.26, 3), (count, 4)):
        side = 1.0 if side < 0.5 else -1.0
        plate = t * size * scale
        add(
            SIGN,
            t,
            road.centre(t) + side * (road.half_road(t) + road.walk(t) * 0.9),
            plate,
            plate + t * 0.5 * scale,
            int(form),
        )
    return objects
