"""Appearance of the embedded street scenes: colours and textures per class, drawn over a layout.

An :class:`Appearance` is a domain's look under even conditions (palette, how textured each class
is, the camera's noise and blur); spatially uneven conditions such as fog banks or darkness on one
side are :mod:`~data_modules.segmentation.synthetic_effects`, applied afterwards. Images stay float
RGB in [0, 1] until :func:`finish` adds the camera and quantises to uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data_modules.segmentation.synthetic_layout import (
    BUILDING,
    PERSON,
    ROAD,
    SCENE_CLASSES,
    SIDEWALK,
    SIGN,
    SKY,
    VEGETATION,
    VEHICLE,
    SceneLayout,
)

RGB = tuple[float, float, float]
# Per class in SCENE_CLASSES order: a daylight city in muted, camera-like colours.
DAY_PALETTE: tuple[RGB, ...] = (
    (0.55, 0.72, 0.92), (0.62, 0.56, 0.50), (0.36, 0.36, 0.38), (0.66, 0.64, 0.60),
    (0.26, 0.48, 0.20), (0.50, 0.50, 0.52), (0.45, 0.35, 0.30), (0.55, 0.55, 0.58),
)  # fmt: skip
# Secondary parts: vehicle glass and wheels, a person's face, a sign's pole.
SECONDARY_COLOURS: dict[int, RGB] = {
    VEHICLE: (0.12, 0.14, 0.17),
    PERSON: (0.85, 0.66, 0.52),
    SIGN: (0.50, 0.50, 0.52),
}
VEHICLE_COLOURS: tuple[RGB, ...] = (
    (0.80, 0.80, 0.82), (0.15, 0.15, 0.17), (0.55, 0.56, 0.58), (0.70, 0.12, 0.10), (0.12, 0.22, 0.55),
    (0.85, 0.85, 0.80), (0.30, 0.32, 0.30),
)  # fmt: skip
CLOTHING_COLOURS: tuple[RGB, ...] = (
    (0.10, 0.10, 0.12), (0.20, 0.25, 0.45), (0.55, 0.15, 0.15), (0.45, 0.40, 0.30), (0.80, 0.78, 0.70),
)  # fmt: skip
SIGN_COLOURS: tuple[RGB, ...] = (
    (0.80, 0.10, 0.10),
    (0.10, 0.30, 0.75),
    (0.95, 0.80, 0.10),
    (0.92, 0.92, 0.92),
)


@dataclass(frozen=True)
class Appearance:
    """How a domain draws each class.

    Args:
        palette: base colour per class (:data:`SCENE_CLASSES` order), RGB in [0, 1].
        palette_jitter: per image and class, colour varies by up to this much (illumination, paint).
        texture: strength of the class textures (window grids, asphalt grain, paving, leaves,
            clouds, per-building tint); 0 draws flat colours, as in a simple game engine.
        window_period: spacing of façade windows as a fraction of the image size.
        vehicle_colours / clothing_colours / sign_colours: what instances are painted in.
        lighting_ramp: amplitude of a smooth brightness gradient in a random direction (the sun).
        noise: standard deviation of per-pixel sensor noise.
        blur: Gaussian blur sigma in pixels at 64 px (scaled with the image size): optics.
    """

    palette: tuple[RGB, ...] = DAY_PALETTE
    palette_jitter: float = 0.06
    texture: float = 1.0
    window_period: float = 0.07
    vehicle_colours: tuple[RGB, ...] = VEHICLE_COLOURS
    clothing_colours: tuple[RGB, ...] = CLOTHING_COLOURS
    sign_colours: tuple[RGB, ...] = SIGN_COLOURS
    lighting_ramp: float = 0.15
    noise: float = 0.015
    blur: float = 0.0

    def __post_init__(self) -> None:
        if len(self.palette) != len(SCENE_CLASSES):
            raise ValueError(
                f"palette needs {len(SCENE_CLASSES)} colours (one per class), got {len(self.palette)}"
            )

    def with_colours(self, **colours: RGB) -> Appearance:
        """A copy with some classes recoloured by name, e.g. ``with_colours(vegetation=(.5, .4, .3))``."""
        palette = list(self.palette)
        for name, colour in colours.items():
            palette[SCENE_CLASSES.index(name)] = colour
        return Appearance(**{**self.__dict__, "palette": tuple(palette)})


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) float32 noise in about [0, 1] that varies over roughly ``cells`` blobs per side."""
    coarse = rng.random((cells + 1, cells + 1), dtype=np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)


