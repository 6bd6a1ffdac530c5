"""``tmtcam predict`` writes its predictions to files, as mmseg's ``--out`` / a classifier's CSV would.

Lightning's ``predict`` only returns the outputs (and keeps every one of them in memory until the
end: 500 Cityscapes masks are 1 GB as uint8). This callback writes each batch as it comes, so the
CLI runs ``predict`` with ``return_predictions=False``:

* segmentation (a ``predict_step`` output with ``"mask"``): one palette PNG per image whose pixel
  values are the train ids (255 = none) and whose palette shows them in colour, at the image's
  native size, named after the image's path relative to the dataset's common folder. With
  ``mask_ids: cityscapes`` (``--prediction_writer.mask_ids cityscapes``) the pixel values are the
  Cityscapes *label* ids instead (road = 7 ... bicycle = 33, 0 = unlabeled), which is what the
  Cityscapes evaluation server and ``cityscapesscripts`` read (mmseg's ``format_only``); the
  colours stay the classes' colours;
* classification (``"logits"``): one CSV, ``path, predicted, class_name, probability``.

Each ``predict`` run writes to a new folder ``<trainer.default_root_dir>/predictions/<UTC time>``,
so nothing an earlier run wrote is replaced. Under DDP every rank writes its own images (their
names cannot collide) and its own CSV (``predictions-rank<r>.csv``).
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import SaveConfigCallback
from PIL import Image

from data_modules.segmentation import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_TO_TRAIN
from tmtcam.training.preflight import ConfigError
from tmtcam.viz.segmentation_images import IGNORE_COLOUR, palette

MaskIds = Literal["train", "cityscapes"]
CITYSCAPES_UNLABELED_ID = 0


class PredictionFileWriter(BasePredictionWriter):
    """Writes ``predict`` outputs under ``<default_root_dir>/<folder>/<UTC time>`` (module doc)."""

    def __init__(self, folder: str = "predictions", mask_ids: MaskIds = "train") -> None:
        """
        Args:
            folder: sub-folder of ``trainer.default_root_dir`` that holds one folder per run.
            mask_ids: pixel values of segmentation PNGs: ``train`` ids (0 .. num_classes - 1), or
                ``cityscapes`` label ids, for a model of the 19 Cityscapes classes.
        """
        super().__init__(write_interval="batch")
        if mask_ids not in get_args(MaskIds):
            choices = ", ".join(repr(choice) for choice in get_args(MaskIds))
            raise ConfigError(f"prediction_writer.mask_ids: {mask_ids!r} is not one of {choices}")
        self.folder = folder
        self.mask_ids = mask_ids
        self.out_dir: Path | None = None
        self._common_root: Path | None = None
        self._id_table = np.arange(256, dtype=np.uint8)  # train id -> written pixel value
        self._palette: list[int] = []  # PNG palette of the masks: class colours, the rest black

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        num_classes = min(int(pl_module.hparams.get("num_classes") or 255), 255)
        if self.mask_ids == "cityscapes":
            names = getattr(trainer.datamodule, "class_names", None) or pl_module.hparams.get("class_names")
            self._id_table = cityscapes_label_id_table(num_classes, names)
        parent = Path(trainer.default_root_dir) / self.folder
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"prediction_writer.folder={self.folder}: {parent} is a file, not a folder")
        self.out_dir = Path(trainer.strategy.broadcast(str(_new_folder(parent))))
        colours = np.full((256, 3), IGNORE_COLOUR, dtype=np.uint8)
        colours[self._id_table[:num_classes]] = palette(num_classes)
        self._palette = colours.reshape(-1).tolist()

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self.out_dir is not None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._common_root = _common_image_folder(trainer.predict_dataloaders)
        # the run dir's config-predict.yaml is the newest predict's; each folder keeps its own
        config = predict_config_file(trainer)
        if trainer.is_global_zero and config is not None and config.is_file():
            shutil.copyfile(config, self.out_dir / "config.yaml")

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            print(f"tmtcam: predictions written to {self.out_dir}")

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not isinstance(prediction, dict):
            return
        paths = [str(path) for path in prediction.get("path", ())]
        if "mask" in prediction:
            self._write_masks(prediction["mask"], paths)
        elif "logits" in prediction:
            names = list(pl_module.hparams.get("class_names") or [])
            self._append_rows(prediction["logits"], paths, names, trainer.global_rank, trainer.world_size)

    def _write_masks(self, masks: torch.Tensor, paths: list[str]) -> None:
        assert self.out_dir is not None
        for mask, path in zip(self._id_table[masks.cpu().numpy().astype(np.uint8)], paths, strict=True):
            target = self.out_dir / mask_name(path, self._common_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(mask, mode="P")
            picture.putpalette(self._palette)
            picture.save(target)

    def _append_rows(
        self, logits: torch.Tensor, paths: list[str], names: list[str], rank: int, world_size: int
    ) -> None:
        assert self.out_dir is not None
        file = self.out_dir / ("predictions.csv" if world_size == 1 else f"predictions-rank{rank}.csv")
        probabilities = logits.detach().float().softmax(-1).cpu()
        best, predicted = probabilities.max(-1)
        new_file = not file.exists()
        with file.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(["path", "predicted", "class_name", "probability"])
            for path, index, probability in zip(paths, predicted.tolist(), best.tolist(), strict=True):
                name = names[index] if index < len(names) else str(index)
                writer.writerow([path, index, name, f"{probability:.6f}"])


def cityscapes_label_id_table(num_classes: int, class_names: Sequence[str] | None = None) -> np.ndarray:
    """``table[train id]`` = its Cityscapes label id; 255 (no class) -> 0, "unlabeled".

    Refused for a model that does not predict the 19 Cityscapes classes (by count and, when known,
    by name and order): its ids would be renamed into classes it never learnt.
    """
    if num_classes != len(CITYSCAPES_CLASSES):
        raise ConfigError(
            f"prediction_writer.mask_ids=cityscapes needs a model of the {len(CITYSCAPES_CLASSES)} Cityscapes "
            f"classes; this one has num_classes={num_classes}. Use mask_ids: train"
        )
    if class_names is not None and tuple(class_names) != CITYSCAPES_CLASSES:
        raise ConfigError(
            f"prediction_writer.mask_ids=cityscapes needs the Cityscapes classes in their train-id order "
            f"{list(CITYSCAPES_CLASSES)}; this model's are {list(class_names)}. Use mask_ids: train"
        )
    table = np.full(256, CITYSCAPES_UNLABELED_ID, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        table[train_id] = label_id
    return table


def _new_folder(parent: Path) -> Path:
    """``parent/<UTC time>``, with ``-2``, ``-3`` ... when a run in the same second already has it."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    candidate, number = parent / stamp, 1
    while candidate.exists():
        number += 1
        candidate = parent / f"{stamp}-{number}"
    return candidate


