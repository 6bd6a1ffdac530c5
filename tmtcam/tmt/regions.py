"""ACTE regions: split each image's patch grid into coherent regions.

Three modes share one output, a region id per patch ``(B, N)``:

* ``kmeans`` — TMT's adaptive regions. Patch features (L2-normalised, so the scale of a block's
  activations does not matter) are concatenated with the patch's (row, col) position in [0, 1]
  times ``spatial_weight`` and clustered per image. Position keeps a region spatially coherent;
  features keep it semantically coherent. *Adaptive k*: for each image, the smallest k in
  ``k_choices`` whose within-region distortion is at most ``distortion_ratio`` times the image's
  total variance, so a cluttered image gets more regions than a plain one.
* ``grid`` — equal-sized rectangular cells (the paper's "equal-sized patch" ablation).
* ``patch`` — every patch its own region (the patch-level baseline).

Regions are recomputed on every forward pass: training crops are random, so a region map cached
per image would not line up with the next crop; on the CPU this costs about a millisecond per image
(see docs/benchmarks.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from tmtcam.clustering import build_kmeans

RegionMode = Literal["kmeans", "grid", "patch"]
REGION_MODES: tuple[str, ...] = ("kmeans", "grid", "patch")


@dataclass
class Regions:
    """labels (B, N) int64 region id per patch, dense in [0, num_regions[b]); num_regions (B,)."""

    labels: torch.Tensor
    num_regions: torch.Tensor

    @property
    def max_regions(self) -> int:
        return int(self.num_regions.max())


def patch_positions(grid: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """(N, 2) (row, col) of every patch, scaled to [0, 1], in the backbone's row-major token order."""
    h, w = grid
    rows = torch.linspace(0.0, 1.0, h, device=device) if h > 1 else torch.zeros(1, device=device)
    cols = torch.linspace(0.0, 1.0, w, device=device) if w > 1 else torch.zeros(1, device=device)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(h * w, 2)


def clustering_points(features: torch.Tensor, grid: tuple[int, int], spatial_weight: float) -> torch.Tensor:
    """(B, N, D + 2) float32 points: normalised features beside weighted patch positions.

    Non-finite features (a step that diverged) are clustered as zeros rather than refused: the same
    NaN reaches the loss, where ``NonFiniteLossGuard`` stops the run on every rank with one message
    naming the step, instead of k-means raising on one rank.
    """
    finite = torch.nan_to_num(features.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    normed = F.normalize(finite, dim=-1)
    positions = patch_positions(grid, features.device) * spatial_weight
    return torch.cat([normed, positions.expand(features.shape[0], -1, -1)], dim=-1)


def grid_regions(
    batch: int, grid: tuple[int, int], cells: int, device: torch.device | None = None
) -> Regions:
    """``cells`` x ``cells`` equal rectangles (fewer when the grid is smaller), same for every image."""
    h, w = grid
    rows = torch.div(torch.arange(h, device=device) * min(cells, h), h, rounding_mode="floor")
    cols = torch.div(torch.arange(w, device=device) * min(cells, w), w, rounding_mode="floor")
    labels = (rows[:, None] * min(cells, w) + cols[None, :]).reshape(1, h * w).expand(batch, -1)
    count = torch.full((batch,), min(cells, h) * min(cells, w), device=device, dtype=torch.long)
    return Regions(labels.contiguous(), count)


def patch_regions(batch: int, grid: tuple[int, int], device: torch.device | None = None) -> Regions:
    """Each patch its own region."""
    n = grid[0] * grid[1]
    labels = torch.arange(n, device=device).expand(batch, -1).contiguous()
    return Regions(labels, torch.full((batch,), n, device=device, dtype=torch.long))


def total_variance(points: torch.Tensor) -> torch.Tensor:
    """(B,) summed squared distance of each image's points to their mean (the k = 1 distortion)."""
    return (points - points.mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2))


