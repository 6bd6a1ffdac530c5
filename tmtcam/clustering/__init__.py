"""k-means behind one small protocol, batched per image: (B, N, D) -> labels (B, N), centroids (B, k, D)."""

from tmtcam.clustering.base import KMeans, KMeansResult, validate_points
from tmtcam.clustering.factory import AUTO_FAISS_MIN_POINTS, AutoKMeans, build_kmeans
from tmtcam.clustering.faiss_kmeans import FaissKMeans, faiss_available, faiss_gpu_available
from tmtcam.clustering.torch_kmeans import TorchKMeans, kmeans_plus_plus

__all__ = [
    "AUTO_FAISS_MIN_POINTS",
    "AutoKMeans",
    "FaissKMeans",
    "KMeans",
    "KMeansResult",
    "TorchKMeans",
    "build_kmeans",
    "faiss_available",
    "faiss_gpu_available",
    "kmeans_plus_plus",
    "validate_points",
]
