"""Label spaces of the real datasets and the maps from their raw ids to the Cityscapes 19 train ids.

Every real format is evaluated in the Cityscapes 19-class space (the convention of the domain
adaptation literature), so each reader only needs a :class:`LabelMapping`: which raw ids a mask
may legally contain, and which train id each becomes. Raw ids outside the known set are a data
error (a wrong folder, a colour mask instead of an id mask), never silently ignored; known ids
without a train id become :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_modules.segmentation.validation import LabelIdError, UnmappedIdWarning

IGNORE_INDEX = 255

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

# Official cityscapesScripts table (labels.py): labelId -> trainId for the 19 evaluated classes;
# every other labelId 0..33 (void, parking, rail track, guard rail, bridge, tunnel, polegroup,
# caravan, trailer) is ignored. The license plate's id -1 is stored as 255 in uint8 PNGs.
CITYSCAPES_LABEL_TO_TRAIN: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_LABEL_IDS: frozenset[int] = frozenset(range(34))

# SYNTHIA RAND-CITYSCAPES ids (0 void .. 22 lanemarking) -> Cityscapes train ids for the 16 shared
# classes, as in the usual SYNTHIA->Cityscapes protocol. terrain, truck and train do not exist in
# SYNTHIA; its terrain (16), parking-slot (13), road-work (14) and lanemarking (22) are ignored.
SYNTHIA_TO_TRAIN: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12, 8: 13, 19: 15, 12: 17, 11: 18,
}  # fmt: skip
SYNTHIA_IDS: frozenset[int] = frozenset(range(23))
SYNTHIA_16: tuple[int, ...] = tuple(sorted(SYNTHIA_TO_TRAIN.values()))
SYNTHIA_13: tuple[int, ...] = tuple(c for c in SYNTHIA_16 if c not in (3, 4, 5))  # without wall, fence, pole

# Mapillary Vistas v1.2 (66 ids, 65 = unlabeled) -> Cityscapes train ids. Each Mapillary class goes
# to the Cityscapes class whose annotation guideline covers it: road-surface classes (bike and
# service lanes, crosswalks, lane markings, manholes, potholes) are road; curbs, curb cuts and
# pedestrian areas are sidewalk; street lights and sign frames are pole; sand and mountain are
# terrain; the three rider kinds are rider; on-rails is train. Classes Cityscapes treats as void
# (parking, rail track, guard rail, bridge, tunnel, caravan, trailer, sign backs, other objects,
# snow, water) are ignored. This is the usual "Vistas as Cityscapes" table of DA/DG evaluations.
MAPILLARY_TO_TRAIN: dict[int, int] = {
    13: 0, 7: 0, 8: 0, 14: 0, 23: 0, 24: 0, 41: 0, 43: 0,  # road, lanes, crosswalks, markings, manhole, pothole
    15: 1, 2: 1, 9: 1, 11: 1,  # sidewalk, curb, curb cut, pedestrian area
    17: 2, 6: 3, 3: 4,  # building, wall, fence
    45: 5, 47: 5, 46: 5, 44: 5,  # pole, utility pole, traffic-sign frame, street light
    48: 6, 50: 7, 30: 8, 29: 9, 26: 9, 25: 9, 27: 10,  # traffic light, sign (front), vegetation, terrain, sand, mountain, sky
    19: 11, 20: 12, 21: 12, 22: 12,  # person, bicyclist, motorcyclist, other rider
    55: 13, 61: 14, 54: 15, 58: 16, 57: 17, 52: 18,  # car, truck, bus, on rails, motorcycle, bicycle
}  # fmt: skip
MAPILLARY_IDS: frozenset[int] = frozenset(range(66))
# raw ids up to 16 bits are mapped through a table indexed by id; larger ones through np.unique
DENSE_ID_LIMIT = 1 << 16


@dataclass(frozen=True)
class LabelMapping:
    """Raw mask ids -> train ids, with the set of raw ids a mask may contain.

    ``known_ids`` None means any id is legal (unmapped ones are ignored); otherwise a mask with an
    id outside ``known_ids`` (255 is always legal and always ignored) is an error naming the file.
    """

    to_train: Mapping[int, int]
    known_ids: frozenset[int] | None
    # raw ids already warned about (per process: each DataLoader worker has its copy)
    reported: set[int] = field(default_factory=set, compare=False, repr=False)

    def __post_init__(self) -> None:
        for raw, train in self.to_train.items():
            if raw < 0 or not 0 <= train <= IGNORE_INDEX:
                raise ValueError(
                    f"id map entry {raw} -> {train}: raw ids must be >= 0, train ids in [0, 255]"
                )

    def apply(self, raw: np.ndarray, path: Path | str) -> np.ndarray:
        """(H, W) integer raw ids -> (H, W) uint8 train ids; unknown raw ids raise naming ``path``."""
        if raw.dtype.kind not in "ui":
            raise LabelIdError(f"label image {path}: expected integer ids, got dtype {raw.dtype}")
        if raw.size and int(raw.min()) < 0:
            raise LabelIdError(f"label image {path}: negative label id {int(raw.min())}")
        largest = int(raw.max()) if raw.size else 0
        if largest >= DENSE_ID_LIMIT:
            # a 32-bit mask: a table indexed by raw id would need largest + 1 entries (gigabytes)
            ids, inverse, counts = np.unique(raw, return_inverse=True, return_counts=True)
            return self._train_ids(ids, counts, path)[inverse].reshape(raw.shape)
        size = max(256, largest + 1)
        counts = np.bincount(raw.ravel(), minlength=size)
        return self._train_ids(np.arange(size), counts, path)[raw]

    def _train_ids(self, ids: np.ndarray, counts: np.ndarray, path: Path | str) -> np.ndarray:
        """The uint8 train id of each raw id in the sorted ``ids`` (``counts``: its pixels in the mask),
        after refusing ids outside ``known_ids`` and warning about ids an ``id_map`` leaves out."""
        present = ids[counts > 0]
        if self.known_ids is not None:
            legal = self.known_ids | {IGNORE_INDEX}
            bad = [raw_id for raw_id in present.tolist() if raw_id not in legal]
            if bad:
                pixels = int(counts[np.isin(ids, bad)].sum())
                raise LabelIdError(
                    f"label image {path}: ids {bad[:8]} are not in this dataset's label set "
                    f"({pixels} pixels); is this an id mask of the right dataset?"
                )
        else:
            self._warn_unlisted(present)
        sources = np.fromiter(self.to_train, dtype=np.int64, count=len(self.to_train))
        targets = np.fromiter(self.to_train.values(), dtype=np.uint8, count=len(self.to_train))
        slots = np.searchsorted(ids, sources).clip(max=len(ids) - 1)
        found = ids[slots] == sources
        table = np.full(len(ids), IGNORE_INDEX, dtype=np.uint8)
        table[slots[found]] = targets[found]
        return table

    def _warn_unlisted(self, present: np.ndarray) -> None:
        """A user's map leaves raw ids out on purpose (they are ignored), or by a typo (``6: 13`` for
        ``5: 13``), which would drop a class's pixels without a word. Each id is named once."""
        unlisted = sorted(set(present.tolist()) - set(self.to_train) - {IGNORE_INDEX} - self.reported)
        if unlisted:
            self.reported.update(unlisted)
            warnings.warn(
                f"id_map lists no train id for raw ids {unlisted[:8]} found in the masks: their pixels are "
                f"ignored (255). If that is a typo in id_map, fix it; map them to 255 to silence this",
                UnmappedIdWarning,
                stacklevel=3,
            )


