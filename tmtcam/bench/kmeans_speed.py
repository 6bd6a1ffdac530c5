"""k-means cost: faiss vs batched torch vs a naive NumPy Lloyd loop, and what ``auto`` picks.

Three problem shapes: the per-image clustering of a ViT-S/16 at 224 px (196 patches x 384 dims ->
8 regions, a batch of 8 images), the per-image clustering TMT's small CPU model actually runs (a
16-image step, 64 patches x 194 dims -> 8) and a large single problem (100k x 384 -> 64). Every
implementation runs 10 Lloyd iterations; the variants are timed round-robin so load from other
processes hits them alike.

The faiss backend runs small per-image problems on one OpenMP thread (measured here when it was a
proposal: for a few hundred points the pool's start-up and hand-off cost more than the parallel
work saves, and on a machine whose cores are busy with torch's threads the two pools contend).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch

from tmtcam.bench.measure import time_interleaved
from tmtcam.clustering import AutoKMeans, FaissKMeans, TorchKMeans, faiss_available

N_ITER = 10


def naive_numpy_kmeans(points: np.ndarray, k: int, n_iter: int = N_ITER, seed: int = 0) -> np.ndarray:
    """Textbook Lloyd iterations in NumPy for one point set (no library): the reference cost."""
    rng = np.random.default_rng(seed)
    centroids = points[rng.choice(len(points), k, replace=False)].copy()
    labels = np.zeros(len(points), dtype=np.int64)
    for _ in range(n_iter):
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: the broadcast form would need N*k*D floats of memory
        distances = (points**2).sum(1)[:, None] - 2 * points @ centroids.T + (centroids**2).sum(1)[None]
        labels = distances.argmin(1)
        for cluster in range(k):
            members = points[labels == cluster]
            if len(members):
                centroids[cluster] = members.mean(0)
    return labels


def _naive_batch(images: np.ndarray, k: int) -> None:
    for image in images:
        naive_numpy_kmeans(image, k)


def problem_shapes(quick: bool) -> dict[str, tuple[torch.Tensor, int]]:
    """name -> (points (B, N, D), k)."""
    generator = torch.Generator().manual_seed(0)
    return {
        "per_image": (torch.randn(8, 196, 384, generator=generator), 8),
        "tmt_small_vit": (torch.randn(16, 64, 194, generator=generator), 8),
        "large": (torch.randn(1, 10_000 if quick else 100_000, 384, generator=generator), 64),
    }


def measure_shape(points: torch.Tensor, k: int, repeats: int) -> dict[str, Any]:
    """ms per image of every implementation on one shape, and which backend ``auto`` chooses.

    ``points`` may live on a GPU (``tmtcam bench gpu``): then the NumPy baseline is left out and
    every shape is warmed up (the first CUDA calls pay for kernel loading).
    """
    variants: dict[str, Any] = {"torch": partial(TorchKMeans(n_iter=N_ITER), points, k)}
    if faiss_available():
        variants["faiss"] = partial(FaissKMeans(n_iter=N_ITER), points, k)
    if not points.is_cuda:
        variants["naive_numpy"] = partial(_naive_batch, points.numpy(), k)
    warmup = 1 if points.is_cuda or points.shape[1] < 4096 else 0
    timings = time_interleaved(*variants.values(), repeats=repeats, warmup=warmup)
    images = points.shape[0]
    row: dict[str, Any] = {
        name: timing.scaled(1000 / images).as_dict() for name, timing in zip(variants, timings, strict=True)
    }
    backends = [name for name in ("faiss", "torch") if name in row]
    fastest_backend = min(backends, key=lambda name: row[name]["median"])
    chosen = AutoKMeans().choose(points).name
    row.update(
        shape=f"{images} x {points.shape[1]} x {points.shape[2]} -> {k}",
        auto_picks=chosen,
        fastest_backend=fastest_backend,
        auto_is_fastest=chosen == fastest_backend,
        fastest_overall=min((name for name in variants), key=lambda name: row[name]["median"]),
    )
    return row


def run(quick: bool = False) -> dict[str, Any]:
    """All shapes; ms per image (per call for ``large``, which is one image)."""
    repeats = {"per_image": 3 if quick else 9, "tmt_small_vit": 3 if quick else 9, "large": 1 if quick else 3}
    return {
        name: measure_shape(points, k, repeats[name]) for name, (points, k) in problem_shapes(quick).items()
    }
