"""``DomainPairDataModule``: source and target batches side by side for cross-domain segmentation.

Training yields ``{"source": batch, "target": batch}`` from a Lightning ``CombinedLoader`` in
``max_size_cycle`` mode: an epoch runs over the larger domain and the smaller one cycles, so a few
labelled target images keep flowing beside a large source set. Validation, test and predict use
the target domain only. Shuffling and augmentation follow this module's ``seed`` (not
``seed_everything``, which seeds the model): each loader has its own generator, and each DataLoader
worker reseeds its copy of the albumentations pipeline from it (:mod:`data_modules.loaders`). A
sweep over seeds changes both ``seed_everything`` and ``data.init_args.seed``.
"""

from __future__ import annotations

import dataclasses
import warnings

import lightning as L
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from data_modules.loaders import check_loader_settings, seeded_loader
from data_modules.normalization import resolve_normalization
from data_modules.segmentation.factory import build_segmentation_dataset, domain_class_names
from data_modules.segmentation.image_dataset import (
    SegmentationImageDataset,
    same_size_collate,
    verify_dataset,
)
from data_modules.segmentation.label_maps import IGNORE_INDEX, SYNTHIA_13, SYNTHIA_16
from data_modules.segmentation.specs import DomainSpec, check_spec, missing_folder, warn_unmapped_classes
from data_modules.segmentation.transforms import (
    build_eval_transform,
    build_train_transform,
    check_train_geometry,
)

SYNTHETIC_SCALE_RANGE = (1.0, 1.5)  # rendered at crop size: only zoom in, never pad with ignore
REAL_SCALE_RANGE = (0.5, 2.0)
_STREAMS = {
    "source": 0,
    "target": 1,
    "val": 2,
    "test": 3,
    "predict": 3,
}  # seed offsets: each loader its own stream


