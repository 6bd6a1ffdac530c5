"""The embedded source -> target domain pairs: named, deterministic, drawn on the fly.

A domain is a layout distribution (:class:`LayoutParams`), an even-lighting look
(:class:`Appearance`) and a tuple of spatially uneven effects; a pair is two domains sharing the 8
:data:`SCENE_CLASSES`. The pairs cover the shift kinds of the real benchmarks (synthetic -> real,
day -> night, clear -> adverse weather, city -> city) so a benchmark can average over them the way
the paper averages over dataset pairs. None is tuned towards any adaptation method: each only
imitates how its real counterpart differs, unevenly, as real conditions do.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from data_modules.segmentation.synthetic_effects import (
    CastShadows,
    Effect,
    FacadeSwap,
    Fog,
    Night,
    SnowCover,
    WetRoad,
)
from data_modules.segmentation.synthetic_layout import SCENE_CLASSES, LayoutGenerator, LayoutParams
from data_modules.segmentation.synthetic_render import Appearance, SceneRenderer, finish

DOMAIN_CODES: dict[str, int] = {"source": 0, "target": 1}
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SyntheticDomain:
    """One domain: what its scenes contain, how they look, and which uneven conditions apply."""

    layout: LayoutParams = LayoutParams()
    appearance: Appearance = Appearance()
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class SyntheticPair:
    """A named source -> target pair over :data:`SCENE_CLASSES`."""

    name: str
    description: str
    source: SyntheticDomain
    target: SyntheticDomain
    class_names: tuple[str, ...] = SCENE_CLASSES

    def domain(self, role: str) -> SyntheticDomain:
        if role not in DOMAIN_CODES:
            raise KeyError(f"domain must be one of {tuple(DOMAIN_CODES)}, got {role!r}")
        return self.source if role == "source" else self.target


# A flat-shaded game engine: saturated colours, no texture, no noise, few car paints.
_GAME_LOOK = Appearance(
    palette=(
        (0.35, 0.65, 1.00), (0.75, 0.60, 0.45), (0.30, 0.30, 0.30), (0.80, 0.75, 0.65),
        (0.15, 0.65, 0.15), (0.50, 0.50, 0.55), (0.60, 0.30, 0.20), (0.60, 0.60, 0.60),
    ),
    palette_jitter=0.03, texture=0.0, lighting_ramp=0.0, noise=0.0,
    vehicle_colours=((0.85, 0.10, 0.10), (0.10, 0.20, 0.80), (0.90, 0.90, 0.90)),
)  # fmt: skip
# A real camera: textured classes, varied paints, a little blur and noise.
_CAMERA_LOOK = Appearance(palette_jitter=0.1, texture=1.0, lighting_ramp=0.2, noise=0.025, blur=0.5)
# City B: brick façades, pale concrete road and paving, darker trees, denser windows.
_CITY_B_LOOK = Appearance(window_period=0.05).with_colours(
    building=(0.58, 0.33, 0.25),
    road=(0.50, 0.49, 0.46),
    sidewalk=(0.52, 0.47, 0.43),
    vegetation=(0.20, 0.36, 0.18),
)
# City B is denser and taller, seen with a wider lens (smaller objects), with people crossing the road.
_CITY_B_LAYOUT = LayoutParams(
    horizon=(0.30, 0.42), building_height=(0.18, 0.30), building_gap=0.05, building_side=0.8,
    road_half_width=(0.20, 0.32), sidewalk_width=(0.12, 0.20), trees=(0, 2), vehicles=(2, 5), persons=(3, 7),
    signs=(2, 4), object_scale=0.75, person_on_road=0.3,
)  # fmt: skip
# Winter light: grey overcast sky, bare brownish trees, darker wet asphalt, flatter lighting.
_WINTER_LOOK = Appearance(lighting_ramp=0.05).with_colours(
    sky=(0.72, 0.74, 0.78), vegetation=(0.36, 0.32, 0.27), road=(0.28, 0.28, 0.30)
)
_RAIN_LOOK = Appearance(lighting_ramp=0.05, blur=0.6, noise=0.02).with_colours(sky=(0.55, 0.58, 0.62))

SYNTHETIC_PAIRS: dict[str, SyntheticPair] = {
    pair.name: pair
    for pair in (
        SyntheticPair(
            "day_to_night",
            "daylight -> night: darkness deepening towards one side, lamp pools, car lights, lit windows, "
            "gain noise in the dark",
            SyntheticDomain(),
            SyntheticDomain(effects=(Night(),)),
        ),
        SyntheticPair(
            "clear_to_fog",
            "clear -> fog: depth-dependent haze whose density drifts in banks across the image",
            SyntheticDomain(),
            SyntheticDomain(effects=(Fog(),)),
        ),
        SyntheticPair(
            "synthetic_to_real",
            "flat-shaded game colours -> textured camera images with a hard cast shadow over one side",
            SyntheticDomain(appearance=_GAME_LOOK),
            SyntheticDomain(appearance=_CAMERA_LOOK, effects=(CastShadows(),)),
        ),
        SyntheticPair(
            "city_a_to_city_b",
            "city A -> city B: taller denser streets, smaller objects, people on the road, brick and "
            "concrete, and a glass-and-cobble district in part of each image",
            SyntheticDomain(),
            SyntheticDomain(layout=_CITY_B_LAYOUT, appearance=_CITY_B_LOOK, effects=(FacadeSwap(),)),
        ),
        SyntheticPair(
            "summer_to_winter",
            "summer -> winter: overcast sky, bare trees, snow settling by class and mostly on one side, flakes",
            SyntheticDomain(),
            SyntheticDomain(appearance=_WINTER_LOOK, effects=(SnowCover(),)),
        ),
        SyntheticPair(
            "dry_to_rain",
            "dry -> rain: dim desaturated light, wet ground mirroring the scene where it pours, streaks",
            SyntheticDomain(),
            SyntheticDomain(appearance=_RAIN_LOOK, effects=(WetRoad(),)),
        ),
    )
}


def get_pair(name: str) -> SyntheticPair:
    if name not in SYNTHETIC_PAIRS:
        raise KeyError(f"unknown synthetic pair {name!r}; choose one of {tuple(SYNTHETIC_PAIRS)}")
    return SYNTHETIC_PAIRS[name]


class SceneSampler:
    """Renders scenes of one size; keeps the pixel grids so each image only pays for its own pixels."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.layouts = LayoutGenerator(size)
        self.renderer = SceneRenderer(size)

    def draw(
        self, domain: SyntheticDomain, layout_params: LayoutParams, streams: list[np.random.Generator]
    ) -> tuple:
        """(image uint8 (H, W, 3), mask uint8 (H, W)) from three independent streams: layout, look, effects.

        ``layout_params`` is separate from ``domain`` so one scene can be drawn in another domain's
        style (:func:`render_pair_example`).
        """
        layout_rng, look_rng, effect_rng = streams
        layout = self.layouts.generate(layout_params, layout_rng)
        image = self.renderer.render(layout, domain.appearance, look_rng)
        grid = (self.renderer.u, self.renderer.v)
        for effect in domain.effects:
            image = effect(image, layout, grid, effect_rng)
        return finish(image, domain.appearance, effect_rng), layout.label

    def sample(self, pair: SyntheticPair, domain: str, split: str, index: int, seed: int) -> tuple:
        """Item ``index`` of a domain's split: a pure function of (pair, domain, split, index, seed)."""
        if split not in SPLIT_CODES:
            raise KeyError(f"synthetic split must be one of {tuple(SPLIT_CODES)}, got {split!r}")
        chosen = pair.domain(domain)
        key = (seed, zlib.crc32(pair.name.encode()), DOMAIN_CODES[domain], SPLIT_CODES[split], index)
        return self.draw(chosen, chosen.layout, _streams(key))


def _streams(key: tuple[int, ...]) -> list[np.random.Generator]:
    """Independent generators for layout, look and effects (so two styles can share a layout)."""
    return [np.random.default_rng((*key, stream)) for stream in range(3)]


def render_pair_example(pair: str, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same scene (the source's layout statistics) drawn in the source and the target style.

    Returns ``(source_image, target_image, mask)``: two (H, W, 3) uint8 images and one (H, W) uint8
    mask of :data:`SCENE_CLASSES` ids. The even-lighting randomness (colour jitter, textures) is
    shared too, so the difference between the two images is the domain shift alone.
    """
    chosen = get_pair(pair)
    sampler = SceneSampler(size)
    key = (seed, zlib.crc32(chosen.name.encode()), 7)
    source_image, mask = sampler.draw(chosen.source, chosen.source.layout, _streams(key))
    target_image, _ = sampler.draw(chosen.target, chosen.source.layout, _streams(key))
    return source_image, target_image, mask
