"""``SpeciesDataModule``: fine-grained classification data for Prompt-CAM and its baselines.

Validation is carved from the *training* split (stratified per class, fixed by ``seed``) so model
selection never looks at the test set; ``test`` and ``predict`` use the official test split.
Shuffling and augmentation follow this module's ``seed`` (not ``seed_everything``, which seeds the
model): each loader has its own generator, and each DataLoader worker reseeds its albumentations
pipeline from it (:mod:`data_modules.loaders`). A sweep over seeds changes both ``seed_everything``
and ``data.init_args.seed`` (which also re-carves the validation split).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset, Subset

from data_modules.loaders import check_loader_settings, seeded_loader
from data_modules.normalization import resolve_normalization
from data_modules.species.creature_renderer import MIN_RENDER_SIZE
from data_modules.species.factory import (
    SYNTHETIC_SETS,
    cap_records,
    check_dataset_name,
    read_species_index,
)
from data_modules.species.image_dataset import SpeciesImageDataset, SpeciesIndex, verify_images
from data_modules.species.species_catalogue import (
    ATTRIBUTE_NAMES,
    PART_NAMES,
    SpeciesCatalogue,
    build_catalogue,
)
from data_modules.species.splits import stratified_split
from data_modules.species.synthetic_species import SyntheticSpecies
from data_modules.species.transforms import (
    SpeciesTransform,
    build_eval_transform,
    build_train_transform,
    check_sizes,
)


class SpeciesDataModule(L.LightningDataModule):
    """Species images for classification; see ``data_modules.species`` for the item keys.

    Args:
        dataset: ``synthetic`` | ``synthetic_pretrain`` | ``synthetic_random`` (unlabelled) | ``cub`` | ``dogs`` | ``cars`` | ``flowers``
            | ``inat`` | ``imagefolder``.
        root: dataset folder (real datasets only).
        image_size: network input size (crop size).
        resize_size: square resize before the crop (Prompt-CAM: 240 for 224); ``None`` = image_size.
            Synthetic creatures are rendered directly at this size.
        batch_size / val_batch_size: training / evaluation batch sizes (``None`` = batch_size).
        num_workers: DataLoader worker processes.
        val_fraction: share of each class of the training split held out for validation (0 = none).
        seed: validation carving, synthetic image generation, caps and augmentation seed.
        num_train_images / num_test_images: synthetic split sizes (default 100 / 50 per species);
            for real data, class-balanced caps (handy for smoke runs).
        test_fraction: imagefolder without a test/ folder: share of each class held out as test.
        catalogue_seed: which synthetic species exist (independent of ``seed``).
        verify_images: decode every real image during setup (slow; otherwise a corrupt file fails
            when first loaded, naming the file).
        pin_memory: pin host memory in the DataLoaders (worth it on GPU).
        cache_renders: synthetic only: keep rendered creatures in memory so later epochs skip
            rendering (see :class:`SyntheticSpecies`); worth it with ``num_workers=0``.
        mean, std: input normalisation of the backbone's weights (``None``: ImageNet's; the CLI
            fills them from the backbone's timm tag, see :mod:`data_modules.normalization`).
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        root: str | None = None,
        image_size: int = 224,
        resize_size: int | None = None,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_train_images: int | None = None,
        num_test_images: int | None = None,
        test_fraction: float = 0.2,
        catalogue_seed: int = 0,
        verify_images: bool = False,
        pin_memory: bool = False,
        cache_renders: bool = False,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__()
        check_dataset_name(dataset)
        self.normalization = resolve_normalization(mean, std)
        if dataset not in SYNTHETIC_SETS and root is None:
            raise ValueError(f"dataset {dataset!r} needs root=<folder>")
        check_loader_settings(batch_size, val_batch_size, num_workers)
        # checked here, not at setup: a typo is a configuration error, named before any work
        try:
            check_sizes(image_size, resize_size)
        except ValueError as error:
            raise ValueError(f"data.init_args.{error}") from None
        if dataset in SYNTHETIC_SETS and (resize_size or image_size) < MIN_RENDER_SIZE:
            raise ValueError(
                f"data.init_args.image_size (resize_size when set) must be >= {MIN_RENDER_SIZE} for the "
                f"synthetic creatures, got {resize_size or image_size}"
            )
        for key, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= fraction < 1.0:
                raise ValueError(f"data.init_args.{key} must be in [0, 1), got {fraction}")
        for key, count in (("num_train_images", num_train_images), ("num_test_images", num_test_images)):
            if count is not None and count < 1:
                raise ValueError(f"data.init_args.{key} must be >= 1 or null, got {count}")
        self.save_hyperparameters()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def check_folders(self, stage: str) -> None:
        """The dataset root exists (the CLI asks before it writes anything); its layout is the readers'."""
        root = self.hparams.root
        if not self.is_synthetic and not Path(root).expanduser().is_dir():
            raise FileNotFoundError(
                f"data.init_args.root: folder not found: {root} is not a directory ({self.hparams.dataset} data)"
            )

    @property
    def is_synthetic(self) -> bool:
        return self.hparams.dataset in SYNTHETIC_SETS

    @cached_property
    def catalogue(self) -> SpeciesCatalogue:
        return build_catalogue(self.hparams.catalogue_seed)

    @cached_property
    def index(self) -> SpeciesIndex:
        """The real dataset's records (read on first use: class counts are known before setup)."""
        if self.is_synthetic:
            raise AttributeError(f"{self.hparams.dataset!r} is synthetic and has no file index")
        h = self.hparams
        return read_species_index(h.dataset, Path(h.root), h.test_fraction, h.seed)

    @property
    def class_names(self) -> list[str]:
        if self.hparams.dataset == "synthetic_random":
            return []  # every image is its own species: no class labels
        if self.is_synthetic:
            return [s.name for s in self.catalogue.species_set(SYNTHETIC_SETS[self.hparams.dataset])]
        return list(self.index.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def attribute_names(self) -> list[str]:
        """Names of the ``attributes`` multi-hot entries (synthetic only; empty for real data)."""
        return list(ATTRIBUTE_NAMES) if self.is_synthetic else []

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_names)

    @property
    def part_names(self) -> list[str]:
        """Names of the ``part_masks`` channels (synthetic only; empty for real data)."""
        return list(PART_NAMES) if self.is_synthetic else []

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        h = self.hparams
        train_tf = build_train_transform(h.image_size, h.resize_size, h.seed, self.normalization)
        eval_tf = build_eval_transform(h.image_size, h.resize_size, self.normalization)
        train_for_training, train_for_eval, test = (
            self._synthetic_sets(train_tf, eval_tf)
            if self.is_synthetic
            else self._real_sets(train_tf, eval_tf)
        )
        kept, held_out = stratified_split(train_for_training.labels, h.val_fraction, h.seed)
        self.train_set = Subset(train_for_training, kept.tolist())
        self.val_set = Subset(train_for_eval, held_out.tolist())
        self.test_set = test

    def _synthetic_sets(self, train_tf: SpeciesTransform, eval_tf: SpeciesTransform) -> tuple:
        h = self.hparams
        render_size = h.resize_size or h.image_size
        species_set = SYNTHETIC_SETS[h.dataset]

        def make(split: str, count: int | None, transform: SpeciesTransform) -> SyntheticSpecies:
            return SyntheticSpecies(
                species_set, split, count, render_size, h.seed, self.catalogue, transform, h.cache_renders
            )

        return (
            make("train", h.num_train_images, train_tf),
            make("train", h.num_train_images, eval_tf),
            make("test", h.num_test_images, eval_tf),
        )

    def _real_sets(self, train_tf: SpeciesTransform, eval_tf: SpeciesTransform) -> tuple:
        h = self.hparams
        train_records = cap_records(self.index.train, h.num_train_images, h.seed)
        test_records = cap_records(self.index.test, h.num_test_images, h.seed)
        if h.verify_images:
            verify_images(train_records + test_records)
        names = self.index.class_names
        return (
            SpeciesImageDataset(train_records, names, train_tf),
            SpeciesImageDataset(train_records, names, eval_tf),
            SpeciesImageDataset(test_records, names, eval_tf),
        )

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        h = self.hparams
        return seeded_loader(dataset, batch_size, shuffle, h.num_workers, h.pin_memory, h.seed)

    @property
    def _eval_batch_size(self) -> int:
        return self.hparams.val_batch_size or self.hparams.batch_size

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is not None and len(self.val_set) == 0:
            return []  # val_fraction=0: Lightning skips validation
        return self._loader(self.val_set, self._eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self._eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
