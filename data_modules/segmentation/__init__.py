"""Cross-domain semantic segmentation data: embedded synthetic domain pairs and real-format readers.

Every item is a dict ``{"image": (3, H, W) float32, "mask": (H, W) int64 train ids with
IGNORE_INDEX (255) ignored, "path": str}``; images are normalised with the data module's ``mean`` /
``std`` (the backbone's; ImageNet's by default), which ``tmtcam.viz.heatmaps.denormalize`` undoes
for display. Real datasets are served in the Cityscapes 19-class space; the embedded pairs use the
8 :data:`SCENE_CLASSES`. :class:`DomainPairDataModule` yields source and target batches
together for training and target batches for evaluation.
"""

from data_modules.segmentation.datamodule import DomainPairDataModule
from data_modules.segmentation.factory import (
    READERS,
    build_segmentation_dataset,
    domain_class_names,
    read_segmentation_index,
)
from data_modules.segmentation.image_dataset import (
    MaskFormat,
    SegmentationImageDataset,
    SegmentationIndex,
    SegmentationRecord,
    verify_dataset,
)
from data_modules.segmentation.label_maps import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_TO_TRAIN,
    IGNORE_INDEX,
    MAPILLARY_TO_TRAIN,
    SYNTHIA_13,
    SYNTHIA_16,
    SYNTHIA_TO_TRAIN,
    LabelMapping,
)
from data_modules.segmentation.specs import DATASET_NAMES, DomainSpec
from data_modules.segmentation.synthetic_dataset import SyntheticDomainDataset
from data_modules.segmentation.synthetic_layout import SCENE_CLASSES
from data_modules.segmentation.synthetic_pairs import SYNTHETIC_PAIRS, SyntheticPair, render_pair_example
from data_modules.segmentation.transforms import (
    SegmentationTransform,
    build_eval_transform,
    build_train_transform,
)
from data_modules.segmentation.validation import (
    CorruptImageError,
    ImageModeError,
    ImageModeWarning,
    LabelIdError,
    MaskFormatError,
    MaskSizeError,
    MissingCounterpartError,
    SegmentationDataError,
    UnmappedIdWarning,
)

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABEL_TO_TRAIN",
    "DATASET_NAMES",
    "IGNORE_INDEX",
    "MAPILLARY_TO_TRAIN",
    "READERS",
    "SCENE_CLASSES",
    "SYNTHETIC_PAIRS",
    "SYNTHIA_13",
    "SYNTHIA_16",
    "SYNTHIA_TO_TRAIN",
    "CorruptImageError",
    "DomainPairDataModule",
    "DomainSpec",
    "ImageModeError",
    "ImageModeWarning",
    "UnmappedIdWarning",
    "LabelIdError",
    "LabelMapping",
    "MaskFormat",
    "MaskFormatError",
    "MaskSizeError",
    "MissingCounterpartError",
    "SegmentationDataError",
    "SegmentationImageDataset",
    "SegmentationIndex",
    "SegmentationRecord",
    "SegmentationTransform",
    "SyntheticDomainDataset",
    "SyntheticPair",
    "build_eval_transform",
    "build_segmentation_dataset",
    "build_train_transform",
    "domain_class_names",
    "read_segmentation_index",
    "render_pair_example",
    "verify_dataset",
]
