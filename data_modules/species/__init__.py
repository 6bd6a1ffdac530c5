"""Fine-grained species data: the embedded synthetic creatures and readers for real datasets.

Every item is a dict with ``image`` (3, H, W) float32 normalised with the data module's ``mean`` /
``std`` (the backbone's, filled from its timm config; ImageNet's by default), ``label`` int64
(0-indexed) and ``path``; synthetic items add ``trait_mask`` (H, W), ``part_masks`` (P, H, W) and
``attributes`` (multi-hot); CUB adds ``parts`` (15, 3) = (x, y, visible) and ``bbox`` (x1, y1, x2, y2),
Stanford Cars ``bbox``, all in the transformed image's pixels.
"""

from data_modules.species.datamodule import SpeciesDataModule
from data_modules.species.factory import DATASET_NAMES, build_species_dataset, read_species_index
from data_modules.species.image_dataset import (
    CorruptImageError,
    SpeciesImageDataset,
    SpeciesIndex,
    SpeciesRecord,
)
from data_modules.species.species_catalogue import (
    ATTRIBUTE_NAMES,
    PART_NAMES,
    SLOTS,
    Species,
    SpeciesCatalogue,
    build_catalogue,
    differing_parts,
    random_genome,
    trait_parts,
)
from data_modules.species.synthetic_species import SyntheticSpecies
from data_modules.species.transforms import (
    SpeciesTransform,
    build_eval_transform,
    build_train_transform,
)
from data_modules.species.validation import SpeciesDataError

__all__ = [
    "ATTRIBUTE_NAMES",
    "DATASET_NAMES",
    "PART_NAMES",
    "SLOTS",
    "CorruptImageError",
    "Species",
    "SpeciesCatalogue",
    "SpeciesDataError",
    "SpeciesDataModule",
    "SpeciesImageDataset",
    "SpeciesIndex",
    "SpeciesRecord",
    "SpeciesTransform",
    "SyntheticSpecies",
    "build_catalogue",
    "build_eval_transform",
    "build_species_dataset",
    "build_train_transform",
    "differing_parts",
    "random_genome",
    "read_species_index",
    "trait_parts",
]
