"""Readers for species datasets described by annotation files: CUB-200-2011, Stanford Cars, Flowers-102.

Each returns a :class:`SpeciesIndex` (0-indexed labels, official train/test split) after checking
that the annotation files agree with each other and that every listed image exists. MATLAB
annotations are read through scipy when it is installed; each format also has a plain-text
layout (see docs/datasets.md) that needs nothing extra.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_modules.files import read_lines, require_dir, require_file, utf8_text
from data_modules.species.image_dataset import SpeciesIndex, SpeciesRecord
from data_modules.species.validation import (
    SpeciesDataError,
    check_same_ids,
    first_existing,
    load_matlab,
    matlab_ints,
    parse_float,
    parse_int,
    read_rows,
)

CUB_NUM_PARTS = 15


def _existing_image(path: Path, listed_in: Path, line: int) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{listed_in}:{line}: image file not found: {path}")
    return path


def _id_table(
    path: Path, num_fields: int, reference: dict[int, object], reference_file: Path
) -> dict[int, tuple]:
    """``id -> (line, other fields)`` for a CUB per-image file, checked against the image ids."""
    table: dict[int, tuple] = {}
    for line, fields in read_rows(path, num_fields):
        image_id = parse_int(fields[0], path, line)
        if image_id in table:
            raise SpeciesDataError(f"{path}:{line}: image id {image_id} listed twice")
        table[image_id] = (line, fields[1:])
    check_same_ids(reference, reference_file, table, path)
    return table


def read_cub(root: Path) -> SpeciesIndex:
    """CUB-200-2011 from its official txt files (``root`` may also be the folder holding CUB_200_2011/)."""
    root = require_dir(Path(root), "CUB-200-2011 root")
    if not (root / "images.txt").exists() and (root / "CUB_200_2011" / "images.txt").exists():
        root = root / "CUB_200_2011"
    images_file = root / "images.txt"
    paths: dict[int, tuple[int, str]] = {}
    for line, (id_text, relative) in read_rows(images_file, 2):
        image_id = parse_int(id_text, images_file, line)
        if image_id in paths:
            raise SpeciesDataError(f"{images_file}:{line}: image id {image_id} listed twice")
        paths[image_id] = (line, relative)

    classes_file = root / "classes.txt"
    class_rows = [
        (parse_int(i, classes_file, line), name, line) for line, (i, name) in read_rows(classes_file, 2)
    ]
    for expected, (class_id, _, line) in enumerate(class_rows, start=1):
        if class_id != expected:
            raise SpeciesDataError(f"{classes_file}:{line}: class ids must run 1..N in order, got {class_id}")
    class_names = tuple(name.split(".", 1)[-1] for _, name, _ in class_rows)

    labels = _id_table(root / "image_class_labels.txt", 2, paths, images_file)
    splits = _id_table(root / "train_test_split.txt", 2, paths, images_file)
    boxes = _id_table(root / "bounding_boxes.txt", 5, paths, images_file)
    parts = _read_cub_parts(root / "parts" / "part_locs.txt", paths, images_file)

    train, test = [], []
    for image_id, (line, relative) in sorted(paths.items()):
        label_line, (label_text,) = labels[image_id]
        label = parse_int(label_text, root / "image_class_labels.txt", label_line)
        if not 1 <= label <= len(class_names):
            raise SpeciesDataError(
                f"{root / 'image_class_labels.txt'}:{label_line}: class {label} not in classes.txt"
            )
        split_line, (is_train,) = splits[image_id]
        if is_train not in ("0", "1"):
            raise SpeciesDataError(
                f"{root / 'train_test_split.txt'}:{split_line}: expected 0 or 1, got {is_train!r}"
            )
        box_line, box_fields = boxes[image_id]
        x, y, w, h = (parse_float(v, root / "bounding_boxes.txt", box_line) for v in box_fields)
        if w <= 0 or h <= 0:
            raise SpeciesDataError(
                f"{root / 'bounding_boxes.txt'}:{box_line}: box width and height must be > 0, got {w}, {h}"
            )
        record = SpeciesRecord(
            path=_existing_image(root / "images" / relative, images_file, line),
            label=label - 1,
            bbox=(x, y, x + w, y + h),
            parts=parts[image_id],
        )
        (train if is_train == "1" else test).append(record)
    return SpeciesIndex(class_names, tuple(train), tuple(test))


def _read_cub_parts(path: Path, images: dict[int, object], images_file: Path) -> dict[int, np.ndarray]:
    """``id -> (15, 3)`` array of (x, y, visible), every part of every image present exactly once."""
    table = {image_id: np.full((CUB_NUM_PARTS, 3), np.nan, dtype=np.float32) for image_id in images}
    for line, fields in read_rows(path, 5):
        image_id, part_id = parse_int(fields[0], path, line), parse_int(fields[1], path, line)
        if image_id not in table:
            raise SpeciesDataError(f"{path}:{line}: image id {image_id} is not in {images_file.name}")
        if not 1 <= part_id <= CUB_NUM_PARTS:
            raise SpeciesDataError(f"{path}:{line}: part id {part_id} outside 1..{CUB_NUM_PARTS}")
        table[image_id][part_id - 1] = [parse_float(v, path, line) for v in fields[2:]]
    for image_id, locations in table.items():
        if np.isnan(locations).any():
            missing = int(np.flatnonzero(np.isnan(locations[:, 0]))[0]) + 1
            raise SpeciesDataError(f"{path}: image id {image_id} has no location for part {missing}")
    return table


def read_stanford_cars(root: Path) -> SpeciesIndex:
    """Stanford Cars: ``anno_{train,test}.csv`` (filename,x1,y1,x2,y2,class; 1-indexed) or the devkit ``.mat`` files.

    Images live in ``cars_train/`` and ``cars_test/``; class names come from ``names.csv`` (one per
    line) or ``devkit/cars_meta.mat``, else ``class_001``...
    """
    root = require_dir(Path(root), "Stanford Cars root")
    names_file = root / "names.csv"
    names: list[str] | None = None
    if names_file.exists():
        names = read_lines(names_file, "Stanford Cars class names", SpeciesDataError)
    elif (root / "devkit" / "cars_meta.mat").exists():
        meta = load_matlab(root / "devkit" / "cars_meta.mat", ["class_names"], "names.csv, one name per line")
        names = [str(name) for name in np.atleast_1d(meta["class_names"])]
    splits = {}
    for split, mat_names in (
        ("train", ["cars_train_annos.mat"]),
        ("test", ["cars_test_annos_withlabels.mat"]),
    ):
        image_dir = require_dir(root / f"cars_{split}", f"Stanford Cars {split} images")
        csv_file = root / f"anno_{split}.csv"
        if csv_file.exists():
            rows = _car_rows_from_csv(csv_file)
        else:
            mat_file = first_existing(root / d / m for d in ("devkit", ".") for m in mat_names)
            if mat_file is None:
                raise FileNotFoundError(
                    f"Stanford Cars {split} annotations not found: {csv_file} (or devkit/{mat_names[0]})"
                )
            rows = _car_rows_from_mat(mat_file)
            csv_file = mat_file
        splits[split] = [(csv_file, line, image_dir / name, box, label) for line, name, box, label in rows]
    num_classes = len(names) if names is not None else max(r[4] for rows in splits.values() for r in rows)
    class_names = (
        tuple(names) if names is not None else tuple(f"class_{i:03d}" for i in range(1, num_classes + 1))
    )
    index = {}
    for split, rows in splits.items():
        records = []
        for source, line, path, box, label in rows:
            if not 1 <= label <= num_classes:
                raise SpeciesDataError(f"{source}:{line}: class {label} outside 1..{num_classes}")
            records.append(SpeciesRecord(_existing_image(path, source, line), label - 1, bbox=box))
        index[split] = tuple(records)
    return SpeciesIndex(class_names, index["train"], index["test"])


def _car_rows_from_csv(path: Path) -> list[tuple[int, str, tuple[float, ...], int]]:
    rows = read_rows(path, 6, delimiter=",")
    if rows and rows[0][1][0].lower() in ("filename", "fname", "file"):
        rows = rows[1:]  # header line
    return [
        (
            line,
            fields[0],
            tuple(parse_float(v, path, line) for v in fields[1:5]),
            parse_int(fields[5], path, line),
        )
        for line, fields in rows
    ]


def _car_rows_from_mat(path: Path) -> list[tuple[int, str, tuple[float, ...], int]]:
    annotations = load_matlab(
        path, ["annotations"], "anno_train.csv / anno_test.csv (filename,x1,y1,x2,y2,class)"
    )
    table = np.atleast_1d(annotations["annotations"])
    fields = ("fname", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class")
    if table.dtype.names is None or any(f not in table.dtype.names for f in fields):
        raise SpeciesDataError(f"{path}: 'annotations' must be a struct array with fields {fields}")
    try:
        return [
            (entry, str(row["fname"]), tuple(float(row[f]) for f in fields[1:5]), int(row["class"]))
            for entry, row in enumerate(table, start=1)
        ]
    except (TypeError, ValueError) as error:
        raise SpeciesDataError(
            f"{path}: 'annotations' holds a box or class that is not a number: {error}"
        ) from None


def read_flowers102(root: Path) -> SpeciesIndex:
    """Oxford Flowers-102: ``jpg/image_XXXXX.jpg`` + labels and split ids (``.mat`` or ``.txt``).

    Train = the official ``trnid`` + ``valid`` ids (our validation split is carved from it);
    test = ``tstid``. Text layout: ``imagelabels.txt`` (one 1-indexed label per line, line i =
    image i) and ``trnid.txt``/``valid.txt``/``tstid.txt`` (whitespace-separated image ids).
    """
    root = require_dir(Path(root), "Oxford Flowers-102 root")
    image_dir = require_dir(root / "jpg", "Oxford Flowers-102 images")
    text_hint = "imagelabels.txt + trnid.txt/valid.txt/tstid.txt (see docs/datasets.md)"
    if (root / "imagelabels.txt").exists():
        labels_file = root / "imagelabels.txt"
        labels = [parse_int(fields[0], labels_file, line) for line, fields in read_rows(labels_file, 1)]
    else:
        labels_file = require_file(root / "imagelabels.mat", "Flowers-102 labels (imagelabels.txt or .mat)")
        labels = matlab_ints(load_matlab(labels_file, ["labels"], text_hint), "labels", labels_file)
    if (root / "trnid.txt").exists():
        ids = {key: _read_id_list(root / f"{key}.txt") for key in ("trnid", "valid", "tstid")}
        sources = {key: root / f"{key}.txt" for key in ids}
    else:
        setid_file = require_file(
            root / "setid.mat", "Flowers-102 split ids (trnid.txt/valid.txt/tstid.txt or setid.mat)"
        )
        setid = load_matlab(setid_file, ["trnid", "valid", "tstid"], text_hint)
        ids = {key: matlab_ints(setid, key, setid_file) for key in ("trnid", "valid", "tstid")}
        sources = dict.fromkeys(ids, setid_file)
    if not labels or min(labels) < 1:
        raise SpeciesDataError(
            f"{labels_file}: labels must be 1-indexed class ids, found {min(labels, default=None)}"
        )
    num_classes = max(labels)
    names_file = root / "class_names.txt"
    if names_file.exists():
        class_names = tuple(read_lines(names_file, "Flowers-102 class names", SpeciesDataError))
        if len(class_names) < num_classes:
            raise SpeciesDataError(
                f"{names_file}: {len(class_names)} names but {labels_file.name} uses class {num_classes}"
            )
    else:
        class_names = tuple(f"flower_{i:03d}" for i in range(1, num_classes + 1))
    seen: dict[int, str] = {}
    splits: dict[str, list[SpeciesRecord]] = {"train": [], "test": []}
    for key, split in (("trnid", "train"), ("valid", "train"), ("tstid", "test")):
        for image_id in ids[key]:
            if not 1 <= image_id <= len(labels):
                raise SpeciesDataError(
                    f"{sources[key]}: image id {image_id} has no label in {labels_file.name}"
                )
            if image_id in seen:
                raise SpeciesDataError(f"{sources[key]}: image id {image_id} is also in {seen[image_id]}")
            seen[image_id] = key
            path = image_dir / f"image_{image_id:05d}.jpg"
            if not path.is_file():
                raise FileNotFoundError(f"{sources[key]}: image id {image_id}: file not found: {path}")
            splits[split].append(SpeciesRecord(path, labels[image_id - 1] - 1))
    return SpeciesIndex(class_names, tuple(splits["train"]), tuple(splits["test"]))


def _read_id_list(path: Path) -> list[int]:
    ids = []
    with (
        require_file(path, "Flowers-102 split file").open(encoding="utf-8") as handle,
        utf8_text(path, SpeciesDataError),
    ):
        for line, text in enumerate(handle, start=1):
            ids.extend(parse_int(token, path, line) for token in text.split())
    return ids
