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


class GlobalDomainClassifier(nn.Module):
    """MLP on the gradient-reversed mean patch token -> (B,) logit of "source"."""

    def __init__(self, embed_dim: int, hidden_dim: int = 256, reversal_scale: float = 1.0) -> None:
        super().__init__()
        self.reversal_scale = reversal_scale
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 1))

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        pooled = GradientReversal.apply(patch_tokens.mean(dim=1), self.reversal_scale)
        return self.net(pooled).squeeze(-1)
