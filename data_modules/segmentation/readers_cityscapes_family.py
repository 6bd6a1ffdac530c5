"""Readers for datasets laid out like Cityscapes: Cityscapes itself, ACDC and Dark Zurich.

All three keep images and masks in parallel trees (``<images>/<split>/<sequence>/<name><suffix>``
next to ``<labels>/<split>/<sequence>/<name><suffix>``) and store Cityscapes train ids, so a
reader is a choice of folders and suffixes. Readers index files only; decoding and id checks
happen per item in :class:`SegmentationImageDataset`.
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
)
from data_modules.segmentation.specs import ACDC_CONDITIONS, DomainSpec
from data_modules.segmentation.validation import SegmentationDataError, index_files

CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit.png"
CITYSCAPES_TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
CITYSCAPES_LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
ANON_IMAGE_SUFFIX = "_rgb_anon.png"
ACDC_REFERENCE_SUFFIX = "_rgb_ref_anon.png"
ANON_TRAIN_ID_SUFFIX = "_gt_labelTrainIds.png"


def read_cityscapes(spec: DomainSpec) -> SegmentationIndex:
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` + ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png``.

    Without ``*_labelTrainIds.png`` files (they come from cityscapesScripts' createTrainIdLabelImgs),
    the ``*_gtFine_labelIds.png`` masks are converted on the fly with the official table.
    """
    if spec.split == "test" and spec.labelled:
        raise SegmentationDataError(
            "Cityscapes' test labels are not public (its gtFine/test masks are all 'unlabeled', so every "
            "score would be 0): set labelled: false for it (predict), or test on split: val"
        )
    root = require_dir(Path(spec.root), "Cityscapes root")
    images = index_files(root / "leftImg8bit" / spec.split, CITYSCAPES_IMAGE_SUFFIX, "Cityscapes image")
    mask_dir = root / "gtFine" / spec.split
    suffix, mapping = CITYSCAPES_TRAIN_ID_SUFFIX, CITYSCAPES_TRAIN_IDS
    if spec.labelled:
        require_dir(mask_dir, "Cityscapes gtFine split folder")
        if not index_files(mask_dir, CITYSCAPES_TRAIN_ID_SUFFIX, "Cityscapes mask", required=False):
            suffix, mapping = CITYSCAPES_LABEL_ID_SUFFIX, CITYSCAPES_LABEL_IDS_MAPPING
    records = paired_records(images, mask_dir, suffix, spec.labelled, "Cityscapes")
    return SegmentationIndex(tuple(records), MaskFormat(mapping), CITYSCAPES_CLASSES)


def read_acdc(spec: DomainSpec) -> SegmentationIndex:
    """``rgb_anon/<condition>/<split>/<seq>/*_rgb_anon.png`` + ``gt/<condition>/<split>/<seq>/*_gt_labelTrainIds.png``.

    ``condition`` None reads all four conditions (fog, night, rain, snow), in that order. The
    ``*_ref`` splits are the daytime reference drives of the same routes: named ``*_rgb_ref_anon.png``
    and without labels.
    """
    reference = spec.split.endswith("_ref")
    if reference and spec.labelled:
        raise SegmentationDataError(
            f"ACDC's {spec.split} split (daytime references) has no labels: set labelled: false for it"
        )
    root = require_dir(Path(spec.root), "ACDC root")
    conditions = ACDC_CONDITIONS if spec.condition is None else (spec.condition,)
    suffix = ACDC_REFERENCE_SUFFIX if reference else ANON_IMAGE_SUFFIX
    records: list[SegmentationRecord] = []
    for condition in conditions:
        images = index_files(root / "rgb_anon" / condition / spec.split, suffix, f"ACDC {condition} image")
        mask_dir = root / "gt" / condition / spec.split
        records += paired_records(images, mask_dir, ANON_TRAIN_ID_SUFFIX, spec.labelled, f"ACDC {condition}")
    return SegmentationIndex(tuple(records), MaskFormat(CITYSCAPES_TRAIN_IDS), CITYSCAPES_CLASSES)


def read_dark_zurich(spec: DomainSpec) -> SegmentationIndex:
    """``rgb_anon/<split>/night/<seq>/*_rgb_anon.png`` + ``gt/<split>/night/<seq>/*_gt_labelTrainIds.png``.

    Only the val (and withheld test) split has labels; the train split is an unlabelled target.
    """
    if spec.split == "train" and spec.labelled:
        raise SegmentationDataError("Dark Zurich's train split has no labels: set labelled: false for it")
    root = require_dir(Path(spec.root), "Dark Zurich root")
    images = index_files(root / "rgb_anon" / spec.split / "night", ANON_IMAGE_SUFFIX, "Dark Zurich image")
    mask_dir = root / "gt" / spec.split / "night"
    records = paired_records(images, mask_dir, ANON_TRAIN_ID_SUFFIX, spec.labelled, "Dark Zurich")
    return SegmentationIndex(tuple(records), MaskFormat(CITYSCAPES_TRAIN_IDS), CITYSCAPES_CLASSES)
