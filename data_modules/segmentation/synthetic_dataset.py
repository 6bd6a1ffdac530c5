"""The Dataset over one domain of an embedded pair: scenes rendered on the fly, never cached.

Item ``i`` is a pure function of ``(pair, domain, split, i, seed)``, so every worker, rank and
epoch sees the same pixels, splits never overlap (the split is part of the random key), and at
1-2 ms per 64 px image (one core) rendering costs less than the model step that consumes it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from data_modules.segmentation.label_maps import IGNORE_INDEX
from data_modules.segmentation.synthetic_pairs import DOMAIN_CODES, SPLIT_CODES, SceneSampler, get_pair
from data_modules.segmentation.transforms import SegmentationTransform, build_eval_transform

DEFAULT_NUM_IMAGES: dict[str, int] = {"train": 1000, "val": 200, "test": 200}


class SyntheticDomainDataset(Dataset):
    """Items ``{"image": (3, S, S) float32, "mask": (S, S) int64, "path": str}`` of one domain.

    Args:
        pair: name of an embedded pair (:data:`SYNTHETIC_PAIRS`).
        domain: ``source`` or ``target``.
        split: ``train`` | ``val`` | ``test``: independent random streams.
        num_images: split size (``None``: :data:`DEFAULT_NUM_IMAGES`).
        image_size: rendering size ``S``.
        seed: generator seed.
        transform: albumentations pipeline; ``None`` = normalise only.
        labelled: ``False`` serves all-``IGNORE_INDEX`` masks.
    """

    def __init__(
        self,
        pair: str,
        domain: str = "source",
        split: str = "train",
        num_images: int | None = None,
        image_size: int = 64,
        seed: int = 0,
        transform: SegmentationTransform | None = None,
        labelled: bool = True,
    ) -> None:
        if domain not in DOMAIN_CODES:
            raise KeyError(f"domain must be one of {tuple(DOMAIN_CODES)}, got {domain!r}")
        if split not in SPLIT_CODES:
            raise KeyError(f"synthetic split must be one of {tuple(SPLIT_CODES)}, got {split!r}")
        self.pair = get_pair(pair)
        self.domain, self.split, self.seed, self.labelled = domain, split, seed, labelled
        self.num_images = DEFAULT_NUM_IMAGES[split] if num_images is None else num_images
        if self.num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {self.num_images}")
        self.sampler = SceneSampler(image_size)
        self.transform = transform if transform is not None else build_eval_transform()

    @property
    def class_names(self) -> list[str]:
        return list(self.pair.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.pair.class_names)

    def __len__(self) -> int:
        return self.num_images

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` before any transform: (S, S, 3) uint8 image and (S, S) uint8 mask."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        image, mask = self.sampler.sample(self.pair, self.domain, self.split, index, self.seed)
        if not self.labelled:
            mask = np.full_like(mask, IGNORE_INDEX)
        return image, mask

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        image, mask = self.load(index)
        image_tensor, mask_tensor = self.transform(image, mask)
        path = f"synthetic/{self.pair.name}/{self.domain}/{self.split}/{index:06d}"
        return {"image": image_tensor, "mask": mask_tensor, "path": path}
