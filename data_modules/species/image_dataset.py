"""Records of real species images and the Dataset that decodes and transforms them.

Readers only *index* a dataset (paths, labels, optional boxes and part keypoints); decoding happens
here, per item, so indexing 2.7M iNat images stays cheap. A file that does not decode raises
:class:`CorruptImageError` naming it, at first access or up front with :func:`verify_images`.
Decoding follows the same rules as the segmentation readers (one shared decoder), so a 16-bit
greyscale photo keeps its top 8 bits instead of turning white, and unusual modes warn once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data_modules.segmentation.validation import ConversionNotices, SegmentationDataError
from data_modules.segmentation.validation import load_rgb as decode_rgb
from data_modules.species.transforms import SpeciesTransform
from data_modules.species.validation import SpeciesDataError


class CorruptImageError(SpeciesDataError):
    """An image file that exists but cannot be decoded."""


@dataclass(frozen=True, eq=False)
class SpeciesRecord:
    """One labelled image; ``bbox`` is (x1, y1, x2, y2) and ``parts`` (K, 3) = (x, y, visible), in source pixels."""

    path: Path
    label: int
    bbox: tuple[float, float, float, float] | None = None
    parts: np.ndarray | None = None


@dataclass(frozen=True)
class SpeciesIndex:
    """What a reader returns: class names and the official train and test records."""

    class_names: tuple[str, ...]
    train: tuple[SpeciesRecord, ...]
    test: tuple[SpeciesRecord, ...]


def load_rgb(path: Path, notices: ConversionNotices | None = None) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB, or raise naming the file.

    Greyscale, alpha and CMYK photos convert with one warning per kind; 32-bit and float images
    are refused (their value range is unknown): see docs/datasets.md, "When data is wrong".
    """
    try:
        return decode_rgb(path, notices)
    except SegmentationDataError as error:
        raise CorruptImageError(str(error)) from error


def verify_images(records: Sequence[SpeciesRecord]) -> None:
    """Fully decode every image (slow: for small datasets or a one-off check of a new copy)."""
    for record in records:
        load_rgb(record.path)


class SpeciesImageDataset(Dataset):
    """Decoded, transformed items: image, label, path, plus ``bbox`` / ``parts`` when the records have them.

    All records must carry the same optional fields so that every item has the same keys.
    """

    def __init__(
        self, records: Sequence[SpeciesRecord], class_names: Sequence[str], transform: SpeciesTransform
    ):
        if not records:
            raise SpeciesDataError("no images to build a dataset from")
        self.records = tuple(records)
        self.class_names = list(class_names)
        self.transform = transform
        self._has_bbox = self.records[0].bbox is not None
        self._has_parts = self.records[0].parts is not None
        self._notices = ConversionNotices()
        for record in self.records:
            if (record.bbox is not None) != self._has_bbox or (record.parts is not None) != self._has_parts:
                raise SpeciesDataError(
                    f"{record.path}: every record needs the same optional fields (bbox, parts)"
                )
            if not 0 <= record.label < len(self.class_names):
                raise SpeciesDataError(
                    f"{record.path}: label {record.label} outside [0, {len(self.class_names)})"
                )

    @property
    def labels(self) -> np.ndarray:
        return np.array([record.label for record in self.records], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        record = self.records[index]
        image = load_rgb(record.path, self._notices)
        points = []
        if record.parts is not None:
            points.append(record.parts[:, :2])
        if record.bbox is not None:
            x1, y1, x2, y2 = record.bbox
            points.append(np.array([[x1, y1], [x2, y2]], dtype=np.float32))
        keypoints = np.concatenate(points).astype(np.float32) if points else None
        sample = self.transform(image, keypoints=keypoints)
        item: dict[str, torch.Tensor | str] = {
            "image": sample.image,
            "label": torch.tensor(record.label, dtype=torch.int64),
            "path": str(record.path),
        }
        if record.parts is not None:
            num_parts = len(record.parts)
            visible = (record.parts[:, 2] > 0) & sample.keypoints_inside[:num_parts]
            xy = np.where(visible[:, None], sample.keypoints[:num_parts], 0.0)
            item["parts"] = torch.from_numpy(
                np.concatenate([xy, visible[:, None]], axis=1).astype(np.float32)
            )
        if record.bbox is not None:
            item["bbox"] = torch.from_numpy(_corners_to_box(sample.keypoints[-2:], sample.image.shape[1:]))
        return item


def _corners_to_box(corners: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Two transformed corners (a flip may swap them) -> (x1, y1, x2, y2) clipped to the image."""
    height, width = size
    low, high = corners.min(axis=0), corners.max(axis=0)
    return np.array(
        [
            np.clip(low[0], 0, width),
            np.clip(low[1], 0, height),
            np.clip(high[0], 0, width),
            np.clip(high[1], 0, height),
        ],
        dtype=np.float32,
    )
