"""albumentations pipelines for image + mask pairs, and the conversion to tensors.

Train: optional resize of the shorter side to ``base_size``, random scale in ``scale_range``,
pad (image 0, mask ``IGNORE_INDEX`` so padding never counts as a class), random ``crop_size``
crop, horizontal flip, and for camera images a light colour jitter. Eval: optional shorter-side
resize, nothing random. Masks are always resampled with nearest neighbour, so train ids stay ids.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from data_modules.normalization import Normalization, resolve_normalization
from data_modules.segmentation.label_maps import IGNORE_INDEX

# Masks resize by nearest neighbour *on pixel centres*. OpenCV's plain INTER_NEAREST maps corners
# instead, so at a non-integer scale the mask drifts up to a pixel from the bilinearly resized image
# (measured on 4-px blocks at scale 1.3: 8.7 % of pixels disagree with the image, 0.8 % with EXACT,
# all of them on blended edges).
MASK_INTERPOLATION = cv2.INTER_NEAREST_EXACT


class SegmentationTransform:
    """An albumentations ``Compose`` ending in the backbone's normalisation (default ImageNet's), returning tensors.

    Input: (H, W, 3) uint8 image and (H, W) uint8 train-id mask; output: (3, H', W') float32 image
    and (H', W') int64 mask, or the mask untouched at (H, W) with ``native_mask`` (evaluation scores
    the labels as annotated, mmseg's protocol: the model's logits are resized to them instead).
    """

    def __init__(
        self,
        steps: list[A.BasicTransform],
        seed: int | None = None,
        normalization: Normalization | None = None,
        native_mask: bool = False,
    ) -> None:
        self.native_mask = native_mask
        mean, std = normalization or resolve_normalization(None, None)
        self.compose = A.Compose([*steps, A.Normalize(mean, std, max_pixel_value=255.0)], seed=seed)

    def reseed(self, seed: int) -> None:
        """Give this copy its own random stream (one per DataLoader worker, see the datamodule)."""
        self.compose.set_random_seed(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape[:2]}")
        out = self.compose(image=image) if self.native_mask else self.compose(image=image, mask=mask)
        tensor = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1), dtype=np.float32))
        labels = mask if self.native_mask else out["mask"]
        return tensor, torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))


def build_train_transform(
    crop_size: int,
    scale_range: tuple[float, float] = (0.5, 2.0),
    base_size: int | None = None,
    color_jitter: bool = True,
    seed: int | None = None,
    normalization: Normalization | None = None,
) -> SegmentationTransform:
    """Random scale -> pad -> random crop -> flip (-> colour jitter).

    Args:
        crop_size: side of the square training crop.
        scale_range: random rescale factors, applied after the ``base_size`` resize.
        base_size: resize the shorter side to this first (e.g. 512 for 2048x1024 Cityscapes);
            ``None`` keeps the native size.
        color_jitter: brightness/contrast/saturation/hue jitter (real photos; the embedded domains
            keep their colours, which *are* the domain).
        seed: albumentations seed (workers reseed their own copy).
        normalization: ``(mean, std)`` of the backbone's weights; ``None`` = ImageNet's.
    """
    check_train_geometry(crop_size, scale_range, base_size)
    low, high = scale_range
    steps: list[A.BasicTransform] = [*_base_resize(base_size)]
    if (low, high) != (1.0, 1.0):
        steps.append(
            A.RandomScale(
                scale_limit=(low - 1.0, high - 1.0),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=MASK_INTERPOLATION,
                p=1.0,
            )
        )
    steps += [
        A.PadIfNeeded(crop_size, crop_size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
        A.RandomCrop(crop_size, crop_size),
        A.HorizontalFlip(p=0.5),
    ]
    if color_jitter:
        steps.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5))
    return SegmentationTransform(steps, seed, normalization)


def check_train_geometry(crop_size: int, scale_range: tuple[float, float], base_size: int | None) -> None:
    """Refuse sizes no training pipeline can use; each message starts with the argument's name, so a
    data module can prefix its config path (the checks run when it is built, not at its ``setup``)."""
    if crop_size < 1:
        raise ValueError(f"crop_size must be >= 1, got {crop_size}")
    if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"scale_range must be [low, high] with 0 < low <= high, got {list(scale_range)}")
    check_base_size(base_size)


def check_base_size(base_size: int | None) -> None:
    if base_size is not None and base_size < 1:
        raise ValueError(f"base_size must be >= 1 or null, got {base_size}")


def build_eval_transform(
    base_size: int | None = None, normalization: Normalization | None = None
) -> SegmentationTransform:
    """Deterministic: the image's shorter side resized to ``base_size`` (``None`` = native size), then
    normalised; the mask stays as annotated, so mIoU is scored at the labels' own resolution."""
    steps = list(_base_resize(base_size))
    return SegmentationTransform(steps, seed=0, normalization=normalization, native_mask=bool(steps))


def _base_resize(base_size: int | None) -> tuple[A.BasicTransform, ...]:
    check_base_size(base_size)
    if base_size is None:
        return ()
    return (
        A.SmallestMaxSize(
            max_size=base_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=MASK_INTERPOLATION
        ),
    )
