"""DomainPairDataModule: paired training batches, target evaluation loaders, label spaces, transforms."""

import re
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser
from PIL import Image

from data_modules.segmentation import (
    CITYSCAPES_CLASSES,
    IGNORE_INDEX,
    SCENE_CLASSES,
    DomainPairDataModule,
    DomainSpec,
    SegmentationDataError,
    build_eval_transform,
    build_train_transform,
)
from tmtcam.viz.heatmaps import denormalize


def synthetic(pair="clear_to_fog", **fields) -> DomainSpec:
    return DomainSpec("synthetic", pair=pair, **fields)


def first_train_batch(datamodule: DomainPairDataModule) -> dict:
    datamodule.setup("fit")
    batch, _, _ = next(iter(datamodule.train_dataloader()))  # CombinedLoader: (batch, index, loader index)
    return batch


def test_training_yields_source_and_target_batches_of_the_right_shapes():
    datamodule = DomainPairDataModule(
        synthetic(num_images=12), synthetic(num_images=5), crop_size=32, batch_size=4
    )
    batch = first_train_batch(datamodule)
    assert set(batch) == {"source", "target"}
    for role in ("source", "target"):
        assert batch[role]["image"].shape == (4, 3, 32, 32) and batch[role]["image"].dtype == torch.float32
        assert batch[role]["mask"].shape == (4, 32, 32) and batch[role]["mask"].dtype == torch.int64
        assert all(f"/{role}/train/" in path for path in batch[role]["path"])
    assert set(batch["target"]["mask"].unique().tolist()) <= set(range(len(SCENE_CLASSES)))
    # max_size_cycle: the epoch follows the larger source set (12 // 4 batches), the target cycles.
    assert len(list(datamodule.train_dataloader())) == 3


def test_unlabelled_target_gives_all_ignore_masks_but_validation_is_labelled():
    datamodule = DomainPairDataModule(
        synthetic(num_images=4), synthetic(num_images=4, labelled=False), batch_size=2
    )
    batch = first_train_batch(datamodule)
    assert torch.all(batch["target"]["mask"] == IGNORE_INDEX)
    assert (batch["source"]["mask"] != IGNORE_INDEX).any()
    assert datamodule.target_val.labelled and datamodule.target_val.split == "val"
    assert datamodule.target_val.num_images is None  # the whole val split, not the target's few-shot cap


def test_val_and_test_loaders_serve_target_images_at_the_rendering_size():
    datamodule = DomainPairDataModule(
        synthetic(), synthetic(num_images=3), target_val=synthetic(split="val", num_images=5), crop_size=48,
        batch_size=2, val_batch_size=5,
    )  # fmt: skip
    datamodule.setup("validate")
    datamodule.setup("test")
    val = next(iter(datamodule.val_dataloader()))
    assert val["image"].shape == (5, 3, 48, 48) and val["mask"].shape == (5, 48, 48)
    assert all("/target/val/" in path for path in val["path"])
    test = next(iter(datamodule.test_dataloader()))
    assert all("/target/test/" in path for path in test["path"])
    assert len(datamodule.test_dataloader().dataset) == 200  # default synthetic test size
    datamodule.setup("predict")  # the test images, without their masks (predict needs none)
    predicted = next(iter(datamodule.predict_dataloader()))
    assert predicted["path"] == test["path"] and (predicted["mask"] == IGNORE_INDEX).all()


def test_class_metadata_comes_from_the_source_label_space():
    datamodule = DomainPairDataModule(synthetic(), synthetic())
    assert datamodule.num_classes == 8 and datamodule.class_names == list(SCENE_CLASSES)
    assert datamodule.ignore_index == 255
    real = DomainPairDataModule(
        DomainSpec("gta5", root="/data/gta5"), DomainSpec("cityscapes", root="/data/cs")
    )
    assert real.num_classes == 19 and real.class_names == list(CITYSCAPES_CLASSES)
    assert real.target_test == real.target_val  # real data: evaluate on the official val split


