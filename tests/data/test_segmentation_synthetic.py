"""The embedded segmentation domain pairs: determinism, valid masks, class balance and uneven shifts."""

import dataclasses

import numpy as np
import pytest
import torch

from data_modules.segmentation import (
    IGNORE_INDEX,
    SCENE_CLASSES,
    SYNTHETIC_PAIRS,
    DomainSpec,
    SyntheticDomainDataset,
    build_segmentation_dataset,
    render_pair_example,
)
from data_modules.segmentation.synthetic_effects import strength_field
from data_modules.segmentation.synthetic_layout import (
    PERSON,
    ROAD,
    SKY,
    VEHICLE,
    LayoutGenerator,
    LayoutParams,
)
from data_modules.segmentation.synthetic_pairs import SceneSampler

PAIRS = sorted(SYNTHETIC_PAIRS)


def cell_means(values: np.ndarray, cells: int = 4) -> np.ndarray:
    size = values.shape[0] // cells
    return values[: size * cells, : size * cells].reshape(cells, size, cells, size).mean(axis=(1, 3))


def unevenness(source: np.ndarray, target: np.ndarray) -> float:
    """Largest over smallest 16x16-cell mean |source - target|: 1 for a perfectly even shift."""
    cells = cell_means(np.abs(source.astype(np.float32) - target.astype(np.float32)).mean(axis=2))
    return float(cells.max() / max(cells.min(), 1e-3))


def test_at_least_five_pairs_share_the_scene_classes():
    assert len(SYNTHETIC_PAIRS) >= 5
    for name, pair in SYNTHETIC_PAIRS.items():
        assert pair.name == name and pair.class_names == SCENE_CLASSES and pair.description


@pytest.mark.parametrize("pair", PAIRS)
def test_every_pair_builds_items_in_both_domains(pair):
    for domain in ("source", "target"):
        item = build_segmentation_dataset(DomainSpec("synthetic", pair=pair, domain=domain, num_images=3))[2]
        assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (64, 64) and item["mask"].dtype == torch.int64
        assert set(item["mask"].unique().tolist()) <= set(range(len(SCENE_CLASSES)))
        assert item["path"] == f"synthetic/{pair}/{domain}/train/000002"


def test_same_seed_gives_identical_arrays_and_other_seeds_or_splits_do_not():
    def load(seed=0, split="train", index=5):
        return SyntheticDomainDataset("day_to_night", "target", split, 10, seed=seed).load(index)

    image, mask = load()
    again_image, again_mask = load()
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(mask, again_mask)
    assert not np.array_equal(load(seed=1)[1], mask)
    assert not np.array_equal(load(split="val")[1], mask)
    assert not np.array_equal(load(index=6)[1], mask)
    source = SyntheticDomainDataset("day_to_night", "source", "train", 10, seed=0).load(5)
    assert not np.array_equal(source[1], mask)  # the domains hold different scenes, not pixel-aligned twins


@pytest.mark.parametrize("pair", PAIRS)
def test_pair_example_draws_one_layout_in_two_different_styles(pair):
    source, target, mask = render_pair_example(pair, seed=3)
    again = render_pair_example(pair, seed=3)
    np.testing.assert_array_equal(source, again[0])
    np.testing.assert_array_equal(target, again[1])
    assert source.shape == target.shape == (64, 64, 3) and source.dtype == target.dtype == np.uint8
    assert mask.shape == (64, 64) and mask.max() < len(SCENE_CLASSES)
    assert np.abs(source.astype(np.int16) - target.astype(np.int16)).mean() > 5.0  # a visible domain shift


def test_pair_example_draws_the_target_style_over_the_sources_scene(monkeypatch):
    """The twin's difference must be the style alone: both draws take the source's layout statistics."""
    layouts = []
    draw = SceneSampler.draw
    monkeypatch.setattr(
        SceneSampler, "draw", lambda self, d, layout, s: layouts.append(layout) or draw(self, d, layout, s)
    )
    render_pair_example("city_a_to_city_b", seed=0)  # the pair whose target layout differs
    pair = SYNTHETIC_PAIRS["city_a_to_city_b"]
    assert pair.target.layout != pair.source.layout and layouts == [pair.source.layout] * 2


def test_every_class_covers_at_least_two_percent_of_pixels_in_every_domain():
    sampler = SceneSampler(64)
    for name, pair in SYNTHETIC_PAIRS.items():
        for domain in ("source", "target"):
            counts = np.zeros(len(SCENE_CLASSES))
            for index in range(60):
                _, mask = sampler.sample(pair, domain, "train", index, seed=0)
                counts += np.bincount(mask.ravel(), minlength=len(SCENE_CLASSES))
            share = counts / counts.sum()
            assert share.min() >= 0.02, (
                f"{name}/{domain}: {dict(zip(SCENE_CLASSES, share.round(3), strict=True))}"
            )


@pytest.mark.parametrize("pair", PAIRS)
def test_the_shift_is_spatially_uneven(pair):
    ratios = [unevenness(*render_pair_example(pair, seed)[:2]) for seed in range(8)]
    assert np.median(ratios) > 2.0


