"""The embedded synthetic species: catalogue structure, trait parts, determinism and item contents."""

import itertools

import albumentations as A
import numpy as np
import pytest
import torch

from data_modules.species import (
    ATTRIBUTE_NAMES,
    PART_NAMES,
    SLOTS,
    Species,
    SpeciesTransform,
    SyntheticSpecies,
    build_catalogue,
    build_train_transform,
    differing_parts,
    random_genome,
    trait_parts,
)
from tmtcam.viz.heatmaps import denormalize


@pytest.fixture(scope="module")
def catalogue():
    return build_catalogue(0)


def test_catalogue_sizes_and_disjoint_sets(catalogue):
    assert len(catalogue.pretrain) == 40 and len(catalogue.target) == 16
    pretrain = {s.genome for s in catalogue.pretrain}
    target = {s.genome for s in catalogue.target}
    assert len(pretrain) == 40 and len(target) == 16  # no duplicate species inside a set
    assert not pretrain & target
    assert not {s.group for s in catalogue.pretrain} & {s.group for s in catalogue.target}


def test_catalogue_is_deterministic_and_seed_dependent(catalogue):
    assert build_catalogue(0) == catalogue
    assert build_catalogue(1).target != catalogue.target


def test_groups_are_confusable_and_far_from_each_other(catalogue):
    everyone = catalogue.pretrain + catalogue.target
    for a, b in itertools.combinations(everyone, 2):
        distance = len(differing_parts(a, b))
        if a.group == b.group:
            assert 1 <= distance <= 2, (a.name, b.name)
        else:
            assert distance >= 3, (a.name, b.name)


def test_pretrain_set_covers_every_attribute_value(catalogue):
    seen = np.stack([s.attribute_vector() for s in catalogue.pretrain]).max(axis=0)
    assert seen.all(), [n for n, v in zip(ATTRIBUTE_NAMES, seen, strict=True) if not v]


def test_differing_parts_on_hand_made_genomes():
    base = tuple([0] * len(SLOTS))
    changed = list(base)
    wing_pattern = next(i for i, s in enumerate(SLOTS) if s.name == "wing.pattern")
    legs_colour = next(i for i, s in enumerate(SLOTS) if s.name == "legs.colour")
    changed[wing_pattern], changed[legs_colour] = 2, 5
    a, b = Species("a", 0, base), Species("b", 0, tuple(changed))
    assert differing_parts(a, b) == {"wing", "legs"}
    assert b.value("wing", "pattern") == "dots" and b.value("legs", "colour") == "blue"


def test_trait_parts_are_the_parts_differing_from_the_nearest_species():
    slot = {s.name: i for i, s in enumerate(SLOTS)}

    def make(name, **changes):
        genome = [0] * len(SLOTS)
        for key, value in changes.items():
            genome[slot[key.replace("_", ".")]] = value
        return Species(name, 0, tuple(genome))

    a = make("a")
    b = make("b", head_colour=1)  # 1 part from a
    c = make("c", tail_shape=2, wing_colour=3)  # 2 parts from a
    d = make("d", head_colour=1, body_pattern=1, legs_shape=1)  # 2 from b, 3 from a
    species = (a, b, c, d)
    assert trait_parts(a, species) == ("head",)
    assert trait_parts(b, species) == ("head",)
    assert trait_parts(c, species) == ("wing", "tail")  # nearest is a, in wing and tail
    assert trait_parts(d, species) == ("body", "legs")  # nearest is b


def test_trait_parts_union_over_tied_neighbours():
    slot = {s.name: i for i, s in enumerate(SLOTS)}
    genomes = []
    for head, tail in itertools.product((0, 1), (0, 1)):
        genome = [0] * len(SLOTS)
        genome[slot["head.colour"]], genome[slot["tail.pattern"]] = head, tail
        genomes.append(Species(f"{head}{tail}", 0, tuple(genome)))
    assert trait_parts(genomes[0], tuple(genomes)) == ("head", "tail")


def test_trait_parts_of_dataset_match_species_definitions(catalogue):
    dataset = SyntheticSpecies("target", "train", num_images=16, catalogue=catalogue)
    for species, parts in zip(dataset.species, dataset.trait_parts, strict=True):
        mates = [s for s in dataset.species if s.group == species.group and s is not species]
        differences = [differing_parts(species, m) for m in mates]
        nearest = min(map(len, differences))
        assert set(parts) == set().union(*(d for d in differences if len(d) == nearest))
        assert 1 <= len(parts) <= 2


