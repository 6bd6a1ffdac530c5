"""Real-format segmentation readers on tiny fixture datasets written here (bad input: test_bad_input_data.py)."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from data_modules.segmentation import (
    IGNORE_INDEX,
    DomainSpec,
    ImageModeWarning,
    LabelIdError,
    LabelMapping,
    MaskFormat,
    MaskSizeError,
    SegmentationDataError,
    SegmentationImageDataset,
    SegmentationRecord,
    build_segmentation_dataset,
)
from data_modules.segmentation.factory import spread_subset
from data_modules.segmentation.image_dataset import same_size_collate

H, W = 16, 32
# Raw ids per dataset and the train ids they must become (one column of the mask each).
CITYSCAPES_LABEL_IDS = ([7, 8, 26, 0, 9, 33], [0, 1, 13, 255, 255, 18])
GTA5_LABEL_IDS = ([7, 11, 23, 24, 3], [0, 2, 10, 11, 255])
SYNTHIA_IDS = ([3, 1, 10, 16, 19, 0], [0, 10, 11, 255, 15, 255])
MAPILLARY_IDS = ([13, 55, 65, 10, 24, 20], [0, 13, 255, 255, 0, 12])


def write_image(path: Path, value: int = 100, size=(H, W), suffix_format=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((*size, 3), value, dtype=np.uint8)
    pixels[:, : size[1] // 2, 0] = 250
    Image.fromarray(pixels).save(path, format=suffix_format)
    return path


def stripes(ids, size=(H, W)) -> np.ndarray:
    """A mask whose columns cycle through ``ids``."""
    return np.asarray(ids)[np.arange(size[1]) % len(ids)][None, :].repeat(size[0], 0)


def write_mask(path: Path, ids, mode: str = "L", size=(H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = Image.fromarray(stripes(ids, size).astype(np.uint8), mode="L")
    if mode == "P":
        mask = mask.convert("P")
        mask.putpalette([value for i in range(256) for value in (i, 255 - i, (7 * i) % 256)])
    mask.save(path)
    return path


def expected(ids) -> torch.Tensor:
    return torch.from_numpy(stripes(ids).astype(np.int64))


def make_cityscapes(root: Path, label_ids: bool = False, train_ids=(0, 1, 2, 18, 255)) -> Path:
    for city, frame in (("aachen", "000000_000019"), ("bochum", "000001_000019")):
        stem = f"{city}_{frame}"
        write_image(root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png")
        if label_ids:
            write_mask(
                root / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", CITYSCAPES_LABEL_IDS[0]
            )
        else:
            write_mask(root / "gtFine" / "train" / city / f"{stem}_gtFine_labelTrainIds.png", train_ids)
        write_mask(root / "gtFine" / "train" / city / f"{stem}_gtFine_color.png", (1, 2))  # must be ignored
    return root


def make_anon(root: Path, prefix: tuple[str, ...], split_then_condition: bool = False) -> None:
    """ACDC (rgb_anon/<cond>/<split>/<seq>) or Dark Zurich (rgb_anon/<split>/night/<seq>) layouts."""
    for seq in ("GOPR0475", "GOPR0476"):
        write_image(root / "rgb_anon" / Path(*prefix) / seq / f"{seq}_frame_000001_rgb_anon.png")
        write_mask(
            root / "gt" / Path(*prefix) / seq / f"{seq}_frame_000001_gt_labelTrainIds.png", (0, 8, 10, 255)
        )


def load(spec: DomainSpec, index: int = 0):
    return build_segmentation_dataset(spec)[index]


def test_cityscapes_train_ids_are_read_and_colour_masks_skipped(tmp_path):
    dataset = build_segmentation_dataset(DomainSpec("cityscapes", root=str(make_cityscapes(tmp_path))))
    assert len(dataset) == 2 and dataset.num_classes == 19
    item = dataset[1]
    assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
    assert torch.equal(item["mask"], expected((0, 1, 2, 18, 255)))
    assert item["path"].endswith("bochum_000001_000019_leftImg8bit.png")


def test_cityscapes_test_split_must_be_unlabelled(tmp_path):
    """Its gtFine/test masks exist but are all 'unlabeled': scoring them would report a silent 0."""
    make_cityscapes(tmp_path)
    (tmp_path / "leftImg8bit" / "train").rename(tmp_path / "leftImg8bit" / "test")
    with pytest.raises(SegmentationDataError, match="test labels are not public .* labelled: false"):
        build_segmentation_dataset(DomainSpec("cityscapes", root=str(tmp_path), split="test"))
    assert (
        len(
            build_segmentation_dataset(
                DomainSpec("cityscapes", root=str(tmp_path), split="test", labelled=False)
            )
        )
        == 2
    )


def test_cityscapes_label_ids_are_converted_when_train_ids_are_absent(tmp_path):
    item = load(DomainSpec("cityscapes", root=str(make_cityscapes(tmp_path, label_ids=True))))
    assert torch.equal(item["mask"], expected(CITYSCAPES_LABEL_IDS[1]))


def test_gta5_palette_label_ids_are_mapped_and_split_files_select_images(tmp_path):
    for name in ("00001", "00002", "00003"):
        write_image(tmp_path / "images" / f"{name}.png")
        write_mask(tmp_path / "labels" / f"{name}.png", GTA5_LABEL_IDS[0], mode="P")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "val.txt").write_text("00003.png\n00001\n")
    every = build_segmentation_dataset(DomainSpec("gta5", root=str(tmp_path)))
    assert len(every) == 3
    assert torch.equal(every[0]["mask"], expected(GTA5_LABEL_IDS[1]))
    val = build_segmentation_dataset(DomainSpec("gta5", root=str(tmp_path), split="val"))
    assert [Path(r.image).stem for r in val.records] == ["00001", "00003"]
    photos = build_segmentation_dataset(DomainSpec("gta5", root=str(tmp_path), split="val", labelled=False))
    assert [Path(r.image).stem for r in photos.records] == ["00001", "00003"]  # sorted, as with labels
    (tmp_path / "splits" / "val.txt").write_text("00009\n")
    with pytest.raises(SegmentationDataError, match=r"val\.txt.*00009"):
        build_segmentation_dataset(DomainSpec("gta5", root=str(tmp_path), split="val"))


def test_gta5_labels_a_few_pixels_off_are_resized_with_a_warning_and_others_refused(tmp_path):
    """GTA5 ships some labels a few pixels off their image: fitted (nearest) within 2 %, else refused."""
    width = 400  # 2 % of it (8 px) covers the label's 4 extra columns
    write_image(tmp_path / "images" / "00001.png", size=(H, width))
    label = np.full((H, width + 4), 7, dtype=np.uint8)  # road (train id 0) on the left half ...
    label[:, width // 2 + 2 :] = 11  # ... building (train id 2) on the right half of the wider label
    (tmp_path / "labels").mkdir()
    Image.fromarray(label, mode="L").save(tmp_path / "labels" / "00001.png")
    with pytest.warns(ImageModeWarning, match=r"00001\.png is 404x16 .*resized the mask \(nearest\)"):
        mask = load(DomainSpec("gta5", root=str(tmp_path)))["mask"]
    assert mask.shape == (H, width)
    assert (mask[:, : width // 2 - 1] == 0).all() and (mask[:, width // 2 + 1 :] == 2).all()
    stripes = np.where(np.arange(width + 4) % 2 == 0, 7, 11).astype(np.uint8)[None].repeat(H, 0)
    Image.fromarray(stripes, mode="L").save(tmp_path / "labels" / "00001.png")
    with pytest.warns(ImageModeWarning):
        mask = load(DomainSpec("gta5", root=str(tmp_path)))["mask"]
    assert set(mask.unique().tolist()) == {0, 2}  # nearest: no blend of 7 and 11 (8 .. 10 -> 1 or 255)
    Image.fromarray(label[:, : width // 2], mode="L").save(tmp_path / "labels" / "00001.png")
    with pytest.raises(MaskSizeError, match=r"00001\.png is 200x16 .*more than this dataset's 2% slack"):
        load(DomainSpec("gta5", root=str(tmp_path)))


def test_synthia_reads_the_first_channel_of_16_bit_labels(tmp_path):
    write_image(tmp_path / "RGB" / "0000000.png")
    labels = np.zeros((H, W, 3), dtype=np.uint16)
    labels[..., 0] = stripes(SYNTHIA_IDS[0])  # class id, first channel
    labels[..., 1] = 999  # instance ids in another channel must not leak in
    (tmp_path / "GT" / "LABELS").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "GT" / "LABELS" / "0000000.png"), labels[..., ::-1])  # OpenCV writes BGR
    item = load(DomainSpec("synthia", root=str(tmp_path)))
    assert torch.equal(item["mask"], expected(SYNTHIA_IDS[1]))


def test_acdc_reads_one_condition_or_all_of_them(tmp_path):
    for condition in ("fog", "night", "rain", "snow"):
        make_anon(tmp_path, (condition, "val"))
    night = build_segmentation_dataset(DomainSpec("acdc", root=str(tmp_path), split="val", condition="night"))
    assert len(night) == 2 and all("/night/" in str(r.image) for r in night.records)
    assert torch.equal(night[0]["mask"], expected((0, 8, 10, 255)))
    assert len(build_segmentation_dataset(DomainSpec("acdc", root=str(tmp_path), split="val"))) == 8


@pytest.mark.parametrize("split", ["train_ref", "val_ref", "test_ref"])
def test_acdc_reference_split_reads_ref_images_unlabelled(tmp_path, split):
    image = tmp_path / "rgb_anon" / "night" / split / "GOPR0351" / "GOPR0351_frame_000159_rgb_ref_anon.png"
    write_image(image)
    spec = DomainSpec("acdc", root=str(tmp_path), split=split, condition="night", labelled=False)
    item = load(spec)
    assert item["path"] == str(image) and torch.all(item["mask"] == IGNORE_INDEX)
    with pytest.raises(SegmentationDataError, match=f"{split} split .* labelled: false"):
        build_segmentation_dataset(DomainSpec("acdc", root=str(tmp_path), split=split, condition="night"))


def test_acdc_without_a_condition_folder_names_it(tmp_path):
    make_anon(tmp_path, ("fog", "val"))
    with pytest.raises(FileNotFoundError, match=r"rgb_anon/night/val"):
        build_segmentation_dataset(DomainSpec("acdc", root=str(tmp_path), split="val"))


def test_dark_zurich_val_is_labelled_and_train_must_be_unlabelled(tmp_path):
    make_anon(tmp_path, ("val", "night"))
    make_anon(tmp_path, ("train", "night"))
    assert torch.equal(
        load(DomainSpec("darkzurich", root=str(tmp_path), split="val"))["mask"], expected((0, 8, 10, 255))
    )
    with pytest.raises(SegmentationDataError, match="labelled: false"):
        build_segmentation_dataset(DomainSpec("darkzurich", root=str(tmp_path), split="train"))
    item = load(DomainSpec("darkzurich", root=str(tmp_path), split="train", labelled=False))
    assert torch.all(item["mask"] == IGNORE_INDEX) and item["mask"].shape == (H, W)


def test_bdd100k_jpg_images_with_train_id_masks(tmp_path):
    for name in ("7d2f7975-e0c1c5a7", "7d4a9094-0455564b"):
        write_image(tmp_path / "images" / "10k" / "val" / f"{name}.jpg")
        write_mask(tmp_path / "labels" / "sem_seg" / "masks" / "val" / f"{name}.png", (5, 6, 7, 255))
    dataset = build_segmentation_dataset(DomainSpec("bdd100k", root=str(tmp_path), split="val"))
    assert len(dataset) == 2 and torch.equal(dataset[0]["mask"], expected((5, 6, 7, 255)))


@pytest.mark.parametrize("label_folder", [("labels",), ("v1.2", "labels")])
def test_mapillary_ids_map_to_cityscapes_and_splits_use_long_names(tmp_path, label_folder):
    write_image(tmp_path / "validation" / "images" / "abc.jpg")
    write_mask(tmp_path / "validation" / Path(*label_folder) / "abc.png", MAPILLARY_IDS[0], mode="P")
    item = load(DomainSpec("mapillary", root=str(tmp_path), split="val"))
    assert torch.equal(item["mask"], expected(MAPILLARY_IDS[1]))


def test_mapillary_v2_download_reads_its_v1_2_labels_not_the_v2_ones(tmp_path):
    write_image(tmp_path / "validation" / "images" / "abc.jpg")
    write_mask(tmp_path / "validation" / "labels" / "abc.png", (0, 0, 0), mode="P")  # v2.0 ids: other
    write_mask(tmp_path / "validation" / "v1.2" / "labels" / "abc.png", MAPILLARY_IDS[0], mode="P")
    item = load(DomainSpec("mapillary", root=str(tmp_path), split="val"))
    assert torch.equal(item["mask"], expected(MAPILLARY_IDS[1]))


def test_folder_reader_pairs_by_stem_and_applies_the_id_map(tmp_path):
    for name in ("b", "a"):
        write_image(tmp_path / "img" / "sub" / f"{name}_rgb.png")
        write_mask(tmp_path / "ann" / "sub" / f"{name}_ids.png", (10, 20, 30))
    spec = DomainSpec(
        "folder", root=str(tmp_path), image_dir="img", mask_dir="ann", image_suffix="_rgb.png", mask_suffix="_ids.png",
        id_map={10: 0, 20: 1}, class_names=["ground", "object"],
    )  # fmt: skip
    dataset = build_segmentation_dataset(spec)
    assert dataset.class_names == ["ground", "object"]
    assert [Path(r.image).name for r in dataset.records] == ["a_rgb.png", "b_rgb.png"]
    with pytest.warns(UserWarning, match=r"raw ids \[30\] found in the masks: their pixels are ignored"):
        assert torch.equal(dataset[0]["mask"], expected((0, 1, 255)))


def test_folder_reader_pairs_each_image_with_its_own_mask_across_sub_folders(tmp_path):
    """Two sequences with the same file names: both images are kept, each with its own mask (a key
    without the sub-folder would drop one or pair it with the other's mask)."""
    for sequence, ids in (("seq1", (0, 1)), ("seq2", (2, 3))):
        write_image(tmp_path / "img" / sequence / "0001.png")
        write_mask(tmp_path / "ann" / sequence / "0001.png", ids)
    dataset = build_segmentation_dataset(
        DomainSpec("folder", root=str(tmp_path), image_dir="img", mask_dir="ann", num_classes=4)
    )
    assert len(dataset) == 2
    for item, ids in zip((dataset[0], dataset[1]), ((0, 1), (2, 3)), strict=True):
        assert torch.equal(item["mask"], expected(ids)), item["path"]


def test_folder_reader_without_id_map_refuses_ids_beyond_num_classes(tmp_path):
    write_image(tmp_path / "img" / "a.png")
    mask = write_mask(tmp_path / "ann" / "a.png", (0, 1, 3))
    spec = DomainSpec("folder", root=str(tmp_path), image_dir="img", mask_dir="ann", num_classes=3)
    dataset = build_segmentation_dataset(spec)
    assert dataset.class_names == ["class_0", "class_1", "class_2"]
    with pytest.raises(LabelIdError, match=str(mask)):
        dataset[0]


def test_num_images_keeps_the_first_file_when_capped_to_one(tmp_path):
    dataset = build_segmentation_dataset(
        DomainSpec("cityscapes", root=str(make_cityscapes(tmp_path)), num_images=1)
    )
    assert len(dataset) == 1 and "aachen" in dataset[0]["path"]


def test_a_cap_spreads_over_the_sorted_files_not_the_first_n():
    # ACDC lists fog, night, rain, snow one after another: a cap of 4 from 40 must keep all four
    conditions = [f"{condition}_{i:02d}" for condition in ("fog", "night", "rain", "snow") for i in range(10)]
    assert spread_subset(conditions, 4) == ("fog_00", "night_00", "rain_00", "snow_00")
    assert spread_subset(list(range(10)), 3) == (0, 3, 6)
    assert spread_subset([1, 2], 5) == (1, 2)


# --- specs (file-level errors are in test_bad_input_data.py) -----------------------------------------


def test_specs_missing_required_fields_are_refused_by_field_name():
    with pytest.raises(ValueError, match="root"):
        build_segmentation_dataset(DomainSpec("gta5"))
    with pytest.raises(ValueError, match="pair"):
        build_segmentation_dataset(DomainSpec("synthetic"))
    with pytest.raises(KeyError, match="kitti"):
        build_segmentation_dataset(DomainSpec("kitti", root="x"))
    with pytest.raises(ValueError, match="condition"):
        build_segmentation_dataset(DomainSpec("acdc", root="x", condition="hail"))


def test_a_mapping_that_yields_a_train_id_past_the_classes_is_refused_at_the_boundary(tmp_path):
    """A hand-built dataset whose mapping sends raw 5 to train id 3 of 3 classes: one past the last."""
    image = write_image(tmp_path / "a.png")
    mask = write_mask(tmp_path / "a_mask.png", (1, 5))
    records = [SegmentationRecord(image, mask)]
    dataset = SegmentationImageDataset(records, MaskFormat(LabelMapping({1: 0, 5: 3}, None)), ["a", "b", "c"])
    with pytest.raises(LabelIdError, match=r"a_mask\.png: train id 3 >= num_classes 3"):
        dataset[0]


def test_a_labelled_dataset_refuses_an_image_without_a_mask(tmp_path):
    image = write_image(tmp_path / "a.png")
    mapping = MaskFormat(LabelMapping({0: 0}, None))
    with pytest.raises(SegmentationDataError, match=r"a\.png has no mask but the dataset is labelled"):
        SegmentationImageDataset([SegmentationRecord(image, None)], mapping, ["a"])
    unlabelled = SegmentationImageDataset([SegmentationRecord(image, None)], mapping, ["a"], labelled=False)
    assert set(unlabelled[0]["mask"].unique().tolist()) == {IGNORE_INDEX}


def test_evaluation_batches_with_masks_of_different_sizes_name_the_files():
    """Same image size, different label sizes (labels kept as annotated): still not one batch."""
    items = [
        {"image": torch.zeros(3, 8, 8), "mask": torch.zeros(16, 16, dtype=torch.long), "path": "a.png"},
        {"image": torch.zeros(3, 8, 8), "mask": torch.zeros(16, 20, dtype=torch.long), "path": "b.png"},
    ]
    with pytest.raises(SegmentationDataError, match=r"a\.png .*b\.png .*val_batch_size: 1"):
        same_size_collate(items)
    assert same_size_collate(items[:1])["mask"].shape == (1, 16, 16)
