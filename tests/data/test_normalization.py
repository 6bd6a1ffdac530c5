"""Input normalisation: the backbone's mean/std reach both data modules, the CLI fills them from timm."""

import numpy as np
import pytest
import torch

from data_modules.normalization import resolve_normalization
from data_modules.segmentation import build_eval_transform as segmentation_eval
from data_modules.species import SpeciesDataModule
from data_modules.species import build_eval_transform as species_eval
from tmtcam.training.preflight import fill_normalization
from tmtcam.viz.heatmaps import denormalize

HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's augreg ViTs


def test_transforms_normalise_with_the_given_statistics_and_imagenet_by_default():
    white = np.full((8, 8, 3), 255, np.uint8)
    assert torch.allclose(species_eval(8, normalization=HALF)(white).image, torch.ones(3, 8, 8))
    imagenet = species_eval(8)(white).image[:, 0, 0]
    assert torch.allclose(
        imagenet, torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    )
    black_image, _ = segmentation_eval(None, HALF)(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))
    assert torch.allclose(black_image, -torch.ones(3, 8, 8))
    image = torch.rand(3, 4, 4) * 2 - 1
    restored = denormalize(image, HALF).astype(np.float32) / 255  # shown as the camera saw it
    assert np.allclose(restored, ((image * 0.5 + 0.5).permute(1, 2, 0)).numpy(), atol=1 / 255)


def test_data_module_passes_its_statistics_to_every_split():
    module = SpeciesDataModule(
        "synthetic", image_size=32, num_train_images=40, num_test_images=8, mean=[0.5] * 3, std=[0.5] * 3
    )
    module.setup()
    assert module.normalization == HALF
    assert module.train_set.dataset.transform.compose.transforms[-1].mean == HALF[0]
    assert module.test_set.transform.compose.transforms[-1].std == HALF[1]
    with pytest.raises(ValueError, match=r"data.init_args.std must be positive"):
        resolve_normalization(None, [0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match=r"data.init_args.mean needs 3 values"):
        SpeciesDataModule("synthetic", mean=[0.5])
    with pytest.raises(
        ValueError, match=r"data.init_args.mean needs 3 values \(R, G, B\), got \[0.5, 0.5, 0.5, 0.5\]"
    ):
        resolve_normalization([0.5] * 4, None)  # RGBA statistics: one too many


@pytest.mark.parametrize(
    "backbone,expected",
    [
        ({"model_name": "vit_base_patch16_224", "weights": "/w.pth"}, [[0.5] * 3, [0.5] * 3]),  # augreg
        (
            {"model_name": "vit_base_patch16_224.dino", "weights": "/w.pth"},
            [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]],
        ),
        (
            {"model_name": "vit_base_patch16_224", "pretrained": False},
            [None, None],
        ),  # random init: no tag applies
        (
            {"model_name": "vit_tiny_patch16_224", "weights": "/w.pth", "embed_dim": 192},
            [None, None],
        ),  # custom shape
    ],
)
def test_cli_fills_unset_statistics_from_the_backbones_timm_tag(backbone, expected):
    data_args = {"mean": None, "std": None}
    fill_normalization(data_args, backbone)
    assert [data_args["mean"], data_args["std"]] == expected
    given = {"mean": [0.1, 0.2, 0.3], "std": None}
    fill_normalization(given, backbone)
    assert given == {"mean": [0.1, 0.2, 0.3], "std": None}  # what the config says wins
