"""Heatmap overlays and grids as plain uint8 arrays (PIL/numpy), ready for PNG or W&B.

A grid row is one image: the picture, then one overlay per map (e.g. the top-ranked heads' trait
maps), each tile titled. Maps are min-max scaled per tile: each head's attention has its own range,
and what matters is where it peaks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from data_modules.normalization import resolve_normalization

TITLE_HEIGHT = 14
PADDING = 2


def denormalize(
    image: torch.Tensor, normalization: tuple[Sequence[float], Sequence[float]] | None = None
) -> np.ndarray:
    """(3, H, W) tensor normalised with ``(mean, std)`` (``None``: ImageNet's) -> (H, W, 3) uint8."""
    mean, std = normalization or resolve_normalization(None, None)
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(image.shape)}")
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    pixels = (image.detach().float().cpu() * std_t + mean_t).clamp(0, 1)
    return (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB with the classic blue-cyan-yellow-red ramp."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # where red, green, blue peak
    rgb = np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0)
    return (rgb * 255).round().astype(np.uint8)


def normalize_map(heat: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant map becomes all zeros."""
    heat = np.asarray(heat, dtype=np.float32)
    low, high = float(heat.min()), float(heat.max())
    return (heat - low) / (high - low) if high > low else np.zeros_like(heat)


def overlay_heatmap(image: np.ndarray, heat: np.ndarray | torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """Blend a (h, w) map, resized bilinearly to the image, over a (H, W, 3) uint8 image."""
    if isinstance(heat, torch.Tensor):
        heat = heat.detach().float().cpu().numpy()
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (h, w), got shape {heat.shape}")
    height, width = image.shape[:2]
    resized = Image.fromarray(normalize_map(heat)).resize((width, height), Image.BILINEAR)
    colour = jet_colormap(np.asarray(resized)).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colour
    return blended.round().clip(0, 255).astype(np.uint8)


def highlight_mask(image: np.ndarray, mask: np.ndarray | torch.Tensor, dim: float = 0.3) -> np.ndarray:
    """The image with everything outside a (H, W) binary mask dimmed to ``dim`` of its brightness.

    A trait mask is a few dozen pixels; drawn as a jet overlay like the saliency maps, its dark-red
    end disappears into a colourful creature, so it is shown by what it leaves lit instead.
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from the image's {image.shape[:2]}")
    keep = np.where(mask > 0, 1.0, dim)[..., None]
    return (image.astype(np.float32) * keep).round().astype(np.uint8)


def _titled_tile(tile: np.ndarray, title: str, size: int) -> Image.Image:
    canvas = Image.new("RGB", (size, size + TITLE_HEIGHT), "white")
    canvas.paste(Image.fromarray(tile).resize((size, size), Image.BILINEAR), (0, TITLE_HEIGHT))
    ImageDraw.Draw(canvas).text((2, 1), title, fill="black", font=ImageFont.load_default())
    return canvas


def heatmap_row(
    image: np.ndarray,
    maps: Sequence[np.ndarray | torch.Tensor],
    titles: Sequence[str],
    image_title: str = "",
    tile_size: int = 128,
    alpha: float = 0.5,
    masks: Sequence[tuple[np.ndarray | torch.Tensor, str]] = (),
) -> np.ndarray:
    """[image | mask_1 .. | overlay_1 | ... | overlay_K], each tile ``tile_size`` px with a title strip.

    ``masks`` are (binary mask, title) pairs drawn with :func:`highlight_mask` after the image.
    """
    if len(titles) != len(maps):
        raise ValueError(f"heatmap_row: {len(titles)} titles for {len(maps)} maps")
    tiles = [_titled_tile(image, image_title, tile_size)]
    tiles += [_titled_tile(highlight_mask(image, mask), title, tile_size) for mask, title in masks]
    tiles += [
        _titled_tile(overlay_heatmap(image, heat, alpha), title, tile_size)
        for heat, title in zip(maps, titles, strict=True)
    ]
    row = Image.new("RGB", (len(tiles) * (tile_size + PADDING), tile_size + TITLE_HEIGHT), "white")
    for index, tile in enumerate(tiles):
        row.paste(tile, (index * (tile_size + PADDING), 0))
    return np.asarray(row)


def stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of possibly different widths -> one grid image, left-aligned on white."""
    if not rows:
        raise ValueError("stack_rows needs at least one row")
    width = max(row.shape[1] for row in rows)
    height = sum(row.shape[0] + PADDING for row in rows)
    grid = np.full((height, width, 3), 255, dtype=np.uint8)
    top = 0
    for row in rows:
        grid[top : top + row.shape[0], : row.shape[1]] = row
        top += row.shape[0] + PADDING
    return grid