def test_items_are_deterministic_and_splits_differ(catalogue):
    first = SyntheticSpecies("target", "train", num_images=8, seed=3, catalogue=catalogue)
    again = SyntheticSpecies("target", "train", num_images=8, seed=3, catalogue=catalogue)
    for index in (0, 5):
        a, b = first[index], again[index]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["part_masks"], b["part_masks"])
    test_split = SyntheticSpecies("target", "test", num_images=8, seed=3, catalogue=catalogue)
    other_seed = SyntheticSpecies("target", "train", num_images=8, seed=4, catalogue=catalogue)
    assert not torch.equal(first[0]["image"], test_split[0]["image"])
    assert not torch.equal(first[0]["image"], other_seed[0]["image"])


@pytest.mark.parametrize("size", [64, 96, 128, 224])
def test_item_contents_at_several_sizes(catalogue, size):
    dataset = SyntheticSpecies("target", "train", num_images=4, image_size=size, catalogue=catalogue)
    item = dataset[1]
    assert item["image"].shape == (3, size, size) and item["image"].dtype == torch.float32
    assert item["part_masks"].shape == (len(PART_NAMES), size, size)
    assert item["trait_mask"].shape == (size, size)
    assert item["attributes"].shape == (len(ATTRIBUTE_NAMES),)
    assert item["label"].dtype == torch.int64 and int(item["label"]) == 1
    assert set(item["attributes"].unique().tolist()) == {0.0, 1.0}
    assert item["attributes"].sum() == len(SLOTS)  # one value per slot
    assert isinstance(item["path"], str)


def test_masks_partition_the_creature_and_trait_mask_is_inside(catalogue):
    dataset = SyntheticSpecies("target", "train", num_images=48, catalogue=catalogue)
    for index in range(48):
        item = dataset[index]
        parts, trait = item["part_masks"], item["trait_mask"]
        assert set(parts.unique().tolist()) <= {0.0, 1.0}
        assert parts.sum(0).max() <= 1  # visible parts do not overlap
        assert (parts.sum((1, 2)) > 0).all(), f"item {index}: a part is not visible"
        assert trait.sum() > 0, f"item {index}: empty trait mask"
        assert (trait <= parts.sum(0)).all()  # inside the union of part masks
        wanted = [PART_NAMES.index(p) for p in dataset.trait_parts[int(item["label"])]]
        assert torch.equal(trait, parts[wanted].amax(0))


def test_labels_cover_every_species_evenly(catalogue):
    dataset = SyntheticSpecies("pretrain", "test", num_images=80, catalogue=catalogue)
    labels = dataset.labels
    assert labels.min() == 0 and labels.max() == len(dataset.class_names) - 1 == 39
    assert np.bincount(labels).tolist() == [2] * 40
    assert int(dataset[41]["label"]) == 1


def _genome_of(attributes: torch.Tensor) -> tuple[int, ...]:
    """Invert ``Species.attribute_vector``: the value index of every slot."""
    values, offset = [], 0
    for slot in SLOTS:
        values.append(int(attributes[offset : offset + len(slot.values)].argmax()))
        offset += len(slot.values)
    return tuple(values)


def test_random_set_draws_a_new_species_per_image_far_from_the_targets(catalogue):
    dataset = SyntheticSpecies("random", "train", num_images=40, catalogue=catalogue)
    assert dataset.class_names == [] and (dataset.labels == -1).all()
    genomes = set()
    for index in range(40):
        item = dataset[index]
        assert int(item["label"]) == -1 and item["trait_mask"].sum() == 0
        assert item["attributes"].sum() == len(SLOTS) and item["part_masks"].sum() > 0
        species = Species("", -1, _genome_of(item["attributes"]))
        assert all(len(differing_parts(species, target)) >= 3 for target in catalogue.target)
        genomes.add(species.genome)
    assert len(genomes) == 40
    again = SyntheticSpecies("random", "train", num_images=40, catalogue=catalogue)[7]
    assert torch.equal(again["image"], dataset[7]["image"])
    assert torch.equal(again["attributes"], dataset[7]["attributes"])
    assert len(SyntheticSpecies("random", "train", catalogue=catalogue)) == 4000


def test_random_genome_respects_the_distance_and_gives_up_loudly(catalogue):
    rng = np.random.default_rng(0)
    genome = random_genome(rng, catalogue.target, min_distance=4)
    assert all(len(differing_parts(Species("", -1, genome), t)) >= 4 for t in catalogue.target)
    with pytest.raises(RuntimeError, match="no random genome"):
        random_genome(rng, catalogue.target, min_distance=6, max_attempts=5)


