"""Send images to whichever logger the run has: W&B images when W&B is attached, PNG files otherwise.

Tasks call :func:`log_images` and stay logger-agnostic. Only global rank 0 logs (under DDP every
rank would otherwise upload or write the same picture). Without W&B the PNGs land next to the other
logs, ``<log_dir>/images/<key>/step<global_step>_<i>.png``, so a CSV-only run still shows them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from PIL import Image

from data_modules.normalization import Normalization


def image_log_dir(module: LightningModule) -> Path:
    """Where PNG images of this run go (the first logger's dir, or the root dir without a logger).

    Not ``trainer.log_dir``: that is a collective call under DDP, and only rank 0 gets here.
    """
    trainer = module.trainer
    first = trainer.loggers[0] if trainer.loggers else None
    base = None
    if first is not None:
        base = first.log_dir if isinstance(first, (CSVLogger, TensorBoardLogger)) else first.save_dir
    return Path(base or trainer.default_root_dir) / "images"


def log_images(
    module: LightningModule,
    key: str,
    images: list[np.ndarray],
    captions: list[str] | None = None,
    masks: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Log ``images`` ((H, W, 3) uint8) under ``key``; returns the PNG paths written (empty for W&B).

    ``masks`` follows W&B's ``wandb.Image(masks=...)`` form, e.g. ``{"prediction": {"mask_data": m,
    "class_labels": {0: "road", 255: "ignore"}}}``; PNG output ignores it (render overlays instead).
    """
    trainer = module.trainer
    if trainer.global_rank != 0 or not images:
        return []
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"log_images({key!r}): {len(captions)} captions for {len(images)} images")
    wandb_loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
    if wandb_loggers:
        extra: dict[str, list] = {}
        if captions is not None:
            extra["caption"] = captions
        if masks is not None:
            extra["masks"] = masks
        for logger in wandb_loggers:
            logger.log_image(key=key, images=list(images), step=trainer.global_step, **extra)
        return []
    folder = image_log_dir(module) / _safe_name(key)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        path = folder / f"step{trainer.global_step:07d}_{index}.png"
        Image.fromarray(_as_uint8_rgb(image)).save(path)
        paths.append(path)
    return paths


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_") or "images"


def _as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"log_images expects uint8 (H, W, 3) arrays, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"log_images expects (H, W, 3) arrays, got shape {array.shape}")
    return array


def data_normalization(module: LightningModule) -> Normalization | None:
    """``(mean, std)`` the module's data module normalised its inputs with (``None``: ImageNet's).

    Logged images are shown as the camera saw them only if they are un-normalised the same way.
    """
    trainer = module._trainer
    return getattr(getattr(trainer, "datamodule", None), "normalization", None) if trainer else None
