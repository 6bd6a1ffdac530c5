"""SpeciesDataModule: validation carved from train, loaders, reproducibility; the split helpers."""

from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from data_modules.loaders import seed_worker_transform, seeded_loader
from data_modules.species import SpeciesDataModule, build_train_transform
from data_modules.species.splits import balanced_subset, stratified_split


def test_stratified_split_on_hand_made_labels():
    labels = [0, 0, 0, 0, 1, 1, 2]
    kept, held = stratified_split(labels, 0.25, seed=0)
    assert sorted(np.asarray(labels)[held].tolist()) == [0, 1]  # 1 of 4, at least 1 of 2, none of 1
    assert sorted(kept.tolist() + held.tolist()) == list(range(7))
    assert stratified_split(labels, 0.25, seed=0)[1].tolist() == held.tolist()
    assert stratified_split(labels, 0.0, seed=0)[1].size == 0
    kept, _ = stratified_split([0, 0, 1, 1], 0.9, seed=0)  # a large fraction still leaves each class one
    assert sorted(np.asarray([0, 0, 1, 1])[kept].tolist()) == [0, 1]
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(labels, 1.0, seed=0)


def test_balanced_subset_takes_round_robin_over_classes():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    picked = balanced_subset(labels, 4, seed=1)
    assert len(picked) == 4 and len(set(picked.tolist())) == 4
    counts = np.bincount(labels[picked], minlength=3)
    assert counts.min() == 1 and counts.max() == 2
    assert balanced_subset(labels, 99, seed=0).tolist() == list(range(7))
    many = np.repeat([0, 1, 2], 10)
    for seed in range(5):  # round robin: 6 of 3 classes is 2 of each, whatever the random order
        assert np.bincount(many[balanced_subset(many, 6, seed)], minlength=3).tolist() == [2, 2, 2]


def synthetic_module(**overrides):
    options = dict(image_size=32, num_train_images=64, num_test_images=32, batch_size=8, val_fraction=0.25)
    return SpeciesDataModule("synthetic", **{**options, **overrides})


def test_synthetic_module_sizes_classes_and_batches():
    module = synthetic_module()
    assert module.num_classes == 16 and len(module.class_names) == 16  # known before setup
    assert module.num_attributes == 67 and module.part_names == ["head", "body", "wing", "tail", "legs"]
    module.setup("fit")
    assert len(module.train_set) == 48 and len(module.val_set) == 16 and len(module.test_set) == 32
    val_labels = [int(module.val_set[i]["label"]) for i in range(16)]
    assert sorted(val_labels) == list(range(16))  # stratified: one of each class's four
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["label"].dtype == torch.int64
    assert batch["trait_mask"].shape == (8, 32, 32) and batch["part_masks"].shape == (8, 5, 32, 32)
    assert len(batch["path"]) == 8
    assert len(module.predict_dataloader().dataset) == 32


def test_validation_is_carved_from_train_deterministically():
    first, second, other = synthetic_module(), synthetic_module(), synthetic_module(seed=1)
    for module in (first, second, other):
        module.setup()
    assert first.val_set.indices == second.val_set.indices
    assert not set(first.val_set.indices) & set(first.train_set.indices)
    assert first.val_set.indices != other.val_set.indices
    assert first.val_set.dataset.split == "train" and first.test_set.split == "test"
    # validation images are served like test images (no random crop or flip), the same every time
    val_images = [first.val_set[0]["image"] for _ in range(8)]
    assert all(torch.equal(image, val_images[0]) for image in val_images)


class RandomDrawDataset(torch.utils.data.Dataset):
    """Returns a draw from its transform's random stream: shows which stream each worker uses."""

    def __init__(self) -> None:
        self.transform = build_train_transform(8, seed=0)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index):
        return int(self.transform.compose.random_generator.integers(1 << 30))


def test_each_worker_gets_its_own_reproducible_augmentation_stream():
    def draws(seed=0):
        loader = DataLoader(
            RandomDrawDataset(),
            batch_size=1,
            num_workers=2,
            worker_init_fn=seed_worker_transform,
            generator=torch.Generator().manual_seed(seed),
        )
        return [int(x) for x in loader]

    first = draws()
    assert first[0] != first[1]  # batches 0 and 1 come from different workers
    assert draws() == first
    assert draws(seed=1) != first  # the streams follow the loader's seed, not just the worker's number


class IndexDataset(torch.utils.data.Dataset):
    """Item i is i; a transform that ignores its seed, so only the sampler's order shows."""

    transform = SimpleNamespace(reseed=lambda seed: None)

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index):
        return index


