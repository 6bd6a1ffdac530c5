"""Bad input on the data surface: every case is refused (or converted with a warning) by a message that
names the offending file or folder. The per-case behaviour is documented in docs/datasets.md,
"When data is wrong"."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_modules.segmentation import (
    CorruptImageError,
    DomainPairDataModule,
    DomainSpec,
    ImageModeError,
    ImageModeWarning,
    LabelIdError,
    MaskFormatError,
    MaskSizeError,
    MissingCounterpartError,
    SegmentationDataError,
    build_segmentation_dataset,
    verify_dataset,
)
from data_modules.segmentation.specs import check_spec
from data_modules.species import SpeciesDataError, read_species_index

H, W = 8, 12


def named(path: Path) -> str:
    """A ``match`` pattern for a message that contains ``path``."""
    return re.escape(str(path))


def write_image(path: Path, pixels: np.ndarray | None = None, **save_args) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if pixels is None:
        pixels = np.zeros((H, W, 3), dtype=np.uint8)
        pixels[:, : W // 2] = (250, 20, 60)
    Image.fromarray(pixels).save(path, **save_args)
    return path


def write_mask(path: Path, ids=(0, 1, 2), size=(H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    stripes = np.asarray(ids, dtype=np.uint8)[np.arange(size[1]) % len(ids)]
    Image.fromarray(np.tile(stripes, (size[0], 1))).save(path)
    return path


def make_folder(root: Path, names=("a", "b"), image_suffix=".png") -> DomainSpec:
    """A generic image_dir + mask_dir dataset of 3 classes; ``<root>/img/<name>`` + ``<root>/ann/<name>.png``."""
    for name in names:
        write_image(root / "img" / f"{name}{image_suffix}")
        write_mask(root / "ann" / f"{name}.png")
    return DomainSpec(
        "folder", root=str(root), image_dir="img", mask_dir="ann", image_suffix=image_suffix, num_classes=3
    )


def make_cityscapes(root: Path, train_ids=(0, 1, 18, 255)) -> Path:
    for city in ("aachen", "bochum"):
        write_image(root / "leftImg8bit" / "train" / city / f"{city}_000000_000019_leftImg8bit.png")
        write_mask(
            root / "gtFine" / "train" / city / f"{city}_000000_000019_gtFine_labelTrainIds.png", train_ids
        )
    return root


def load_all(spec: DomainSpec) -> list[dict]:
    dataset = build_segmentation_dataset(spec)
    return [dataset[i] for i in range(len(dataset))]


# --- folders ----------------------------------------------------------------------------------------


def test_missing_root_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=named(tmp_path / "nowhere")):
        build_segmentation_dataset(DomainSpec("cityscapes", root=str(tmp_path / "nowhere")))


def test_missing_split_folder_is_named(tmp_path):
    root = make_cityscapes(tmp_path)
    with pytest.raises(FileNotFoundError, match=named(root / "leftImg8bit" / "val")):
        build_segmentation_dataset(DomainSpec("cityscapes", root=str(root), split="val"))
    (root / "leftImg8bit" / "val" / "x").mkdir(parents=True)
    write_image(root / "leftImg8bit" / "val" / "x" / "x_1_leftImg8bit.png")
    with pytest.raises(FileNotFoundError, match=named(root / "gtFine" / "val")):
        build_segmentation_dataset(DomainSpec("cityscapes", root=str(root), split="val"))


def test_empty_image_folder_is_named(tmp_path):
    (tmp_path / "images" / "10k" / "train").mkdir(parents=True)
    with pytest.raises(SegmentationDataError, match=rf"no BDD100K image files.*{named(tmp_path / 'images')}"):
        build_segmentation_dataset(DomainSpec("bdd100k", root=str(tmp_path)))


def test_empty_mask_folder_is_named(tmp_path):
    spec = make_folder(tmp_path)
    for mask in (tmp_path / "ann").iterdir():
        mask.unlink()
    with pytest.raises(SegmentationDataError, match=rf"no folder mask files.*{named(tmp_path / 'ann')}"):
        build_segmentation_dataset(spec)


def test_empty_split_list_is_named(tmp_path):
    write_image(tmp_path / "images" / "00001.png")
    write_mask(tmp_path / "labels" / "00001.png", (7, 8))
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("\n")
    with pytest.raises(
        SegmentationDataError, match=rf"{named(tmp_path / 'splits' / 'train.txt')} lists no images"
    ):
        build_segmentation_dataset(DomainSpec("gta5", root=str(tmp_path)))


def test_a_split_list_that_is_not_utf8_is_named(tmp_path):
    write_image(tmp_path / "images" / "00001.png")
    write_mask(tmp_path / "labels" / "00001.png", (7, 8))
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_bytes("00001.png\nstra\u00dfe.png\n".encode("latin-1"))
    with pytest.raises(
        SegmentationDataError, match=rf"split file {named(tmp_path / 'splits' / 'train.txt')}: not UTF-8"
    ):
        build_segmentation_dataset(DomainSpec("gta5", root=str(tmp_path)))


def test_image_without_mask_and_mask_without_image_are_named(tmp_path):
    spec = make_folder(tmp_path)
    orphan = write_image(tmp_path / "img" / "c.png")
    with pytest.raises(
        MissingCounterpartError, match=rf"{named(orphan)}.*{named(tmp_path / 'ann' / 'c.png')}"
    ):
        build_segmentation_dataset(spec)
    orphan.unlink()
    lonely = write_mask(tmp_path / "ann" / "z.png")
    with pytest.raises(MissingCounterpartError, match=named(lonely)):
        build_segmentation_dataset(spec)
    assert len(build_segmentation_dataset(spec.replace(labelled=False))) == 2  # masks not needed then


# --- files that do not decode ---------------------------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not an image")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_garbage, _truncated, _empty], ids=["garbage", "truncated", "empty"])
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_corrupt_or_truncated_image_is_named(tmp_path, damage, suffix):
    noisy = np.random.default_rng(0).integers(
        0, 256, (64, 64, 3), dtype=np.uint8
    )  # incompressible: truncation bites
    spec = make_folder(tmp_path, image_suffix=suffix)
    bad = write_image(tmp_path / "img" / f"b{suffix}", noisy)
    write_mask(tmp_path / "ann" / "b.png", size=(64, 64))
    damage(bad)
    dataset = build_segmentation_dataset(spec)
    dataset[0]  # the good file still loads
    with pytest.raises(CorruptImageError, match=named(bad)):
        dataset[1]
    with pytest.raises(CorruptImageError, match=named(bad)):
        verify_dataset(dataset)


def test_verify_fails_the_datamodule_setup_before_training(tmp_path):
    spec = make_folder(tmp_path)
    bad = tmp_path / "img" / "b.png"
    _garbage(bad)
    DomainPairDataModule(spec, spec).setup("fit")  # without verify a bad file only fails when loaded
    with pytest.raises(CorruptImageError, match=named(bad)):
        DomainPairDataModule(spec, spec, verify=True).setup("fit")


def test_corrupt_mask_is_named(tmp_path):
    spec = make_folder(tmp_path)
    bad = tmp_path / "ann" / "a.png"
    _truncated(bad)
    with pytest.raises(CorruptImageError, match=named(bad)):
        load_all(spec)


# --- masks that do not fit their image or their dataset ------------------------------------------


def test_mask_size_differing_from_its_image_names_both(tmp_path):
    spec = make_folder(tmp_path)
    mask = write_mask(tmp_path / "ann" / "b.png", size=(H, W + 2))
    with pytest.raises(
        MaskSizeError, match=rf"{named(mask)} is {W + 2}x{H}.*{named(tmp_path / 'img' / 'b.png')}"
    ):
        load_all(spec)


@pytest.mark.parametrize(
    ("dataset", "mask_path", "ids", "bad_id"),
    [
        ("cityscapes", "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png", (0, 19, 255), 19),
        ("cityscapes", "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png", (7, 40, 255), 40),
        ("mapillary", "training/labels/m.png", (13, 66), 66),
        ("folder", "ann/a.png", (0, 2, 3), 3),
    ],
    ids=["cityscapes-train-ids", "cityscapes-label-ids", "mapillary", "folder"],
)
def test_label_ids_outside_the_dataset_are_named(tmp_path, dataset, mask_path, ids, bad_id):
    if dataset == "cityscapes":
        write_image(tmp_path / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png")
        spec = DomainSpec("cityscapes", root=str(tmp_path))
    elif dataset == "mapillary":
        write_image(tmp_path / "training" / "images" / "m.jpg")
        spec = DomainSpec("mapillary", root=str(tmp_path))
    else:
        spec = make_folder(tmp_path, names=("a",))
    mask = write_mask(tmp_path / mask_path, ids)
    with pytest.raises(LabelIdError, match=rf"{named(mask)}.*\[{bad_id}\]"):
        load_all(spec)


def test_ignore_id_255_is_always_legal(tmp_path):
    item = load_all(DomainSpec("cityscapes", root=str(make_cityscapes(tmp_path, train_ids=(0, 255)))))[0]
    assert set(item["mask"].unique().tolist()) == {0, 255}


def test_colour_mask_is_refused_naming_it(tmp_path):
    spec = make_folder(tmp_path)
    colour = write_image(tmp_path / "ann" / "a.png")  # an RGB visualisation where ids belong
    with pytest.raises(MaskFormatError, match=rf"{named(colour)} has mode 'RGB'.*colour visualisation"):
        load_all(spec)


def test_grey_mask_saved_as_rgb_is_read_with_one_warning_naming_it(tmp_path):
    spec = make_folder(tmp_path)
    for name in ("a", "b"):
        ids = np.tile(np.array([0, 1, 2], dtype=np.uint8)[np.arange(W) % 3], (H, 1))
        write_image(tmp_path / "ann" / f"{name}.png", np.repeat(ids[..., None], 3, axis=2))
    with pytest.warns(ImageModeWarning, match=named(tmp_path / "ann" / "a.png")) as caught:
        items = load_all(spec)
    assert (
        len([w for w in caught if issubclass(w.category, ImageModeWarning)]) == 1
    )  # once per dataset and kind
    assert items[1]["mask"][0, :3].tolist() == [0, 1, 2]


# --- images of other modes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "pixels", "first_pixel"),
    [
        ("L", np.full((H, W), 77, dtype=np.uint8), [77, 77, 77]),
        (
            "RGBA",
            np.dstack([np.full((H, W, 3), 90, dtype=np.uint8), np.zeros((H, W), dtype=np.uint8)]),
            [90, 90, 90],
        ),
        ("I;16", np.full((H, W), 0x8000 + 200, dtype=np.uint16), [128, 128, 128]),
    ],
    ids=["greyscale", "rgba", "16-bit"],
)
def test_other_image_modes_are_converted_with_a_warning_naming_the_file(tmp_path, mode, pixels, first_pixel):
    spec = make_folder(tmp_path)
    odd = write_image(tmp_path / "img" / "b.png", pixels)
    assert Image.open(odd).mode == mode
    dataset = build_segmentation_dataset(spec)
    with pytest.warns(
        ImageModeWarning, match=rf"{named(odd)}.*{re.escape(mode)}|{re.escape(mode)}.*{named(odd)}"
    ):
        image, _ = dataset.load(1)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == first_pixel
    assert dataset[0]["image"].shape == dataset[1]["image"].shape == (3, H, W)


@pytest.mark.parametrize("dtype", [np.int32, np.float32], ids=["32-bit-int", "float"])
def test_images_of_unknown_value_range_are_refused_naming_the_file(tmp_path, dtype):
    spec = make_folder(tmp_path, image_suffix=".tif")
    odd = write_image(tmp_path / "img" / "b.tif", np.full((H, W), 3, dtype=dtype))
    with pytest.raises(ImageModeError, match=rf"{named(odd)} has mode '(I|F)'"):
        load_all(spec)


def test_a_mixed_greyscale_dataset_warns_once(tmp_path):
    spec = make_folder(tmp_path, names=("a", "b", "c"))
    for name in ("a", "b", "c"):
        write_image(tmp_path / "img" / f"{name}.png", np.full((H, W), 10, dtype=np.uint8))
    with pytest.warns(ImageModeWarning) as caught:
        items = load_all(spec)
    assert len(caught) == 1 and str(tmp_path / "img" / "a.png") in str(caught[0].message)
    assert all(item["image"].dtype == torch.float32 for item in items)


# --- species annotation files (readers in data_modules.species) ---------------------------------


def make_cub(root: Path) -> Path:
    lines = {
        "images.txt": ["1 001.Gull/g1.jpg", "2 002.Tern/t1.jpg"],
        "image_class_labels.txt": ["1 1", "2 2"],
        "train_test_split.txt": ["1 1", "2 0"],
        "bounding_boxes.txt": ["1 1 1 5 5", "2 1 1 5 5"],
        "classes.txt": ["1 001.Gull", "2 002.Tern"],
        "parts/part_locs.txt": [f"{i} {p} 2.0 2.0 1" for i in (1, 2) for p in range(1, 16)],
    }
    for name, content in lines.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("\n".join(content) + "\n")
    write_image(root / "images" / "001.Gull" / "g1.jpg")
    write_image(root / "images" / "002.Tern" / "t1.jpg")
    return root


def test_cub_text_files_with_mismatched_ids_are_named(tmp_path):
    root = make_cub(tmp_path)
    assert len(read_species_index("cub", root).train) == 1
    (root / "image_class_labels.txt").write_text("1 1\n3 2\n")
    with pytest.raises(SpeciesDataError, match=rf"{named(root / 'image_class_labels.txt')}.*image id"):
        read_species_index("cub", root)


def test_image_folder_with_a_single_class_is_named(tmp_path):
    for index in range(3):
        write_image(tmp_path / "train" / "only_class" / f"{index}.png")
    with pytest.raises(SpeciesDataError, match=rf"{named(tmp_path / 'train')}.*at least 2 class folders"):
        read_species_index("imagefolder", tmp_path)


def test_species_images_decode_like_segmentation_images(tmp_path):
    """A 16-bit greyscale photo keeps its top 8 bits with a warning (not PIL's all-white), a float one is refused."""
    from data_modules.species.image_dataset import CorruptImageError as SpeciesCorruptImageError
    from data_modules.species.image_dataset import load_rgb as load_species_rgb

    grey16 = write_image(tmp_path / "grey16.png", np.full((H, W), 0x8000 + 200, dtype=np.uint16))
    with pytest.warns(ImageModeWarning, match=named(grey16)):
        assert load_species_rgb(grey16)[0, 0].tolist() == [128, 128, 128]
    floating = write_image(tmp_path / "float.tif", np.full((H, W), 3, dtype=np.float32))
    with pytest.raises(SpeciesCorruptImageError, match=rf"{named(floating)} has mode 'F'"):
        load_species_rgb(floating)


def test_folder_label_space_errors_name_the_role_and_key():
    folder = {"dataset": "folder", "image_dir": "images", "mask_dir": "labels"}
    with pytest.raises(
        ValueError, match=r"^target\.num_classes must be >= 1 \(and class_names not empty\), got 0"
    ):
        check_spec(DomainSpec(**folder, num_classes=0), "target")
    with pytest.raises(
        ValueError, match=r"^source\.id_map: 7 -> 5, but train ids must be in \[0, 5\) or 255"
    ):
        check_spec(DomainSpec(**folder, num_classes=5, id_map={7: 5}), "source")
    check_spec(DomainSpec(**folder, num_classes=5, id_map={7: 4, 8: 255}), "source")  # in range or ignore
    with pytest.raises(ValueError, match=r"^target\.num_classes must be >= 1"):
        check_spec(DomainSpec(**folder, class_names=[]), "target")  # an empty class list is no label space
