"""Vectorised numpy rendering of one synthetic creature on a cluttered, unevenly lit background.

Geometry lives in *creature units* (body about 0.3 wide) so one description renders at any image
size. Every part is an implicit shape (ellipses, tapered triangles, bars) evaluated on the pixel
grid of a window around the creature, in the part's own rotated frame, so patterns (stripes, dots)
follow the part. What varies per image, all drawn from the caller's generator: pose (position,
scale, rotation, mirror), small jitter of each part's size and colour, pattern phase, background
texture, clutter shapes that reuse the creature palette and patterns (so a colour or a stripe
anywhere in the image is not proof of a species: the model has to find the part), and lighting
(brightness, tint, a gradient, noise). Part masks are the *visible* pixels of each part after
occlusion (legs and tail sit behind the body, the wing and head in front), so they partition the
creature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_modules.species.species_catalogue import PART_NAMES, Species

COLOUR_RGB: dict[str, tuple[float, float, float]] = {
    "red": (200.0, 40.0, 45.0),
    "orange": (235.0, 130.0, 35.0),
    "yellow": (230.0, 205.0, 50.0),
    "green": (70.0, 160.0, 60.0),
    "teal": (35.0, 150.0, 145.0),
    "blue": (45.0, 85.0, 200.0),
    "purple": (135.0, 65.0, 175.0),
    "brown": (125.0, 85.0, 50.0),
}
DRAW_ORDER: tuple[str, ...] = ("legs", "tail", "body", "wing", "head")  # back to front
MIN_RENDER_SIZE = 16  # px: below this a creature's parts are smaller than a pixel
CREATURE_RADIUS = 0.8  # creature units; bounds every part for any shape, jitter and rotation
_BODY = {"slim": (0.34, 0.15), "round": (0.28, 0.21), "long": (0.42, 0.155)}
_HEAD = {"round": (0.13, 0.13), "oval": (0.17, 0.105), "crested": (0.12, 0.12)}
_WING = {"short": (0.15, 0.075), "long": (0.27, 0.075), "broad": (0.20, 0.12)}
_TAIL = {"pointed": (0.26, 0.08), "fan": (0.24, 0.15), "forked": (0.28, 0.13)}  # length, half-width
_LEGS = {"short": (0.17, 0.05), "long": (0.30, 0.045), "thick": (0.19, 0.085)}  # length, width


@dataclass(frozen=True)
class RenderedCreature:
    image: np.ndarray  # (S, S, 3) uint8
    part_masks: np.ndarray  # (P, S, S) bool, visible pixels of each part in PART_NAMES order


def _rotate(u: np.ndarray, v: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of the points (u, v) in a frame rotated by ``angle``."""
    c, s = np.cos(angle), np.sin(angle)
    return u * c + v * s, v * c - u * s


def _ellipse(u: np.ndarray, v: np.ndarray, rx: float, ry: float) -> np.ndarray:
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _tail(u: np.ndarray, v: np.ndarray, shape: str, length: float, half_width: float) -> np.ndarray:
    """Tapered shape from the attachment (u=0) to the tip (u=-length)."""
    t = -u / length
    inside = (t >= 0.0) & (t <= 1.0)
    if shape == "pointed":
        return inside & (np.abs(v) <= half_width * (1.0 - t) + 0.01)
    fan = inside & (np.abs(v) <= 0.03 + (half_width - 0.03) * t)
    if shape == "fan":
        return fan
    notch = np.abs(v) < np.clip((t - 0.55) / 0.45, 0.0, None) * 0.7 * half_width
    return fan & ~notch


def _pattern(u: np.ndarray, v: np.ndarray, pattern: str, rng: np.random.Generator) -> np.ndarray | None:
    """Where the secondary colour goes, in part-local creature units; None for solid."""
    if pattern == "solid":
        return None
    period = 0.14 * rng.uniform(0.9, 1.1)
    phase_u, phase_v = rng.uniform(0.0, 1.0, 2)
    if pattern == "stripes":
        return np.sin(2.0 * np.pi * (u / period + phase_u)) > 0.0
    cell_u = (u / period + phase_u) % 1.0 - 0.5
    cell_v = (v / period + phase_v) % 1.0 - 0.5
    return cell_u**2 + cell_v**2 <= 0.33**2