class DomainPairDataModule(L.LightningDataModule):
    """A source and a target domain, each a :class:`DomainSpec` (a YAML mapping).

    Args:
        source: the domain the model comes from (labelled).
        target: the domain to adapt to; ``labelled: false`` for unsupervised adaptation.
        target_val: validation data (``None``: ``target`` with ``split: val``, labelled, uncapped;
            a ``folder`` target has no splits, so that is its training images, with a warning).
        target_test: test/predict data (``None``: synthetic targets use ``target`` with ``split: test``,
            labelled, uncapped; real ones reuse ``target_val``, as the literature evaluates on the
            official val split).
        crop_size: training crop side; also the rendering size of synthetic domains.
        batch_size: per-domain training batch size.
        val_batch_size: evaluation batch size (``None`` = batch_size). Real datasets whose images
            differ in size or aspect ratio (Mapillary, some folders) need 1 (``base_size`` fixes only
            the shorter side).
        num_workers: DataLoader worker processes per loader.
        scale_range: random rescale range for training (``None``: (1.0, 1.5) for synthetic,
            (0.5, 2.0) for real data).
        base_size: real data: resize the shorter side to this before augmenting, and the evaluated
            image (``None`` = native resolution); evaluation labels stay as annotated and the
            model's logits are upsampled to them (mmseg's protocol).
        color_jitter: light colour jitter in training (``None``: on for real, off for synthetic).
        seed: shuffling and augmentation seed.
        pin_memory: pin host memory in the DataLoaders (worth it on GPU).
        verify: decode and check every real image and mask during ``setup`` (slow on big sets), so a
            bad file fails the run before training rather than in the middle of an epoch.
        mean, std: input normalisation of the backbone's weights (``None``: ImageNet's; the CLI
            fills them from the backbone's timm tag, see :mod:`data_modules.normalization`).
    """

    def __init__(
        self,
        source: DomainSpec,
        target: DomainSpec,
        target_val: DomainSpec | None = None,
        target_test: DomainSpec | None = None,
        crop_size: int = 64,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        scale_range: tuple[float, float] | None = None,
        base_size: int | None = None,
        color_jitter: bool | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        verify: bool = False,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__()
        self.normalization = resolve_normalization(mean, std)
        check_loader_settings(batch_size, val_batch_size, num_workers)
        try:  # here, not at setup: a size typo is a configuration error, named before any work
            check_train_geometry(crop_size, scale_range or REAL_SCALE_RANGE, base_size)
        except ValueError as error:
            raise ValueError(f"data.init_args.{error}") from None
        self.save_hyperparameters()
        # specs are stored as plain YAML mappings in hparams.yaml and checkpoints
        for role in ("source", "target", "target_val", "target_test"):
            if isinstance(self.hparams[role], DomainSpec):
                self.hparams[role] = dataclasses.asdict(self.hparams[role])
        self.source = self._complete(source, "source")
        self.target = self._complete(target, "target")
        if target_val is None and self.target.dataset == "folder" and not self.target.labelled:
            raise ValueError(
                "data.init_args.target is an unlabelled folder (labelled: false), so there is nothing to "
                "validate on: give a labelled data.init_args.target_val"
            )
        val = target_val or self.target.replace(split="val", labelled=True, num_images=None)
        if target_val is None and self.target.dataset == "folder":
            warnings.warn(
                "data.init_args.target_val is not set and a 'folder' target has no splits: validation "
                "and test (and checkpoint selection on val metrics) run on the target's training images; "
                "give a held-out folder as target_val",
                stacklevel=2,
            )
        self.target_val = self._complete(val, "target_val")
        if target_val is not None and same_images(self.target, self.target_val):
            warnings.warn(
                f"data.init_args.target and target_val read the same images ({self.target.dataset} "
                f"{self.target.split}): the model adapts on what it is validated on, so val/mIoU (and the "
                "checkpoint chosen by it) is not a held-out score; give the target its training split",
                stacklevel=2,
            )
        if target_test is not None:
            self.target_test = self._complete(target_test, "target_test")
        elif self.target.dataset == "synthetic":
            self.target_test = self.target.replace(split="test", labelled=True, num_images=None)
        else:
            self.target_test = self.target_val
        self._check_label_spaces()
        self.datasets: dict[str, Dataset] = {}

    def _complete(self, spec: DomainSpec, role: str) -> DomainSpec:
        """Fill what the role implies (the synthetic domain and rendering size) and check the spec."""
        if isinstance(spec, dict):  # plain mappings from Python callers
            spec = DomainSpec(**spec)
        if spec.dataset == "synthetic":
            spec = spec.replace(
                domain=spec.domain or ("target" if role.startswith("target") else role),
                image_size=spec.image_size or self.hparams.crop_size,
            )
        elif role in ("target_val", "target_test"):
            spec = self._inherit_from_target(spec)
        check_spec(spec, role)
        warn_unmapped_classes(spec, role)
        return spec

    def _inherit_from_target(self, spec: DomainSpec) -> DomainSpec:
        """What a val/test domain of the target's dataset leaves unset and the target sets.

        * ``folder``: the classes (``num_classes`` / ``class_names``); they would otherwise default
          to Cityscapes' 19 and be refused against a target of another label space, e.g. when
          ``predict`` is pointed at a folder of photos. Not ``id_map``: it says how *its* masks are
          encoded, and masks that already hold train ids would otherwise be remapped to ignore.
        * ``acdc``: the ``condition``, so a night target is validated on night, not on all four.
        """
        target = self.target
        if spec.dataset != target.dataset:
            return spec
        if spec.dataset == "folder" and spec.num_classes is None and spec.class_names is None:
            return spec.replace(num_classes=target.num_classes, class_names=target.class_names)
        if spec.dataset == "acdc" and spec.condition is None:
            return spec.replace(condition=target.condition)
        return spec

    def _check_label_spaces(self) -> None:
        names = domain_class_names(self.source)
        for role, spec in (
            ("target", self.target),
            ("target_val", self.target_val),
            ("target_test", self.target_test),
        ):
            if domain_class_names(spec) != names:
                raise ValueError(
                    f"{role} ({spec.dataset}) uses classes {domain_class_names(spec)} but the source "
                    f"({self.source.dataset}) uses {names}; both domains need one label space"
                )

    @property
    def class_names(self) -> list[str]:
        return domain_class_names(self.source)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def miou_subsets(self) -> dict[str, tuple[int, ...]]:
        """Extra mIoU figures the literature reports for this pair: SYNTHIA sources are scored on
        the 16 classes SYNTHIA has and on 13 (without wall, fence, pole), besides all 19."""
        if self.source.dataset == "synthia":
            return {"mIoU16": SYNTHIA_16, "mIoU13": SYNTHIA_13}
        return {}

    @property
    def ignore_index(self) -> int:
        return IGNORE_INDEX

    @property
    def predict_spec(self) -> DomainSpec:
        """``target_test`` without its masks: ``predict`` needs none (a bad or missing mask of the
        validation images it falls back to would otherwise stop it), only each image's size."""
        return self.target_test.replace(labelled=False)

    def check_folders(self, stage: str) -> None:
        """The folders the config names for ``stage`` exist (the CLI asks before it writes anything)."""
        roles = {"fit": ("source", "target", "target_val"), "validate": ("target_val",)}.get(
            stage, ("target_test",)
        )
        for role in roles:
            spec = self.predict_spec if stage == "predict" else getattr(self, role)
            problem = missing_folder(spec, f"data.init_args.{role}")
            if problem:
                raise FileNotFoundError(problem)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._build("source", self.source, train=True)
            self._build("target", self.target, train=True)
        if stage in (None, "fit", "validate"):
            self._build("val", self.target_val, train=False)
        if stage in (None, "test"):
            self._build("test", self.target_test, train=False)
        if stage in (None, "predict"):
            self._build("predict", self.predict_spec, train=False)

    def _build(self, name: str, spec: DomainSpec, train: bool) -> None:
        if name in self.datasets:
            return
        h = self.hparams
        synthetic = spec.dataset == "synthetic"
        base_size = None if synthetic else h.base_size
        if train:
            scale = h.scale_range or (SYNTHETIC_SCALE_RANGE if synthetic else REAL_SCALE_RANGE)
            jitter = (not synthetic) if h.color_jitter is None else h.color_jitter
            seed = h.seed + _STREAMS[name]
            transform = build_train_transform(
                h.crop_size, tuple(scale), base_size, jitter, seed, self.normalization
            )
        else:
            transform = build_eval_transform(base_size, self.normalization)
        dataset = build_segmentation_dataset(spec, transform)
        if h.verify and isinstance(dataset, SegmentationImageDataset):
            verify_dataset(dataset)
        self.datasets[name] = dataset

    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        if name not in self.datasets:
            raise RuntimeError(f"call setup() before asking for the {name!r} dataloader")
        h = self.hparams
        collate = None if shuffle else same_size_collate  # evaluation: images at their native sizes
        seed = h.seed + _STREAMS[name]
        return seeded_loader(
            self.datasets[name], batch_size, shuffle, h.num_workers, h.pin_memory, seed, collate
        )

    @property
    def _eval_batch_size(self) -> int:
        return self.hparams.val_batch_size or self.hparams.batch_size

    def train_dataloader(self) -> CombinedLoader:
        loaders = {
            role: self._loader(role, self.hparams.batch_size, shuffle=True) for role in ("source", "target")
        }
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self._eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self._eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self._eval_batch_size, shuffle=False)


def same_images(a: DomainSpec, b: DomainSpec) -> bool:
    """Whether two real domains read the same files (dataset, folder, split and ACDC condition)."""
    keys = ("dataset", "root", "split", "image_dir", "image_suffix", "condition")
    return a.dataset != "synthetic" and all(getattr(a, key) == getattr(b, key) for key in keys)
