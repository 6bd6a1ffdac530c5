"""Conditions that change a scene's look unevenly across the image: the heart of each domain shift.

Real shifts are rarely uniform: fog thickens with distance and drifts in banks, a street is dark
except under its lamps, snow settles on sidewalks and grass before roads, one side of a street lies
in shadow. Each effect here is modulated by a *strength field* in [0, 1] over the image (a one-sided
ramp with a soft edge, or low-frequency patches) and often by the class and depth of each pixel,
so how transferable a region is varies within every target image. Effects act on float RGB in
[0, 1] and never touch the labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from data_modules.segmentation.synthetic_layout import (
    BUILDING,
    ROAD,
    SCENE_CLASSES,
    SIDEWALK,
    SKY,
    VEGETATION,
    VEHICLE,
    SceneLayout,
    SceneObject,
)
from data_modules.segmentation.synthetic_render import direction_ramp, smooth_noise, unit_noise

FIELD_KINDS: tuple[str, ...] = ("side", "patches", "uniform")
Grid = tuple[np.ndarray, np.ndarray]  # (u, v): column and row coordinates in [0, 1)


def strength_field(kind: str, rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """(H, W) float32 in [0, 1]: where an effect is strong.

    ``side``: one side of the image along a random direction, with a soft edge at a random offset;
    ``patches``: a few low-frequency blobs (fog banks, districts); ``uniform``: 1 everywhere (for
    ablations: the same shift without its spatial heterogeneity).
    """
    u, v = grid
    if kind == "side":
        edge = (direction_ramp(rng, u, v) - rng.uniform(-0.15, 0.15)) / rng.uniform(0.05, 0.1)
    elif kind == "patches":
        edge = (smooth_noise(rng, u.shape[0], 3) - 0.5) / 0.07
    elif kind == "uniform":
        return np.ones_like(u)
    else:
        raise KeyError(f"unknown strength field {kind!r}; choose one of {FIELD_KINDS}")
    return (1.0 / (1.0 + np.exp(-edge))).astype(np.float32)


class Effect(Protocol):
    def __call__(
        self, image: np.ndarray, layout: SceneLayout, grid: Grid, rng: np.random.Generator
    ) -> np.ndarray: ...


def _gaussians(
    u: np.ndarray, v: np.ndarray, centres: np.ndarray, radii: np.ndarray, amplitudes: np.ndarray
) -> np.ndarray:
    """Sum of isotropic Gaussian blobs: (K, 2) centres (x, y), (K,) radii and amplitudes -> (H, W)."""
    if len(centres) == 0:
        return np.zeros_like(u)
    d2 = (u[None] - centres[:, 0, None, None]) ** 2 + (v[None] - centres[:, 1, None, None]) ** 2
    return (amplitudes[:, None, None] * np.exp(-d2 / (2.0 * radii[:, None, None] ** 2))).sum(axis=0)


def _add_headlights(light: np.ndarray, car: SceneObject, grid: Grid) -> None:
    """Two bright spots at a car's front corners, computed only in the box around the car."""
    y0, y1, x0, x1 = car.box
    size = light.shape[0]
    margin = max(2, (x1 - x0) // 4)
    y0, y1, x0, x1 = max(y0 - margin, 0), min(y1 + margin, size), max(x0 - margin, 0), min(x1 + margin, size)
    if y1 <= y0 or x1 <= x0:
        return
    u, v = grid[0][y0:y1, x0:x1], grid[1][y0:y1, x0:x1]
    centres = np.array([[car.x - 0.33 * car.width, car.bottom - 0.25 * car.height],
                        [car.x + 0.33 * car.width, car.bottom - 0.25 * car.height]])  # fmt: skip
    radius = np.full(2, max(0.1 * car.width, 0.6 / size))
    light[y0:y1, x0:x1] += _gaussians(u, v, centres, radius, np.full(2, 1.2))


@dataclass(frozen=True)
class Night:
    """Darkness deepening towards one side, bluish cast, street-lamp pools, car lights, lit windows, and
    sensor noise that grows where it is dark (a camera raising its gain)."""

    field: str = "side"
    ambient: tuple[float, float] = (0.5, 0.1)  # light level where the field is 0 and where it is 1
    lamps: tuple[int, int] = (1, 3)
    noise: float = 0.06

    def __call__(
        self, image: np.ndarray, layout: SceneLayout, grid: Grid, rng: np.random.Generator
    ) -> np.ndarray:
        u, v = grid
        strength = strength_field(self.field, rng, grid)
        ambient = np.float32(self.ambient[0]) + np.float32(self.ambient[1] - self.ambient[0]) * strength
        ambient[layout.label == SKY] *= 0.45
        count = rng.integers(self.lamps[0], self.lamps[1] + 1)
        horizon = layout.horizon / layout.size
        lamp_centres = np.stack([rng.uniform(0, 1, count), horizon + rng.uniform(-0.05, 0.3, count)], axis=1)
        light = _gaussians(u, v, lamp_centres, rng.uniform(0.06, 0.14, count), rng.uniform(0.4, 0.8, count))
        light = light.astype(np.float32)
        for car in (o for o in layout.objects if o.label == VEHICLE):
            _add_headlights(light, car, grid)
        cell = max(layout.size // 21, 1)
        lit = rng.random((layout.size // cell + 1,) * 2) > 0.8
        lit = lit.repeat(cell, 0).repeat(cell, 1)[: layout.size, : layout.size] & (layout.label == BUILDING)
        light[lit] += 0.5
        cast = np.array([0.75, 0.85, 1.15], dtype=np.float32)
        warm = np.array([1.0, 0.85, 0.6], dtype=np.float32)
        image = image * ambient[..., None] * cast + light[..., None] * warm * (0.25 + 0.75 * image)
        gain = self.noise * (1.0 - np.clip(ambient + light, 0.0, 1.0))
        return image + gain[..., None] * unit_noise(rng, image.shape)


@dataclass(frozen=True)
class Fog:
    """Koschmieder haze: transmission exp(-beta * distance) with beta varying over the image (fog
    banks), so far pixels inside a bank vanish into the airlight while near ones stay clear."""

    field: str = "patches"
    density: tuple[float, float] = (0.3, 3.5)  # beta where the field is 0 and where it is 1
    blur: float = 1.2  # scattering blur (pixels at 64 px) where the fog is thick

    def __call__(
        self, image: np.ndarray, layout: SceneLayout, grid: Grid, rng: np.random.Generator
    ) -> np.ndarray:
        strength = strength_field(self.field, rng, grid)
        beta = self.density[0] + (self.density[1] - self.density[0]) * strength
        transmission = np.exp(-beta * (1.0 - layout.depth))[..., None]
        airlight = rng.uniform(0.72, 0.86) * np.array([0.98, 1.0, 1.03], dtype=np.float32)
        blurred = cv2.GaussianBlur(image, (0, 0), self.blur * layout.size / 64.0)
        scattered = image * transmission + blurred * (1.0 - transmission)
        return scattered * transmission + airlight * (1.0 - transmission)


@dataclass(frozen=True)
class SnowCover:
    """Snow settling by class (sidewalks and grass first, roads least) and far more on one side of
    the image, plus falling flakes; covered pixels of different classes become alike."""

    field: str = "side"
    cover: tuple[float, ...] = (0.0, 0.15, 0.2, 0.9, 0.7, 0.25, 0.0, 0.1)  # per class, SCENE_CLASSES order
    flakes: tuple[float, float] = (0.005, 0.03)

    def __post_init__(self) -> None:
        if len(self.cover) != len(SCENE_CLASSES):
            raise ValueError(f"cover needs one value per class ({len(SCENE_CLASSES)}), got {len(self.cover)}")

    def __call__(
        self, image: np.ndarray, layout: SceneLayout, grid: Grid, rng: np.random.Generator
    ) -> np.ndarray:
        size = layout.size
        strength = strength_field(self.field, rng, grid)
        coverage = np.asarray(self.cover, dtype=np.float32)[layout.label] * (0.2 + 0.9 * strength)
        texture = 0.6 * smooth_noise(rng, size, max(size // 6, 2)) + 0.4 * rng.random(
            (size, size), dtype=np.float32
        )
        snow = texture < coverage
        white = np.array([0.9, 0.92, 0.96], dtype=np.float32)
        image = np.where(snow[..., None], white * (0.92 + 0.08 * texture[..., None]), image)
        density = self.flakes[0] + (self.flakes[1] - self.flakes[0]) * strength
        flakes = rng.random((size, size), dtype=np.float32) < density
        image[flakes] = 0.5 * image[flakes] + 0.5
        return image


@dataclass(frozen=True)
class CastShadows:
    """A hard-edged shadow (a building out of frame) over one side, sunlit glare on the other."""

    field: str = "side"
    darkness: float = 0.5
    glare: float = 0.12

    def __call__(
        self, image: np.ndarray, layout: SceneLayout, grid: Grid, rng: np.random.Generator
    ) -> np.ndarray:
        shade = strength_field(self.field, rng, grid) ** 4  # sharpen the edge: shadows are crisp
        shade[layout.label == SKY] = 0.0
        tint = np.array([0.9, 0.95, 1.12], dtype=np.float32)
        shadowed = image * (1.0 - self.darkness) * tint
        sunlit = image + self.glare * (1.0 - image)
        return sunlit * (1.0 - shade[..., None]) + shadowed * shade[..., None]


@dataclass(frozen=True)
class FacadeSwap:
    """A district of another material: inside the field's patches, façades turn to blue glass and
    sidewalks to dark cobbles; other classes and the rest of the image keep the domain's look."""

    field: str = "patches"
    glass: tuple[float, float, float] = (0.38, 0.52, 0.62)
    cobbles: tuple[float, float, float] = (0.40, 0.34, 0.30)

    def __call__(
        self, image: np.ndarray, layout: SceneLayout, grid: Grid, rng: np.random.Generator
    ) -> np.ndarray:
        u, v = grid
        district = strength_field(self.field, rng, grid)
        reflection = 0.8 + 0.4 * smooth_noise(rng, layout.size, 2) + 0.1 * np.cos(u * layout.size * 1.5)
        stones = ((u * layout.size / 2.0) % 1.0 < 0.3) | ((v * layout.size / 2.0) % 1.0 < 0.3)
        for cls, colour, pattern in (
            (BUILDING, self.glass, reflection),
            (SIDEWALK, self.cobbles, 1.0 - 0.3 * stones),
        ):
            where = layout.label == cls
            weight = district[where][:, None]
            material = np.asarray(colour, dtype=np.float32) * pattern[where][:, None]
            image[where] = image[where] * (1.0 - weight) + material * weight
        return image


@dataclass(frozen=True)
class WetRoad:
    """Rain: a wet road and sidewalk mirroring the scene above (more on one side, where it pours),
    darker desaturated light and diagonal streaks."""

    field: str = "side"
    reflectance: float = 0.6
    streaks: tuple[float, float] = (0.01, 0.05)

    def __call__(
        self, image: np.ndarray, layout: SceneLayout, grid: Grid, rng: np.random.Generator
    ) -> np.ndarray:
        size = layout.size
        strength = strength_field(self.field, rng, grid)
        rows = np.clip(2.0 * layout.horizon - np.arange(size), 0, size - 1).astype(np.intp)
        mirrored = image[rows]
        wet_classes = np.zeros(len(SCENE_CLASSES), dtype=bool)
        wet_classes[[ROAD, SIDEWALK, VEGETATION]] = True
        wet = wet_classes[layout.label] & (layout.depth > 0)
        wet_factor = np.where(wet, self.reflectance * strength, 0.0)[..., None]
        grey = image.mean(axis=2, keepdims=True)
        image = 0.75 * (0.7 * image + 0.3 * grey)
        image = image * (1.0 - wet_factor) + 0.8 * mirrored * wet_factor
        density = self.streaks[0] + (self.streaks[1] - self.streaks[0]) * strength
        drops = (rng.random((size, size), dtype=np.float32) < density).astype(np.float32)
        length = max(3, size // 12)
        kernel = np.eye(length, dtype=np.float32)[:, ::-1] / 2.0
        streaks = cv2.filter2D(drops, -1, kernel)
        return image + 0.35 * np.clip(streaks, 0.0, 1.0)[..., None]