def predict_config_file(trainer: Trainer) -> Path | None:
    """The config the CLI's save-config callback wrote for this ``predict`` (its ``setup`` ran before
    ``on_predict_start`` and set the file name); ``None`` outside the CLI, which writes none."""
    saver = next((cb for cb in trainer.callbacks if isinstance(cb, SaveConfigCallback)), None)
    if saver is None:
        return None
    return Path(trainer.log_dir or trainer.default_root_dir) / saver.config_filename


def mask_name(image_path: str, common_root: Path | None) -> Path:
    """``<image path relative to the dataset's common folder, suffix dropped>.png``.

    Relative paths keep images of different sub-folders apart (Cityscapes cities, ACDC conditions,
    a user's nested folders); an image outside the common folder (or none known) keeps its name.
    """
    path = Path(image_path)
    if common_root is not None:
        try:
            path = path.relative_to(common_root)
        except ValueError:
            path = Path(path.name)
    else:
        path = Path(path.name)
    return path.with_suffix(".png")


def _common_image_folder(loaders: Any) -> Path | None:
    """The deepest folder holding every image of the predict data (datasets with ``records``)."""
    loaders = loaders if isinstance(loaders, list) else [loaders]
    folders = [
        str(Path(record.image).parent)
        for loader in loaders
        for record in getattr(getattr(loader, "dataset", None), "records", ())
        if hasattr(record, "image")
    ]
    return Path(os.path.commonpath(folders)) if folders else None
