"""How good is a saliency map: faithfulness (insertion/deletion) and localisation (pointing, mass).

Every function takes saliency maps at any resolution, (B, h, w), and upsamples them bilinearly to
the image or mask size, so patch-level trait maps and pixel-level Grad-CAM maps are scored alike.

**Insertion / deletion** (RISE, Petsiuk et al. 2018). Pixels are ranked by saliency (ties keep
raster order). *Deletion* starts from the image and, in ``steps`` equal steps, replaces the most
salient pixels by the baseline ``0`` in normalised space, i.e. the dataset's mean colour; *insertion*
starts from a Gaussian-blurred copy (sigma = side / 45, which is RISE's sigma 5 at 224 px) and puts
the most salient pixels back. The curve is the softmax probability of the explained class at each
of the ``steps + 1`` stages; the score is its area (trapezoid rule, x from 0 to 1). A faithful map
gives high insertion and low deletion AUC.

**Pointing game**: a hit when the saliency maximum falls inside the trait mask (optionally dilated
by ``tolerance`` pixels). **Mass inside mask**: the share of (non-negative) saliency inside it.
Images whose mask is empty give NaN, so averages are taken with ``nanmean``.

**Chance on the object** (:func:`object_chance`): what a map that finds the object but not the
trait scores, i.e. the share of the object's pixels inside the (dilated) trait mask. A small object
with a tolerance of a few pixels can make this large (about 0.5 on the 64 px synthetic species),
so a pointing game is only read against it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

Predictor = Callable[[torch.Tensor], torch.Tensor]  # images (N, 3, H, W) -> logits (N, C)


def upsample_saliency(saliency: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W), bilinear; identity when already at ``size``."""
    if saliency.dim() != 3:
        raise ValueError(f"saliency must be (B, h, w), got shape {tuple(saliency.shape)}")
    saliency = saliency.float()
    if tuple(saliency.shape[-2:]) == tuple(size):
        return saliency
    return F.interpolate(saliency[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _check_pair(saliency: torch.Tensor, mask: torch.Tensor) -> None:
    if mask.dim() != 3 or mask.shape[0] != saliency.shape[0]:
        raise ValueError(
            f"trait mask must be (B, H, W) with B={saliency.shape[0]}, got shape {tuple(mask.shape)}"
        )


def _dilate(mask: torch.Tensor, tolerance: int) -> torch.Tensor:
    """(B, H, W) bool -> float mask grown by ``tolerance`` pixels (a square window, as in the pointing game)."""
    region = mask.float()
    if tolerance > 0:
        region = F.max_pool2d(region[:, None], 2 * tolerance + 1, stride=1, padding=tolerance)[:, 0]
    return region


def pointing_game(saliency: torch.Tensor, mask: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """(B,) 1.0 where the saliency argmax lies inside ``mask`` (dilated by ``tolerance`` px), NaN if empty."""
    _check_pair(saliency, mask)
    mask = mask > 0
    region = _dilate(mask, tolerance)
    heat = upsample_saliency(saliency, tuple(mask.shape[-2:])).flatten(1)
    peak = heat.argmax(1)
    hits = region.flatten(1).gather(1, peak[:, None])[:, 0].clamp(max=1.0)
    return torch.where(mask.flatten(1).any(1), hits, torch.full_like(hits, math.nan))


def mass_inside_mask(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) share of the non-negative saliency inside ``mask``; NaN for an empty mask or zero map."""
    _check_pair(saliency, mask)
    mask = mask > 0
    heat = upsample_saliency(saliency, tuple(mask.shape[-2:])).clamp(min=0).flatten(1)
    total = heat.sum(1)
    inside = (heat * mask.flatten(1).float()).sum(1)
    valid = mask.flatten(1).any(1) & (total > 0)
    return torch.where(valid, inside / total.clamp(min=1e-12), torch.full_like(total, math.nan))


def object_chance(object_mask: torch.Tensor, mask: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """(B,) share of ``object_mask`` pixels inside ``mask`` dilated by ``tolerance``; NaN if either is empty.

    With ``tolerance`` it is the pointing-game hit rate of a peak dropped uniformly on the object;
    with ``tolerance=0`` it is also the trait mass of a map spread evenly over the object.
    """
    if mask.dim() != 3 or object_mask.shape != mask.shape:
        raise ValueError(
            f"object and trait masks must both be (B, H, W), got {tuple(object_mask.shape)} and {tuple(mask.shape)}"
        )
    region = _dilate(mask > 0, tolerance)
    on_object = (object_mask > 0).flatten(1).float()
    size = on_object.sum(1)
    share = (region.flatten(1) * on_object).sum(1) / size.clamp(min=1)
    valid = (size > 0) & (mask > 0).flatten(1).any(1)
    return torch.where(valid, share, torch.full_like(share, math.nan))


def keypoint_mask(keypoints: torch.Tensor, size: tuple[int, int], radius: float) -> torch.Tensor:
    """(B, K, 3) keypoints ``(x, y, visible)`` in pixels -> (B, H, W) bool discs of ``radius`` (CUB parts)."""
    if keypoints.dim() != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must be (B, K, 3) as (x, y, visible), got {tuple(keypoints.shape)}")
    ys = torch.arange(size[0], dtype=torch.float32, device=keypoints.device)[:, None]
    xs = torch.arange(size[1], dtype=torch.float32, device=keypoints.device)[None, :]
    x, y, visible = (keypoints[..., i, None, None].float() for i in range(3))
    inside = (xs - x) ** 2 + (ys - y) ** 2 <= radius**2  # (B, K, H, W)
    return (inside & (visible > 0)).any(1)


def box_mask(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 4) boxes ``(x1, y1, x2, y2)`` in pixels -> (B, H, W) bool, pixel centres inside (CUB boxes)."""
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, 4) as (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    ys = torch.arange(size[0], dtype=torch.float32, device=boxes.device)[None, :, None] + 0.5
    xs = torch.arange(size[1], dtype=torch.float32, device=boxes.device)[None, None, :] + 0.5
    x1, y1, x2, y2 = (boxes[:, i, None, None].float() for i in range(4))
    return (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)


def pixel_order(saliency: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H*W) pixel indices, most salient first (stable: ties keep raster order)."""
    heat = upsample_saliency(saliency, size).flatten(1)
    return heat.argsort(dim=1, descending=True, stable=True)


def reveal_masks(order: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps + 1, H*W) float: at stage t the first ``round(t * N / steps)`` pixels of ``order`` are 1."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    num_pixels = order.shape[1]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(num_pixels, device=order.device).expand_as(order))
    counts = torch.round(torch.arange(steps + 1, device=order.device) * num_pixels / steps)
    return (rank[:, None, :] < counts[None, :, None]).float()


def blurred_baseline(images: torch.Tensor) -> torch.Tensor:
    """Insertion's starting image: Gaussian blur with sigma = side / 45 (RISE's 5 px at 224 px)."""
    sigma = max(images.shape[-2:]) / 45.0
    kernel = 2 * math.ceil(2 * sigma) + 1
    return gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def perturbation_curves(
    predict: Predictor,
    images: torch.Tensor,
    saliency: torch.Tensor,
    class_index: torch.Tensor,
    mode: Literal["insertion", "deletion"],
    steps: int = 16,
    batch_size: int = 64,
) -> torch.Tensor:
    """(B, steps + 1) class probabilities along the insertion or deletion path (see module docstring)."""
    if mode not in ("insertion", "deletion"):
        raise ValueError(f"mode must be 'insertion' or 'deletion', got {mode!r}")
    batch, _, height, width = images.shape
    masks = reveal_masks(pixel_order(saliency, (height, width)), steps).view(
        batch, steps + 1, 1, height, width
    )
    if mode == "insertion":
        start, end = blurred_baseline(images), images
    else:
        start, end = images, torch.zeros_like(images)
    start, end = start[:, None], end[:, None]
    probabilities = []
    for index in range(batch):
        stages = start[index] * (1 - masks[index]) + end[index] * masks[index]
        logits = torch.cat([predict(chunk) for chunk in stages.split(batch_size)])
        probabilities.append(logits.softmax(-1)[:, class_index[index]])
    return torch.stack(probabilities)


def curve_auc(curve: torch.Tensor) -> torch.Tensor:
    """(B, T) values at T equally spaced points of [0, 1] -> (B,) trapezoid area."""
    if curve.shape[-1] < 2:
        raise ValueError("a curve needs at least 2 points")
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), dim=-1)


@torch.no_grad()
def insertion_deletion_auc(
    predict: Predictor,
    images: torch.Tensor,
    saliency: torch.Tensor,
    class_index: torch.Tensor,
    steps: int = 16,
    batch_size: int = 64,
) -> dict[str, torch.Tensor]:
    """{"insertion": (B,), "deletion": (B,)} AUCs of ``saliency`` for ``class_index``."""
    return {
        mode: curve_auc(perturbation_curves(predict, images, saliency, class_index, mode, steps, batch_size))
        for mode in ("insertion", "deletion")
    }