def test_mismatched_label_spaces_are_refused():
    with pytest.raises(ValueError, match="one label space"):
        DomainPairDataModule(synthetic(), DomainSpec("cityscapes", root="/data/cs"))


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        (DomainSpec("bdd100k", root="/d", id_map={0: 5}), "target: id_map only the 'folder' reader reads"),
        (DomainSpec("darkzurich", root="/d", condition="night"), "target: condition only the 'acdc' reader"),
        (DomainSpec("cityscapes", root="/d", image_suffix=".jpg"), "target: image_suffix only the 'folder'"),
        (DomainSpec("gta5", root="/d", pair="day_to_night"), "target: pair only the 'synthetic' reader"),
    ],
)
def test_a_field_the_dataset_does_not_read_is_refused_not_ignored(spec, named):
    """An id_map on BDD100K was ignored while the unmapped-class warning made it look applied."""
    with pytest.raises(ValueError, match=re.escape(named)):
        DomainPairDataModule(DomainSpec("cityscapes", root="/d"), spec)


def test_switching_a_folder_target_to_a_real_dataset_names_every_leftover_and_the_reset():
    """A command-line dict merges into the config's spec, so a folder's fields stay behind."""
    leftover = DomainSpec("cityscapes", root="/d", image_dir="images", mask_dir="masks", image_suffix=".jpg")
    with pytest.raises(ValueError) as refused:
        DomainPairDataModule(DomainSpec("cityscapes", root="/d"), leftover)
    message = str(refused.value)
    assert "target: image_dir, mask_dir, image_suffix only the 'folder' reader reads" in message
    assert (
        """--data.init_args.target '{"dataset": "cityscapes", "image_dir": null, "mask_dir": null, "image_suffix": ".png"}'"""
        in message
    )


def test_plain_mappings_are_accepted_as_specs():
    datamodule = DomainPairDataModule(
        {"dataset": "synthetic", "pair": "day_to_night"}, synthetic("day_to_night")
    )
    assert datamodule.source.domain == "source" and datamodule.target.domain == "target"
    assert datamodule.source.image_size == 64


