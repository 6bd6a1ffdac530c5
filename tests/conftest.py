"""Shared test setup: offline, quiet, deterministic, and light on the 2 CPU cores CI has."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see tmtcam/environment.py

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_vit():
    """A 4-block, 64-wide, patch-8 ViT: the smallest thing that exercises every backbone path."""
    from tmtcam.backbones import ViTBackbone

    torch.manual_seed(0)
    return ViTBackbone(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4
    ).eval()
