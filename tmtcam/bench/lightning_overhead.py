"""Lightning training loop vs a plain PyTorch loop: same TMT model, same batches, same optimiser.

The model is the project's TMT segmenter (``TMTSegmentation``, method ``tmt``) and both loops read
the same pre-rendered source and target images through one shuffled ``DataLoader`` per domain, as
``DomainPairDataModule`` serves them: Lightning through its ``CombinedLoader`` (the data module's),
the plain loop through ``zip``. The ratio therefore isolates what the framework adds per step
(hooks, ``CombinedLoader``, ``self.log`` of the task's eight metrics, logger flushes, callbacks,
progress bar). Two Lightning set-ups are measured:

* ``pipeline``: the trainer of ``make train-tmt`` / ``bench tmt`` (CSV logger, no progress bar);
* ``cli``: what ``python -m tmtcam fit`` adds (progress bar, ``log_every_n_steps: 10`` as in the
  experiment YAMLs, ``ModelCheckpoint(save_last)``, the NaN-loss and run-dir guards).

The two loops are interleaved *step by step*: a callback, first in the list, runs one plain step
(a second model instance with the task's optimiser groups and LR schedule) at the start of every
Lightning batch, then starts the clock of the Lightning step, which runs until the next batch
starts. Each Lightning step thus has a plain step right beside it in time, and the per-step ratio
cancels the load of other processes on a shared machine. The one-off cost of building the Trainer
and setting up ``fit`` is reported separately, in seconds per run.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from tmtcam.bench.measure import summary
from tmtcam.bench.training_steps import SegmentationBatch, segmentation_batch, segmentation_task
from tmtcam.training.guards import NonFiniteLossGuard, RunDirGuard
from tmtcam.training.schedules import warmup_cosine

SETUPS = ("pipeline", "cli")


class _CyclicItems(Dataset):
    """``length`` items cycling over a few pre-rendered ``{"image", "mask"}`` items of one domain."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, length: int) -> None:
        self.items = [{"image": image, "mask": mask} for image, mask in zip(images, masks, strict=True)]
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index % len(self.items)]


def domain_loaders(batch: SegmentationBatch, steps: int) -> dict[str, DataLoader]:
    """Source and target DataLoaders as ``DomainPairDataModule`` builds them (shuffled, collated per step)."""
    half = batch.sizes[0]
    parts = {"source": slice(0, half), "target": slice(half, None)}
    return {
        role: DataLoader(
            _CyclicItems(batch.images[part], batch.masks[part], steps * half),
            batch_size=half,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(index),
        )
        for index, (role, part) in enumerate(parts.items())
    }


def plain_loop(batch: SegmentationBatch, steps: int) -> Callable[[], None]:
    """A hand-written loop, one step per call: same data path, optimiser groups and LR schedule as the task."""
    task = segmentation_task("tmt")
    h = task.hparams
    optimizer = task.build_optimizer()
    scheduler = warmup_cosine(optimizer, min(h.warmup_steps, steps // 2), steps)["scheduler"]
    loaders = domain_loaders(batch, steps + 1)  # zip of the two domains: what one writes by hand
    batches: Iterator[tuple[dict[str, torch.Tensor], ...]] = iter(
        zip(loaders["source"], loaders["target"], strict=True)
    )

    def step() -> None:
        source, target = next(batches)
        images = torch.cat([source["image"], target["image"]])
        masks = torch.cat([source["mask"], target["mask"]])
        task.step_loss(images, masks, batch.sizes, [h.source_weight, h.target_weight]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    return step


class _InterleavedClock(Callback):
    """At each Lightning batch start: close the previous Lightning step, run and time a plain step."""

    def __init__(self, plain_step: Callable[[], None]) -> None:
        self.plain_step = plain_step
        self.plain: list[float] = []
        self.lightning: list[float] = []
        self.first_batch = 0.0
        self._lightning_start: float | None = None

    def on_train_batch_start(self, *args: Any) -> None:
        now = time.perf_counter()
        if self._lightning_start is None:
            self.first_batch = now
        else:
            self.lightning.append(now - self._lightning_start)
        start = time.perf_counter()
        self.plain_step()
        self.plain.append(time.perf_counter() - start)
        self._lightning_start = time.perf_counter()


def _trainer(setup: str, steps: int, root: Path, clock: Callback) -> L.Trainer:
    common: dict[str, Any] = dict(
        max_steps=steps, accelerator="cpu", devices=1, default_root_dir=root / setup, num_sanity_val_steps=0,
        limit_val_batches=0, enable_model_summary=False, logger=CSVLogger(root / setup, name="", version=""),
    )  # fmt: skip
    if setup == "pipeline":
        return L.Trainer(**common, enable_checkpointing=False, enable_progress_bar=False, callbacks=[clock])
    callbacks = [clock, ModelCheckpoint(save_last=True), NonFiniteLossGuard(), RunDirGuard()]
    return L.Trainer(**common, log_every_n_steps=10, enable_progress_bar=True, callbacks=callbacks)


def measure_setup(setup: str, batch: SegmentationBatch, steps: int, skip: int, root: Path) -> dict[str, Any]:
    """Per-step paired ratios (Lightning img/s / plain img/s) over one ``fit`` of ``steps`` steps."""
    clock = _InterleavedClock(plain_loop(batch, steps))
    task = segmentation_task("tmt")
    begin = time.perf_counter()
    trainer = _trainer(setup, steps, root, clock)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        trainer.fit(task, CombinedLoader(domain_loaders(batch, steps), mode="max_size_cycle"))
    lightning, plain = clock.lightning[skip:], clock.plain[skip : skip + len(clock.lightning[skip:])]
    images = sum(batch.sizes)
    return {
        "lightning_img_per_s": summary([images / t for t in lightning], digits=1),
        "plain_img_per_s": summary([images / t for t in plain], digits=1),
        "ratio": summary([p / lit for lit, p in zip(lightning, plain, strict=True)]),
        "overhead_ms_per_step": summary(
            [1000 * (lit - p) for lit, p in zip(lightning, plain, strict=True)], 1
        ),
        "setup_seconds": round(clock.first_batch - begin, 2),
        "paired_steps": len(lightning),
    }


def run(root: str | Path, steps: int = 30, batch_size: int = 8, skip: int = 3) -> dict[str, Any]:
    """Both Lightning set-ups against the plain loop; ``lightning_ratio`` is the pipeline's median."""
    batch = segmentation_batch(batch_size)
    results = {setup: measure_setup(setup, batch, steps, skip, Path(root)) for setup in SETUPS}
    return {
        "steps": steps,
        "images_per_step": sum(batch.sizes),
        **results,
        "lightning_ratio": results["pipeline"]["ratio"]["median"],
    }
