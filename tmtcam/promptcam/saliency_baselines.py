"""Saliency maps of the baselines: Grad-CAM (via ``pytorch_grad_cam``) and attention rollout.

``pytorch_grad_cam`` (PyPI ``grad-cam``, a dependency) is imported only when a Grad-CAM map is
asked for: importing it pulls in scikit-learn, SciPy, matplotlib and ttach, which training does not need.

Grad-CAM on a ViT needs the token sequence of a layer turned into a (B, D, h, w) "feature map": the
leading tokens (prompts, CLS, registers) are dropped and the patch tokens laid out on the grid. The
layer is the last block's ``norm1`` (its output feeds the last attention, the usual ViT choice).
Attention rollout (Abnar & Zuidema, 2020) multiplies the head-averaged attention of all blocks,
each mixed half-and-half with the identity for the residual path, and reads the CLS row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tmtcam.backbones import ViTBackbone
from tmtcam.backbones.vit import explicit_attention


def vit_tokens_to_map(
    num_leading_tokens: int, grid: tuple[int, int]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Reshape transform for Grad-CAM: (B, S, D) tokens -> (B, D, h, w) patch feature map."""

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, num_leading_tokens:]
        if patches.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"{patches.shape[1]} patch tokens do not fill the grid {grid}")
        return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)

    return reshape


def grad_cam_maps(model: nn.Module, images: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of ``class_index`` for a frozen-backbone classifier -> (B, H, W) in [0, 1].

    ``model`` must map images to logits and expose ``backbone`` (a :class:`ViTBackbone`) and
    ``num_leading_tokens``. The input is made to require grad: with a frozen backbone nothing else
    would, and the target layer's activations would carry no gradient.
    """
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        raise ImportError("Grad-CAM maps need the `grad-cam` package: pip install grad-cam") from err
    backbone: ViTBackbone = model.backbone
    grid = backbone.grid_size(images.shape[-2], images.shape[-1])
    targets = [ClassifierOutputTarget(int(c)) for c in class_index.tolist()]
    was_training = model.training
    cam = GradCAM(
        model=model,
        target_layers=[backbone.vit.blocks[-1].norm1],
        reshape_transform=vit_tokens_to_map(model.num_leading_tokens, grid),
    )
    try:  # not `with cam:`, whose __exit__ swallows IndexError
        with torch.enable_grad():
            maps = cam(input_tensor=images.detach().clone().requires_grad_(True), targets=targets)
    finally:
        cam.activations_and_grads.release()
        model.train(was_training)
    return torch.from_numpy(maps).to(images.device)


def rollout_from_attention(attentions: list[torch.Tensor], residual_weight: float = 0.5) -> torch.Tensor:
    """(B, H, S, S) per block -> (B, S, S) rollout: product of row-normalised ``w I + (1 - w) mean_h A``."""
    first = attentions[0]
    eye = torch.eye(first.shape[-1], dtype=first.dtype, device=first.device)
    rollout = eye.expand(first.shape[0], -1, -1)
    for attention in attentions:
        mixed = residual_weight * eye + (1 - residual_weight) * attention.mean(1)
        mixed = mixed / mixed.sum(-1, keepdim=True)
        rollout = mixed @ rollout
    return rollout


@torch.no_grad()
def attention_rollout_maps(backbone: ViTBackbone, images: torch.Tensor) -> torch.Tensor:
    """Class-agnostic CLS rollout of the plain backbone -> (B, h, w)."""
    grid = backbone.grid_size(images.shape[-2], images.shape[-1])
    attentions: list[torch.Tensor] = []
    with explicit_attention(backbone.vit.blocks, attentions.append):
        backbone(images)
    rollout = rollout_from_attention(attentions)
    cls_row = rollout[:, 0, backbone.num_prefix_tokens :]
    return cls_row.reshape(images.shape[0], *grid)
