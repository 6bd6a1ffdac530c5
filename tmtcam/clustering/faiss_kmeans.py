"""faiss k-means, one clustering per image, on CPU or on this process's GPU.

faiss is the fastest option for large point sets (100k+ points). On GPU it must not use
``faiss.Kmeans(gpu=True)``: that spreads the index over *every* visible GPU, which under DDP means
each rank grabs all devices. Instead each process lazily creates one ``StandardGpuResources`` for its
own CUDA device the first time GPU clustering is asked for, and reuses it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from tmtcam.clustering.base import KMeansResult, assign, float32_maths, validate_ks, validate_points
from tmtcam.clustering.torch_kmeans import kmeans_plus_plus


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def faiss_gpu_available() -> bool:
    if not faiss_available() or not torch.cuda.is_available():
        return False
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


# Per-image problems smaller than this run on one faiss thread: waking faiss's OpenMP pool for a
# few hundred points costs more than it saves (measured: 16 x 64 x 194 -> 8, 0.39 -> 0.27 ms per image).
SINGLE_THREAD_MAX_POINTS = 4096


@contextmanager
def _single_thread_if_small(num_points: int, on_gpu: bool) -> Iterator[None]:
    import faiss

    if on_gpu or num_points >= SINGLE_THREAD_MAX_POINTS:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


class FaissKMeans:
    """faiss ``Clustering`` per image; GPU index on the current CUDA device when input is on CUDA."""

    name = "faiss"

    def __init__(self, n_iter: int = 10, seed: int = 0) -> None:
        if not faiss_available():
            raise ImportError("k-means backend 'faiss' needs the faiss package (pip install faiss-cpu)")
        self.n_iter = n_iter
        self.seed = seed
        self._gpu_resources: dict[int, object] = {}

    @float32_maths
    def cluster_many(self, points: torch.Tensor, ks: Sequence[int]) -> list[KMeansResult]:
        """k-means for every k in ``ks``, each result as if clustered alone.

        One k-means++ seeding for the largest k serves all (its first k centres are exactly a
        k-only seeding, as in :meth:`TorchKMeans.cluster_many`) and the points go to the host once;
        faiss then trains every (k, image) problem on its own. Seeding is a few small torch ops
        per centre, so on TMT's CPU step (16 images, k in {4, 6, 8}) sharing it took k-means from
        7.6 to 5.9 ms (measured alone, 2 threads).
        """
        ks = validate_ks(ks)
        x = validate_points(points, max(ks))
        on_gpu = x.is_cuda and faiss_gpu_available()
        # faiss's own init is a uniform random pick, which often merges two true clusters; seed it with
        # k-means++ (computed batched) so both backends start alike and converge alike
        seeds = kmeans_plus_plus(x, max(ks), self.seed).cpu().numpy()
        host = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
        return [self._cluster(x, host, seeds[:, :k], k, on_gpu) for k in ks]

    def __call__(self, points: torch.Tensor, k: int) -> KMeansResult:
        return self.cluster_many(points, [k])[0]

    def _cluster(
        self, x: torch.Tensor, host: np.ndarray, seeds: np.ndarray, k: int, on_gpu: bool
    ) -> KMeansResult:
        device = x.device
        with _single_thread_if_small(host.shape[1], on_gpu):
            centroids = np.stack(
                [
                    self._train(image, init, k, device if on_gpu else None)
                    for image, init in zip(host, seeds, strict=True)
                ]
            )
        centroids_t = torch.from_numpy(centroids).to(device)
        labels, distances = assign(x, centroids_t)
        return KMeansResult(labels=labels, centroids=centroids_t, inertia=distances.sum(dim=1))

    def _train(self, points: np.ndarray, init: np.ndarray, k: int, device: torch.device | None) -> np.ndarray:
        import faiss

        num_points, dim = points.shape
        clustering = faiss.Clustering(dim, k)
        clustering.niter = self.n_iter
        clustering.seed = self.seed
        clustering.verbose = False
        # small images have far fewer than faiss's preferred 39 points per centroid: that is intended,
        # so silence the per-call warning instead of spamming the training log
        clustering.min_points_per_centroid = 1
        clustering.max_points_per_centroid = max(256, num_points)
        faiss.copy_array_to_vector(np.ascontiguousarray(init, dtype=np.float32).ravel(), clustering.centroids)
        index = self._gpu_index(dim, device) if device is not None else faiss.IndexFlatL2(dim)
        clustering.train(points, index)
        return faiss.vector_float_to_array(clustering.centroids).reshape(k, dim)

    def _gpu_index(self, dim: int, device: torch.device):
        import faiss

        ordinal = device.index if device.index is not None else torch.cuda.current_device()
        if ordinal not in self._gpu_resources:
            self._gpu_resources[ordinal] = faiss.StandardGpuResources()
        config = faiss.GpuIndexFlatConfig()
        config.device = ordinal
        return faiss.GpuIndexFlatL2(self._gpu_resources[ordinal], dim, config)
