"""Heatmap overlays and grids: colours at the ends of the ramp, mask highlighting, tile layout."""

import colorsys

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
from tmtcam.viz.segmentation_images import IGNORE_COLOUR, colorize, palette, segmentation_strip, wandb_masks


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


def test_class_palette_spreads_hues_and_colorize_blacks_out_ignored_pixels():
    colours = palette(19)
    hues = {round(colorsys.rgb_to_hsv(*(colours[i] / 255.0))[0], 2) for i in range(19)}
    assert len(hues) >= 15  # neighbouring class ids get visibly different hues
    distance = np.abs(colours[:, None].astype(int) - colours[None].astype(int)).sum(-1)
    assert distance[~np.eye(19, dtype=bool)].min() >= 30
    mask = np.array([[0, 255], [18, 3]])
    painted = colorize(mask, colours)
    assert painted[0, 1].tolist() == list(IGNORE_COLOUR) and colours[18].tolist() != list(IGNORE_COLOUR)
    assert painted[1, 0].tolist() == colours[18].tolist() and painted[1, 1].tolist() == colours[3].tolist()


def test_priority_tile_follows_a_wide_patch_grid():
    """A 2 x 4 grid on a 16 x 32 image: patch (row 0, col 3) is the top-right 8 x 8 block."""
    priority = torch.zeros(8)
    priority[3] = 1.0
    strip = segmentation_strip(
        torch.zeros(3, 16, 32),
        torch.zeros(16, 32).long(),
        torch.zeros(16, 32).long(),
        4,
        priority,
        grid=(2, 4),
    )
    tile = strip[:, 3 * 32 : 4 * 32]  # input | truth | prediction | priority
    hot, cold = jet_colormap(np.array([1.0]))[0].tolist(), jet_colormap(np.array([0.0]))[0].tolist()
    assert tile[0, 31].tolist() == hot and tile[7, 24].tolist() == hot
    assert tile[8, 31].tolist() == cold and tile[0, 23].tolist() == cold


def test_strip_shows_ground_truth_then_prediction_and_wandb_masks_keep_them_apart():
    target = torch.zeros(4, 6, dtype=torch.long)
    prediction = torch.full((4, 6), 2, dtype=torch.long)
    prediction[0, 0] = 255
    strip = segmentation_strip(torch.zeros(3, 4, 6), target, prediction, 3)
    colours = palette(3)
    assert np.array_equal(strip[:, 6:12], colorize(target.numpy(), colours))
    assert np.array_equal(strip[:, 12:18], colorize(prediction.numpy(), colours))
    masks = wandb_masks(target, prediction, ["a", "b", "c"])
    assert np.array_equal(masks["ground_truth"]["mask_data"], target.numpy())
    assert np.array_equal(masks["prediction"]["mask_data"], prediction.numpy())
    assert masks["prediction"]["class_labels"] == {0: "a", 1: "b", 2: "c", 255: "ignore"}