def _secondary_colour(colour: np.ndarray) -> np.ndarray:
    """Dark markings on light colours, light markings on dark ones, so patterns always show."""
    luminance = colour @ np.array([0.299, 0.587, 0.114])
    return colour * 0.35 if luminance > 110.0 else colour * 0.35 + 0.65 * 230.0


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray, markings: np.ndarray | None) -> None:
    if markings is None:
        canvas[mask] = colour
    else:
        canvas[mask & ~markings] = colour
        canvas[mask & markings] = _secondary_colour(colour)


class CreatureRenderer:
    """Renders creatures at one image size; holds only the (read-only) pixel-centre grid."""

    def __init__(self, size: int) -> None:
        if size < MIN_RENDER_SIZE:
            raise ValueError(f"image size must be >= {MIN_RENDER_SIZE} px to show a creature, got {size}")
        self.size = size
        centres = np.arange(size, dtype=np.float32) + 0.5
        self._ys, self._xs = np.meshgrid(centres, centres, indexing="ij")

    def _window(self, cx: float, cy: float, radius: float) -> tuple[slice, slice]:
        y0, y1 = max(int(cy - radius), 0), min(int(cy + radius) + 2, self.size)
        x0, x1 = max(int(cx - radius), 0), min(int(cx + radius) + 2, self.size)
        return slice(y0, y1), slice(x0, x1)

    def render(self, species: Species, rng: np.random.Generator) -> RenderedCreature:
        canvas = self._background(rng)
        part_masks = np.zeros((len(PART_NAMES), self.size, self.size), dtype=bool)
        scale = self.size * rng.uniform(0.45, 0.58)  # pixels per creature unit
        margin = CREATURE_RADIUS * scale
        cx, cy = rng.uniform(margin, self.size - margin, 2)
        angle, mirrored = rng.uniform(-0.3, 0.3), bool(rng.integers(2))
        window = self._window(cx, cy, margin)
        u, v = _rotate((self._xs[window] - cx) / scale, (self._ys[window] - cy) / scale, angle)
        if mirrored:
            u = -u
        shapes = self._part_shapes(species, u, v, rng)
        drawn_in_front = np.zeros(u.shape, dtype=bool)
        for part in reversed(DRAW_ORDER):
            part_masks[PART_NAMES.index(part)][window] = shapes[part][0] & ~drawn_in_front
            drawn_in_front |= shapes[part][0]
        patch = canvas[window]
        for part in DRAW_ORDER:
            mask, local_u, local_v = shapes[part][:3]
            colour = np.asarray(COLOUR_RGB[species.value(part, "colour")]) + rng.uniform(-14.0, 14.0, 3)
            pattern = species.value(part, "pattern") if part != "legs" else "solid"
            _paint(patch, mask, colour, _pattern(local_u, local_v, pattern, rng))
        patch[shapes["head"][3]] = 25.0  # the eye: tells head from tail, drawn after the head colour
        image = self._light(canvas, rng)
        return RenderedCreature(image=image, part_masks=part_masks)

    def _part_shapes(self, species: Species, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> dict:
        """part -> (mask, local u, local v); the head entry also carries the eye mask."""

        def jitter() -> float:
            return float(rng.uniform(0.9, 1.1))

        bx, by = (d * jitter() for d in _BODY[species.value("body", "shape")])
        shapes = {"body": (_ellipse(u, v, bx, by), u, v)}

        head_shape = species.value("head", "shape")
        hx, hy = (d * jitter() for d in _HEAD[head_shape])
        head_u, head_v = u - (bx * 0.95 + 0.04), v + (by * 0.8 + 0.02)
        head = _ellipse(head_u, head_v, hx, hy)
        if head_shape == "crested":
            rise = -head_v - hy * 0.7  # 0 at the crest's base, 0.12 at its tip
            head |= (rise >= 0.0) & (rise <= 0.12) & (np.abs(head_u) <= 0.07 * (1.0 - rise / 0.12))
        eye = _ellipse(head_u - 0.35 * hx, head_v + 0.2 * hy, 0.028, 0.028)
        shapes["head"] = (head, head_u, head_v, eye)

        wx, wy = (d * jitter() for d in _WING[species.value("wing", "shape")])
        wing_u, wing_v = _rotate(u + 0.06, v + by * 0.25, 0.3)
        shapes["wing"] = (_ellipse(wing_u, wing_v, wx, wy), wing_u, wing_v)

        tail_shape = species.value("tail", "shape")
        length, half_width = (d * jitter() for d in _TAIL[tail_shape])
        tail_u, tail_v = _rotate(u + bx * 0.9, v + by * 0.2, 0.25)
        shapes["tail"] = (_tail(tail_u, tail_v, tail_shape, length, half_width), tail_u, tail_v)

        leg_length, leg_width = (d * jitter() for d in _LEGS[species.value("legs", "shape")])
        leg_v = v - by * 0.6
        legs = (leg_v >= 0.0) & (leg_v <= leg_length) & (np.abs(np.abs(u) - 0.08) <= leg_width / 2)
        shapes["legs"] = (legs, u, leg_v)
        return shapes

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """Muted textured ground plus clutter that borrows the creature palette and patterns."""
        size = self.size
        base = rng.uniform(70.0, 190.0, 3)
        freq = rng.uniform(0.5, 2.0, (2, 2)) * rng.choice([-1.0, 1.0], (2, 2)) * 2.0 * np.pi / size
        phase = rng.uniform(0.0, 2.0 * np.pi, 2)
        texture = np.sin(self._xs * freq[0, 0] + self._ys * freq[0, 1] + phase[0])
        texture += np.sin(self._xs * freq[1, 0] + self._ys * freq[1, 1] + phase[1])
        tint = rng.uniform(-1.0, 1.0, 3) * rng.uniform(6.0, 14.0)
        canvas = (base + texture[..., None] * tint).astype(np.float32)
        palette = list(COLOUR_RGB.values())
        for _ in range(int(rng.integers(3, 9))):
            radius = size * rng.uniform(0.04, 0.14)
            cx, cy = rng.uniform(0.0, size, 2)
            window = self._window(cx, cy, radius * 1.5)
            u, v = _rotate(
                (self._xs[window] - cx) / radius, (self._ys[window] - cy) / radius, rng.uniform(0, np.pi)
            )
            aspect = rng.uniform(0.4, 1.0)
            mask = (
                _ellipse(u, v, 1.0, aspect)
                if rng.random() < 0.6
                else (np.abs(u) <= 1) & (np.abs(v) <= aspect)
            )
            if rng.random() < 0.5:
                colour = np.asarray(palette[int(rng.integers(len(palette)))]) + rng.uniform(-14.0, 14.0, 3)
            else:
                colour = rng.uniform(30.0, 230.0, 3)
            pattern = str(rng.choice(["solid", "solid", "stripes", "dots"]))
            to_creature_units = radius / (size * 0.5)  # markings at about the creature's pattern scale
            markings = _pattern(u * to_creature_units, v * to_creature_units, pattern, rng)
            _paint(canvas[window], mask, colour, markings)
        return canvas

    def _light(self, canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, colour tint, a directional gradient and sensor noise, then to uint8."""
        gain = rng.uniform(0.7, 1.25) * rng.uniform(0.9, 1.1, 3)
        slope = rng.uniform(-0.5, 0.5, 2) / self.size
        ramp = 1.0 + (self._xs - self.size / 2) * slope[0] + (self._ys - self.size / 2) * slope[1]
        noise = rng.standard_normal(canvas.shape, dtype=np.float32) * rng.uniform(2.0, 8.0)
        lit = canvas * gain * ramp[..., None] + noise
        return np.clip(lit, 0.0, 255.0).astype(np.uint8)
