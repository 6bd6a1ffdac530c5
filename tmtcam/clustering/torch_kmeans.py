"""Batched k-means in pure torch: every image of the batch clustered at once.

For TMT's many small problems (hundreds of patches, k <= 16) one vectorised Lloyd iteration over the
whole batch beats a Python loop of per-image faiss calls; it also runs on whatever device the
features are on, and is seeded, so regions are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tmtcam.clustering.base import (
    KMeansResult,
    assign,
    cluster_means,
    float32_maths,
    validate_ks,
    validate_points,
)


class TorchKMeans:
    """Lloyd's algorithm with k-means++ initialisation, batched over images.

    Empty clusters are re-seeded with the point farthest from its current centroid, so every
    returned cluster is non-empty whenever the image has at least k distinct points.
    """

    name = "torch"

    def __init__(self, n_iter: int = 10, seed: int = 0, tol: float = 1e-6) -> None:
        self.n_iter = n_iter
        self.seed = seed
        self.tol = tol

    def __call__(self, points: torch.Tensor, k: int) -> KMeansResult:
        return self.cluster_many(points, [k])[0]

    @float32_maths
    def cluster_many(self, points: torch.Tensor, ks: Sequence[int]) -> list[KMeansResult]:
        """k-means for every k in ``ks`` at once, each result as if clustered alone.

        One k-means++ seeding for the largest k serves all: drawn from the same seed, its first k
        centres are exactly a k-only seeding. Then one Lloyd loop runs every
        (k, image) problem as a batch, the centroids past a problem's k masked out. On a GPU this
        is bound by kernel launches, not arithmetic, so one set of launches instead of one per k
        pays: TMT's k in {8, 12, 16} on 8 x 1024 x 770 points took 34.6 ms one k at a time and
        15.2 ms together on an H100, with the same labels (docs/benchmarks.md, "GPU checks").
        """
        ks = validate_ks(ks)
        k_max = max(ks)
        x = validate_points(points, k_max)
        seeds = kmeans_plus_plus(x, k_max, self.seed)
        batch = x.shape[0]
        stacked, centroids, valid = x, seeds, None  # one k: nothing to stack or mask
        if len(ks) > 1:
            stacked, centroids = x.repeat(len(ks), 1, 1), seeds.repeat(len(ks), 1, 1)  # problem j * B + b
            k_of_problem = torch.tensor(ks, device=x.device).repeat_interleave(batch)
            valid = torch.arange(k_max, device=x.device)[None, :] < k_of_problem[:, None]
        previous = None
        for _ in range(self.n_iter):
            labels, _ = assign(stacked, centroids, valid)
            centroids = _update_centroids(stacked, labels, centroids, valid)
            if previous is not None and (centroids - previous).abs().max() <= self.tol:
                break
            previous = centroids
        labels, distances = assign(stacked, centroids, valid)
        inertia = distances.sum(dim=1)
        return [
            KMeansResult(
                labels=labels[j * batch : (j + 1) * batch],
                centroids=centroids[j * batch : (j + 1) * batch, :k],
                inertia=inertia[j * batch : (j + 1) * batch],
            )
            for j, k in enumerate(ks)
        ]


def kmeans_plus_plus(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """k-means++ seeding per image: each next centre drawn with probability ∝ squared distance.

    Every image uses the same k uniform draws (from a CPU generator seeded with ``seed``), turned
    into a point by inverse-CDF sampling over its own distances. So an image's centres depend on its
    own points and ``seed`` only, not on the other images in the batch, its place in the batch or the
    device: TMT's regions, and so its predictions, are the same at any batch size or number of ranks.
    """
    batch, num_points, _ = x.shape
    draws = torch.rand(k, generator=torch.Generator().manual_seed(seed)).tolist()
    rows = torch.arange(batch, device=x.device)
    first = torch.full((batch,), min(int(draws[0] * num_points), num_points - 1), device=x.device)
    centroids = [x[rows, first]]
    closest = _squared_distance(x, centroids[0])
    for draw in draws[1:]:
        cumulative = closest.clamp_min(0).cumsum(1)
        # the first point whose cumulative weight exceeds the draw: points already chosen (weight 0)
        # are never hit; if every weight is 0 (identical points) any point will do
        pick = torch.searchsorted(cumulative, cumulative[:, -1:] * draw, right=True)
        centroids.append(x[rows, pick.squeeze(1).clamp_max(num_points - 1)])
        closest = torch.minimum(closest, _squared_distance(x, centroids[-1]))
    return torch.stack(centroids, dim=1)


# above this many values per image the expanded form (one matrix product) beats broadcasting a
# (B, N, D) difference; measured in `make bench`: 100k x 384 -> 64 seeding 21.0 s -> 1.9 s
_EXPANDED_DISTANCE_MIN_VALUES = 1_000_000


def _squared_distance(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(B, N) squared distance of every point to its image's ``centre`` (B, D)."""
    if x.shape[1] * x.shape[2] < _EXPANDED_DISTANCE_MIN_VALUES:
        return (x - centre[:, None]).pow(2).sum(-1)
    cross = torch.bmm(x, centre[:, :, None]).squeeze(-1)
    return (x.pow(2).sum(-1) - 2 * cross + centre.pow(2).sum(-1, keepdim=True)).clamp_min_(0)


def _update_centroids(
    x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """One Lloyd update; an empty cluster among the ``valid`` ones (default: all) is re-seeded."""
    means, counts = cluster_means(x, labels, centroids.shape[1])
    updated = torch.where(counts[..., None] > 0, means, centroids)
    empty = counts == 0 if valid is None else (counts == 0) & valid
    if empty.any():
        updated = _reseed_empty(x, labels, updated, empty)
    return updated


def _reseed_empty(
    x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, empty: torch.Tensor
) -> torch.Tensor:
    """Move each empty centroid onto the point currently worst served by its own centroid."""
    centroids = centroids.clone()
    for image, cluster in empty.nonzero().tolist():
        own = centroids[image, labels[image]]
        distance = (x[image] - own).pow(2).sum(-1)
        far = int(distance.argmax())
        centroids[image, cluster] = x[image, far]
        labels[image, far] = cluster
    return centroids
