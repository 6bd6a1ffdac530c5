"""Prompt-CAM: a frozen ViT, one learnable prompt per class, and a shared scoring head.

The score of class c is ``head(LayerNorm(prompt_c output))``: the same ``Linear(D, 1)`` for every
class, so the only thing that makes class c's score differ is *where class c's prompt looked* in the
last block. That is why the last block's attention row of prompt c is a faithful trait map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tmtcam.backbones import ViTBackbone
from tmtcam.promptcam.prompts import ClassPrompts, parse_prompt_variant


class FrozenBackboneModel(nn.Module):
    """A model around a ViT whose weights never change and which always runs in ``eval()``.

    ``eval()`` matters as much as ``requires_grad=False``: drop-path or dropout in the frozen part
    would make the features the prompts are fitted to random. Lightning calls ``model.train()`` at
    every epoch start, so :meth:`train` puts the backbone straight back into eval mode.
    """

    def __init__(self, backbone: ViTBackbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> FrozenBackboneModel:
        super().train(mode)
        self.backbone.eval()
        return self


@dataclass
class PromptCAMOutput:
    logits: torch.Tensor  # (B, C)
    grid: tuple[int, int]  # patch grid (h, w)
    last_attention: torch.Tensor | None = None  # (B, H, S, S), sequence [prompts, prefix, patches]
    last_block_input: torch.Tensor | None = None  # (B, S, D)


class PromptCAM(FrozenBackboneModel):
    """Frozen ViT + class prompts (``deep`` | ``shallow`` | ``intermediate(i)``) + shared ``Linear(D, 1)``."""

    def __init__(
        self,
        backbone: ViTBackbone,
        num_classes: int,
        variant: str = "deep",
        prompt_dropout: float = 0.1,
    ) -> None:
        super().__init__(backbone)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 for a classifier, got {num_classes}")
        self.num_classes = num_classes
        parsed = parse_prompt_variant(variant, backbone.depth)
        self.prompts = ClassPrompts(
            num_classes,
            backbone.embed_dim,
            backbone.patch_size,
            parsed,
            backbone.depth,
            dropout=prompt_dropout,
        )
        self.head = nn.Linear(backbone.embed_dim, 1)

    @property
    def num_leading_tokens(self) -> int:
        """Tokens before the first patch in the last block's sequence ``[prompts, prefix, patches]``."""
        return self.num_classes + self.backbone.num_prefix_tokens

    def score_prompts(self, prompt_outputs: torch.Tensor) -> torch.Tensor:
        """(..., C, D) final-normed prompt outputs -> (..., C) class logits."""
        return self.head(prompt_outputs).squeeze(-1)

    def run(
        self,
        images: torch.Tensor,
        head_blur: torch.Tensor | None = None,
        return_attention: bool = False,
        return_last_block_input: bool = False,
    ) -> PromptCAMOutput:
        """One pass; ``head_blur`` (B, H) bool makes those heads' prompt rows uniform over patches."""
        out = self.backbone(
            images,
            prompts=self.prompts.insertion(),
            return_last_attention=return_attention,
            return_last_block_input=return_last_block_input,
            last_block_head_blur=head_blur,
        )
        return PromptCAMOutput(
            logits=self.score_prompts(out.prompt_tokens),
            grid=out.grid,
            last_attention=out.last_attention,
            last_block_input=out.last_block_input,
        )

    def forward(self, images: torch.Tensor, head_blur: torch.Tensor | None = None) -> torch.Tensor:
        return self.run(images, head_blur=head_blur).logits
