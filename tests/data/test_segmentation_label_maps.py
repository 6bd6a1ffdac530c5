"""Label tables and the raw-id -> train-id mapping, on hand-made inputs."""

import tracemalloc
import warnings

import numpy as np
import pytest

from data_modules.segmentation import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_TO_TRAIN,
    IGNORE_INDEX,
    MAPILLARY_TO_TRAIN,
    SYNTHIA_13,
    SYNTHIA_16,
    SYNTHIA_TO_TRAIN,
    LabelIdError,
    LabelMapping,
)
from data_modules.segmentation.label_maps import id_map_mapping, identity_mapping
from data_modules.segmentation.validation import UnmappedIdWarning


def test_cityscapes_tables_cover_each_train_id_once():
    assert len(CITYSCAPES_CLASSES) == 19
    assert sorted(CITYSCAPES_LABEL_TO_TRAIN.values()) == list(range(19))
    assert CITYSCAPES_LABEL_TO_TRAIN[7] == CITYSCAPES_CLASSES.index("road")
    assert CITYSCAPES_LABEL_TO_TRAIN[26] == CITYSCAPES_CLASSES.index("car")
    assert CITYSCAPES_LABEL_TO_TRAIN[33] == CITYSCAPES_CLASSES.index("bicycle")


def test_synthia_maps_sixteen_classes_and_the_thirteen_drop_wall_fence_pole():
    assert len(set(SYNTHIA_TO_TRAIN.values())) == 16 and SYNTHIA_16 == tuple(
        sorted(set(SYNTHIA_TO_TRAIN.values()))
    )
    absent = {CITYSCAPES_CLASSES[i] for i in range(19) if i not in SYNTHIA_16}
    assert absent == {"terrain", "truck", "train"}
    assert {CITYSCAPES_CLASSES[i] for i in set(SYNTHIA_16) - set(SYNTHIA_13)} == {"wall", "fence", "pole"}
    assert len(SYNTHIA_13) == 13


def test_synthia_raw_ids_go_to_their_own_cityscapes_classes():
    """A permutation of the table (e.g. motorcycle and bicycle swapped) keeps its structure; pin the pairs."""
    # SYNTHIA RAND-CITYSCAPES README ids -> the Cityscapes class of the same name
    official = {
        3: "road", 4: "sidewalk", 2: "building", 21: "wall", 5: "fence", 7: "pole", 15: "traffic light",
        9: "traffic sign", 6: "vegetation", 1: "sky", 10: "person", 17: "rider", 8: "car", 19: "bus",
        12: "motorcycle", 11: "bicycle",
    }  # fmt: skip
    assert {raw: CITYSCAPES_CLASSES[train] for raw, train in SYNTHIA_TO_TRAIN.items()} == official
    assert SYNTHIA_TO_TRAIN[12] == 17 and SYNTHIA_TO_TRAIN[11] == 18  # motorcycle, bicycle
    # void, parking-slot, road-work, terrain and lanemarking stay ignored
    assert not {0, 13, 14, 16, 22} & set(SYNTHIA_TO_TRAIN)


def test_mapillary_map_hits_every_cityscapes_class_and_only_valid_ids():
    assert set(MAPILLARY_TO_TRAIN.values()) == set(range(19))
    assert all(0 <= raw <= 65 for raw in MAPILLARY_TO_TRAIN)
    assert MAPILLARY_TO_TRAIN[55] == CITYSCAPES_CLASSES.index("car") and 65 not in MAPILLARY_TO_TRAIN


def test_mapillary_raw_ids_go_to_their_own_cityscapes_classes():
    """Spot-check the Vistas v1.2 ids whose class has a Cityscapes namesake (a permutation would pass the above)."""
    named = {
        13: "road", 15: "sidewalk", 17: "building", 6: "wall", 3: "fence", 45: "pole", 48: "traffic light",
        50: "traffic sign", 30: "vegetation", 29: "terrain", 27: "sky", 19: "person", 20: "rider",
        55: "car", 61: "truck", 54: "bus", 58: "train", 57: "motorcycle", 52: "bicycle",
    }  # fmt: skip
    assert {raw: CITYSCAPES_CLASSES[MAPILLARY_TO_TRAIN[raw]] for raw in named} == named
    assert CITYSCAPES_CLASSES[MAPILLARY_TO_TRAIN[2]] == "sidewalk"  # curb
    assert CITYSCAPES_CLASSES[MAPILLARY_TO_TRAIN[24]] == "road"  # lane marking (general)
    merged = {  # Vistas classes folded into a Cityscapes one by its annotation guideline
        "road": (
            7,
            8,
            14,
            23,
            41,
            43,
        ),  # bike lane, crosswalk, service lane, crosswalk marking, manhole, pothole
        "sidewalk": (9, 11),  # curb cut, pedestrian area
        "pole": (44, 46, 47),  # street light, traffic-sign frame, utility pole
        "terrain": (25, 26),  # mountain, sand
        "rider": (21, 22),  # motorcyclist, other rider
    }
    assert {
        name: tuple(CITYSCAPES_CLASSES[MAPILLARY_TO_TRAIN[raw]] for raw in ids)
        for name, ids in merged.items()
    } == {name: (name,) * len(ids) for name, ids in merged.items()}