def test_a_folder_target_without_target_val_warns_that_validation_uses_training_images():
    folder = {"dataset": "folder", "root": "/data/mine", "image_dir": "images", "mask_dir": "labels"}
    with pytest.warns(UserWarning, match="target_val is not set"):
        DomainPairDataModule({"dataset": "cityscapes", "root": "/data/cs"}, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DomainPairDataModule(
            {"dataset": "cityscapes", "root": "/data/cs"}, folder, target_val=dict(folder, root="/data/v")
        )


def test_an_unlabelled_folder_target_needs_no_masks_but_a_labelled_target_val(tmp_path: Path):
    (tmp_path / "photos").mkdir()
    unlabelled = {"dataset": "folder", "root": str(tmp_path), "image_dir": "photos", "mask_dir": "masks"}
    unlabelled["labelled"] = False
    with pytest.raises(
        ValueError, match=r"target is an unlabelled folder .* give a labelled data\.init_args\.target_val"
    ):
        DomainPairDataModule({"dataset": "cityscapes", "root": str(tmp_path)}, unlabelled)
    val = dict(unlabelled, labelled=True, image_dir="val", mask_dir="val_masks")
    data = DomainPairDataModule({"dataset": "cityscapes", "root": str(tmp_path)}, unlabelled, target_val=val)
    with pytest.raises(FileNotFoundError, match=r"^data\.init_args\.target_val\.image_dir: .*val "):
        data.check_folders("fit")  # the target's missing masks/ folder is not asked for


def test_folder_val_and_test_domains_take_the_folder_targets_label_space():
    names = ["sky", "road", "car"]
    target = {"dataset": "folder", "root": "/d", "image_dir": "i", "mask_dir": "m", "class_names": names}
    target["id_map"] = {7: 0, 8: 1, 26: 2}  # how the target's masks are encoded, not the test folder's
    source = dict(target, root="/s")
    photos = {"dataset": "folder", "root": "/p", "image_dir": ".", "labelled": False}
    data = DomainPairDataModule(source, target, target_val=dict(target, root="/v"), target_test=photos)
    assert data.target_test.class_names == names and data.class_names == names
    assert data.target_test.id_map is None
    with pytest.raises(ValueError, match="target_test .* one label space"):  # a label space of its own
        DomainPairDataModule(
            source, target, target_val=dict(target, root="/v"), target_test=dict(photos, num_classes=5)
        )


def test_an_id_map_that_gives_a_class_no_raw_id_warns_naming_the_class():
    names = ["sky", "road", "car"]
    target = {"dataset": "folder", "root": "/d", "image_dir": "i", "mask_dir": "m", "class_names": names}
    source = dict(target, root="/s")
    typo = dict(target, id_map={7: 0, 8: 0, 26: 2})  # 8 is road's raw id, mistyped as sky's train id
    with pytest.warns(UserWarning, match=r"^target\.id_map maps no raw id to class\(es\) 1 'road':"):
        DomainPairDataModule(source, typo, target_val=dict(target, root="/v"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DomainPairDataModule(
            source, dict(target, id_map={7: 0, 8: 1, 26: 2}), target_val=dict(target, root="/v")
        )
    assert not [w for w in caught if "id_map" in str(w.message)]


def test_an_evaluation_batch_of_differently_sized_images_names_them_and_the_setting(tmp_path: Path):
    for name, size in (("a", (40, 48)), ("b", (32, 64))):
        for folder in ("images", "labels"):
            (tmp_path / folder).mkdir(exist_ok=True)
            pixels = np.zeros((*size, 3) if folder == "images" else size, dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / folder / f"{name}.png")
    val = {"dataset": "folder", "root": str(tmp_path), "image_dir": "images", "mask_dir": "labels"}
    data = DomainPairDataModule({"dataset": "cityscapes", "root": str(tmp_path)}, val, target_val=val)
    data.hparams.val_batch_size = 2
    data.setup("validate")
    with pytest.raises(
        SegmentationDataError, match=r"a\.png \(40, 48\), .*b\.png \(32, 64\).*val_batch_size: 1"
    ):
        next(iter(data.val_dataloader()))
    data.hparams.val_batch_size = 1
    assert [batch["image"].shape[-2:] for batch in data.val_dataloader()] == [(40, 48), (32, 64)]


def test_an_acdc_condition_carries_over_to_validation_and_training_on_the_val_images_warns():
    cityscapes = {"dataset": "cityscapes", "root": "/data/cs"}
    night = {"dataset": "acdc", "root": "/data/acdc", "condition": "night"}
    data = DomainPairDataModule(cityscapes, night, target_val=dict(night, split="val", condition=None))
    assert (data.target_val.condition, data.target_test.condition) == ("night", "night")
    dark_val = {"dataset": "darkzurich", "root": "/data/dz", "split": "val"}
    with pytest.warns(UserWarning, match="target and target_val read the same images .* not a held-out"):
        DomainPairDataModule(cityscapes, dict(dark_val, labelled=False), target_val=dark_val)


def test_yaml_domain_specs_parse_as_in_docs():
    """The DomainSpec snippets of docs/datasets.md are plain mappings under the datamodule's init_args."""
    parser = ArgumentParser()
    parser.add_subclass_arguments(L.LightningDataModule, "data")
    config = parser.parse_string(
        """
        data:
          class_path: data_modules.segmentation.DomainPairDataModule
          init_args:
            source: {dataset: gta5, root: /data/gta5}
            target: {dataset: folder, root: /data/mine, image_dir: images, mask_dir: labels,
                     image_suffix: .jpg, mask_suffix: _ids.png, id_map: {7: 0, 26: 13}, labelled: false}
            target_val: {dataset: cityscapes, root: /data/cityscapes, split: val}
        """
    )
    datamodule = parser.instantiate(config).data
    assert datamodule.source == DomainSpec("gta5", root="/data/gta5")
    assert datamodule.target.id_map == {7: 0, 26: 13} and datamodule.target.labelled is False
    assert datamodule.target_val.split == "val" and datamodule.num_classes == 19


def test_real_data_is_cropped_padded_with_ignore_and_workers_load_it(tmp_path: Path):
    for name in ("a", "b", "c"):
        folder = tmp_path / "images" / "10k" / "train"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(folder / f"{name}.jpg")
        masks = tmp_path / "labels" / "sem_seg" / "masks" / "train"
        masks.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 30), 13, np.uint8)).save(masks / f"{name}.png")
    spec = DomainSpec("bdd100k", root=str(tmp_path))
    datamodule = DomainPairDataModule(
        spec, spec, target_val=spec, crop_size=40, batch_size=2, scale_range=(1.0, 1.0), num_workers=1
    )
    batch = first_train_batch(datamodule)
    mask = batch["source"]["mask"]
    assert mask.shape == (2, 40, 40)
    assert set(mask.unique().tolist()) == {13, IGNORE_INDEX}  # padding never becomes a class
    # scale (1, 1) and a crop larger than the image: padding only, so every labelled pixel survives
    assert (mask == 13).sum(dim=(1, 2)).tolist() == [600, 600]


