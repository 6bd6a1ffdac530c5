"""Pick a k-means backend by name; ``auto`` picks the one measured fastest for the problem size.

Measured on the project's 2-core CPU (``make bench``, numbers in docs/benchmarks.md): faiss is at
least as fast as the batched torch backend per image (196x384 -> 8: ~2.2 ms vs ~3.8 ms; TMT's
64 patches: a tie) and on large sets, so the CPU default is faiss.
On a GPU the batched torch backend clusters the whole batch where the features already are (no host
round trip, no per-image call). Measured on an H100 (``tmtcam bench gpu``, docs/benchmarks.md) it
beats the CPU faiss build on every shape, by 10-16x per image on TMT's ViT-B/16 512-px problem and
19-21x on a 100k x 384 -> 64 set (two runs; the copy to the host and the CPU search both cost), so
CUDA points go to faiss only when faiss-gpu is installed and the set is large.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from tmtcam.clustering.base import KMeans, KMeansResult
from tmtcam.clustering.faiss_kmeans import FaissKMeans, faiss_available, faiss_gpu_available
from tmtcam.clustering.torch_kmeans import TorchKMeans

Backend = Literal["auto", "faiss", "torch"]

# On CUDA with faiss-gpu, below this many points per image the batched torch backend is used.
AUTO_FAISS_MIN_POINTS = 4096


class AutoKMeans:
    """faiss on CPU; on CUDA batched torch, or faiss-gpu (when installed) for large point sets."""

    name = "auto"

    def __init__(self, n_iter: int = 10, seed: int = 0) -> None:
        self.small = TorchKMeans(n_iter=n_iter, seed=seed)
        self.large = FaissKMeans(n_iter=n_iter, seed=seed) if faiss_available() else self.small

    def choose(self, points: torch.Tensor) -> TorchKMeans | FaissKMeans:
        if points.is_cuda and (points.shape[1] < AUTO_FAISS_MIN_POINTS or not faiss_gpu_available()):
            return self.small
        return self.large

    def __call__(self, points: torch.Tensor, k: int) -> KMeansResult:
        return self.choose(points)(points, k)

    def cluster_many(self, points: torch.Tensor, ks: Sequence[int]) -> list[KMeansResult]:
        return self.choose(points).cluster_many(points, ks)


def build_kmeans(backend: Backend = "auto", n_iter: int = 10, seed: int = 0) -> KMeans:
    """Construct a k-means backend; an unknown name is rejected with the valid choices. Callers
    (ACTE's region partitioner) see only the :class:`KMeans` protocol, so any backend fits."""
    if backend == "auto":
        return AutoKMeans(n_iter=n_iter, seed=seed)
    if backend == "faiss":
        return FaissKMeans(n_iter=n_iter, seed=seed)
    if backend == "torch":
        return TorchKMeans(n_iter=n_iter, seed=seed)
    raise ValueError(f"kmeans backend must be one of 'auto', 'faiss', 'torch'; got {backend!r}")
