"""The Dataset over indexed image/mask files of any real format.

Readers only *index* a dataset (pairs of paths plus how its masks are decoded and mapped); here
each item is decoded, validated (image decodes, mask decodes, same size, ids in the dataset's
label set) and transformed. Errors name the file; :func:`verify_dataset` runs the same checks over
every item up front.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from data_modules.segmentation.label_maps import IGNORE_INDEX, LabelMapping
from data_modules.segmentation.transforms import SegmentationTransform, build_eval_transform
from data_modules.segmentation.validation import (
    ConversionNotices,
    LabelIdError,
    SegmentationDataError,
    fit_mask_to_image,
    index_files,
    load_label_image,
    load_rgb,
    pair_files,
)


@dataclass(frozen=True)
class SegmentationRecord:
    """One image and its mask (``None`` for unlabelled data)."""

    image: Path
    mask: Path | None = None


@dataclass(frozen=True)
class MaskFormat:
    """How a dataset's masks are decoded (``load(path, notices)``), turned into train ids
    (``mapping``) and how far their size may be off their image's (``size_tolerance``)."""

    mapping: LabelMapping
    load: Callable[[Path, ConversionNotices | None], np.ndarray] = load_label_image
    size_tolerance: float = 0.0  # relative per-side mask/image size slack (see fit_mask_to_image)


@dataclass(frozen=True)
class SegmentationIndex:
    """What a reader returns: the files of one split, how to read their masks, and the class names."""

    records: tuple[SegmentationRecord, ...]
    mask_format: MaskFormat
    class_names: tuple[str, ...]


def paired_records(
    images: dict[str, Path], mask_dir: Path, mask_suffix: str, labelled: bool, what: str
) -> list[SegmentationRecord]:
    """Records for indexed images: each with its mask (checked both ways), or none if unlabelled."""
    if not labelled:
        return [SegmentationRecord(path) for _, path in sorted(images.items())]
    masks = index_files(mask_dir, mask_suffix, f"{what} mask")
    return [
        SegmentationRecord(image, mask) for image, mask in pair_files(images, masks, mask_dir, mask_suffix)
    ]


class SegmentationImageDataset(Dataset):
    """Items ``{"image": (3, H, W) float32, "mask": (H, W) int64, "path": str}``.

    Args:
        records: image/mask paths, in a fixed order.
        mask_format: mask decoding and id mapping of the dataset.
        class_names: names of the train ids.
        transform: albumentations pipeline; ``None`` = normalise only.
        labelled: ``False`` ignores any masks and serves all-``IGNORE_INDEX`` masks.
    """

    def __init__(
        self,
        records: Sequence[SegmentationRecord],
        mask_format: MaskFormat,
        class_names: Sequence[str],
        transform: SegmentationTransform | None = None,
        labelled: bool = True,
    ) -> None:
        if not records:
            raise SegmentationDataError("no images to build a segmentation dataset from")
        if labelled:
            unlabelled = next((r for r in records if r.mask is None), None)
            if unlabelled is not None:
                raise SegmentationDataError(
                    f"image {unlabelled.image} has no mask but the dataset is labelled"
                )
        self.records = tuple(records)
        self.mask_format = mask_format
        self.class_names = list(class_names)
        self.transform = transform if transform is not None else build_eval_transform()
        self.labelled = labelled
        self.notices = ConversionNotices()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` decoded and validated: (H, W, 3) uint8 image, (H, W) uint8 train ids."""
        record = self.records[index]
        image = load_rgb(record.image, self.notices)
        if not self.labelled:
            return image, np.full(image.shape[:2], IGNORE_INDEX, dtype=np.uint8)
        raw = self.mask_format.load(record.mask, self.notices)
        raw = fit_mask_to_image(
            image, raw, record.image, record.mask, self.mask_format.size_tolerance, self.notices
        )
        mask = self.mask_format.mapping.apply(raw, record.mask)
        too_large = (mask != IGNORE_INDEX) & (mask >= self.num_classes)
        if too_large.any():
            raise LabelIdError(
                f"label image {record.mask}: train id {int(mask[too_large].max())} >= num_classes {self.num_classes}"
            )
        return image, mask

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        image, mask = self.load(index)
        image_tensor, mask_tensor = self.transform(image, mask)
        return {"image": image_tensor, "mask": mask_tensor, "path": str(self.records[index].image)}


def same_size_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate`` for evaluation batches, which hold images at their native sizes.

    Images of different sizes cannot be stacked; PyTorch's own message ("stack expects each tensor
    to be equal size") names neither the files nor the setting, and meets the user at the first
    validation, perhaps hours into a run. This one names both.
    """
    image_sizes = {tuple(item["image"].shape[-2:]) for item in items}
    mask_sizes = {tuple(item["mask"].shape[-2:]) for item in items}
    if len(image_sizes) > 1 or len(mask_sizes) > 1:
        shown = ", ".join(f"{item['path']} {tuple(item['image'].shape[-2:])}" for item in items[:3])
        raise SegmentationDataError(
            f"an evaluation batch holds images of different sizes ({shown}): evaluate one image at a time "
            f"with data.init_args.val_batch_size: 1 (mmseg does), or give the images one size"
        )
    return default_collate(items)


def verify_dataset(dataset: SegmentationImageDataset) -> None:
    """Decode and check every item now (slow: for a new copy of a dataset, or small ones)."""
    for index in range(len(dataset)):
        dataset.load(index)