def unit_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance uniform noise: looks like Gaussian grain at a fifth of the cost."""
    return (rng.random(shape, dtype=np.float32) - 0.5) * np.float32(np.sqrt(12.0))


def direction_ramp(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A linear ramp in [-0.5, 0.5] (about) along a random direction; the basis of one-sided effects."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    return ((u - 0.5) * np.cos(angle) + (v - 0.5) * np.sin(angle)).astype(np.float32)


class SceneRenderer:
    """Draws layouts of one size; holds the pixel grids every texture is computed from."""

    def __init__(self, size: int) -> None:
        self.size = size
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.v, self.u = np.meshgrid(coords, coords, indexing="ij")
        self.paving = (((self.u * size / 4.0) % 1.0 < 0.2) | ((self.v * size / 3.0) % 1.0 < 0.2)).astype(
            np.float32
        )
        self._window_grids: dict[float, np.ndarray] = {}

    def render(self, layout: SceneLayout, look: Appearance, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) float32 RGB in [0, 1] under even lighting, before camera noise."""
        label = layout.label
        palette = np.asarray(look.palette, dtype=np.float32)
        palette *= 1.0 + rng.uniform(-look.palette_jitter, look.palette_jitter, palette.shape).astype(
            np.float32
        )
        image = palette[label]
        if look.texture > 0:
            self._texture(image, layout, look, rng)
        self._paint_objects(image, layout, look, rng)
        if look.lighting_ramp > 0:
            image *= (
                1.0 + np.float32(look.lighting_ramp * 2.0) * direction_ramp(rng, self.u, self.v)[..., None]
            )
        return image

    def _texture(
        self, image: np.ndarray, layout: SceneLayout, look: Appearance, rng: np.random.Generator
    ) -> None:
        label, size, strength = layout.label, self.size, look.texture
        grain = unit_noise(rng, (size, size))
        blobs = smooth_noise(rng, size, 4)
        shade = np.ones((size, size), dtype=np.float32)
        horizon = max(layout.horizon / size, 1e-3)
        sky = 0.85 + 0.25 * np.minimum(self.v / horizon, 1.0) + 0.15 * (blobs - 0.5)
        np.copyto(shade, sky, where=label == SKY)
        block_tint = 1.0 + 0.25 * strength * rng.uniform(-1.0, 1.0, layout.building_index.max(initial=0) + 2)
        facade = block_tint[layout.building_index].astype(np.float32) * (
            1.0 - 0.45 * strength * self._windows(look)
        )
        np.copyto(shade, facade, where=label == BUILDING)
        lane = np.abs(self.u - layout.road_centre[:, None]) < 0.006 + 0.012 * layout.depth
        dashes = (np.sqrt(layout.depth) * 7.0) % 1.0 < 0.5
        asphalt = np.where(lane & dashes, 1.0 + 1.3 * strength, 1.0 + 0.08 * strength * grain)
        np.copyto(shade, asphalt, where=label == ROAD)
        np.copyto(
            shade, 1.0 - 0.12 * strength * self.paving + 0.03 * strength * grain, where=label == SIDEWALK
        )
        np.copyto(shade, 1.0 + strength * (0.15 * grain + 0.5 * (blobs - 0.5)), where=label == VEGETATION)
        image *= shade[..., None]

    def _windows(self, look: Appearance) -> np.ndarray:
        """(H, W) 0/1 façade window grid for this look's window spacing (computed once per spacing)."""
        period = look.window_period
        if period not in self._window_grids:
            across = np.abs((self.u / period) % 1.0 - 0.5) < 0.22
            up = np.abs((self.v / (period * 1.2)) % 1.0 - 0.5) < 0.2
            self._window_grids[period] = (across & up).astype(np.float32)
        return self._window_grids[period]

    def _paint_objects(
        self, image: np.ndarray, layout: SceneLayout, look: Appearance, rng: np.random.Generator
    ) -> None:
        """Each object its own colour (cars, clothes, sign plates); parts in their class's secondary colour."""
        if not layout.objects:
            return
        choices = {VEHICLE: look.vehicle_colours, PERSON: look.clothing_colours, SIGN: look.sign_colours}
        colours = np.zeros((len(layout.objects) + 1, 3), dtype=np.float32)
        for obj in layout.objects:
            options = choices[obj.label]
            colours[obj.instance] = options[rng.integers(len(options))]
        colours *= 1.0 + rng.uniform(-look.palette_jitter, look.palette_jitter, colours.shape).astype(
            np.float32
        )
        things = layout.instance > 0
        image[things] = colours[layout.instance[things]]
        secondary = np.zeros((len(SCENE_CLASSES), 3), dtype=np.float32)
        for cls, colour in SECONDARY_COLOURS.items():
            secondary[cls] = colour
        image[layout.part] = secondary[layout.label[layout.part]]


def finish(image: np.ndarray, look: Appearance, rng: np.random.Generator) -> np.ndarray:
    """Camera: optional blur and sensor noise, then clip and quantise to (H, W, 3) uint8."""
    size = image.shape[0]
    if look.blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), look.blur * size / 64.0)
    if look.noise > 0:
        image = image + look.noise * unit_noise(rng, image.shape)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
