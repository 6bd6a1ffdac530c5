"""Images go to W&B when it is the logger, to PNG files otherwise; only rank 0 logs."""

import numpy as np
import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from tmtcam.viz.image_logging import log_images


def attached_module(tmp_path, logger):
    module = BoringModel()
    module.trainer = Trainer(logger=logger, default_root_dir=tmp_path, enable_progress_bar=False)
    return module


def test_png_fallback_writes_the_images(tmp_path):
    module = attached_module(tmp_path, CSVLogger(tmp_path))
    image = np.zeros((8, 12, 3), dtype=np.uint8)
    image[:, :6] = 255
    other = 255 - image
    paths = log_images(module, "val/overlay", [image, other], captions=["a", "b"])
    assert len(set(paths)) == 2 and all(p.is_file() for p in paths)  # one file each, none overwritten
    assert "val_overlay" in str(paths[0])
    assert np.array_equal(np.asarray(Image.open(paths[0])), image)
    assert np.array_equal(np.asarray(Image.open(paths[1])), other)


def test_ranks_other_than_zero_write_nothing(tmp_path, monkeypatch):
    """Under DDP every rank runs the same validation; only rank 0 may write, or files collide."""
    module = attached_module(tmp_path, CSVLogger(tmp_path))
    monkeypatch.setattr(type(module.trainer), "global_rank", property(lambda trainer: 1))
    assert log_images(module, "val/overlay", [np.zeros((4, 4, 3), dtype=np.uint8)]) == []
    assert not list(tmp_path.rglob("*.png"))
    monkeypatch.setattr(type(module.trainer), "global_rank", property(lambda trainer: 0))
    assert len(log_images(module, "val/overlay", [np.zeros((4, 4, 3), dtype=np.uint8)])) == 1


def test_bad_images_are_rejected(tmp_path):
    module = attached_module(tmp_path, CSVLogger(tmp_path))
    with pytest.raises(ValueError, match="uint8"):
        log_images(module, "x", [np.zeros((4, 4, 3), dtype=np.float32)])
    with pytest.raises(ValueError, match="1 captions for 2 images"):
        log_images(module, "x", [np.zeros((4, 4, 3), np.uint8)] * 2, captions=["only one"])


@pytest.mark.slow
def test_wandb_offline_run_stores_images_with_masks(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="tmtcam-test")
    module = attached_module(tmp_path, logger)
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:4] = 1
    out = log_images(
        module,
        "seg",
        [np.zeros((8, 8, 3), np.uint8)],
        masks=[{"prediction": {"mask_data": mask, "class_labels": {0: "road", 1: "car"}}}],
    )
    logger.experiment.finish()
    assert out == []
    images = list((tmp_path / "wandb").glob("offline-run-*/files/media/images/*.png"))
    masks = list((tmp_path / "wandb").glob("offline-run-*/files/media/images/mask/*.png"))
    assert len(images) == 1, "the image itself is missing from the offline W&B run"
    assert len(masks) == 1, "the prediction mask is missing from the offline W&B run"
    assert np.array_equal(np.asarray(Image.open(masks[0])), mask)


@pytest.mark.parametrize("with_maps", [True, False])
def test_segmentation_examples_are_strips_of_five_tiles_with_acte_maps_and_three_without(tmp_path, with_maps):
    """``count`` examples, each one PNG: input | truth | prediction, then priority | regions when the
    segmenter's output carries ACTE maps (a fine-tune run or a sliding-window pass has none)."""
    import torch

    from tmtcam.tmt.regions import Regions
    from tmtcam.tmt.segmenter import SegmenterOutput
    from tmtcam.viz.segmentation_images import log_segmentation_examples

    module = attached_module(tmp_path, CSVLogger(tmp_path))
    images, masks = torch.zeros(3, 3, 16, 16), torch.zeros(3, 16, 16, dtype=torch.long)
    predictions = torch.ones(3, 16, 16, dtype=torch.long)
    out = None
    if with_maps:  # a 2 x 2 patch grid: priority per patch, two regions
        regions = Regions(labels=torch.tensor([[0, 0, 1, 1]] * 3), num_regions=torch.tensor([2, 2, 2]))
        out = SegmenterOutput(
            torch.zeros(3, 4, 16, 16),
            torch.zeros(3, 4, 8),
            (2, 2),
            regions=regions,
            priority=torch.rand(3, 4),
        )
    log_segmentation_examples(module, images, masks, predictions, ["a", "b", "c", "d"], 4, 2, out)
    strips = sorted(tmp_path.rglob("images/val_examples/*.png"))
    assert len(strips) == 2
    assert np.asarray(Image.open(strips[0])).shape == (16, 16 * (5 if with_maps else 3), 3)
