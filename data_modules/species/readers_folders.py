"""Readers for species datasets whose classes are folders: Stanford Dogs, iNat-2021, generic ImageFolder.

Class order is the sorted folder names (which is also the official label order of Dogs and iNat),
and labels are 0-indexed positions in it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_modules.files import require_dir
from data_modules.species.image_dataset import SpeciesIndex, SpeciesRecord
from data_modules.species.splits import stratified_split
from data_modules.species.validation import (
    IMAGE_SUFFIXES,
    SpeciesDataError,
    first_existing,
    list_class_dirs,
    list_images,
    load_matlab,
    read_rows,
)


def _class_dirs(folder: Path, what: str) -> list[Path]:
    class_dirs = list_class_dirs(require_dir(folder, what))
    if len(class_dirs) < 2:
        raise SpeciesDataError(f"{folder}: {what} needs at least 2 class folders, found {len(class_dirs)}")
    return class_dirs


def _records_from_class_dirs(split_dir: Path, class_index: dict[str, int]) -> list[SpeciesRecord]:
    """Every image of every class folder of one split; each folder must be a known, non-empty class."""
    records = []
    for class_dir in list_class_dirs(split_dir):
        if class_dir.name not in class_index:
            raise SpeciesDataError(f"{class_dir}: class folder is not among the training classes")
        images = list_images(class_dir)
        if not images:
            raise SpeciesDataError(
                f"{class_dir}: class folder holds no images (suffixes {sorted(IMAGE_SUFFIXES)})"
            )
        records.extend(SpeciesRecord(path, class_index[class_dir.name]) for path in images)
    if not records:
        raise SpeciesDataError(f"{split_dir}: no class folders with images")
    return records


def read_stanford_dogs(root: Path) -> SpeciesIndex:
    """Stanford Dogs: ``Images/<wnid-breed>/*.jpg`` + split lists.

    Lists: ``lists/{train,test}_list.txt`` (or in ``root``), one path relative to ``Images/`` per
    line, or the official ``{train,test}_list.mat`` (needs scipy). Class names are the breed part of
    the folder name.
    """
    root = require_dir(Path(root), "Stanford Dogs root")
    image_dir = root / "Images"
    class_dirs = _class_dirs(image_dir, "Stanford Dogs Images/")
    class_index = {d.name: i for i, d in enumerate(class_dirs)}
    splits = {}
    for split in ("train", "test"):
        places = (root / "lists", root)
        text_file = first_existing(place / f"{split}_list.txt" for place in places)
        if text_file is not None:
            entries = [(line, fields[0]) for line, fields in read_rows(text_file, 1)]
            source = text_file
        else:
            source = first_existing(place / f"{split}_list.mat" for place in places)
            if source is None:
                raise FileNotFoundError(
                    f"Stanford Dogs split list not found: {root / 'lists' / f'{split}_list.txt'} (or .mat)"
                )
            hint = f"lists/{split}_list.txt with one path relative to Images/ per line"
            file_list = np.atleast_1d(load_matlab(source, ["file_list"], hint)["file_list"])
            entries = [(entry, str(name)) for entry, name in enumerate(file_list, start=1)]
        records = []
        for line, relative in entries:
            class_name = Path(relative).parts[0]
            if class_name not in class_index:
                raise SpeciesDataError(
                    f"{source}:{line}: {relative!r} is not inside a class folder of {image_dir}"
                )
            path = image_dir / relative
            if not path.is_file():
                raise FileNotFoundError(f"{source}:{line}: image file not found: {path}")
            records.append(SpeciesRecord(path, class_index[class_name]))
        splits[split] = tuple(records)
    class_names = tuple(d.name.split("-", 1)[-1] for d in class_dirs)
    return SpeciesIndex(class_names, splits["train"], splits["test"])


def read_inat2021(root: Path) -> SpeciesIndex:
    """iNat-2021 folders: ``train/`` (or ``train_mini/``) and ``val/`` of ``<category>/*.jpg``.

    The public test set has no labels, so the official ``val`` split is our test split. The json
    files are not needed: the folder names carry the category id and taxonomy.
    """
    root = require_dir(Path(root), "iNat-2021 root")
    train_dir = first_existing((root / "train", root / "train_mini"))
    if train_dir is None:
        raise FileNotFoundError(f"iNat-2021 training folder not found: {root / 'train'} (or train_mini/)")
    class_dirs = _class_dirs(train_dir, "iNat-2021 train/")
    class_index = {d.name: i for i, d in enumerate(class_dirs)}
    train = _records_from_class_dirs(train_dir, class_index)
    test = _records_from_class_dirs(require_dir(root / "val", "iNat-2021 val/ folder"), class_index)
    return SpeciesIndex(tuple(d.name for d in class_dirs), tuple(train), tuple(test))


TEST_FOLDER_NAMES = ("test", "val", "valid", "validation")  # the held-out split, first found wins


def read_image_folder(root: Path, test_fraction: float = 0.2, seed: int = 0) -> SpeciesIndex:
    """``root/train/<class>/*`` with ``root/test/`` (or ``val/``, ``valid/``, ``validation/``) as the
    test split, or ``root/<class>/*``. Split folders are matched in any case (``Train/``, ``Test/``)
    when they are all the root holds: read as classes they would make a two-class "Test vs Train"
    problem without a word, while ``Bus/ Car/ Train/`` stays a flat set of classes.

    Without a test folder, ``test_fraction`` of each class is held out as the test split (by ``seed``).
    """
    root = require_dir(Path(root), "image folder root")
    folders = {child.name.lower(): child for child in sorted(root.iterdir()) if child.is_dir()}
    split_layout = (root / "train").is_dir() or (
        "train" in folders and set(folders) <= {"train", *TEST_FOLDER_NAMES}
    )  # `Train/` + `Test/` is a split; `Bus/ Car/ Train/ Truck/` is four classes
    train_dir = (root / "train" if (root / "train").is_dir() else folders["train"]) if split_layout else root
    class_dirs = _class_dirs(train_dir, "image folder")
    class_index = {d.name: i for i, d in enumerate(class_dirs)}
    records = _records_from_class_dirs(train_dir, class_index)
    class_names = tuple(d.name for d in class_dirs)
    test_dir = (
        next((folders[name] for name in TEST_FOLDER_NAMES if name in folders), None) if split_layout else None
    )
    if test_dir is not None:
        return SpeciesIndex(
            class_names, tuple(records), tuple(_records_from_class_dirs(test_dir, class_index))
        )
    if test_fraction <= 0:
        raise SpeciesDataError(
            f"{root}: no {'/, '.join(TEST_FOLDER_NAMES)}/ folder, so test_fraction must be > 0 to carve a test split"
        )
    kept, held_out = stratified_split([r.label for r in records], test_fraction, seed)
    return SpeciesIndex(class_names, tuple(records[i] for i in kept), tuple(records[i] for i in held_out))
