"""ACTE transferability: how well each region transfers, and how unsure the model is there.

All maths here is pure functions on tensors (testable on hand-made inputs):

* a patch discriminator's output d (probability "source") gives the patch's transferability as the
  binary entropy H(d) in bits: 1 when d = 0.5 (the domains are indistinguishable there, so the
  region transfers well), 0 when the discriminator is certain;
* semantic uncertainty is the prediction entropy normalised by log(C), in [0, 1];
* both are averaged over each region, and the priority
  ``pi_r = alpha * (1 - T_r) + (1 - alpha) * U_r`` (in [0, 1]) is broadcast back to the patches:
  high where transfer is weak and the model unsure, which is where TMA steers attention.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tmtcam.clustering.base import cluster_means
from tmtcam.tmt.regions import Regions

_EPS = 1e-6


def binary_entropy_bits(probability: torch.Tensor) -> torch.Tensor:
    """H(p) in bits, elementwise; 1 at p = 0.5, 0 at p in {0, 1}."""
    p = probability.clamp(_EPS, 1 - _EPS)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


def normalized_entropy(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax entropy divided by log(C): 0 for a one-hot prediction, 1 for a uniform one."""
    num_classes = logits.shape[dim]
    if num_classes < 2:
        return torch.zeros_like(logits.select(dim, 0))
    log_p = torch.log_softmax(logits.float(), dim=dim)
    return -(log_p.exp() * log_p).sum(dim=dim) / math.log(num_classes)


def region_pool(values: torch.Tensor, regions: Regions) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of per-patch vectors over each region: (B, N, D) -> means (B, R, D) and patch counts (B, R).

    R is the batch's largest region count; an image with fewer regions has count 0 (and mean 0) in
    the unused slots, so callers weight by ``counts > 0``.
    """
    return cluster_means(values, regions.labels, regions.max_regions)


def region_mean(values: torch.Tensor, regions: Regions) -> torch.Tensor:
    """Average a per-patch value over each region and broadcast it back: (B, N) -> (B, N)."""
    means, _ = region_pool(values[..., None], regions)
    return means[..., 0].gather(1, regions.labels)


def priority_map(
    transferability: torch.Tensor, uncertainty: torch.Tensor, regions: Regions, alpha: float
) -> torch.Tensor:
    """Per-patch priority (B, N) in [0, 1]: alpha * (1 - T_r) + (1 - alpha) * U_r of the patch's region."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"acte.alpha must be in [0, 1], got {alpha}")
    t_region = region_mean(transferability, regions)
    u_region = region_mean(uncertainty, regions)
    return (alpha * (1.0 - t_region) + (1.0 - alpha) * u_region).clamp(0.0, 1.0)


class PatchDomainDiscriminator(nn.Module):
    """Two-layer MLP on patch features -> logit of "this patch comes from the source".

    Trained with BCE (source = 1, target = 0) beside the segmenter. As ACTE's estimator the segmenter
    feeds it detached features, so it only *measures* the domain gap and never pushes the backbone.
    The optional aligner (``acte.align``) is a second instance fed through gradient reversal: that one
    does push the backbone, as the DANN baseline's discriminator does.
    """

    def __init__(self, embed_dim: int, hidden_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N) logits."""
        return self.net(features).squeeze(-1)


def discriminator_loss(
    logits: torch.Tensor, is_source: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """BCE over patches, (B, N) logits and ``is_source`` (B,) bool per image; a plain mean, or the
    ``weights``-weighted mean (e.g. ``1 + priority`` for region-weighted alignment, ``acte.align``,
    where the weights steer the alignment but must not be trained by it, so they are detached)."""
    target = is_source.to(logits.dtype)[:, None].expand_as(logits)
    if weights is None:
        return nn.functional.binary_cross_entropy_with_logits(logits, target)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    weights = weights.detach().to(bce.dtype)
    return (bce * weights).sum() / weights.sum()
