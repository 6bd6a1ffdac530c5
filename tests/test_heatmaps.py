"""Heatmap overlays and grids: colours at the ends of the ramp, mask highlighting, tile layout."""

import numpy as np
import pytest
import torch

from tmtcam.viz.heatmaps import (
    PADDING,
    TITLE_HEIGHT,
    heatmap_row,
    highlight_mask,
    jet_colormap,
    normalize_map,
    overlay_heatmap,
)


def test_jet_ramp_ends_and_constant_maps():
    assert jet_colormap(np.array([0.0, 0.75, 1.0])).tolist() == [[0, 0, 128], [255, 128, 0], [128, 0, 0]]
    assert normalize_map(np.full((2, 2), 3.0)).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert normalize_map(np.array([[1.0, 3.0]])).tolist() == [[0.0, 1.0]]


def test_highlight_mask_keeps_the_mask_and_dims_the_rest():
    image = np.full((4, 4, 3), 200, dtype=np.uint8)
    mask = torch.zeros(4, 4)
    mask[1, 2] = 1
    lit = highlight_mask(image, mask, dim=0.25)
    assert lit[1, 2].tolist() == [200, 200, 200] and lit[0, 0].tolist() == [50, 50, 50]
    with pytest.raises(ValueError, match="mask shape"):
        highlight_mask(image, torch.zeros(3, 4))


def test_row_has_image_then_masks_then_maps():
    # tile_size equals the image size, so every tile is its source array pixel for pixel
    image = np.full((8, 8, 3), 200, dtype=np.uint8)
    mask = torch.zeros(8, 8)
    mask[2:4, 2:4] = 1
    heat = torch.rand(2, 2)
    row = heatmap_row(image, [heat], ["map"], "img", tile_size=8, masks=[(mask, "m")])
    assert row.shape == (8 + TITLE_HEIGHT, 3 * (8 + PADDING), 3)

    def tile(index: int) -> np.ndarray:
        left = index * (8 + PADDING)
        return row[TITLE_HEIGHT:, left : left + 8]

    assert np.array_equal(tile(0), image)
    assert np.array_equal(tile(1), highlight_mask(image, mask))
    assert tile(1)[2, 2].tolist() == [200, 200, 200] and tile(1)[0, 0].tolist() != [200, 200, 200]
    assert np.array_equal(tile(2), overlay_heatmap(image, heat))
    with pytest.raises(ValueError, match="1 titles for 2 maps"):
        heatmap_row(image, [torch.rand(2, 2)] * 2, ["map"])
