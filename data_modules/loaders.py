"""The DataLoader settings both DataModules share: reproducible shuffling and augmentation per worker.

Each DataModule decides *which* dataset and batch size a loader gets; how the loader is built (drop
the last short batch when shuffling, keep workers alive between epochs, give each worker its own
augmentation stream and each loader its own shuffling seed) is the same for segmentation and
species data, so it lives here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, get_worker_info


def check_loader_settings(batch_size: int, val_batch_size: int | None, num_workers: int) -> None:
    """Refuse loader settings PyTorch would refuse only when the first loader is built (after the
    run dir is written), naming the data module's key."""
    for key, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"data.init_args.{key} must be >= 1, got {value}")
    if num_workers < 0:
        raise ValueError(
            f"data.init_args.num_workers must be >= 0 (0: load in the main process), got {num_workers}"
        )


def seed_worker_transform(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a distinct, reproducible augmentation stream per worker.

    The dataset's ``transform`` must have ``reseed(seed)``; a ``Subset`` (a split carved from a
    training set) is unwrapped to the dataset that owns the transform.
    """
    info = get_worker_info()
    _transform_owner(info.dataset).transform.reseed(info.seed % 2**32)


def _transform_owner(dataset: Dataset) -> Dataset:
    """The dataset that owns the transform (a split carved from a training set is a ``Subset``)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def evaluation_sampler(dataset: Dataset) -> Sampler | None:
    """Under DDP, each image on exactly one rank; ``None`` otherwise (Lightning's default then).

    Lightning gives evaluation loaders a ``DistributedSampler``, which pads the last round with
    repeated images so every rank gets as many: 500 Cityscapes val images on 8 GPUs would score
    4 twice, and val/mIoU (and the checkpoint it selects) would differ from one GPU's. A
    ``DistributedSampler`` of our own is left alone by Lightning. Every rank still needs one image
    at least, so a set smaller than the world keeps Lightning's padding.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    world = torch.distributed.get_world_size()
    return UnrepeatedDistributedSampler(dataset, shuffle=False) if 1 < world <= len(dataset) else None


def seeded_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool,
    seed: int,
    collate_fn: Callable[[list], Any] | None = None,
) -> DataLoader:
    """A DataLoader whose order (when shuffled) and augmentations depend only on ``seed`` and
    ``num_workers`` (with workers, each augments from its own stream, as in any PyTorch loader).

    Every training loader restarts the augmentation stream: workers are seeded from this loader's
    generator, and without workers the transform is reseeded here. So a second ``fit`` on the same
    data module (the demo trains prompts, then a probe) augments as it would have alone, not
    continuing where the first left off.
    """
    if shuffle and num_workers == 0:
        _transform_owner(dataset).transform.reseed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=None if shuffle else evaluation_sampler(dataset),
        drop_last=shuffle and len(dataset) > batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker_transform if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        collate_fn=collate_fn,
    )
