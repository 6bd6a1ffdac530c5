"""The ``global`` baseline: DANN-style adversarial alignment of pooled image features.

A domain classifier on the mean patch token is trained to tell source from target while a gradient
reversal layer makes the backbone *confuse* it (Ganin & Lempitsky, 2015). This is the image-level
("global") adaptation TMT is compared against.
"""

from __future__ import annotations

import torch
from torch import nn


class GradientReversal(torch.autograd.Function):
    """Identity forward; gradient multiplied by ``-scale`` backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def region_weighted_alignment_loss(
    logits: torch.Tensor, is_source: torch.Tensor, priority: torch.Tensor
) -> torch.Tensor:
    """Per-patch domain BCE weighted by ``1 + priority``: (B, N) logits, (B,) bool, (B, N) priority.

    Used with gradient-reversed patch tokens (``acte.align``), this is alignment that concentrates
    where ACTE says transfer is weak and the model unsure; the weights are detached, so the priority
    map steers the alignment but is not itself trained by it.
    """
    target = is_source.to(logits.dtype)[:, None].expand_as(logits)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    weights = 1.0 + priority.detach().to(bce.dtype)
    return (bce * weights).sum() / weights.sum()


class GlobalDomainClassifier(nn.Module):
    """MLP on the gradient-reversed mean patch token -> (B,) logit of "source"."""

    def __init__(self, embed_dim: int, hidden_dim: int = 256, reversal_scale: float = 1.0) -> None:
        super().__init__()
        self.reversal_scale = reversal_scale
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 1))

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        pooled = GradientReversal.apply(patch_tokens.mean(dim=1), self.reversal_scale)
        return self.net(pooled).squeeze(-1)
