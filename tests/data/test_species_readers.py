"""Real-format species readers on tiny fixture datasets written here, and their error messages."""

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from data_modules.species import (
    CorruptImageError,
    SpeciesDataError,
    SpeciesImageDataset,
    SpeciesTransform,
    build_eval_transform,
    build_species_dataset,
    read_species_index,
)
from data_modules.species.readers_annotated import CUB_NUM_PARTS


def write_image(path: Path, size=(40, 30), value=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    pixels[:, : size[0] // 2, 0] = 200  # left half red: lets a flip be seen
    Image.fromarray(pixels).save(path)
    return path


def write_lines(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def make_cub(root: Path, classes=("001.Black_footed_Albatross", "002.Laysan_Albatross"), per_class=3) -> Path:
    images, labels, split, boxes, parts = [], [], [], [], []
    image_id = 0
    for class_id, name in enumerate(classes, start=1):
        for k in range(per_class):
            image_id += 1
            relative = f"{name}/{name.split('.')[1]}_{k:04d}.jpg"
            write_image(root / "images" / relative)
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
            split.append(f"{image_id} {int(k > 0)}")
            boxes.append(f"{image_id} 4.0 3.0 20.0 15.0")
            for part in range(1, CUB_NUM_PARTS + 1):
                visible = int(part % 3 != 0)
                parts.append(
                    f"{image_id} {part} {float(part * 2) if visible else 0.0} {10.0 if visible else 0.0} {visible}"
                )
    write_lines(root / "images.txt", images)
    write_lines(root / "image_class_labels.txt", labels)
    write_lines(root / "train_test_split.txt", split)
    write_lines(root / "bounding_boxes.txt", boxes)
    write_lines(root / "classes.txt", [f"{i} {n}" for i, n in enumerate(classes, start=1)])
    write_lines(root / "parts" / "part_locs.txt", parts)
    return root


def test_cub_index_labels_splits_boxes_and_parts(tmp_path):
    index = read_species_index("cub", make_cub(tmp_path / "CUB_200_2011"))
    assert index.class_names == ("Black_footed_Albatross", "Laysan_Albatross")
    assert [r.label for r in index.train] == [0, 0, 1, 1] and [r.label for r in index.test] == [0, 1]
    record = index.train[0]
    assert record.bbox == (4.0, 3.0, 24.0, 18.0)  # x, y, w, h -> x1, y1, x2, y2
    assert record.parts.shape == (15, 3) and record.parts[1].tolist() == [4.0, 10.0, 1.0]
    assert read_species_index("cub", tmp_path).class_names == index.class_names  # parent folder works too


def test_cub_class_ids_counted_from_zero_are_refused_naming_the_line(tmp_path):
    """A converted ``image_class_labels.txt`` with 0-based ids would give the first class label -1."""
    root = make_cub(tmp_path, per_class=1)
    write_lines(root / "image_class_labels.txt", ["1 0", "2 1"])
    with pytest.raises(SpeciesDataError, match=r"image_class_labels\.txt:1: class 0 not in classes\.txt"):
        read_species_index("cub", root)


def test_cub_items_carry_parts_and_bbox_in_transformed_pixels(tmp_path):
    root = make_cub(tmp_path)
    dataset = build_species_dataset(
        "cub", "train", root, transform=build_eval_transform(32)
    )  # 40x30 -> 32x32
    item = dataset[0]
    assert item["image"].shape == (3, 32, 32) and item["label"].dtype == torch.int64
    parts = item["parts"]
    assert parts.shape == (15, 3) and parts.dtype == torch.float32
    np.testing.assert_allclose(parts[1].numpy(), [4.0 * 32 / 40, 10.0 * 32 / 30, 1.0], atol=1e-4)
    assert parts[2].tolist() == [0.0, 0.0, 0.0]  # part 3 is invisible in the annotation
    np.testing.assert_allclose(
        item["bbox"].numpy(), [4 * 0.8, 3 * 32 / 30, 24 * 0.8, 18 * 32 / 30], atol=1e-4
    )


def test_cub_flip_moves_parts_and_crop_hides_them(tmp_path):
    root = make_cub(tmp_path)
    records = read_species_index("cub", root).train
    flipped = SpeciesImageDataset(records, ["a", "b"], SpeciesTransform([A.HorizontalFlip(p=1.0)]))[0]
    assert flipped["parts"][1, 0].item() == pytest.approx(40 - 1 - 4.0)
    assert flipped["image"][0, 0, -1] > flipped["image"][0, 0, 0]  # the red half moved right
    np.testing.assert_allclose(flipped["bbox"].numpy(), [15.0, 3.0, 35.0, 18.0], atol=1.01)
    cropped = SpeciesImageDataset(records, ["a", "b"], SpeciesTransform([A.Crop(0, 0, 12, 30)]))[0]
    assert cropped["parts"][1, 2] == 1.0 and cropped["parts"][7, 2] == 0.0  # x=16 falls outside the crop
    assert cropped["bbox"].tolist() == [4.0, 3.0, 12.0, 18.0]  # clipped to the crop


def test_cub_mismatched_ids_name_the_file_and_id(tmp_path):
    root = make_cub(tmp_path)
    lines = (root / "image_class_labels.txt").read_text().splitlines()
    write_lines(root / "image_class_labels.txt", lines[:-1] + ["77 1"])
    with pytest.raises(SpeciesDataError, match=r"image_class_labels\.txt: image id 6 .*missing"):
        read_species_index("cub", root)


def test_cub_unknown_part_image_names_file_and_line(tmp_path):
    root = make_cub(tmp_path)
    with (root / "parts" / "part_locs.txt").open("a") as handle:
        handle.write("99 1 1.0 1.0 1\n")
    with pytest.raises(SpeciesDataError, match=r"part_locs\.txt:91: image id 99"):
        read_species_index("cub", root)


def test_cub_image_without_a_part_location_names_the_file_image_and_part(tmp_path):
    """A part row dropped from part_locs.txt must be an error, not a NaN keypoint reaching the metrics."""
    root = make_cub(tmp_path)
    parts = root / "parts" / "part_locs.txt"
    lines = parts.read_text().splitlines()
    write_lines(parts, [line for line in lines if not line.startswith("2 4 ")])  # image 2, part 4
    with pytest.raises(SpeciesDataError, match=r"part_locs\.txt: image id 2 has no location for part 4$"):
        read_species_index("cub", root)


def test_cub_missing_file_and_bad_line(tmp_path):
    root = make_cub(tmp_path)
    (root / "bounding_boxes.txt").unlink()
    with pytest.raises(FileNotFoundError, match="bounding_boxes.txt"):
        read_species_index("cub", root)
    root = make_cub(tmp_path / "again")
    write_lines(root / "train_test_split.txt", ["1 1", "2", "3 0", "4 1", "5 1", "6 0"])
    with pytest.raises(SpeciesDataError, match=r"train_test_split\.txt:2: expected 2 fields"):
        read_species_index("cub", root)


def test_cub_boxes_and_part_locations_must_be_finite_and_boxes_not_empty(tmp_path):
    """A negative width or a nan was read as is and changed test/part_hit_chance without a word."""
    for name, line, fix, expected in [
        (
            "bounding_boxes.txt",
            1,
            "1 4.0 3.0 -20.0 15.0",
            r"bounding_boxes\.txt:1: box width and height must be > 0",
        ),
        (
            "bounding_boxes.txt",
            2,
            "2 nan 3.0 20.0 15.0",
            r"bounding_boxes\.txt:2: expected a finite number, got 'nan'",
        ),
        (
            "parts/part_locs.txt",
            1,
            "1 1 nan 10.0 1",
            r"part_locs\.txt:1: expected a finite number, got 'nan'",
        ),
    ]:
        root = make_cub(tmp_path / f"{name.replace('/', '_')}{line}")
        rows = (root / name).read_text().splitlines()
        rows[line - 1] = fix
        write_lines(root / name, rows)
        with pytest.raises(SpeciesDataError, match=expected):
            read_species_index("cub", root)


def test_cub_text_file_that_is_not_utf8_names_the_file(tmp_path):
    """A Latin-1 class name raised a bare UnicodeDecodeError naming no file (and read as a bug)."""
    root = make_cub(tmp_path)
    rows = (root / "classes.txt").read_text().splitlines()
    rows[0] = rows[0] + "_m\u00fcller"
    (root / "classes.txt").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    with pytest.raises(SpeciesDataError, match=r"classes\.txt: not UTF-8 text \(byte \d+ is b'\\xfc'\)"):
        read_species_index("cub", root)


def test_missing_root_is_named(tmp_path):
    for name in ("cub", "dogs", "cars", "flowers", "inat", "imagefolder"):
        with pytest.raises(FileNotFoundError, match="nowhere"):
            read_species_index(name, tmp_path / "nowhere")


def test_corrupt_image_names_the_file(tmp_path):
    root = make_cub(tmp_path)
    bad = read_species_index("cub", root).train[0].path
    bad.write_bytes(b"not a jpeg at all")
    dataset = build_species_dataset("cub", "train", root)
    with pytest.raises(CorruptImageError, match=bad.name):
        dataset[0]
    with pytest.raises(CorruptImageError, match=bad.name):
        build_species_dataset("cub", "train", root, verify=True)


def make_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class=5) -> Path:
    for name in classes:
        for k in range(per_class):
            write_image(root / name / f"{k}.png", value=k)
    (root / classes[0] / "notes.txt").write_text("not an image")
    return root


def test_image_folder_flat_layout_carves_a_stratified_test_split(tmp_path):
    root = make_image_folder(tmp_path)
    index = read_species_index("imagefolder", root, test_fraction=0.2, seed=0)
    assert index.class_names == ("cat", "dog", "fox")
    assert sorted(r.label for r in index.test) == [0, 1, 2]
    assert len(index.train) == 12
    assert not {r.path for r in index.train} & {r.path for r in index.test}
    again = read_species_index("imagefolder", root, test_fraction=0.2, seed=0)
    assert [r.path for r in again.test] == [r.path for r in index.test]
    item = build_species_dataset("imagefolder", "test", root, image_size=16, test_fraction=0.2)[0]
    assert set(item) == {"image", "label", "path"} and item["image"].shape == (3, 16, 16)


def test_image_folder_finds_images_in_sub_folders_of_a_class_but_not_hidden_ones(tmp_path):
    make_image_folder(tmp_path / "train", per_class=2)
    make_image_folder(tmp_path / "test", per_class=1)
    write_image(tmp_path / "train" / "cat" / "2024" / "june" / "deep.jpg")
    write_image(tmp_path / "train" / "cat" / ".thumbnails" / "skip.png")
    index = read_species_index("imagefolder", tmp_path)
    cats = sorted(r.path.relative_to(tmp_path).as_posix() for r in index.train if r.label == 0)
    assert cats == ["train/cat/0.png", "train/cat/1.png", "train/cat/2024/june/deep.jpg"]
    write_image(tmp_path / "train" / ".ipynb_checkpoints" / "copy.png")  # a hidden folder is no class
    assert read_species_index("imagefolder", tmp_path).class_names == ("cat", "dog", "fox")


def test_image_folder_split_layout_and_single_class_error(tmp_path):
    make_image_folder(tmp_path / "train")
    make_image_folder(tmp_path / "val", classes=("dog", "fox"), per_class=2)
    index = read_species_index("imagefolder", tmp_path)
    assert len(index.train) == 15 and sorted({r.label for r in index.test}) == [1, 2]
    make_image_folder(tmp_path / "solo", classes=("only",))
    with pytest.raises(SpeciesDataError, match="at least 2 class folders"):
        read_species_index("imagefolder", tmp_path / "solo")


@pytest.mark.parametrize(("train", "test"), [("Train", "Test"), ("train", "valid"), ("TRAIN", "Validation")])
def test_image_folder_split_folders_are_found_in_any_case_and_under_other_test_names(tmp_path, train, test):
    """``Train/`` + ``Test/`` read as a two-class "Test vs Train" problem; ``valid/`` was ignored."""
    for split, count in ((train, 2), (test, 1)):
        for name in ("cat", "dog"):
            for k in range(count):
                write_image(tmp_path / split / name / f"{k}.jpg")
    index = read_species_index("imagefolder", tmp_path)
    assert index.class_names == ("cat", "dog")
    assert len(index.train) == 4 and [r.path.parent.parent.name for r in index.test] == [test, test]


def test_test_folder_wins_over_val_and_a_flat_folder_needs_a_test_fraction(tmp_path):
    make_image_folder(tmp_path / "split" / "train", classes=("cat", "dog"), per_class=2)
    make_image_folder(tmp_path / "split" / "test", classes=("cat", "dog"), per_class=1)
    make_image_folder(tmp_path / "split" / "val", classes=("cat",), per_class=3)
    index = read_species_index("imagefolder", tmp_path / "split")
    assert {r.path.parent.parent.name for r in index.test} == {"test"} and len(index.test) == 2
    make_image_folder(tmp_path / "flat", classes=("cat", "dog"), per_class=3)
    with pytest.raises(SpeciesDataError, match="test_fraction must be > 0"):
        read_species_index("imagefolder", tmp_path / "flat", test_fraction=0.0)


def test_a_flat_image_folder_with_a_class_called_train_stays_flat(tmp_path):
    for name in ("Bus", "Car", "Train", "Truck"):
        for k in range(3):
            write_image(tmp_path / name / f"{k}.jpg")
    index = read_species_index("imagefolder", tmp_path)
    assert index.class_names == ("Bus", "Car", "Train", "Truck") and len(index.train) + len(index.test) == 12


def test_image_folder_unknown_test_class_and_empty_class(tmp_path):
    make_image_folder(tmp_path / "train")
    make_image_folder(tmp_path / "test", classes=("cat", "wolf"), per_class=1)
    with pytest.raises(SpeciesDataError, match="wolf"):
        read_species_index("imagefolder", tmp_path)
    (tmp_path / "flat" / "a").mkdir(parents=True)
    make_image_folder(tmp_path / "flat", classes=("b",))
    with pytest.raises(SpeciesDataError, match=r"flat/a: class folder holds no images"):
        read_species_index("imagefolder", tmp_path / "flat")


def test_stanford_dogs_text_lists(tmp_path):
    breeds = ("n02085620-Chihuahua", "n02100236-German_short-haired_pointer")  # a hyphen in the name
    for breed in breeds:
        for k in range(3):
            write_image(tmp_path / "Images" / breed / f"{breed[:9]}_{k}.jpg")
    write_lines(
        tmp_path / "lists" / "train_list.txt", [f"{b}/{b[:9]}_{k}.jpg" for b in breeds for k in (0, 1)]
    )
    write_lines(tmp_path / "lists" / "test_list.txt", [f"{b}/{b[:9]}_2.jpg" for b in breeds])
    index = read_species_index("dogs", tmp_path)
    assert index.class_names == ("Chihuahua", "German_short-haired_pointer")
    assert [r.label for r in index.train] == [0, 0, 1, 1] and [r.label for r in index.test] == [0, 1]
    write_lines(tmp_path / "lists" / "test_list.txt", [f"{breeds[0]}/missing.jpg"])
    with pytest.raises(FileNotFoundError, match=r"test_list\.txt:1: image file not found"):
        read_species_index("dogs", tmp_path)


def test_stanford_dogs_matlab_lists(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    breeds = ("n1-A", "n2-B")
    for breed in breeds:
        write_image(tmp_path / "Images" / breed / "x.jpg")
    file_list = np.array([[np.array([f"{b}/x.jpg"])] for b in breeds], dtype=object)
    for split in ("train", "test"):
        (tmp_path / "lists").mkdir(exist_ok=True)
        scipy_io.savemat(tmp_path / "lists" / f"{split}_list.mat", {"file_list": file_list})
    index = read_species_index("dogs", tmp_path)
    assert [r.path.name for r in index.train] == ["x.jpg", "x.jpg"] and [r.label for r in index.test] == [
        0,
        1,
    ]


def test_stanford_cars_csv_with_boxes(tmp_path):
    for split in ("train", "test"):
        for k in range(2):
            write_image(tmp_path / f"cars_{split}" / f"{split}{k}.jpg")
    write_lines(
        tmp_path / "anno_train.csv",
        ["filename,x1,y1,x2,y2,class", "train0.jpg,1,2,30,20,1", "train1.jpg,0,0,39,29,2"],
    )
    write_lines(tmp_path / "anno_test.csv", ["test0.jpg,1,2,30,20,2", "test1.jpg,1,2,30,20,1"])
    write_lines(tmp_path / "names.csv", ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"])
    index = read_species_index("cars", tmp_path)
    assert index.class_names[1] == "Acura RL Sedan 2012"
    assert [r.label for r in index.train] == [0, 1] and index.train[0].bbox == (1.0, 2.0, 30.0, 20.0)
    item = build_species_dataset(
        "cars", "test", tmp_path, transform=SpeciesTransform([A.HorizontalFlip(p=0.0)])
    )[0]
    assert set(item) == {"image", "label", "path", "bbox"} and item["bbox"].tolist() == [1.0, 2.0, 30.0, 20.0]
    write_lines(tmp_path / "anno_test.csv", ["test0.jpg,1,2,30,20,3"])
    with pytest.raises(SpeciesDataError, match=r"anno_test\.csv:1: class 3 outside 1\.\.2"):
        read_species_index("cars", tmp_path)


def test_flowers_text_and_matlab_layouts_agree(tmp_path):
    labels = [1, 2, 1, 2, 1, 2]
    for image_id in range(1, 7):
        write_image(tmp_path / "jpg" / f"image_{image_id:05d}.jpg")
    write_lines(tmp_path / "imagelabels.txt", labels)
    write_lines(tmp_path / "trnid.txt", ["1 2"])
    write_lines(tmp_path / "valid.txt", ["3", "4"])
    write_lines(tmp_path / "tstid.txt", ["5 6"])
    text_index = read_species_index("flowers", tmp_path)
    assert [r.label for r in text_index.train] == [0, 1, 0, 1] and [r.label for r in text_index.test] == [
        0,
        1,
    ]
    assert text_index.class_names == ("flower_001", "flower_002")
    scipy_io = pytest.importorskip("scipy.io")
    mat_root = tmp_path / "mat"
    mat_root.mkdir()
    (mat_root / "jpg").symlink_to(tmp_path / "jpg")
    scipy_io.savemat(mat_root / "imagelabels.mat", {"labels": np.array([labels])})
    scipy_io.savemat(mat_root / "setid.mat", {"trnid": [[1, 2]], "valid": [[3, 4]], "tstid": [[5, 6]]})
    mat_index = read_species_index("flowers", mat_root)
    assert [r.path.name for r in mat_index.train] == [r.path.name for r in text_index.train]
    write_lines(tmp_path / "tstid.txt", ["5 2"])
    with pytest.raises(SpeciesDataError, match=r"tstid\.txt: image id 2 is also in trnid"):
        read_species_index("flowers", tmp_path)
    scipy_io.savemat(mat_root / "setid.mat", {"trnid": ["a", "b"], "valid": [[3, 4]], "tstid": [[5, 6]]})
    with pytest.raises(SpeciesDataError, match=r"setid\.mat: MATLAB variable 'trnid' must hold integers"):
        read_species_index("flowers", mat_root)


def test_inat_folders(tmp_path):
    categories = ("00000_Animalia_Aves_a", "00001_Animalia_Aves_b")
    for category in categories:
        for k in range(2):
            write_image(tmp_path / "train_mini" / category / f"{k}.jpg")
        write_image(tmp_path / "val" / category / "v.jpg")
    index = read_species_index("inat", tmp_path)
    assert (
        index.class_names == categories and len(index.train) == 4 and [r.label for r in index.test] == [0, 1]
    )
    for category in categories:  # the full train/ wins over train_mini/ when both are there
        for k in range(3):
            write_image(tmp_path / "train" / category / f"{k}.jpg")
    assert len(read_species_index("inat", tmp_path).train) == 6
    (tmp_path / "val").rename(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="val"):
        read_species_index("inat", tmp_path)


def test_unknown_dataset_and_missing_root():
    with pytest.raises(KeyError, match="unknown species dataset"):
        build_species_dataset("imagenet")
    with pytest.raises(ValueError, match="needs a root"):
        build_species_dataset("cub")


def test_stanford_cars_devkit_matlab(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    for split in ("train", "test"):
        for k in range(2):
            write_image(tmp_path / f"cars_{split}" / f"{k:05d}.jpg")
    fields = [(name, "O") for name in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    annotations = np.array([(1, 2, 10, 8, 2, "00000.jpg"), (0, 0, 5, 5, 1, "00001.jpg")], dtype=fields)
    (tmp_path / "devkit").mkdir()
    scipy_io.savemat(tmp_path / "devkit" / "cars_train_annos.mat", {"annotations": annotations[None]})
    scipy_io.savemat(tmp_path / "cars_test_annos_withlabels.mat", {"annotations": annotations[None]})
    index = read_species_index("cars", tmp_path)
    assert index.class_names == ("class_001", "class_002")
    assert [(r.path.name, r.label, r.bbox) for r in index.test] == [
        ("00000.jpg", 1, (1.0, 2.0, 10.0, 8.0)),
        ("00001.jpg", 0, (0.0, 0.0, 5.0, 5.0)),
    ]
    annotations[0]["class"] = "two"
    scipy_io.savemat(tmp_path / "cars_test_annos_withlabels.mat", {"annotations": annotations[None]})
    with pytest.raises(SpeciesDataError, match=r"cars_test_annos_withlabels\.mat: .* not a number"):
        read_species_index("cars", tmp_path)


def test_a_record_whose_label_has_no_class_name_is_refused_naming_the_file(tmp_path):
    """The readers check ids against their class lists; a hand-built record list (or a reader bug)
    with label == number of classes must not reach the loss as an out-of-range target."""
    records = read_species_index("cub", make_cub(tmp_path)).train
    with pytest.raises(SpeciesDataError, match=r"label 1 outside \[0, 1\)"):
        SpeciesImageDataset(records, ["only one class"], SpeciesTransform([]))