def test_fog_banks_make_the_shift_more_uneven_than_the_same_fog_everywhere():
    """Same scenes, same fog strength range; only the strength field differs (patches vs uniform)."""
    pair = SYNTHETIC_PAIRS["clear_to_fog"]
    even_fog = dataclasses.replace(
        pair.target, effects=tuple(dataclasses.replace(e, field="uniform") for e in pair.target.effects)
    )
    even_pair = dataclasses.replace(pair, target=even_fog)
    sampler = SceneSampler(64)
    uneven, even = [], []
    for seed in range(10):
        streams = [np.random.default_rng((seed, stream)) for stream in range(3)]
        source, _ = sampler.draw(pair.source, pair.source.layout, streams)
        for chosen, out in ((pair, uneven), (even_pair, even)):
            streams = [np.random.default_rng((seed, stream)) for stream in range(3)]
            target, _ = sampler.draw(chosen.target, pair.source.layout, streams)
            out.append(unevenness(source, target))
    assert np.median(uneven) > 5.0
    assert np.median(uneven) > 1.5 * np.median(even)


def test_night_darkens_one_side_more_than_the_other():
    """day_to_night's default Night deepens towards one side; the same darkness everywhere is even."""
    pair = SYNTHETIC_PAIRS["day_to_night"]
    even_night = dataclasses.replace(
        pair.target, effects=tuple(dataclasses.replace(e, field="uniform") for e in pair.target.effects)
    )
    sampler = SceneSampler(64)

    def side_contrast(target_domain) -> float:
        ratios = []
        for seed in range(10):
            streams = [np.random.default_rng((seed, stream)) for stream in range(3)]
            source, _ = sampler.draw(pair.source, pair.source.layout, streams)
            streams = [np.random.default_rng((seed, stream)) for stream in range(3)]
            target, _ = sampler.draw(target_domain, pair.source.layout, streams)
            kept = target.astype(np.float32).mean(2) / (source.astype(np.float32).mean(2) + 1.0)
            halves = [kept[:, :32].mean(), kept[:, 32:].mean(), kept[:32].mean(), kept[32:].mean()]
            ratios.append(
                max(
                    halves[0] / halves[1], halves[1] / halves[0], halves[2] / halves[3], halves[3] / halves[2]
                )
            )
        return float(np.median(ratios))

    assert side_contrast(pair.target) > 1.3 * side_contrast(even_night)


@pytest.mark.parametrize("kind", ["side", "patches", "uniform"])
def test_strength_fields_lie_in_unit_interval_and_sides_differ(kind):
    coords = (np.arange(32, dtype=np.float32) + 0.5) / 32
    v, u = np.meshgrid(coords, coords, indexing="ij")
    field = strength_field(kind, np.random.default_rng(0), (u, v))
    assert field.shape == (32, 32) and field.dtype == np.float32
    assert field.min() >= 0.0 and field.max() <= 1.0
    if kind == "side":
        assert field.max() - field.min() > 0.9  # one side fully on, the other fully off


def test_unknown_field_pair_and_domain_are_refused_by_name():
    with pytest.raises(KeyError, match="wavy"):
        strength_field("wavy", np.random.default_rng(0), (np.zeros((4, 4)), np.zeros((4, 4))))
    with pytest.raises(KeyError, match="no_such_pair"):
        SyntheticDomainDataset("no_such_pair")
    with pytest.raises(KeyError, match="middle"):
        SyntheticDomainDataset("day_to_night", domain="middle")


def city_statistics(params: LayoutParams, scenes: int = 30) -> dict[str, float]:
    """Measured on generated layouts: mean box height (px) of vehicles and persons, the share of
    persons whose foot pixel is road underneath, and the sky share."""
    generator = LayoutGenerator(64)
    # Objects are drawn last from the scene's generator, so the same seed without objects gives the
    # stuff beneath them (checked below on every pixel no object covers).
    bare = dataclasses.replace(params, vehicles=(0, 0), persons=(0, 0), signs=(0, 0))
    heights = {VEHICLE: [], PERSON: []}
    on_road, sky = [], []
    for seed in range(scenes):
        layout = generator.generate(params, np.random.default_rng(seed))
        ground = generator.generate(bare, np.random.default_rng(seed)).label
        uncovered = layout.instance == 0
        assert np.array_equal(ground[uncovered], layout.label[uncovered]), f"scene {seed}: ground differs"
        sky.append((layout.label == SKY).mean())
        for obj in layout.objects:
            if obj.label in heights:
                heights[obj.label].append(obj.box[1] - obj.box[0])
            if obj.label == PERSON:
                row, column = min(int(obj.bottom * 64), 63), min(max(int(obj.x * 64), 0), 63)
                on_road.append(ground[row, column] == ROAD)
    return {
        "vehicle_height": float(np.mean(heights[VEHICLE])),
        "person_height": float(np.mean(heights[PERSON])),
        "persons_on_road": float(np.mean(on_road)),
        "sky": float(np.mean(sky)),
    }


def test_city_b_layout_has_smaller_objects_and_more_people_on_the_road():
    city_a = city_statistics(SYNTHETIC_PAIRS["city_a_to_city_b"].source.layout)
    city_b = city_statistics(SYNTHETIC_PAIRS["city_a_to_city_b"].target.layout)
    # object_scale 0.75: about a quarter smaller; same depth distribution in both cities
    assert city_b["vehicle_height"] < 0.85 * city_a["vehicle_height"], (city_a, city_b)
    assert city_b["person_height"] < 0.85 * city_a["person_height"], (city_a, city_b)
    # person_on_road 0.3 vs 0.05
    assert city_b["persons_on_road"] > city_a["persons_on_road"] + 0.15, (city_a, city_b)
    assert city_b["sky"] < city_a["sky"]  # taller, denser streets


def test_other_sizes_render_and_unlabelled_masks_are_ignore():
    dataset = SyntheticDomainDataset("summer_to_winter", "target", "val", 2, image_size=96, labelled=False)
    item = dataset[1]
    assert item["image"].shape == (3, 96, 96)
    assert torch.all(item["mask"] == IGNORE_INDEX)