def test_crop_padding_is_black_in_the_image_and_ignored_in_the_mask():
    """Padding is 0 (black, the darkest colour after normalisation), never a white border the
    network would learn from; its mask is 255."""
    image = np.full((4, 4, 3), 128, np.uint8)
    tensor, mask = build_train_transform(8, scale_range=(1.0, 1.0), color_jitter=False, seed=0)(
        image, np.zeros((4, 4), np.uint8)
    )
    padded = mask == IGNORE_INDEX
    assert int(padded.sum()) == 8 * 8 - 4 * 4
    assert torch.allclose(tensor[0][padded], torch.full((48,), -0.485 / 0.229), atol=1e-4)


def test_train_transform_resamples_masks_with_nearest_neighbour():
    """1-px stripes of ids 0 and 6: any blending (linear, area, cubic) of a rescaled mask gives 1..5."""
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.where(np.arange(32) % 2 == 0, 0, 6).astype(np.uint8)[None, :].repeat(32, 0)
    for seed in range(4):  # down- and up-scaling both happen over these seeds
        tensor, out_mask = build_train_transform(24, scale_range=(0.6, 1.7), seed=seed)(image, mask)
        assert tensor.shape == (3, 24, 24) and out_mask.shape == (24, 24)
        ids = set(out_mask.unique().tolist())
        assert ids <= {0, 6, IGNORE_INDEX} and {0, 6} <= ids, f"seed {seed}: {sorted(ids)}"


def test_train_transform_crops_pads_and_flips_image_and_mask_together():
    """The red channel encodes the mask, so any crop offset or flip applied to one only shows up."""
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 8, (20, 40), dtype=np.uint8)  # per-pixel ids: a 1-px shift changes most of them
    image = np.stack([mask * 30, rng.integers(0, 256, mask.shape), rng.integers(0, 256, mask.shape)], axis=2)
    image = image.astype(np.uint8)
    flips = set()
    for seed in range(8):
        transform = build_train_transform(32, scale_range=(1.0, 1.0), color_jitter=False, seed=seed)
        tensor, out_mask = transform(image, mask)
        out_mask = out_mask.numpy()
        labelled = out_mask != IGNORE_INDEX
        assert labelled.sum() == 20 * 32  # height padded (ignore), width cropped
        red = denormalize(tensor)[..., 0].astype(int)
        assert np.abs(red - out_mask.astype(int) * 30)[labelled].max() <= 1, f"seed {seed}"
        crop = out_mask[labelled.any(axis=1)]
        matches = [
            (x, flip) for x in range(9) for flip in (False, True)
            if np.array_equal(crop, mask[:, x : x + 32][:, ::-1] if flip else mask[:, x : x + 32])
        ]  # fmt: skip
        assert matches, f"seed {seed}: the mask is no crop of the input"
        flips.add(matches[0][1])
    assert flips == {False, True}  # both branches of the random flip were checked


