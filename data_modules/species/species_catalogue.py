"""Body plan, attribute vocabulary and species catalogue of the embedded synthetic creatures.

Every creature has the same five parts; each part carries a few attribute *slots* (colour, pattern,
shape). A species is one value per slot, its *genome*. Species are made in confusable groups that
share everything except one or two *varying* parts, so telling group members apart needs a look at
those parts only, the way two warblers differ in the wing bars and nothing else. Groups are kept
at least ``min_group_distance`` parts apart, which makes a species' nearest neighbours always its
own group mates and keeps its *trait parts* (what tells it from them) small and well defined.

Two disjoint sets come from one catalogue: ``pretrain`` (for part-attribute pre-training, the
stand-in for ImageNet) and ``target`` (new species for the fine-grained stage). Pre-training group
bases are drawn least-used-value-first, so every attribute value of the vocabulary is seen there.
:func:`random_genome` draws open-ended pre-training species instead: any genome far enough from
the target set. Everything here is pure: the catalogue is a function of its arguments.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

PART_NAMES: tuple[str, ...] = ("head", "body", "wing", "tail", "legs")
COLOUR_NAMES: tuple[str, ...] = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "brown")
PATTERN_NAMES: tuple[str, ...] = ("solid", "stripes", "dots")
SHAPE_NAMES: dict[str, tuple[str, ...]] = {
    "head": ("round", "oval", "crested"),
    "body": ("slim", "round", "long"),
    "wing": ("short", "long", "broad"),
    "tail": ("pointed", "fan", "forked"),
    "legs": ("short", "long", "thick"),
}


@dataclass(frozen=True)
class AttributeSlot:
    """One attribute of one part, e.g. ``wing.pattern`` with values solid/stripes/dots."""

    part: str
    kind: str
    values: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.part}.{self.kind}"


def _build_slots() -> tuple[AttributeSlot, ...]:
    # Legs are too thin for a pattern to be seen, so they only carry colour and shape.
    slots = []
    for part in PART_NAMES:
        slots.append(AttributeSlot(part, "colour", COLOUR_NAMES))
        if part != "legs":
            slots.append(AttributeSlot(part, "pattern", PATTERN_NAMES))
        slots.append(AttributeSlot(part, "shape", SHAPE_NAMES[part]))
    return tuple(slots)


SLOTS: tuple[AttributeSlot, ...] = _build_slots()
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(f"{slot.name}={value}" for slot in SLOTS for value in slot.values)
_SLOT_OFFSETS: tuple[int, ...] = tuple(itertools.accumulate((len(s.values) for s in SLOTS), initial=0))[:-1]


def part_slot_indices(part: str) -> tuple[int, ...]:
    """Indices into a genome of the slots that belong to ``part``."""
    if part not in PART_NAMES:
        raise KeyError(f"unknown part {part!r}; parts are {PART_NAMES}")
    return tuple(i for i, slot in enumerate(SLOTS) if slot.part == part)


@dataclass(frozen=True)
class Species:
    """One synthetic species: a value index per attribute slot, plus its confusable group."""

    name: str
    group: int
    genome: tuple[int, ...]

    def value(self, part: str, kind: str) -> str:
        """The attribute value name, e.g. ``value("wing", "pattern") == "stripes"``."""
        for i, slot in enumerate(SLOTS):
            if slot.part == part and slot.kind == kind:
                return slot.values[self.genome[i]]
        raise KeyError(f"part {part!r} has no attribute {kind!r}")

    def attribute_vector(self) -> np.ndarray:
        """Multi-hot float32 over :data:`ATTRIBUTE_NAMES` (one hot value per slot)."""
        vector = np.zeros(len(ATTRIBUTE_NAMES), dtype=np.float32)
        vector[[offset + value for offset, value in zip(_SLOT_OFFSETS, self.genome, strict=True)]] = 1.0
        return vector


def differing_parts(a: Species, b: Species) -> frozenset[str]:
    """Parts in which at least one attribute differs between two species."""
    return frozenset(SLOTS[i].part for i, (x, y) in enumerate(zip(a.genome, b.genome, strict=True)) if x != y)


def trait_parts(species: Species, species_set: tuple[Species, ...]) -> tuple[str, ...]:
    """Parts that tell ``species`` apart from its nearest species in ``species_set``.

    Nearest = fewest differing parts. When several species tie (a 2x2 group has two neighbours one
    part away), the union of their differing parts is returned: all of them are needed to rule out
    every nearest look-alike. Result in :data:`PART_NAMES` order.
    """
    others = [other for other in species_set if other.genome != species.genome]
    if not others:
        raise ValueError(f"species {species.name!r} has no other species to be told apart from")
    differences = [differing_parts(species, other) for other in others]
    nearest = min(len(parts) for parts in differences)
    union = set().union(*(parts for parts in differences if len(parts) == nearest))
    return tuple(part for part in PART_NAMES if part in union)


def random_genome(
    rng: np.random.Generator, avoid: tuple[Species, ...], min_distance: int = 3, max_attempts: int = 10_000
) -> tuple[int, ...]:
    """A uniformly random genome that differs from every species in ``avoid`` in ``min_distance`` parts or more."""
    for _ in range(max_attempts):
        genome = tuple(int(rng.integers(len(slot.values))) for slot in SLOTS)
        candidate = Species("", -1, genome)
        if all(len(differing_parts(candidate, other)) >= min_distance for other in avoid):
            return genome
    raise RuntimeError(
        f"no random genome {min_distance} parts away from {len(avoid)} species in {max_attempts} draws"
    )


@dataclass(frozen=True)
class SpeciesCatalogue:
    """The two disjoint species sets drawn from one vocabulary."""

    pretrain: tuple[Species, ...]
    target: tuple[Species, ...]

    def species_set(self, name: str) -> tuple[Species, ...]:
        if name not in ("pretrain", "target"):
            raise KeyError(f"species set must be 'pretrain' or 'target', got {name!r}")
        return self.pretrain if name == "pretrain" else self.target


def _single_slot_variants(genome: tuple[int, ...], part: str) -> list[tuple[int, ...]]:
    """All genomes that differ from ``genome`` in exactly one slot of ``part``."""
    variants = []
    for i in part_slot_indices(part):
        for value in range(len(SLOTS[i].values)):
            if value != genome[i]:
                variant = list(genome)
                variant[i] = value
                variants.append(tuple(variant))
    return variants


def _draw_base(rng: np.random.Generator, counts: list[np.ndarray]) -> tuple[int, ...]:
    """One value per slot, chosen among the least-used values so far (random tie-break)."""
    base = []
    for slot_counts in counts:
        least = np.flatnonzero(slot_counts == slot_counts.min())
        base.append(int(rng.choice(least)))
    return tuple(base)


def _draw_group(rng: np.random.Generator, base: tuple[int, ...], size: int) -> list[tuple[int, ...]]:
    """``size`` genomes that differ from ``base`` (and each other) only in one or two varying parts."""
    num_varying = int(rng.integers(1, 3)) if size > 1 else 1
    varying = [str(p) for p in rng.choice(PART_NAMES, num_varying, replace=False)]
    options_per_part = size if num_varying == 1 else math.ceil(math.sqrt(size))
    per_part_settings = []
    for part in varying:
        variants = _single_slot_variants(base, part)
        chosen = rng.choice(len(variants), options_per_part - 1, replace=False)
        slots = part_slot_indices(part)
        settings = [tuple(base[i] for i in slots)] + [tuple(variants[c][i] for i in slots) for c in chosen]
        per_part_settings.append((slots, settings))
    combos = list(itertools.product(*(settings for _, settings in per_part_settings)))
    keep = sorted(rng.choice(len(combos), size, replace=False))
    genomes = []
    for k in keep:
        genome = list(base)
        for (slots, _), setting in zip(per_part_settings, combos[k], strict=True):
            for i, value in zip(slots, setting, strict=True):
                genome[i] = value
        genomes.append(tuple(genome))
    return genomes


def build_catalogue(
    seed: int = 0,
    num_pretrain: int = 40,
    num_target: int = 16,
    group_size: int = 4,
    min_group_distance: int = 3,
    max_attempts: int = 10_000,
) -> SpeciesCatalogue:
    """Draw the pre-training and target species sets (deterministic in ``seed``).

    Within a group, species differ in at most two parts; any two species of different groups
    (including pretrain vs target) differ in at least ``min_group_distance`` parts.
    """
    if not 2 <= group_size <= 8:
        raise ValueError(
            f"group_size must be in [2, 8] (look-alikes varying in <= 2 parts), got {group_size}"
        )
    if min(num_pretrain, num_target) < 2:
        raise ValueError(
            f"each set needs >= 2 species, got num_pretrain={num_pretrain}, num_target={num_target}"
        )
    if not 3 <= min_group_distance <= len(PART_NAMES):
        raise ValueError(f"min_group_distance must be in [3, {len(PART_NAMES)}], got {min_group_distance}")
    rng = np.random.default_rng(seed)
    counts = [np.zeros(len(slot.values), dtype=np.int64) for slot in SLOTS]
    accepted: list[Species] = []
    sets: dict[str, list[Species]] = {"pretrain": [], "target": []}
    for set_name, total in (("pretrain", num_pretrain), ("target", num_target)):
        sizes = [group_size] * (total // group_size) + ([total % group_size] if total % group_size else [])
        if sizes[-1] == 1:  # a lone species has no look-alike: merge it into the previous group
            sizes = sizes[:-2] + [sizes[-2] + 1]
        for size in sizes:
            group_id = len({s.group for s in accepted})
            for _ in range(max_attempts):
                base = _draw_base(rng, counts)
                genomes = _draw_group(rng, base, size)
                if all(
                    len(differing_parts(Species("", 0, g), s)) >= min_group_distance
                    for g in genomes
                    for s in accepted
                ):
                    break
            else:
                raise RuntimeError(
                    f"could not place group {group_id} {min_group_distance} parts from the others"
                )
            for slot, value in enumerate(base):
                counts[slot][value] += 1
            members = [Species(f"g{group_id:02d}_s{m}", group_id, g) for m, g in enumerate(genomes)]
            accepted.extend(members)
            sets[set_name].extend(members)
    return SpeciesCatalogue(pretrain=tuple(sets["pretrain"]), target=tuple(sets["target"]))
