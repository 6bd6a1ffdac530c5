"""Readers for datasets with one image folder and one label folder: GTA5, SYNTHIA, BDD100K,
Mapillary Vistas, and the generic ``folder`` reader for anything else.

They differ in suffixes, in how a split is chosen (sub-folders, or a list of names for GTA5 and
SYNTHIA, which are used whole) and in their label spaces (:mod:`~data_modules.segmentation.label_maps`).
"""

from __future__ import annotations

from pathlib import Path

from data_modules.files import require_dir
from data_modules.segmentation.image_dataset import (
    MaskFormat,
    SegmentationIndex,
    SegmentationRecord,
    paired_records,
)
from data_modules.segmentation.label_maps import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_IDS_MAPPING,
    CITYSCAPES_TRAIN_IDS,
    MAPILLARY_MAPPING,
    SYNTHIA_MAPPING,
    id_map_mapping,
    identity_mapping,
)
from data_modules.segmentation.specs import DomainSpec, folder_class_names
from data_modules.segmentation.validation import (
    SegmentationDataError,
    index_files,
    load_first_channel_16bit,
    pair_files,
    read_name_list,
)

MAPILLARY_SPLITS: dict[str, str] = {"train": "training", "val": "validation", "test": "testing"}
# A few GTA5 labels are a few pixels off their 1914x1052 image; 2 % per side (38 x 21 px) covers
# that slack and still refuses a label of another image size.
GTA5_MASK_SIZE_TOLERANCE = 0.02


def read_gta5(spec: DomainSpec) -> SegmentationIndex:
    """``images/*.png`` + ``labels/*.png`` (Cityscapes label ids, palette PNGs), split by ``splits/<split>.txt``."""
    root = require_dir(Path(spec.root), "GTA5 root")
    records = _listed_split(root, spec, root / "images", root / "labels", "GTA5")
    mask_format = MaskFormat(CITYSCAPES_LABEL_IDS_MAPPING, size_tolerance=GTA5_MASK_SIZE_TOLERANCE)
    return SegmentationIndex(records, mask_format, CITYSCAPES_CLASSES)


def read_synthia(spec: DomainSpec) -> SegmentationIndex:
    """SYNTHIA-RAND-CITYSCAPES: ``RGB/*.png`` + ``GT/LABELS/*.png`` (16-bit, class id in the first
    channel), mapped to the 16 classes it shares with Cityscapes; split by ``splits/<split>.txt``."""
    root = require_dir(Path(spec.root), "SYNTHIA root")
    records = _listed_split(root, spec, root / "RGB", root / "GT" / "LABELS", "SYNTHIA")
    return SegmentationIndex(
        records, MaskFormat(SYNTHIA_MAPPING, load_first_channel_16bit), CITYSCAPES_CLASSES
    )


def read_bdd100k(spec: DomainSpec) -> SegmentationIndex:
    """``images/10k/<split>/*.jpg`` + ``labels/sem_seg/masks/<split>/*.png`` (already train ids)."""
    root = require_dir(Path(spec.root), "BDD100K root")
    images = index_files(root / "images" / "10k" / spec.split, ".jpg", "BDD100K image", recursive=False)
    mask_dir = root / "labels" / "sem_seg" / "masks" / spec.split
    records = paired_records(images, mask_dir, ".png", spec.labelled, "BDD100K")
    return SegmentationIndex(tuple(records), MaskFormat(CITYSCAPES_TRAIN_IDS), CITYSCAPES_CLASSES)


def read_mapillary(spec: DomainSpec) -> SegmentationIndex:
    """``<training|validation>/images/*.jpg`` + ``.../labels/*.png`` (v1.2 ids, mapped to Cityscapes 19).

    The v2.0 download keeps the v1.2 labels in ``<split>/v1.2/labels``; that folder wins when present.
    """
    root = require_dir(Path(spec.root), "Mapillary Vistas root")
    split_dir = root / MAPILLARY_SPLITS.get(spec.split, spec.split)
    images = index_files(split_dir / "images", ".jpg", "Mapillary image", recursive=False)
    mask_dir = split_dir / "v1.2" / "labels"
    if not mask_dir.is_dir():
        mask_dir = split_dir / "labels"
    records = paired_records(images, mask_dir, ".png", spec.labelled, "Mapillary")
    return SegmentationIndex(tuple(records), MaskFormat(MAPILLARY_MAPPING), CITYSCAPES_CLASSES)


def read_folder(spec: DomainSpec) -> SegmentationIndex:
    """``image_dir`` + ``mask_dir`` (relative to ``root`` when given), paired by the path that is left
    after stripping ``image_suffix`` / ``mask_suffix``; masks hold train ids unless ``id_map`` is given."""
    base = Path(spec.root) if spec.root is not None else Path()
    images = index_files(base / spec.image_dir, spec.image_suffix, "folder image")
    mask_dir = base / spec.mask_dir if spec.mask_dir is not None else base
    records = paired_records(images, mask_dir, spec.mask_suffix, spec.labelled, "folder")
    names = folder_class_names(spec)
    mapping = (
        id_map_mapping(spec.id_map, len(names)) if spec.id_map is not None else identity_mapping(len(names))
    )
    return SegmentationIndex(tuple(records), MaskFormat(mapping), names)


def _listed_split(root: Path, spec: DomainSpec, image_dir: Path, mask_dir: Path, what: str) -> tuple:
    """Images of ``splits/<split>.txt`` (file names or stems, one per line), or all of them without it.

    Domain-adaptation work trains on all of GTA5 or SYNTHIA (GTA5's ``split.mat`` is rarely used;
    docs/datasets.md shows how to turn it into lists); a list keeps any other choice explicit and
    lets known-bad files be left out.
    """
    images = index_files(image_dir, ".png", f"{what} image", recursive=False)
    split_file = root / "splits" / f"{spec.split}.txt"
    if split_file.is_file():
        wanted = [Path(name).stem for name in read_name_list(split_file)]
        unknown = next((name for name in wanted if name not in images), None)
        if unknown is not None:
            raise SegmentationDataError(f"{split_file}: image {unknown!r} is not in {image_dir}")
        images = {name: images[name] for name in wanted}
    if not spec.labelled:
        return tuple(SegmentationRecord(path) for _, path in sorted(images.items()))
    masks = index_files(mask_dir, ".png", f"{what} mask", recursive=False)
    if split_file.is_file():
        masks = {name: path for name, path in masks.items() if name in images}
    return tuple(
        SegmentationRecord(image, mask) for image, mask in pair_files(images, masks, mask_dir, ".png")
    )