def choose_adaptive_k(inertias: torch.Tensor, variance: torch.Tensor, ratio: float) -> torch.Tensor:
    """Index into the k choices, per image: the first whose inertia <= ratio * variance, else the last.

    inertias: (K, B) distortion of each candidate k (ascending k); variance: (B,).
    """
    good = inertias <= ratio * variance[None, :]
    good[-1] = True  # the largest k is the fallback
    return good.float().argmax(dim=0)


class RegionPartitioner:
    """Turn patch features into regions, by ``mode`` (see the module docstring).

    Args:
        mode: ``kmeans`` | ``grid`` | ``patch``.
        k_choices: candidate region counts for ``kmeans`` (one value = fixed k).
        distortion_ratio: adaptive-k threshold; smaller gives more regions.
        spatial_weight: weight of the (row, col) position against the unit-norm features.
        grid_cells: cells per side for ``grid`` (``None``: sqrt of the largest k, so grid and
            kmeans use comparable region counts).
        backend: k-means backend (``auto`` | ``faiss`` | ``torch``).
        n_iter, seed: k-means iterations and seed (regions are reproducible).
    """

    def __init__(
        self,
        mode: RegionMode = "kmeans",
        k_choices: Sequence[int] = (4, 6, 8),
        distortion_ratio: float = 0.5,
        spatial_weight: float = 1.0,
        grid_cells: int | None = None,
        backend: str = "auto",
        n_iter: int = 10,
        seed: int = 0,
    ) -> None:
        if mode not in REGION_MODES:
            raise ValueError(f"regions.mode must be one of {REGION_MODES}, got {mode!r}")
        if not k_choices or any(int(k) < 1 for k in k_choices):
            raise ValueError(f"regions.k_choices must be positive integers, got {list(k_choices)}")
        if not 0.0 < distortion_ratio <= 1.0:
            raise ValueError(f"regions.distortion_ratio must be in (0, 1], got {distortion_ratio}")
        self.mode = mode
        self.k_choices = sorted(int(k) for k in k_choices)
        self.distortion_ratio = distortion_ratio
        self.spatial_weight = spatial_weight
        self.grid_cells = grid_cells or max(1, round(math.sqrt(self.k_choices[-1])))
        self.kmeans = build_kmeans(backend, n_iter=n_iter, seed=seed)

    def check_grid(self, grid: tuple[int, int]) -> None:
        """Reject a k that cannot work for this patch grid, naming the config key."""
        n = grid[0] * grid[1]
        if self.mode == "kmeans" and self.k_choices[-1] > n:
            raise ValueError(
                f"model.init_args.acte.k_choices: k={self.k_choices[-1]} is larger than the {n} patches of a "
                f"{grid[0]}x{grid[1]} patch grid; use smaller k or larger crops"
            )

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, grid: tuple[int, int]) -> Regions:
        """features (B, N, D) patch tokens of one block -> :class:`Regions`."""
        batch = features.shape[0]
        if self.mode == "patch":
            return patch_regions(batch, grid, features.device)
        if self.mode == "grid":
            return grid_regions(batch, grid, self.grid_cells, features.device)
        self.check_grid(grid)
        points = clustering_points(features, grid, self.spatial_weight)
        results = self.kmeans.cluster_many(points, self.k_choices)
        if len(results) == 1:
            labels = results[0].labels.to(features.device)
            return Regions(labels, torch.full((batch,), self.k_choices[0], device=features.device))
        inertias = torch.stack([r.inertia.to(points.device) for r in results])
        pick = choose_adaptive_k(inertias, total_variance(points), self.distortion_ratio)
        all_labels = torch.stack([r.labels.to(points.device) for r in results])  # (K, B, N)
        labels = all_labels[pick, torch.arange(batch, device=points.device)]
        ks = torch.tensor(self.k_choices, device=points.device)[pick]
        return Regions(labels.to(features.device), ks.to(features.device))