def test_rescaled_masks_stay_on_the_rescaled_image():
    """At a non-integer scale the mask must follow the bilinearly resized image: wherever the red
    channel (which encodes the mask) is clearly one class, the mask says that class."""
    blocks = np.random.default_rng(0).integers(0, 2, (16, 16)).repeat(4, 0).repeat(4, 1).astype(np.uint8) * 6
    image = np.stack([blocks * 30, blocks * 0, blocks * 0], axis=2).astype(np.uint8)  # red 0 or 180
    for seed in range(4):
        transform = build_train_transform(64, scale_range=(1.2, 1.45), color_jitter=False, seed=seed)
        tensor, out_mask = transform(image, blocks)
        red, out_mask = denormalize(tensor)[..., 0].astype(int), out_mask.numpy()
        clear = (red < 45) | (red > 135)  # away from the blended edges
        assert np.array_equal(out_mask[clear], np.where(red[clear] > 135, 6, 0)), f"seed {seed}"


def test_display_undoes_the_normalisation():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    normalised, _ = build_eval_transform()(image, mask)
    assert np.abs(denormalize(normalised).astype(int) - image).max() <= 1  # what logged images show


def test_check_folders_names_the_domain_each_stage_reads(tmp_path: Path):
    """fit reads source, target and target_val; validate target_val; test/predict target_test."""
    (tmp_path / "gta5").mkdir()
    data = DomainPairDataModule(
        {"dataset": "gta5", "root": str(tmp_path / "gta5")},
        {"dataset": "cityscapes", "root": str(tmp_path / "cityscapes")},
        target_test={"dataset": "acdc", "root": str(tmp_path / "acdc")},
    )
    with pytest.raises(
        FileNotFoundError, match=r"^data\.init_args\.target\.root: folder not found: .*cityscapes"
    ):
        data.check_folders("fit")
    with pytest.raises(FileNotFoundError, match=r"^data\.init_args\.target_val\.root: folder not found"):
        data.check_folders("validate")
    with pytest.raises(
        FileNotFoundError, match=r"^data\.init_args\.target_test\.root: folder not found: .*acdc"
    ):
        data.check_folders("test")
    (tmp_path / "cityscapes").mkdir()
    data.check_folders("fit")
    synthetic = DomainPairDataModule(
        {"dataset": "synthetic", "pair": "day_to_night"}, {"dataset": "synthetic", "pair": "day_to_night"}
    )
    synthetic.check_folders("fit")  # nothing on disk to check


