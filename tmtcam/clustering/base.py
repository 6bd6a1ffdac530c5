"""The k-means contract shared by every backend: a batch of point sets in, one clustering per set out.

TMT clusters the patches of *each image* separately (regions never span images), so the natural
unit is a batch ``(B, N, D)``; a backend may loop or vectorise over B as suits it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

R = TypeVar("R")


@dataclass
class KMeansResult:
    """labels (B, N) int64 in [0, k); centroids (B, k, D) float32; inertia (B,) summed squared distance."""

    labels: torch.Tensor
    centroids: torch.Tensor
    inertia: torch.Tensor


class KMeans(Protocol):
    """Anything callable as ``kmeans(points, k) -> KMeansResult``, and for several k at once."""

    name: str

    def __call__(self, points: torch.Tensor, k: int) -> KMeansResult: ...

    def cluster_many(self, points: torch.Tensor, ks: Sequence[int]) -> list[KMeansResult]:
        """One clustering per k in ``ks`` (TMT's adaptive k tries several)."""
        ...


def float32_maths(cluster_many: Callable[..., R]) -> Callable[..., R]:
    """Run a backend's ``cluster_many`` with autocast off.

    Under ``bf16-mixed`` the distance maths of large images (a ``bmm``, see ``torch_kmeans``) would
    otherwise drop to bfloat16 (errors up to ~2e-3 relative, measured on 1100 x 1000 points) even
    though the points are float32.
    """

    @functools.wraps(cluster_many)
    def in_float32(self: Any, points: torch.Tensor, *args: Any, **kwargs: Any) -> R:
        with torch.autocast(points.device.type, enabled=False):
            return cluster_many(self, points, *args, **kwargs)

    return in_float32


def validate_points(points: torch.Tensor, k: int) -> torch.Tensor:
    """Check shape, k and finiteness; return float32 points (faiss and k-means maths want float32).

    k-means on NaN silently yields NaN centroids and arbitrary labels; that must surface at the call.
    """
    if points.dim() != 3:
        raise ValueError(f"k-means expects points of shape (B, N, D), got {tuple(points.shape)}")
    num_points = points.shape[1]
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k-means: k must be a positive integer, got {k!r}")
    if k > num_points:
        raise ValueError(f"k-means: k={k} is larger than the number of points per image N={num_points}")
    points = points.detach().float()
    if not torch.isfinite(points).all():
        raise ValueError("k-means: input contains NaN or inf (check the features fed to clustering)")
    return points


def validate_ks(ks: Sequence[int]) -> list[int]:
    """The k choices of one ``cluster_many`` call as ints; empty or non-positive is an error."""
    values = [int(k) for k in ks]
    if not values or min(values) < 1:
        raise ValueError(f"k-means: cluster_many needs one or more positive k, got {list(ks)!r}")
    return values


def assign(
    points: torch.Tensor, centroids: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid per point and its squared distance: (B, N) labels, (B, N) distances.

    ``valid`` (B, k) bool, optional: centroids marked False are never chosen.
    """
    distances = torch.cdist(points, centroids).pow_(2)
    if valid is not None:
        distances.masked_fill_(~valid[:, None, :], float("inf"))
    best, labels = distances.min(dim=-1)
    return labels, best


def cluster_means(points: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean point of each cluster and its size: (B, N, D), (B, N) labels in [0, k) -> (B, k, D), (B, k).

    An empty cluster has size 0 and mean 0; callers decide what it means (a k-means step reseeds
    it, a region average ignores it).
    """
    batch, _, dim = points.shape
    sums = points.new_zeros(batch, k, dim).scatter_add_(1, labels[..., None].expand(-1, -1, dim), points)
    counts = points.new_zeros(batch, k).scatter_add_(1, labels, torch.ones_like(points[..., 0]))
    return sums / counts.clamp_min(1.0)[..., None], counts
