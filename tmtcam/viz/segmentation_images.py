"""Pictures of one segmentation example: input, ground truth, prediction, transferability, regions.

Returned as a single uint8 strip (H, 5 W, 3) so a PNG or a W&B image shows all five side by side,
plus the raw masks in W&B's ``masks=`` form so the dashboard can toggle them over the input.
:func:`log_segmentation_examples` sends a batch of them to the run's logger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import WandbLogger

from data_modules.normalization import Normalization
from tmtcam.viz.heatmaps import denormalize, jet_colormap
from tmtcam.viz.image_logging import data_normalization, log_images

if TYPE_CHECKING:  # for the annotation only: drawing pictures should not import the model stack
    from tmtcam.tmt.segmenter import SegmenterOutput

IGNORE_COLOUR = (0, 0, 0)


def palette(num_colours: int, seed: int = 7) -> np.ndarray:
    """(num_colours, 3) uint8: fixed, well-spread colours (Cityscapes-style lookup by id)."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(num_colours) * 0.618034) % 1.0
    sats = 0.55 + 0.35 * rng.random(num_colours)
    vals = 0.65 + 0.3 * rng.random(num_colours)
    i = np.floor(hues * 6).astype(int) % 6
    f = hues * 6 - np.floor(hues * 6)
    p, q, t = vals * (1 - sats), vals * (1 - f * sats), vals * (1 - (1 - f) * sats)
    table = np.stack(
        [np.select([i == k for k in range(6)], [a, b, c, d, e, g])
         for a, b, c, d, e, g in ((vals, q, p, p, t, vals), (t, vals, vals, q, p, p), (p, p, t, vals, vals, q))],
        axis=-1,
    )  # fmt: skip
    return (table * 255).round().astype(np.uint8)


def colorize(mask: np.ndarray, colours: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8; ``ignore_index`` pixels black."""
    out = colours[np.clip(mask, 0, len(colours) - 1)]
    out[mask == ignore_index] = IGNORE_COLOUR
    return out


def upsample_patches(values: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(N,) per-patch values -> (H, W) numpy by repeating each patch over its pixels."""
    patch = values.detach().float().cpu().reshape(grid).numpy()
    return np.kron(patch, np.ones((size[0] // grid[0], size[1] // grid[1]), dtype=patch.dtype))


def segmentation_strip(
    image: torch.Tensor,
    target: torch.Tensor,
    prediction: torch.Tensor,
    num_classes: int,
    priority: torch.Tensor | None = None,
    regions: torch.Tensor | None = None,
    grid: tuple[int, int] | None = None,
    normalization: Normalization | None = None,
) -> np.ndarray:
    """Input | ground truth | prediction [| priority (jet) | regions] as one (H, k W, 3) uint8 array.

    ``normalization``: the data's ``(mean, std)`` (``None``: ImageNet's), to show the input as it was.
    """
    picture = denormalize(image, normalization)
    size = picture.shape[:2]
    colours = palette(num_classes)
    tiles = [picture, colorize(target.cpu().numpy(), colours), colorize(prediction.cpu().numpy(), colours)]
    if priority is not None and grid is not None:
        tiles.append(jet_colormap(upsample_patches(priority, grid, size)))
    if regions is not None and grid is not None:
        region_ids = upsample_patches(regions, grid, size).astype(np.int64)
        tiles.append(palette(int(region_ids.max()) + 1, seed=3)[region_ids])
    return np.concatenate(tiles, axis=1)


def wandb_masks(
    target: torch.Tensor, prediction: torch.Tensor, class_names: Sequence[str], ignore_index: int = 255
) -> dict[str, Any]:
    """``wandb.Image(masks=...)`` entry for the input tile: ground truth and prediction, labelled."""
    labels = {index: name for index, name in enumerate(class_names)}
    labels[ignore_index] = "ignore"
    return {
        "ground_truth": {"mask_data": target.cpu().numpy().astype(np.uint8), "class_labels": labels},
        "prediction": {"mask_data": prediction.cpu().numpy().astype(np.uint8), "class_labels": labels},
    }


def log_segmentation_examples(
    module: LightningModule,
    images: torch.Tensor,
    masks: torch.Tensor,
    predictions: torch.Tensor,
    class_names: Sequence[str],
    num_classes: int,
    count: int,
    out: SegmenterOutput | None = None,
) -> None:
    """Log the first ``count`` examples of a batch: strips under ``val/examples`` (with ACTE's
    priority and regions when ``out`` carries them) and, when W&B is attached, the inputs under
    ``val/masks`` with ground truth and prediction as toggleable overlays.

    ``masks`` and ``predictions`` must be at the images' size (the strip draws them side by side).
    """
    normalization = data_normalization(module)
    show_maps = out is not None and out.priority is not None
    strips, overlays = [], []
    for i in range(count):
        strips.append(
            segmentation_strip(
                images[i],
                masks[i],
                predictions[i],
                num_classes,
                out.priority[i] if show_maps else None,
                out.regions.labels[i] if show_maps else None,
                out.grid if out is not None else None,
                normalization,
            )
        )
        overlays.append(wandb_masks(masks[i], predictions[i], class_names))
    caption = "input | ground truth | prediction" + (" | priority | regions" if show_maps else "")
    log_images(module, "val/examples", strips, captions=[caption] * count)
    if any(isinstance(logger, WandbLogger) for logger in module.trainer.loggers):
        pictures = [denormalize(images[i], normalization) for i in range(count)]
        log_images(module, "val/masks", pictures, masks=overlays)
