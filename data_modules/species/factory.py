"""One entry point from a dataset name to a species Dataset (synthetic or any real format)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from data_modules.species.image_dataset import SpeciesImageDataset, SpeciesIndex, SpeciesRecord, verify_images
from data_modules.species.readers_annotated import read_cub, read_flowers102, read_stanford_cars
from data_modules.species.readers_folders import read_image_folder, read_inat2021, read_stanford_dogs
from data_modules.species.species_catalogue import build_catalogue
from data_modules.species.splits import balanced_subset
from data_modules.species.synthetic_species import SyntheticSpecies
from data_modules.species.transforms import SpeciesTransform, build_eval_transform

SYNTHETIC_SETS: dict[str, Literal["target", "pretrain", "random"]] = {
    "synthetic": "target",
    "synthetic_pretrain": "pretrain",
    "synthetic_random": "random",
}
READERS: dict[str, Callable[..., SpeciesIndex]] = {
    "cub": read_cub,
    "dogs": read_stanford_dogs,
    "cars": read_stanford_cars,
    "flowers": read_flowers102,
    "inat": read_inat2021,
    "imagefolder": read_image_folder,
}
DATASET_NAMES: tuple[str, ...] = (*SYNTHETIC_SETS, *READERS)


def check_dataset_name(dataset: str) -> None:
    if dataset not in DATASET_NAMES:
        raise KeyError(f"unknown species dataset {dataset!r}; choose one of {DATASET_NAMES}")


def read_species_index(
    dataset: str, root: str | Path | None, test_fraction: float = 0.2, seed: int = 0
) -> SpeciesIndex:
    """Index a real dataset (paths, labels, boxes, parts) without decoding images."""
    check_dataset_name(dataset)
    if dataset in SYNTHETIC_SETS:
        raise KeyError(f"{dataset!r} is generated, not read from disk")
    if root is None:
        raise ValueError(f"dataset {dataset!r} needs a root folder")
    if dataset == "imagefolder":
        return read_image_folder(Path(root), test_fraction=test_fraction, seed=seed)
    return READERS[dataset](Path(root))


def cap_records(
    records: tuple[SpeciesRecord, ...], limit: int | None, seed: int
) -> tuple[SpeciesRecord, ...]:
    """At most ``limit`` records, balanced over classes (``None`` = all)."""
    if limit is None:
        return records
    keep = balanced_subset([r.label for r in records], limit, seed)
    return tuple(records[i] for i in keep)


def build_species_dataset(
    dataset: str,
    split: Literal["train", "test"] = "train",
    root: str | Path | None = None,
    transform: SpeciesTransform | None = None,
    image_size: int = 64,
    num_images: int | None = None,
    seed: int = 0,
    catalogue_seed: int = 0,
    test_fraction: float = 0.2,
    verify: bool = False,
) -> SyntheticSpecies | SpeciesImageDataset:
    """A species Dataset by name; items follow the package contract (image, label, path, ...).

    Args:
        dataset: ``synthetic`` | ``synthetic_pretrain`` | ``synthetic_random`` | ``cub`` | ``dogs`` | ``cars`` | ``flowers``
            | ``inat`` | ``imagefolder``.
        split: official ``train`` or ``test`` split (carving validation is the datamodule's job).
        transform: albumentations pipeline; ``None`` = eval transform at ``image_size``.
        image_size: synthetic rendering size, and the eval size when ``transform`` is None.
        num_images: synthetic split size, or a class-balanced cap for real data.
        seed: synthetic image seed; also picks the capped subset / carved test split.
        catalogue_seed: which synthetic species are drawn (kept apart from ``seed`` so repeats with
            new images keep the same species).
        verify: decode every real image now (slow), instead of failing at first access.
    """
    check_dataset_name(dataset)
    if split not in ("train", "test"):
        raise KeyError(f"split must be 'train' or 'test', got {split!r}")
    transform = transform if transform is not None else build_eval_transform(image_size)
    if dataset in SYNTHETIC_SETS:
        catalogue = build_catalogue(catalogue_seed)
        return SyntheticSpecies(
            SYNTHETIC_SETS[dataset], split, num_images, image_size, seed, catalogue, transform
        )
    index = read_species_index(dataset, root, test_fraction, seed)
    records = cap_records(index.train if split == "train" else index.test, num_images, seed)
    if verify:
        verify_images(records)
    return SpeciesImageDataset(records, index.class_names, transform)
