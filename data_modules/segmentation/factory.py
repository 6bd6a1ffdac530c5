"""One entry point from a :class:`DomainSpec` to a segmentation Dataset, synthetic or any real format."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from torch.utils.data import Dataset

from data_modules.segmentation.image_dataset import SegmentationImageDataset, SegmentationIndex
from data_modules.segmentation.label_maps import CITYSCAPES_CLASSES
from data_modules.segmentation.readers_cityscapes_family import read_acdc, read_cityscapes, read_dark_zurich
from data_modules.segmentation.readers_flat_folders import (
    read_bdd100k,
    read_folder,
    read_gta5,
    read_mapillary,
    read_synthia,
)
from data_modules.segmentation.specs import DomainSpec, check_spec, folder_class_names
from data_modules.segmentation.synthetic_dataset import SyntheticDomainDataset
from data_modules.segmentation.synthetic_pairs import get_pair
from data_modules.segmentation.transforms import SegmentationTransform

T = TypeVar("T")

READERS: dict[str, Callable[[DomainSpec], SegmentationIndex]] = {
    "cityscapes": read_cityscapes,
    "gta5": read_gta5,
    "synthia": read_synthia,
    "acdc": read_acdc,
    "darkzurich": read_dark_zurich,
    "bdd100k": read_bdd100k,
    "mapillary": read_mapillary,
    "folder": read_folder,
}
DEFAULT_SYNTHETIC_SIZE = 64


def spread_subset(records: Sequence[T], count: int) -> tuple[T, ...]:
    """``count`` records evenly spaced over the sorted list (all of them if there are fewer).

    The first N would be one city of Cityscapes or only the fog images of ACDC (its conditions are
    listed one after another); spacing keeps every city and condition in a capped split, and needs
    no seed, so a cap always means the same images.
    """
    if count >= len(records):
        return tuple(records)
    step = len(records) / count
    return tuple(records[int(i * step)] for i in range(count))


def read_segmentation_index(spec: DomainSpec) -> SegmentationIndex:
    """Index a real dataset's split (paths and mask format, nothing decoded), capped at ``num_images``."""
    check_spec(spec)
    if spec.dataset == "synthetic":
        raise KeyError("synthetic data is generated, not read from disk")
    index = READERS[spec.dataset](spec)
    if spec.num_images is not None:
        records = spread_subset(index.records, spec.num_images)
        index = SegmentationIndex(records, index.mask_format, index.class_names)
    return index


def domain_class_names(spec: DomainSpec) -> list[str]:
    """The class names a spec's masks use, without touching any file."""
    check_spec(spec)
    if spec.dataset == "synthetic":
        return list(get_pair(spec.pair).class_names)
    if spec.dataset == "folder":
        return list(folder_class_names(spec))
    return list(CITYSCAPES_CLASSES)


def build_segmentation_dataset(spec: DomainSpec, transform: SegmentationTransform | None = None) -> Dataset:
    """A Dataset of items ``{"image", "mask", "path"}`` for one domain (see the package docstring).

    ``transform`` None normalises only. Synthetic specs without ``domain`` are the source domain;
    their ``image_size`` None means 64 px.
    """
    check_spec(spec)
    if spec.dataset == "synthetic":
        return SyntheticDomainDataset(
            pair=spec.pair,
            domain=spec.domain or "source",
            split=spec.split,
            num_images=spec.num_images,
            image_size=spec.image_size or DEFAULT_SYNTHETIC_SIZE,
            seed=spec.seed,
            transform=transform,
            labelled=spec.labelled,
        )
    index = read_segmentation_index(spec)
    return SegmentationImageDataset(
        index.records, index.mask_format, index.class_names, transform, spec.labelled
    )