def test_mapping_applies_the_table_and_ignores_known_unmapped_ids():
    mapping = LabelMapping({3: 0, 5: 1}, frozenset({0, 3, 5}))
    raw = np.array([[3, 5], [0, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(mapping.apply(raw, "m.png"), [[0, 1], [IGNORE_INDEX, IGNORE_INDEX]])
    assert mapping.apply(raw, "m.png").dtype == np.uint8


def test_mapping_refuses_unknown_ids_naming_the_file_and_values():
    mapping = LabelMapping({3: 0}, frozenset({3}))
    with pytest.raises(LabelIdError, match=r"labels/x\.png.*\[4, 9\]"):
        mapping.apply(np.array([[3, 4, 9, 4]], dtype=np.uint16), "labels/x.png")


def test_sixteen_bit_ids_are_handled():
    mapping = LabelMapping({1000: 2}, None)
    with pytest.warns(UnmappedIdWarning, match=r"raw ids \[7\]"):
        np.testing.assert_array_equal(
            mapping.apply(np.array([[1000, 7]], dtype=np.uint16), "m"), [[2, IGNORE_INDEX]]
        )


def test_thirty_two_bit_ids_map_without_a_table_as_long_as_the_largest_id():
    """A 32-bit mask (PIL mode ``I``) with ids near 2**31 used to build lookup tables of 2**31
    entries (gigabytes per mask); ids this large now map through their distinct values."""
    huge = 2**31 - 2
    mapping = LabelMapping({huge: 4, 7: 1}, None)
    raw = np.array([[huge, 7], [3, 255]], dtype=np.int32)
    tracemalloc.start()
    try:
        with pytest.warns(UnmappedIdWarning, match=r"raw ids \[3\]"):
            mapped = mapping.apply(raw, "m.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(mapped, [[4, 1], [IGNORE_INDEX, IGNORE_INDEX]])
    assert peak < 1 << 20  # a 4-pixel mask; the id-indexed tables took gigabytes
    with pytest.raises(LabelIdError, match=rf"labels/x\.png: ids \[{huge}\] .*\(2 pixels\)"):
        identity_mapping(19).apply(np.array([[0, huge, huge]], dtype=np.uint32), "labels/x.png")


def test_large_ids_map_entries_absent_from_the_mask_take_no_pixels():
    """The distinct-value path (ids >= 2**16) looks each map entry up among the mask's ids. An entry
    the mask lacks must not land on a neighbouring id (7 sits where 5 would), and entries beyond the
    mask's largest id must not index past its id list."""
    huge = 2**31 - 2
    mapping = LabelMapping({huge: 4, 5: 1}, None)
    with pytest.warns(UnmappedIdWarning, match=r"raw ids \[7\]"):
        mapped = mapping.apply(np.array([[huge, 7]], dtype=np.int64), "m.png")
    np.testing.assert_array_equal(mapped, [[4, IGNORE_INDEX]])
    above = LabelMapping({70000: 1, 80000: 2}, None)  # 80000 is past the mask's only id
    np.testing.assert_array_equal(above.apply(np.array([[70000]], dtype=np.int32), "m.png"), [[1]])


def test_a_negative_label_id_is_refused_naming_the_file_and_the_id():
    with pytest.raises(LabelIdError, match=r"^label image m\.png: negative label id -1$"):
        LabelMapping({1: 0}, None).apply(np.array([[-1, 1]], dtype=np.int32), "m.png")


def test_a_user_id_map_warns_about_raw_ids_it_leaves_out_but_not_about_ignore():
    """A typo (``6: 13`` where the masks use 5) sent a class's pixels to 255 without a word."""
    typo = id_map_mapping({1: 0, 2: 1, 6: 13}, num_classes=19)
    with pytest.warns(
        UnmappedIdWarning, match=r"^id_map lists no train id for raw ids \[5\] found in the masks"
    ):
        typo.apply(np.array([[1, 2, 5, 255]], np.uint8), "m.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        typo.apply(np.array([[1, 2, 5, 255]], np.uint8), "n.png")  # 5 was named already: once per id
        typo.apply(np.array([[1, 2, 6, 255]], np.uint8), "m.png")  # every id listed, 255 is ignore
        identity_mapping(3).apply(np.array([[0, 2, 255]], np.uint8), "m.png")  # known ids: no warning
    with pytest.warns(UnmappedIdWarning, match=r"raw ids \[7\]"):  # only the new one
        typo.apply(np.array([[5, 7]], np.uint8), "o.png")


def test_identity_and_user_id_maps():
    np.testing.assert_array_equal(
        identity_mapping(3).apply(np.array([[0, 2, 255]], np.uint8), "m"), [[0, 2, 255]]
    )
    with pytest.raises(LabelIdError, match="m.png"):
        identity_mapping(3).apply(np.array([[3]], np.uint8), "m.png")
    user = id_map_mapping({"10": "1", 20: 0}, num_classes=2)  # YAML may give strings
    with pytest.warns(UnmappedIdWarning, match=r"raw ids \[30\]"):
        np.testing.assert_array_equal(
            user.apply(np.array([[10, 20, 30]], np.uint8), "m"), [[1, 0, IGNORE_INDEX]]
        )
    with pytest.raises(ValueError, match="10 -> 5"):
        id_map_mapping({10: 5}, num_classes=2)
