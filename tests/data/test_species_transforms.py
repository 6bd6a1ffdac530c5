"""Species transforms on hand-made inputs: where the centre crop puts keypoints, which of them stay
visible, and how masks are resized beside the image."""

from __future__ import annotations

import numpy as np

from data_modules.species.transforms import build_eval_transform


def test_eval_crop_is_centred_and_points_cropped_off_any_side_are_hidden():
    blank = np.zeros((16, 16, 3), np.uint8)
    points = np.array([[1.0, 8.0], [6.0, 8.0], [15.0, 8.0]], np.float32)
    out = build_eval_transform(8, 16)(blank, keypoints=points)  # centre crop of 8 from 16: offset 4
    np.testing.assert_allclose(out.keypoints, [[-3.0, 4.0], [2.0, 4.0], [11.0, 4.0]])
    assert out.keypoints_inside.tolist() == [False, True, False]
    out = build_eval_transform(4, 16)(blank, keypoints=np.array([[8.0, 8.0]], np.float32))
    np.testing.assert_allclose(out.keypoints, [[2.0, 2.0]])  # offset 6 on both axes
    edge = build_eval_transform(8)(
        np.zeros((8, 8, 3), np.uint8), keypoints=np.array([[8.0, 0.0], [7.5, 0.0]])
    )
    assert edge.keypoints_inside.tolist() == [False, True]  # x == width is past the last pixel


def test_masks_are_resized_on_pixel_centres_like_the_image():
    """4 -> 6 px: the centres of output columns 0 and 1 fall at input x = 0.33 and 1.0 (pixel edges
    at integers), i.e. in input columns 0 and 1; plain nearest neighbour (x = 0 and 0.67) takes
    both from column 0."""
    mask = np.zeros((4, 4, 1), np.uint8)
    mask[:, 0] = 1
    out = build_eval_transform(6)(np.zeros((4, 4, 3), np.uint8), masks=mask)
    assert out.masks[0, 0].tolist() == [1, 0, 0, 0, 0, 0]
