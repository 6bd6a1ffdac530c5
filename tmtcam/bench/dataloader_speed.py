"""Data loading throughput (images/s) of every embedded generator and of the folder readers.

Each source is read the way training reads it: the training augmentation its data module builds,
batches collated by a ``DataLoader`` in the main process (``num_workers=0``, the data modules'
default). That is the worst case: with workers, loading overlaps the model step instead of adding
to it. The folder readers read a tiny dataset written to a temporary folder (PNG street scenes
with masks at 256x512, JPEG creatures at 300x400), so decoding and resizing real-sized files is
included. The summary compares the slowest source with the training throughput of the model
that consumes it: with ``num_workers=0`` a step takes (1 / loader + 1 / model) seconds per image.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from data_modules.segmentation import SYNTHETIC_PAIRS, build_segmentation_dataset
from data_modules.segmentation.datamodule import REAL_SCALE_RANGE, SYNTHETIC_SCALE_RANGE
from data_modules.segmentation.specs import DomainSpec
from data_modules.segmentation.transforms import build_train_transform as segmentation_train_transform
from data_modules.species import build_species_dataset
from data_modules.species import build_train_transform as species_train_transform
from tmtcam.bench.measure import summary

CROP = 64
SPECIES_RESIZE = 72  # resize then random crop, as the Prompt-CAM recipe does (240 -> 224) at 64 px


def images_per_second(dataset: Dataset, batch_size: int = 8, repeats: int = 3) -> dict[str, float]:
    """img/s of one pass over ``dataset`` through a main-process DataLoader, median of ``repeats``."""
    dataset[0]  # first-use costs (catalogues, lookup tables) are not throughput
    rates = []
    for _ in range(repeats):
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=0)
        start = time.perf_counter()
        count = sum(len(batch["image"]) for batch in loader)
        rates.append(count / (time.perf_counter() - start))
    return summary(rates, digits=1)


def synthetic_sources(num_images: int) -> dict[str, Callable[[], Dataset]]:
    """Every embedded generator (both domains of every pair, both species sets), as training reads it."""
    sources: dict[str, Callable[[], Dataset]] = {}
    for pair in SYNTHETIC_PAIRS:
        for domain in ("source", "target"):
            spec = DomainSpec(
                dataset="synthetic", pair=pair, domain=domain, num_images=num_images, image_size=CROP
            )
            sources[f"segmentation {pair} / {domain}"] = lambda spec=spec: build_segmentation_dataset(
                spec, segmentation_train_transform(CROP, SYNTHETIC_SCALE_RANGE, None, False, 0)
            )
    for name in ("synthetic", "synthetic_pretrain"):
        sources[f"species {name}"] = lambda name=name: build_species_dataset(
            name, "train", image_size=CROP, num_images=num_images, transform=species_train_transform(CROP)
        )
    return sources


def write_segmentation_folder(root: Path, count: int, height: int = 256, width: int = 512) -> None:
    """``images/*.png`` + ``masks/*.png`` with 8 train ids: the generic folder reader's layout."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        mask = np.repeat(rng.integers(0, 8, (height // 32, width // 32), dtype=np.uint8), 32, 0).repeat(32, 1)
        image = (rng.random((height, width, 3)) * 60 + mask[..., None] * 24).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"scene_{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"scene_{i:03d}.png")


def write_species_folder(
    root: Path, count: int, classes: int = 4, height: int = 300, width: int = 400
) -> None:
    """``train/<class>/*.jpg``: the generic ImageFolder layout."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / "train" / f"species_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"bird_{i:03d}.jpg", quality=90)


@contextmanager
def folder_sources(num_images: int) -> Iterator[dict[str, Callable[[], Dataset]]]:
    """The folder readers over tiny datasets written to a temporary directory (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="tmtcam-bench-") as tmp:
        scenes, creatures = Path(tmp) / "scenes", Path(tmp) / "creatures"
        write_segmentation_folder(scenes, num_images)
        write_species_folder(creatures, num_images)
        spec = DomainSpec(
            dataset="folder", root=str(scenes), image_dir="images", mask_dir="masks", num_classes=8
        )
        yield {
            "segmentation folder (PNG 256x512, scale + crop + flip + jitter)": lambda: (
                build_segmentation_dataset(
                    spec, segmentation_train_transform(CROP, REAL_SCALE_RANGE, None, True, 0)
                )
            ),
            "species imagefolder (JPEG 300x400, resize + crop + flip)": lambda: build_species_dataset(
                "imagefolder",
                "train",
                root=creatures,
                test_fraction=0.25,
                transform=species_train_transform(CROP, SPECIES_RESIZE),
            ),
        }


def run(training_img_per_s: dict[str, float], quick: bool = False) -> dict[str, Any]:
    """img/s of every source, and the slowest one against the training throughput it must feed."""
    num_images, repeats = (16, 2) if quick else (64, 3)
    generators = {
        name: images_per_second(build(), repeats=repeats)
        for name, build in synthetic_sources(num_images).items()
    }
    with folder_sources(num_images // 2) as sources:
        readers = {name: images_per_second(build(), repeats=repeats) for name, build in sources.items()}
    slowest_name, slowest = min({**generators, **readers}.items(), key=lambda item: item[1]["median"])
    fastest_model = max(training_img_per_s.values())
    return {
        "crop": CROP,
        "generators_img_per_s": generators,
        "folder_readers_img_per_s": readers,
        "training_img_per_s": training_img_per_s,
        "slowest_source": slowest_name,
        "slowest_over_fastest_training": round(slowest["median"] / fastest_model, 2),
    }