def test_image_is_imagenet_normalised(catalogue):
    raw = SyntheticSpecies("target", num_images=2, catalogue=catalogue).render(0).image
    item = SyntheticSpecies("target", num_images=2, catalogue=catalogue)[0]
    expected = (raw[5, 7] / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(item["image"][:, 5, 7].numpy(), expected, atol=1e-5)


def _expected_masks(dataset, index, rows, cols, flip):
    """The raw render's part masks and trait mask, cropped (and flipped) with numpy."""
    parts = dataset.render(index).part_masks[:, rows, cols]
    if flip:
        parts = parts[:, :, ::-1]
    wanted = [PART_NAMES.index(p) for p in dataset.trait_parts[index % len(dataset.species)]]
    trait = parts[wanted].any(0)
    return torch.from_numpy(parts.astype(np.float32)), torch.from_numpy(trait.astype(np.float32))


def test_a_fixed_crop_and_flip_move_masks_with_the_image(catalogue):
    """An off-centre crop and a certain flip: the masks must be the render's masks cut the same way."""
    transform = SpeciesTransform([A.Crop(x_min=3, y_min=11, x_max=67, y_max=75), A.HorizontalFlip(p=1.0)])
    dataset = SyntheticSpecies(
        "target", num_images=6, image_size=80, catalogue=catalogue, transform=transform
    )
    item = dataset[2]
    rows, cols = slice(11, 75), slice(3, 67)
    raw = dataset.render(2).image[rows, cols][:, ::-1]
    assert np.abs(denormalize(item["image"]).astype(int) - raw).max() <= 1
    parts, trait = _expected_masks(dataset, 2, rows, cols, flip=True)
    assert torch.equal(item["part_masks"], parts) and torch.equal(item["trait_mask"], trait)
    assert trait.sum() > 0 and not torch.equal(parts, parts.flip(-1))  # the flip is visible in the masks


def test_train_transform_crops_masks_with_the_image(catalogue):
    """Resize to the render size is exact, so each draw's crop and flip can be read off the image."""
    transform = build_train_transform(64, 80, seed=0)
    dataset = SyntheticSpecies(
        "target", num_images=6, image_size=80, catalogue=catalogue, transform=transform
    )
    raw = dataset.render(2).image.astype(int)
    flips = set()
    for draw in range(6):
        item = dataset[2]
        image = denormalize(item["image"]).astype(int)
        placements = [
            (y, x, flip) for y in range(17) for x in range(17) for flip in (False, True)
            if np.abs(raw[y : y + 64, x : x + 64][:, :: -1 if flip else 1] - image).max() <= 1
        ]  # fmt: skip
        assert len(placements) == 1, f"draw {draw}: image is not one crop of the render: {placements}"
        y, x, flip = placements[0]
        parts, trait = _expected_masks(dataset, 2, slice(y, y + 64), slice(x, x + 64), flip)
        assert torch.equal(item["part_masks"], parts), f"draw {draw}: part masks not cut like the image"
        assert torch.equal(item["trait_mask"], trait), f"draw {draw}: trait mask not cut like the image"
        flips.add(flip)
    assert flips == {False, True}  # both branches of the random flip were checked


@pytest.mark.parametrize("species_set", ["target", "random"])
def test_cached_renders_give_the_same_items_and_render_once(catalogue, species_set, monkeypatch):
    transform = build_train_transform(64, 72, seed=0)  # flips and crops must not touch the cache
    plain = SyntheticSpecies(species_set, num_images=4, image_size=72, catalogue=catalogue)
    cached = SyntheticSpecies(
        species_set, num_images=4, image_size=72, catalogue=catalogue, cache_renders=True
    )
    calls = []
    render = cached.renderer.render
    monkeypatch.setattr(cached.renderer, "render", lambda *a: calls.append(1) or render(*a))
    cached.transform = transform
    for _ in range(3):  # three epochs, augmented each time
        for index in range(4):
            cached[index]
    assert len(calls) == 4
    cached.transform = plain.transform
    for index in range(4):
        a, b = plain[index], cached[index]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["trait_mask"], b["trait_mask"])
        assert torch.equal(a["attributes"], b["attributes"])


def test_bad_arguments_raise():
    with pytest.raises(KeyError, match="split"):
        SyntheticSpecies(split="val")
    with pytest.raises(KeyError, match="species set"):
        SyntheticSpecies(species_set="other")
    with pytest.raises(ValueError, match="group_size"):
        build_catalogue(group_size=1)
    with pytest.raises(IndexError):
        SyntheticSpecies(num_images=3).render(3)
