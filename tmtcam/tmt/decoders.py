"""Segmentation decoders on ViT patch tokens: ``linear`` and Segmenter's ``mask_transformer``.

Both map (B, N, D) final patch tokens on an (h, w) grid to per-class logits (B, C, H, W) at the
input resolution (bilinear upsampling of patch-level logits, as in Segmenter).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.models.vision_transformer import Block
from torch import nn

DECODERS: tuple[str, ...] = ("linear", "mask_transformer")


class LinearDecoder(nn.Module):
    """A per-patch linear classifier, upsampled: the simplest ViT segmenter head."""

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(
        self, patch_tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]
    ) -> torch.Tensor:
        logits = rearrange(self.classifier(patch_tokens), "b (h w) c -> b c h w", h=grid[0], w=grid[1])
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class MaskTransformerDecoder(nn.Module):
    """Segmenter's mask transformer: class embeddings attend jointly with patches, masks = products.

    K learnable class embeddings are appended to the projected patch tokens, ``depth`` transformer
    blocks (timm's own ``Block``, at the backbone's width and head count; Segmenter's default of two)
    process the joint sequence, and each class mask is the scalar
    product of L2-normalised patch and class embeddings, followed by a LayerNorm over classes.
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        depth: int = 2,
        num_heads: int = 3,
    ) -> None:
        super().__init__()
        dim = embed_dim
        self.num_classes = num_classes
        self.project = nn.Linear(embed_dim, dim)
        self.class_embeddings = nn.Parameter(torch.randn(1, num_classes, dim) * dim**-0.5)
        self.blocks = nn.ModuleList(Block(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.patch_proj = nn.Linear(dim, dim, bias=False)
        self.class_proj = nn.Linear(dim, dim, bias=False)
        self.mask_norm = nn.LayerNorm(num_classes)

    def forward(
        self, patch_tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]
    ) -> torch.Tensor:
        x = self.project(patch_tokens)
        x = torch.cat([x, self.class_embeddings.expand(x.shape[0], -1, -1)], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        patches = F.normalize(self.patch_proj(x[:, : -self.num_classes]), dim=-1)
        classes = F.normalize(self.class_proj(x[:, -self.num_classes :]), dim=-1)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # (B, N, C)
        logits = rearrange(masks, "b (h w) c -> b c h w", h=grid[0], w=grid[1])
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def build_decoder(name: str, embed_dim: int, num_classes: int, num_heads: int = 3) -> nn.Module:
    """Construct a decoder by name; unknown names are rejected with the choices."""
    if name == "linear":
        return LinearDecoder(embed_dim, num_classes)
    if name == "mask_transformer":
        return MaskTransformerDecoder(embed_dim, num_classes, num_heads=num_heads)
    raise ValueError(f"decoder must be one of {DECODERS}, got {name!r}")
