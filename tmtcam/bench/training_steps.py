"""One training step of each model, built the way the project trains it, for timing and memory.

Each factory returns a zero-argument callable that runs one full optimisation step (forward, loss,
backward, optimiser step) on a fixed batch. Fixed in-memory batches keep data loading out of the
figure (it is measured on its own in :mod:`tmtcam.bench.dataloader_speed`). The factories are
importable by name so :func:`tmtcam.bench.isolated.measure_peak_rss` can build them in a fresh process.

The TMT and fine-tune steps are the task's own training step minus Lightning: the segmenter on
``batch_size`` source + ``batch_size`` target images, :meth:`TMTSegmentation.step_loss` and the
task's own optimiser, so the ratio between them is exactly what ACTE + TMA add to a step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from data_modules.segmentation import build_segmentation_dataset
from data_modules.segmentation.datamodule import SYNTHETIC_SCALE_RANGE
from data_modules.segmentation.specs import DomainSpec
from data_modules.segmentation.transforms import build_train_transform
from tmtcam.bench.measure import paired_ratio, time_call, time_interleaved
from tmtcam.pipelines.tmt_runs import SMALL_VIT
from tmtcam.tasks.tmt_segmentation import TMTSegmentation

NUM_CLASSES = 8
CROP = 64
DEFAULT_PAIR = "day_to_night"


@dataclass
class SegmentationBatch:
    """``batch_size`` source + ``batch_size`` target images and masks, concatenated source first."""

    images: torch.Tensor  # (2b, 3, H, W)
    masks: torch.Tensor  # (2b, H, W)
    sizes: tuple[int, int]


def segmentation_batch(batch_size: int = 8, pair: str = DEFAULT_PAIR, seed: int = 0) -> SegmentationBatch:
    """A real batch of an embedded pair (rendered and augmented as in training), kept in memory."""
    parts = []
    for domain in ("source", "target"):
        spec = DomainSpec(dataset="synthetic", pair=pair, domain=domain, num_images=batch_size, seed=seed,
                          image_size=CROP)  # fmt: skip
        dataset = build_segmentation_dataset(
            spec, build_train_transform(CROP, SYNTHETIC_SCALE_RANGE, None, False, seed)
        )
        parts.append([dataset[i] for i in range(batch_size)])
    items = parts[0] + parts[1]
    return SegmentationBatch(
        images=torch.stack([item["image"] for item in items]),
        masks=torch.stack([item["mask"] for item in items]),
        sizes=(batch_size, batch_size),
    )


def segmentation_task(method: str, seed: int = 0) -> TMTSegmentation:
    """The small CPU segmenter of the embedded pipelines (``SMALL_VIT``, linear decoder)."""
    torch.manual_seed(seed)
    return TMTSegmentation(num_classes=NUM_CLASSES, backbone=SMALL_VIT, method=method, seed=seed).train()


def segmentation_step(task: TMTSegmentation, batch: SegmentationBatch) -> Callable[[], float]:
    """One optimisation step of ``task`` on ``batch``: its own loss and optimiser (no LR schedule)."""
    optimizer = task.build_optimizer()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        total = task.step_loss(batch.images, batch.masks, batch.sizes, [1.0, 1.0])
        total.backward()
        optimizer.step()
        return float(total.detach())

    return step


def tmt_step(method: str = "tmt", batch_size: int = 8, seed: int = 0) -> Callable[[], float]:
    """Factory for :func:`tmtcam.bench.isolated.measure_peak_rss`: one TMT (or baseline) step."""
    return segmentation_step(segmentation_task(method, seed), segmentation_batch(batch_size, seed=seed))


def promptcam_task(num_classes: int = 10, seed: int = 0):
    """Prompt-CAM (deep prompts) on the small CPU ViT with 6 heads, as ``make train-promptcam`` trains it."""
    from tmtcam.tasks.promptcam_classifier import PromptCAMClassifier

    torch.manual_seed(seed)
    backbone = dict(SMALL_VIT, num_heads=6)
    return PromptCAMClassifier(backbone=backbone, num_classes=num_classes, method="promptcam").train()


def promptcam_step(batch_size: int = 32, num_classes: int = 10, seed: int = 0) -> Callable[[], float]:
    """One Prompt-CAM step on rendered synthetic creatures: prompts and head learn, the ViT is frozen."""
    from data_modules.species import SyntheticSpecies
    from data_modules.species import build_train_transform as species_train_transform

    task = promptcam_task(num_classes, seed)
    dataset = SyntheticSpecies(
        "target", "train", batch_size, CROP, seed, transform=species_train_transform(CROP)
    )
    items = [dataset[i] for i in range(batch_size)]
    images = torch.stack([item["image"] for item in items])
    labels = torch.tensor([int(item["label"]) % num_classes for item in items])
    optimizer = torch.optim.SGD([p for p in task.parameters() if p.requires_grad], lr=0.005, momentum=0.9)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(task(images), labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def compare_steps(quick: bool = False, batch_size: int = 8) -> dict[str, Any]:
    """Step time of TMT and every baseline, interleaved, as ratios to the fine-tune step.

    Ratios of wall time (the headline) and of process CPU time (less scattered on a loaded
    machine, see :class:`~tmtcam.bench.measure.Timing`).
    """
    batch = segmentation_batch(batch_size)
    methods = ["finetune", "tmt"] if quick else ["finetune", "tmt", "global", "patch", "grid"]
    steps = {method: segmentation_step(segmentation_task(method), batch) for method in methods}
    timings = dict(
        zip(steps, time_interleaved(*steps.values(), repeats=4 if quick else 15, warmup=1), strict=True)
    )
    images = sum(batch.sizes)
    return {
        "batch": f"{batch_size} source + {batch_size} target images, {CROP} px",
        "step_ms": {name: timing.as_ms() for name, timing in timings.items()},
        "ratio_to_finetune": {
            name: paired_ratio(timing, timings["finetune"])
            for name, timing in timings.items()
            if name != "finetune"
        },
        "cpu_time_ratio_to_finetune": {
            name: paired_ratio(timing.cpu(), timings["finetune"].cpu())
            for name, timing in timings.items()
            if name != "finetune"
        },
        "training_img_per_s": {name: round(images / timing.median, 1) for name, timing in timings.items()},
    }


def promptcam_img_per_s(quick: bool = False, batch_size: int = 32) -> dict[str, Any]:
    """Prompt-CAM training throughput (frozen ViT, prompts + head learn) at the demo's batch size."""
    timing = time_call(promptcam_step(batch_size), repeats=3 if quick else 7, warmup=1)
    return {"step_ms": timing.as_ms(), "img_per_s": round(batch_size / timing.median, 1), "batch": batch_size}