def test_the_data_seed_sets_the_shuffled_order():
    def order(seed):
        return [int(x) for x in seeded_loader(IndexDataset(), 1, True, 0, False, seed)]

    assert order(0) == order(0) and order(0) != order(1) and sorted(order(1)) == list(range(16))


def test_training_batches_reproducible_with_workers():
    def first_batch():
        module = synthetic_module(resize_size=40, num_workers=2)
        module.setup()
        return next(iter(module.train_dataloader()))

    a, b = first_batch(), first_batch()
    assert a["path"] == b["path"] and torch.equal(a["image"], b["image"])


def test_each_training_loader_restarts_the_augmentation_stream():
    # the demo fits prompts, then a probe, on one data module: the probe must augment as if alone
    module = synthetic_module(resize_size=40)
    module.setup()
    first = next(iter(module.train_dataloader()))
    for _ in module.train_dataloader():  # a whole epoch, as an earlier fit would draw
        pass
    again = next(iter(module.train_dataloader()))
    assert again["path"] == first["path"] and torch.equal(again["image"], first["image"])


def test_pretrain_module_has_forty_species_and_attributes():
    module = SpeciesDataModule("synthetic_pretrain", image_size=32, num_train_images=80, num_test_images=40)
    module.setup()
    item = module.test_set[3]
    assert module.num_classes == 40 and item["attributes"].shape == (67,)
    assert not set(module.class_names) & set(synthetic_module().class_names)


def test_random_pretrain_module_is_unlabelled():
    module = SpeciesDataModule(
        "synthetic_random", image_size=32, num_train_images=20, num_test_images=4, batch_size=4
    )
    module.setup()
    assert module.num_classes == 0 and module.num_attributes == 67 and module.part_names
    assert len(module.train_set) + len(module.val_set) == 20
    batch = next(iter(module.train_dataloader()))
    assert (batch["label"] == -1).all() and batch["part_masks"].shape == (4, 5, 32, 32)


def write_folder(root, classes=("a", "b"), per_class=6):
    for name in classes:
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(np.full((12, 20, 3), 40 * k, dtype=np.uint8)).save(root / name / f"{k}.jpg")
    return root


def test_real_module_caps_and_carves(tmp_path):
    root = write_folder(tmp_path)
    module = SpeciesDataModule(
        "imagefolder",
        str(root),
        image_size=16,
        resize_size=18,
        num_train_images=6,
        val_fraction=0.5,
        test_fraction=0.25,
        batch_size=2,
    )
    assert module.class_names == ["a", "b"] and module.attribute_names == []
    module.setup()
    assert len(module.train_set) + len(module.val_set) == 6 and len(module.val_set) == 4
    assert len(module.test_set) == 4  # round(0.25 * 6) per class
    batch = next(iter(module.val_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 16) and set(batch) == {"image", "label", "path"}
    capped = SpeciesDataModule(
        "imagefolder", str(root), image_size=16, num_train_images=6, num_test_images=2, test_fraction=0.25
    )
    capped.setup()
    assert len(capped.test_set) == 2 and len(capped.train_set) + len(capped.val_set) == 6  # each its own cap


def test_module_argument_errors(tmp_path):
    with pytest.raises(KeyError, match="unknown species dataset"):
        SpeciesDataModule("birds")
    with pytest.raises(ValueError, match="root"):
        SpeciesDataModule("cub")
    with pytest.raises(ValueError, match="val_fraction"):
        SpeciesDataModule(val_fraction=1.0)
    with pytest.raises(FileNotFoundError, match="missing"):
        _ = SpeciesDataModule("cub", str(tmp_path / "missing")).num_classes
    with pytest.raises(ValueError, match="resize_size"):
        synthetic_module(resize_size=16).setup()


class TinyClassifier(L.LightningModule):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(3, num_classes)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self.linear(batch["image"].mean((2, 3))), batch["label"])

    def validation_step(self, batch, batch_idx):
        loss = nn.functional.cross_entropy(self.linear(batch["image"].mean((2, 3))), batch["label"])
        self.log("val_loss", loss, batch_size=len(batch["label"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("val_fraction", [0.25, 0.0])
def test_trainer_runs_with_and_without_validation(tmp_path, val_fraction):
    module = synthetic_module(val_fraction=val_fraction)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(TinyClassifier(module.num_classes), datamodule=module)
    assert trainer.global_step == 2
    assert ("val_loss" in trainer.callback_metrics) == (val_fraction > 0)
