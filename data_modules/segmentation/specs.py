"""``DomainSpec``: one domain of a source -> target pair, written as a plain YAML mapping.

A single flat dataclass (rather than one class per format) keeps configs short and lets
jsonargparse parse ``source: {dataset: gta5, root: /data/gta5}`` without ``class_path`` noise;
the fields a format does not use are simply left at their defaults, and :func:`check_spec`
rejects the combinations that cannot work before any file is touched.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from data_modules.segmentation.label_maps import CITYSCAPES_CLASSES, id_map_mapping

REAL_DATASETS: tuple[str, ...] = (
    "cityscapes", "gta5", "synthia", "acdc", "darkzurich", "bdd100k", "mapillary", "folder",
)  # fmt: skip
DATASET_NAMES: tuple[str, ...] = ("synthetic", *REAL_DATASETS)
SYNTHETIC_DOMAINS: tuple[str, ...] = ("source", "target")
ACDC_CONDITIONS: tuple[str, ...] = ("fog", "night", "rain", "snow")


@dataclass
class DomainSpec:
    """One domain's data.

    Args:
        dataset: ``synthetic`` | ``cityscapes`` | ``gta5`` | ``synthia`` | ``acdc`` | ``darkzurich``
            | ``bdd100k`` | ``mapillary`` | ``folder``.
        root: dataset root for real formats (see docs/datasets.md for each layout).
        split: ``train`` | ``val`` | ``test`` (Mapillary's ``training``/``validation`` also accepted).
        pair: synthetic only: name of an embedded pair (:data:`SYNTHETIC_PAIRS`).
        domain: synthetic only: ``source`` | ``target``; the DataModule fills it from the role.
        num_images: synthetic: how many images (``None``: 1000 for train, 200 otherwise);
            real: optional cap, N files evenly spaced over the sorted list (every city/condition).
        labelled: ``False`` serves every mask as all-``IGNORE_INDEX`` (unlabelled target); masks
            need not exist then.
        image_dir / mask_dir: ``folder`` only: the two folders (relative to ``root`` if given).
        image_suffix / mask_suffix: ``folder`` only: how image and mask names end; a pair shares
            the rest of its path relative to its folder.
        id_map: ``folder`` only: raw mask id -> train id; unlisted ids become 255. Without it the
            masks must already hold train ids ``< num_classes`` (or 255).
        num_classes: ``folder`` only: size of the label space (``None``: 19, Cityscapes).
        class_names: ``folder`` only: names of the classes (``None``: Cityscapes names for 19
            classes, else ``class_0 ..``); its length sets ``num_classes`` when that is ``None``.
        condition: ACDC only: ``fog`` | ``night`` | ``rain`` | ``snow``; ``None`` = all four.
        seed: synthetic only: the image generator's seed.
        image_size: synthetic only: rendering size; the DataModule sets it to ``crop_size``
            (``None`` elsewhere means 64).
    """

    dataset: str
    root: str | None = None
    split: str = "train"
    pair: str | None = None
    domain: str | None = None
    num_images: int | None = None
    labelled: bool = True
    image_dir: str | None = None
    mask_dir: str | None = None
    image_suffix: str = ".png"
    mask_suffix: str = ".png"
    id_map: dict[int, int] | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    condition: str | None = None
    seed: int = 0
    image_size: int | None = None

    def replace(self, **changes: object) -> DomainSpec:
        """A copy with some fields changed (specs are shared between loaders, so never mutated)."""
        return dataclasses.replace(self, **changes)


# fields only one reader uses, with the value that means "not given"; a reader ignores the others
FOLDER_ONLY = {"image_dir": None, "mask_dir": None, "image_suffix": ".png", "mask_suffix": ".png",
               "id_map": None, "num_classes": None, "class_names": None}  # fmt: skip
FIELDS_OF = {"folder": FOLDER_ONLY, "acdc": {"condition": None}, "synthetic": {"pair": None}}


def check_spec(spec: DomainSpec, role: str = "domain") -> None:
    """Refuse impossible specs early, naming the field; ``role`` (source/target) goes in the message."""
    if spec.dataset not in DATASET_NAMES:
        raise KeyError(f"{role}.dataset: unknown dataset {spec.dataset!r}; choose one of {DATASET_NAMES}")
    for owner, fields in FIELDS_OF.items():
        given = {name: unset for name, unset in fields.items() if getattr(spec, name) != unset}
        if spec.dataset != owner and given:  # e.g. an id_map on bdd100k was ignored, without a word
            reset = json.dumps({"dataset": spec.dataset, **given})
            raise ValueError(
                f"{role}: {', '.join(given)} only the {owner!r} reader reads; dataset {spec.dataset!r} would "
                f"ignore them. Remove them, or, when switching a config's dataset on the command line "
                f"(which merges into its {role}), reset them: --data.init_args.{role} '{reset}'"
            )
    if spec.num_images is not None and spec.num_images < 1:
        raise ValueError(f"{role}.num_images must be >= 1 or null, got {spec.num_images}")
    if spec.dataset == "synthetic":
        if spec.pair is None:
            raise ValueError(f"{role}.pair is required for synthetic data (see SYNTHETIC_PAIRS)")
        if spec.domain is not None and spec.domain not in SYNTHETIC_DOMAINS:
            raise ValueError(f"{role}.domain must be one of {SYNTHETIC_DOMAINS}, got {spec.domain!r}")
        if spec.image_size is not None and spec.image_size < 16:
            raise ValueError(f"{role}.image_size must be >= 16, got {spec.image_size}")
        return
    if spec.dataset == "folder":
        if spec.image_dir is None or (spec.labelled and spec.mask_dir is None):
            raise ValueError(f"{role}: the folder reader needs image_dir and (when labelled) mask_dir")
    elif spec.root is None:
        raise ValueError(f"{role}.root is required for dataset {spec.dataset!r}")
    if spec.condition is not None and spec.condition not in ACDC_CONDITIONS:
        raise ValueError(f"{role}.condition must be one of {ACDC_CONDITIONS} or null, got {spec.condition!r}")
    if (
        spec.class_names is not None
        and spec.num_classes is not None
        and len(spec.class_names) != spec.num_classes
    ):
        raise ValueError(f"{role}: {len(spec.class_names)} class_names but num_classes={spec.num_classes}")
    classes = folder_num_classes(spec)
    if classes < 1:
        raise ValueError(f"{role}.num_classes must be >= 1 (and class_names not empty), got {classes}")
    if spec.id_map is not None:
        try:
            id_map_mapping(spec.id_map, classes)
        except ValueError as error:
            raise ValueError(f"{role}.{error}") from None


def warn_unmapped_classes(spec: DomainSpec, role: str) -> None:
    """Warn when ``id_map`` gives no raw id to some class: no pixel can ever be labelled with it.

    Raw ids the map leaves out are ignored (255) by design, so a typo (a raw id mistyped, two raw ids
    sent to one class) would otherwise drop a class without a word; a dataset that truly lacks a
    class (as SYNTHIA lacks terrain) makes the same warning, which is then safe to ignore.
    """
    if spec.id_map is None:
        return
    names = folder_class_names(spec)
    unmapped = sorted(set(range(len(names))) - {int(train) for train in spec.id_map.values()})
    if unmapped:
        listed = ", ".join(f"{index} {names[index]!r}" for index in unmapped[:8])
        warnings.warn(
            f"{role}.id_map maps no raw id to class(es) {listed}{' ...' if len(unmapped) > 8 else ''}: "
            f"no pixel of these masks can be that class (fine if the dataset lacks it; otherwise check the map)",
            stacklevel=2,
        )


def folder_num_classes(spec: DomainSpec) -> int:
    """Size of a ``folder`` domain's label space: its ``class_names``, else ``num_classes``, else 19."""
    if spec.class_names is not None:
        return len(spec.class_names)
    return spec.num_classes if spec.num_classes is not None else len(CITYSCAPES_CLASSES)


def folder_class_names(spec: DomainSpec) -> tuple[str, ...]:
    """``class_names`` if given; else Cityscapes names for 19 classes (the default), else ``class_<i>``."""
    if spec.class_names is not None:
        return tuple(spec.class_names)
    num_classes = folder_num_classes(spec)
    if num_classes == len(CITYSCAPES_CLASSES):
        return CITYSCAPES_CLASSES
    return tuple(f"class_{i}" for i in range(num_classes))


def missing_folder(spec: DomainSpec, role: str) -> str | None:
    """A message naming the first folder of ``spec`` that does not exist (key and path), else ``None``.

    Only the folders the config names (``root``, and a ``folder`` domain's ``image_dir`` /
    ``mask_dir``, the latter only when labelled): the layout below them is the readers' to check,
    with their own messages.
    """
    if spec.dataset == "synthetic":
        return None
    base = Path(spec.root).expanduser() if spec.root is not None else None
    folders = [(f"{role}.root", base)] if base is not None else []
    if spec.dataset == "folder":
        for key in ("image_dir", "mask_dir") if spec.labelled else ("image_dir",):
            value = getattr(spec, key)
            if value is not None:
                folders.append((f"{role}.{key}", (base or Path()) / Path(value).expanduser()))
    for key, folder in folders:
        if not folder.is_dir():
            return f"{key}: folder not found: {folder} is not a directory ({spec.dataset} data)"
    return None
