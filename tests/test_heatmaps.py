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
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    row = heatmap_row(
        image, [torch.rand(2, 2)], ["map"], "img", tile_size=16, masks=[(torch.ones(8, 8), "m")]
    )
    assert row.shape == (16 + TITLE_HEIGHT, 3 * (16 + PADDING), 3)
    with pytest.raises(ValueError, match="1 titles for 2 maps"):
        heatmap_row(image, [torch.rand(2, 2)] * 2, ["map"])