def test_evaluation_resizes_the_image_but_keeps_the_labels_as_annotated():
    from data_modules.segmentation import build_eval_transform, build_train_transform

    image = np.zeros((32, 64, 3), np.uint8)
    mask = np.tile(np.arange(64, dtype=np.uint8) // 16, (32, 1))  # 4 vertical bands
    resized, labels = build_eval_transform(16)(image, mask)
    assert resized.shape == (3, 16, 32) and torch.equal(labels, torch.from_numpy(mask).long())
    _, train_labels = build_train_transform(16, (1.0, 1.0), base_size=16, color_jitter=False, seed=0)(
        image, mask
    )
    assert train_labels.shape == (16, 16)  # training crops image and mask together


def test_train_scale_range_rescales_before_the_crop_and_is_checked():
    """A 32 px image at scale 0.5 fills a quarter of the 32 px crop (the rest is ignore padding);
    at scale 2 the crop is all image."""
    image, mask = np.zeros((32, 32, 3), np.uint8), np.ones((32, 32), np.uint8)
    _, half = build_train_transform(32, (0.5, 0.5), color_jitter=False, seed=0)(image, mask)
    assert int((half == IGNORE_INDEX).sum()) == 32 * 32 - 16 * 16
    _, double = build_train_transform(32, (2.0, 2.0), color_jitter=False, seed=0)(image, mask)
    assert int((double == IGNORE_INDEX).sum()) == 0
    with pytest.raises(
        ValueError, match=r"scale_range must be \[low, high\] with 0 < low <= high, got \[1\.5, 0\.5\]"
    ):
        build_train_transform(32, (1.5, 0.5))
    with pytest.raises(ValueError, match="crop_size must be >= 1, got 0"):
        build_train_transform(0, (1.0, 1.0))


def test_reseeding_a_transform_restarts_its_random_stream():
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    transform = build_train_transform(24, (0.6, 1.7), color_jitter=True, seed=0)
    transform.reseed(5)
    first = transform(image, mask)[0]
    transform.reseed(5)
    assert torch.equal(transform(image, mask)[0], first)
    transform.reseed(6)
    assert not torch.equal(transform(image, mask)[0], first)


def test_source_and_target_loaders_draw_their_own_order_and_augmentations():
    """Same images in both domains: one shared stream would give identical source and target batches."""
    same = synthetic(num_images=8, domain="source")
    batch = first_train_batch(DomainPairDataModule(same, same, crop_size=32, batch_size=4))
    assert not torch.equal(batch["source"]["image"], batch["target"]["image"])


def test_training_loaders_drop_a_last_partial_batch_unless_it_is_the_only_one():
    datamodule = DomainPairDataModule(
        synthetic(num_images=10), synthetic(num_images=3), crop_size=32, batch_size=4
    )
    datamodule.setup("fit")
    loaders = datamodule.train_dataloader().iterables
    assert (len(loaders["source"]), len(loaders["target"])) == (2, 1)  # 10 // 4; 3 images make one batch


def test_real_data_is_colour_jittered_and_evaluated_at_base_size_with_native_labels(tmp_path: Path):
    images, masks = tmp_path / "images", tmp_path / "labels"
    for folder in (images, masks):
        folder.mkdir()
    Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(images / "a.png")
    Image.fromarray(np.ones((20, 30), np.uint8)).save(masks / "a.png")
    real = DomainSpec("folder", root=str(tmp_path), image_dir="images", mask_dir="labels", num_classes=3)
    datamodule = DomainPairDataModule(real, real, target_val=real, crop_size=16, base_size=10)
    datamodule.setup("fit")
    steps = [type(step).__name__ for step in datamodule.datasets["source"].transform.compose.transforms]
    assert "ColorJitter" in steps  # real photos; the embedded domains keep their colours
    sample = datamodule.datasets["val"][0]
    assert sample["image"].shape == (3, 10, 15) and sample["mask"].shape == (20, 30)
    embedded = DomainPairDataModule(synthetic(num_images=2), synthetic(num_images=2), crop_size=32)
    embedded.setup("fit")
    steps = [type(step).__name__ for step in embedded.datasets["source"].transform.compose.transforms]
    assert "ColorJitter" not in steps


def test_a_target_and_its_val_split_of_one_dataset_are_not_the_same_images():
    cityscapes = {"dataset": "cityscapes", "root": "/data/cs"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DomainPairDataModule(
            {"dataset": "gta5", "root": "/data/gta5"}, dict(cityscapes, split="train"),
            target_val=dict(cityscapes, split="val"),
        )  # fmt: skip


def test_two_acdc_conditions_of_one_split_are_not_the_same_images():
    """Fog as the target and night as its validation are different files: no "same images" warning;
    the same condition twice is."""
    acdc = {"dataset": "acdc", "root": "/data/acdc", "split": "train"}
    source = {"dataset": "cityscapes", "root": "/data/cs"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DomainPairDataModule(source, dict(acdc, condition="fog"), target_val=dict(acdc, condition="night"))
    with pytest.warns(UserWarning, match="target and target_val read the same images"):
        DomainPairDataModule(source, dict(acdc, condition="fog"), target_val=dict(acdc, condition="fog"))
