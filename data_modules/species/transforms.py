"""albumentations pipelines for species images, masks and keypoints, and the conversion to tensors.

Training follows Prompt-CAM's recipe (from VPT): square Resize(resize) -> RandomCrop(size) ->
horizontal flip. Evaluation is Resize(resize) -> CenterCrop(size), the usual ImageNet-style test
transform; the reference code instead resizes straight to ``size`` (``resize_size: null`` here),
keeping the borders that the crop cuts. Images resize bicubically (the reference: bilinear), masks
with nearest neighbour (they stay binary). Keypoints (CUB parts, bounding-box corners) ride along
through the same geometry; a keypoint pushed out of the crop becomes invisible. A horizontal flip
moves each keypoint with its pixel and keeps its name (a CUB "left eye" then sits where a right eye
would).
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch

from data_modules.normalization import Normalization, resolve_normalization


@dataclass(frozen=True)
class TransformedSample:
    image: torch.Tensor  # (3, H, W) float32, normalised (default: ImageNet statistics)
    masks: torch.Tensor | None  # (K, H, W) float32 in {0, 1}
    keypoints: np.ndarray | None  # (K, 2) float32 (x, y) in output pixels
    keypoints_inside: np.ndarray | None  # (K,) bool: still inside the output image


class SpeciesTransform:
    """An albumentations ``Compose`` plus the numpy -> tensor conversion every dataset item needs.

    Masks go in as (H, W, K) uint8 and come out as (K, H, W) float32; keypoints as (K, 2) ``xy``.
    """

    def __init__(
        self,
        steps: list[A.BasicTransform],
        seed: int | None = None,
        normalization: Normalization | None = None,
    ) -> None:
        mean, std = normalization or resolve_normalization(None, None)
        self.compose = A.Compose(
            [*steps, A.Normalize(mean, std, max_pixel_value=255.0)],
            keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
            seed=seed,
        )

    def reseed(self, seed: int) -> None:
        """Give this copy its own random stream (one per DataLoader worker, see the datamodule)."""
        self.compose.set_random_seed(seed)

    def __call__(
        self, image: np.ndarray, masks: np.ndarray | None = None, keypoints: np.ndarray | None = None
    ) -> TransformedSample:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        inputs: dict[str, np.ndarray] = {"image": image}
        if masks is not None:
            inputs["mask"] = masks
        inputs["keypoints"] = (
            np.zeros((0, 2), np.float32) if keypoints is None else np.asarray(keypoints, np.float32)
        )
        out = self.compose(**inputs)
        height, width = out["image"].shape[:2]
        tensor = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1), dtype=np.float32))
        mask_tensor = None
        if masks is not None:
            mask_tensor = torch.from_numpy(
                np.ascontiguousarray(out["mask"].transpose(2, 0, 1), dtype=np.float32)
            )
        points = inside = None
        if keypoints is not None:
            points = np.asarray(out["keypoints"], dtype=np.float32).reshape(-1, 2)
            inside = (
                (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
            )
        return TransformedSample(tensor, mask_tensor, points, inside)


def _resize(size: int) -> A.Resize:
    # masks on pixel centres (EXACT), as the image: plain INTER_NEAREST drifts up to a pixel
    return A.Resize(size, size, interpolation=cv2.INTER_CUBIC, mask_interpolation=cv2.INTER_NEAREST_EXACT)


def build_train_transform(
    image_size: int,
    resize_size: int | None = None,
    seed: int | None = None,
    normalization: Normalization | None = None,
) -> SpeciesTransform:
    """Resize(resize) -> RandomCrop(image_size) -> HorizontalFlip; ``resize_size`` None = image_size."""
    resize = check_sizes(image_size, resize_size)
    return SpeciesTransform(
        [_resize(resize), A.RandomCrop(image_size, image_size), A.HorizontalFlip(p=0.5)], seed, normalization
    )


def build_eval_transform(
    image_size: int, resize_size: int | None = None, normalization: Normalization | None = None
) -> SpeciesTransform:
    """Resize(resize) -> CenterCrop(image_size): deterministic."""
    resize = check_sizes(image_size, resize_size)
    return SpeciesTransform([_resize(resize), A.CenterCrop(image_size, image_size)], 0, normalization)


def check_sizes(image_size: int, resize_size: int | None) -> int:
    """The resize side (``image_size`` when not given); the message starts with the argument's name."""
    resize = image_size if resize_size is None else resize_size
    if image_size < 1 or resize < image_size:
        raise ValueError(
            f"image_size must be >= 1 and <= resize_size, got image_size={image_size}, resize_size={resize}"
        )
    return resize