def identity_mapping(num_classes: int) -> LabelMapping:
    """Masks already in train ids 0..num_classes-1 (255 ignore)."""
    return LabelMapping({i: i for i in range(num_classes)}, frozenset(range(num_classes)))


def id_map_mapping(id_map: Mapping[int, int], num_classes: int) -> LabelMapping:
    """A user's raw id -> train id map; raw ids it does not list are ignored, not errors."""
    mapping = {int(raw): int(train) for raw, train in id_map.items()}
    for raw, train in mapping.items():
        if train != IGNORE_INDEX and not 0 <= train < num_classes:
            raise ValueError(f"id_map: {raw} -> {train}, but train ids must be in [0, {num_classes}) or 255")
    return LabelMapping(mapping, None)


CITYSCAPES_TRAIN_IDS = identity_mapping(len(CITYSCAPES_CLASSES))
CITYSCAPES_LABEL_IDS_MAPPING = LabelMapping(CITYSCAPES_LABEL_TO_TRAIN, CITYSCAPES_LABEL_IDS)
SYNTHIA_MAPPING = LabelMapping(SYNTHIA_TO_TRAIN, SYNTHIA_IDS)
MAPILLARY_MAPPING = LabelMapping(MAPILLARY_TO_TRAIN, MAPILLARY_IDS)
