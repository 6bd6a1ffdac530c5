"""The two baselines Prompt-CAM is compared with, on the same frozen backbone.

* :class:`LinearProbe`: ``Linear(D, C)`` on the final-normed CLS token (DINO's standard evaluation).
* :class:`VPTClassifier`: VPT-deep, class-agnostic prompts, ``Linear(D, C)`` on the CLS token; the
  prompts can re-route the frozen ViT but the classes are still told apart by one pooled vector,
  which is what Prompt-CAM's per-class prompts change.

Both expose ``forward(images) -> logits`` so Grad-CAM can treat them as plain classifiers, and
``num_leading_tokens`` (tokens before the first patch in the last block) for its reshape.
"""

from __future__ import annotations

import torch
from torch import nn

from tmtcam.backbones import ViTBackbone
from tmtcam.promptcam.model import FrozenBackboneModel
from tmtcam.promptcam.prompts import ClassPrompts, parse_prompt_variant


class LinearProbe(FrozenBackboneModel):
    def __init__(self, backbone: ViTBackbone, num_classes: int) -> None:
        super().__init__(backbone)
        self.num_classes = num_classes
        self.head = nn.Linear(backbone.embed_dim, num_classes)

    @property
    def num_leading_tokens(self) -> int:
        return self.backbone.num_prefix_tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).prefix_tokens[:, 0])


class VPTClassifier(FrozenBackboneModel):
    """VPT-deep: ``num_prompts`` shared prompts per block (dropped after each block), CLS read-out."""

    def __init__(
        self, backbone: ViTBackbone, num_classes: int, num_prompts: int = 10, prompt_dropout: float = 0.1
    ) -> None:
        super().__init__(backbone)
        self.num_classes = num_classes
        variant = parse_prompt_variant("deep", backbone.depth)
        self.prompts = ClassPrompts(
            num_prompts,
            backbone.embed_dim,
            backbone.patch_size,
            variant,
            backbone.depth,
            dropout=prompt_dropout,
        )
        self.head = nn.Linear(backbone.embed_dim, num_classes)

    @property
    def num_leading_tokens(self) -> int:
        return self.prompts.num_prompts + self.backbone.num_prefix_tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images, prompts=self.prompts.insertion()).prefix_tokens[:, 0])
