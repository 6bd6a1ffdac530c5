"""k-means cost: faiss vs batched torch vs a naive NumPy Lloyd loop, and what ``auto`` picks.

Two problem shapes matter: TMT's per-image clustering (a batch of 196 patches x 384 dims -> 8
regions, e.g. ViT-S/16 at 224 px) and a large single problem (100k x 384 -> 64).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch

from tmtcam.bench.measure import time_call
from tmtcam.clustering import AutoKMeans, FaissKMeans, TorchKMeans, faiss_available


def naive_numpy_kmeans(points: np.ndarray, k: int, n_iter: int = 10, seed: int = 0) -> np.ndarray:
    """Textbook Lloyd iterations in NumPy for one point set: the no-library reference."""
    rng = np.random.default_rng(seed)
    centroids = points[rng.choice(len(points), k, replace=False)]
    for _ in range(n_iter):
        distances = ((points[:, None, :] - centroids[None]) ** 2).sum(-1) if len(points) < 20000 else _blas_distances(points, centroids)
        labels = distances.argmin(1)
        for cluster in range(k):
            members = points[labels == cluster]
            if len(members):
                centroids[cluster] = members.mean(0)
    return labels


def _blas_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    # the broadcast form needs N*k*D floats: too much memory for 100k points
    return (points**2).sum(1)[:, None] - 2 * points @ centroids.T + (centroids**2).sum(1)[None]


def _naive_batch(images: np.ndarray, k: int) -> None:
    for image in images:
        naive_numpy_kmeans(image.copy(), k)


def run(quick: bool = False) -> dict[str, Any]:
    """ms per call for each backend on both shapes, and whether ``auto`` chose the fastest."""
    generator = torch.Generator().manual_seed(0)
    shapes = {
        "per_image": (torch.randn(8, 196, 384, generator=generator), 8, 8),  # batch of 8 images
        "large": (torch.randn(1, 20_000 if quick else 100_000, 384, generator=generator), 64, 1),
    }
    results: dict[str, Any] = {}
    for shape_name, (points, k, images) in shapes.items():
        backends: dict[str, Any] = {"torch": TorchKMeans(n_iter=10)}
        if faiss_available():
            backends["faiss"] = FaissKMeans(n_iter=10)
        repeats = 5 if shape_name == "per_image" else (1 if not quick else 2)
        row: dict[str, Any] = {}
        for name, backend in backends.items():
            timing = time_call(partial(backend, points, k), repeats=repeats, warmup=1)
            row[name] = round(timing.median * 1000 / images, 3)
        naive = time_call(partial(_naive_batch, points.numpy(), k), repeats=repeats, warmup=0)
        row["naive_numpy"] = round(naive.median * 1000 / images, 3)
        chosen = AutoKMeans().choose(points).name
        fastest = min((name for name in backends), key=lambda name: row[name])
        row["auto_picks"] = chosen
        row["auto_is_fastest"] = chosen == fastest
        row["shape"] = f"{images}x{points.shape[1]}x{points.shape[2]}->{k}"
        results[shape_name] = row
    return results
