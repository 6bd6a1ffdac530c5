"""Sliding-window inference: segment images larger than the training crop, window by window.

Windows of ``window`` pixels step by ``stride``; the last window in each direction is aligned to
the image edge so every pixel is covered, and overlapping logits are averaged (mmseg's ``slide``
mode). Images no larger than the window go through in one piece.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets covering [0, length) with windows of ``window``; the last one ends at ``length``."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def sliding_window_logits(
    predict: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    window: int,
    stride: int,
    num_classes: int,
) -> torch.Tensor:
    """Average of ``predict`` over overlapping windows: (B, 3, H, W) -> (B, C, H, W) logits."""
    if stride < 1 or stride > window:
        raise ValueError(f"sliding window: stride must be in [1, window={window}], got {stride}")
    batch, _, height, width = images.shape
    if height <= window and width <= window:
        return predict(images)
    logits = images.new_zeros(batch, num_classes, height, width)
    counts = images.new_zeros(1, 1, height, width)
    for top in window_starts(height, window, stride):
        for left in window_starts(width, window, stride):
            crop = images[:, :, top : top + window, left : left + window]
            logits[:, :, top : top + crop.shape[2], left : left + crop.shape[3]] += predict(crop)
            counts[:, :, top : top + crop.shape[2], left : left + crop.shape[3]] += 1
    return logits / counts
