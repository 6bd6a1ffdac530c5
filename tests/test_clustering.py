"""k-means backends: planted clusters, agreement between backends, bad input."""

import pytest
import torch

from tmtcam.clustering import (
    AutoKMeans,
    FaissKMeans,
    TorchKMeans,
    build_kmeans,
    faiss_available,
    torch_kmeans,
)
from tmtcam.clustering.base import assign, cluster_means
from tmtcam.clustering.torch_kmeans import _update_centroids, kmeans_plus_plus


def planted(batch=3, per_cluster=40, k=4, dim=16, spread=0.05, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(batch, k, dim, generator=generator) * 5
    truth = torch.arange(k).repeat_interleave(per_cluster).expand(batch, -1)
    points = centres.gather(1, truth[..., None].expand(-1, -1, dim))
    points = points + spread * torch.randn(points.shape, generator=generator)
    order = torch.randperm(points.shape[1], generator=generator)
    return points[:, order], truth[:, order]


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Labels equal up to a permutation of cluster ids."""
    return bool(((a[:, None] == a[None]) == (b[:, None] == b[None])).all())


BACKENDS = ["torch", "faiss", "auto"] if faiss_available() else ["torch"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_recovers_planted_clusters(backend):
    points, truth = planted()
    result = build_kmeans(backend, n_iter=20, seed=1)(points, 4)
    assert result.labels.shape == (3, 160) and result.centroids.shape == (3, 4, 16)
    assert result.labels.dtype == torch.int64
    for image in range(3):
        assert same_partition(result.labels[image], truth[image])
    # inertia is the within-cluster squared distance: ~ N * dim * spread^2
    assert torch.all(result.inertia < 160 * 16 * 0.05**2 * 2)


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_faiss_and_torch_agree_on_separated_data():
    points, _ = planted(seed=3)
    a = FaissKMeans(n_iter=20)(points, 4)
    b = TorchKMeans(n_iter=20)(points, 4)
    for image in range(points.shape[0]):
        assert same_partition(a.labels[image], b.labels[image])
    assert torch.allclose(a.inertia, b.inertia, rtol=1e-3)


def test_torch_backend_is_seeded():
    points = torch.randn(2, 50, 8, generator=torch.Generator().manual_seed(0))
    a, b = TorchKMeans(seed=7)(points, 5), TorchKMeans(seed=7)(points, 5)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(kmeans_plus_plus(points, 5, 7), kmeans_plus_plus(points, 5, 7))
    # 50 distinct random points: another seed draws other centres
    assert not torch.equal(kmeans_plus_plus(points, 5, 8), kmeans_plus_plus(points, 5, 7))


def test_first_kmeans_plus_plus_centre_is_drawn_not_always_the_first_point():
    """The first centre is a seeded uniform draw; pinning it to point 0 would bias every seeding."""
    line = torch.arange(100, dtype=torch.float32).view(1, 100, 1)  # point i sits at i
    firsts = [int(kmeans_plus_plus(line, 1, seed)[0, 0, 0]) for seed in range(10)]
    assert len(set(firsts)) > 1 and set(firsts) != {0}
    # the same uniform draw for every image of the batch: point floor(u * N) of each
    draw = torch.rand(1, generator=torch.Generator().manual_seed(3)).item()
    two = torch.stack([line[0], line[0] + 1000])
    assert kmeans_plus_plus(two, 1, 3)[:, 0, 0].tolist() == [int(draw * 100), int(draw * 100) + 1000]


def test_expanded_distance_form_matches_the_broadcast_one(monkeypatch):
    """Large images take |x|^2 - 2 x.c + |c|^2 (one bmm); it must give the broadcast difference's values."""
    x = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]], [[2.0, 2.0], [-1.0, 0.0], [5.0, 2.0]]])
    centre = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    expected = [[0.0, 25.0, 2.0], [0.0, 13.0, 9.0]]  # hand-computed squared distances
    assert torch_kmeans._squared_distance(x, centre).tolist() == expected  # 6 values: broadcast
    monkeypatch.setattr(torch_kmeans, "_EXPANDED_DISTANCE_MIN_VALUES", 1)
    assert torch_kmeans._squared_distance(x, centre).tolist() == expected  # now the expanded form
    # integer-valued points: both forms are exact in float32, so the seeding and Lloyd agree exactly
    points = torch.randint(-20, 20, (3, 60, 4), generator=torch.Generator().manual_seed(4)).float()
    expanded = TorchKMeans(seed=5)(points, 6)
    monkeypatch.setattr(torch_kmeans, "_EXPANDED_DISTANCE_MIN_VALUES", 10**9)
    broadcast = TorchKMeans(seed=5)(points, 6)
    assert torch.equal(expanded.labels, broadcast.labels)
    assert torch.allclose(expanded.centroids, broadcast.centroids)


def test_hand_computed_two_cluster_case():
    points = torch.tensor([[[0.0], [0.2], [10.0], [10.4]]])
    result = TorchKMeans(n_iter=5)(points, 2)
    assert same_partition(result.labels[0], torch.tensor([0, 0, 1, 1]))
    assert sorted(result.centroids[0, :, 0].tolist()) == pytest.approx([0.1, 10.2])
    assert result.inertia[0].item() == pytest.approx(0.01 * 2 + 0.04 * 2, abs=1e-5)


def test_empty_cluster_is_reseeded_onto_the_worst_served_point():
    # All three points sit in cluster 0 (mean 11/3); cluster 1 is empty. Squared distances to that
    # mean are 13.4, 7.1 and 40.1, so the empty centroid must move onto the point at 10.
    x = torch.tensor([[[0.0], [1.0], [10.0]]])
    labels = torch.zeros(1, 3, dtype=torch.long)
    centroids = torch.tensor([[[3.0], [100.0]]])
    updated = _update_centroids(x, labels, centroids)
    assert updated[0, :, 0].tolist() == pytest.approx([11 / 3, 10.0])


def test_several_empty_clusters_take_the_farthest_points_in_turn_and_full_images_are_untouched():
    # Image 0: all four points in cluster 0 (mean 3.75; squared distances 14.1, 7.6, 39.1, 0.06);
    # clusters 1 and 2 are empty and take the farthest (10) and the second farthest (0) point.
    # Image 1: every cluster has a point, so the update is the plain mean of each.
    x = torch.tensor([[[0.0], [1.0], [10.0], [4.0]], [[0.0], [2.0], [5.0], [7.0]]])
    labels = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 2]])
    centroids = torch.tensor([[[3.0], [100.0], [200.0]], [[1.0], [5.0], [7.0]]])
    updated = _update_centroids(x, labels, centroids)
    assert updated[0, :, 0].tolist() == pytest.approx([3.75, 10.0, 0.0])
    assert updated[1, :, 0].tolist() == pytest.approx([1.0, 5.0, 7.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_is_rejected(backend):
    km = build_kmeans(backend)
    with pytest.raises(ValueError, match="k=9 is larger than the number of points per image N=8"):
        km(torch.randn(1, 8, 4), 9)
    bad = torch.randn(1, 8, 4)
    bad[0, 2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        km(bad, 2)
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        km(torch.randn(8, 4), 2)


def test_auto_uses_faiss_on_cpu_and_unknown_backend_rejected():
    auto = AutoKMeans()
    chosen = auto.choose(torch.randn(1, 10, 4))
    assert chosen.name == ("faiss" if faiss_available() else "torch")
    with pytest.raises(ValueError, match="'auto', 'faiss', 'torch'"):
        build_kmeans("sklearn")


@pytest.mark.skipif(not faiss_available(), reason="the choice only exists with faiss installed")
@pytest.mark.parametrize(
    ("points", "faiss_gpu", "expected"),
    [(100, False, "torch"), (100_000, False, "torch"), (100, True, "torch"), (100_000, True, "faiss")],
)
def test_auto_on_cuda_points_uses_faiss_only_for_large_sets_with_faiss_gpu(
    monkeypatch, points, faiss_gpu, expected
):
    # CUDA tensors cannot exist on a CPU machine; choose() only reads .is_cuda and .shape.
    from types import SimpleNamespace

    import tmtcam.clustering.factory as factory

    monkeypatch.setattr(factory, "faiss_gpu_available", lambda: faiss_gpu)
    cuda_points = SimpleNamespace(is_cuda=True, shape=(1, points, 384))
    assert AutoKMeans().choose(cuda_points).name == expected


@pytest.mark.parametrize("backend", [TorchKMeans, FaissKMeans])
def test_cluster_many_equals_one_k_at_a_time(backend):
    # Three blobs per image plus noise; k = 2, 3, 5 clustered together must give what each k alone
    # gives (one k-means++ seeding shared as a prefix; torch: masked centroids past each k in one
    # batched Lloyd loop; faiss: one training per k and image from that prefix).
    generator = torch.Generator().manual_seed(3)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    points = (
        centres.repeat_interleave(20, 0)[None] + torch.randn(4, 60, 2, generator=generator)
    ).contiguous()
    together = backend(seed=2).cluster_many(points, [2, 3, 5])
    for k, result in zip([2, 3, 5], together, strict=True):
        alone = backend(seed=2)(points, k)
        assert result.centroids.shape == (4, k, 2) and int(result.labels.max()) < k
        assert torch.equal(result.labels, alone.labels)
        assert torch.allclose(result.centroids, alone.centroids, atol=1e-5)
        assert torch.allclose(result.inertia, alone.inertia, rtol=1e-5)


@pytest.mark.parametrize("backend", [TorchKMeans, FaissKMeans])
@pytest.mark.parametrize("ks", [[], [0, 3], [3, -1]])
def test_cluster_many_rejects_empty_or_non_positive_k(backend, ks):
    with pytest.raises(ValueError, match="one or more positive k"):
        backend().cluster_many(torch.randn(2, 10, 3), ks)


@pytest.mark.parametrize("backend", [TorchKMeans, FaissKMeans] if faiss_available() else [TorchKMeans])
def test_an_images_clusters_do_not_depend_on_the_rest_of_the_batch(backend):
    # TMT clusters every image of a batch at once; an image's regions (and so its prediction) must not
    # change with the batch size, its place in the batch or the other images in it.
    generator = torch.Generator().manual_seed(5)
    image = torch.randn(1, 64, 8, generator=generator)  # no planted structure: the seeding decides
    others = torch.randn(3, 64, 8, generator=generator)
    alone = backend(seed=1)(image, 6)
    in_batch = backend(seed=1)(torch.cat([others[:2], image, others[2:]]), 6)
    assert torch.equal(in_batch.labels[2], alone.labels[0])
    assert torch.allclose(in_batch.centroids[2], alone.centroids[0], atol=1e-6)
    different_seed = backend(seed=2)(image, 6)
    assert not torch.equal(different_seed.labels, alone.labels)  # the seed still matters


@pytest.mark.parametrize("backend", [TorchKMeans, FaissKMeans] if faiss_available() else [TorchKMeans])
def test_bf16_autocast_does_not_reach_the_kmeans_maths(backend, monkeypatch):
    # bf16-mixed training clusters inside autocast; on large images the seeding's distances are a
    # bmm, which autocast would run in bfloat16 (errors of ~2e-3 relative on 1100 x 1000 points)
    seen = []
    distance = torch_kmeans._squared_distance

    def recording(x, centre):
        seen.append(torch.is_autocast_enabled("cpu"))
        return distance(x, centre)

    monkeypatch.setattr(torch_kmeans, "_squared_distance", recording)
    points = torch.randn(2, 1100, 1000, generator=torch.Generator().manual_seed(0))
    plain = backend(seed=0)(points, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = backend(seed=0)(points, 4)
    assert len(seen) == 8 and not any(seen)
    assert mixed.centroids.dtype == torch.float32 and torch.equal(mixed.centroids, plain.centroids)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_lloyd_runs_to_a_fixed_point_on_unstructured_points(backend):
    """Seeding plus one Lloyd step solves planted clusters; random points need the iterations:
    the result must be converged (each centroid the mean of its points, each point at its nearest)."""
    if backend == "faiss" and not faiss_available():
        pytest.skip("faiss not installed")
    points = torch.randn(2, 300, 3, generator=torch.Generator().manual_seed(0))
    result = build_kmeans(backend, n_iter=100)(points, 6)
    means, sizes = cluster_means(points, result.labels, 6)
    assert (sizes > 0).all()
    assert torch.allclose(result.centroids, means, atol=1e-4)
    labels, distances = assign(points, result.centroids)
    assert torch.equal(labels, result.labels)
    assert torch.allclose(result.inertia, distances.sum(1), rtol=1e-4)


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_a_small_clustering_gives_faiss_its_thread_count_back():
    """Small images cluster on one OpenMP thread (threads cost more than they save there); the
    process's faiss thread count must be restored afterwards, or every later large clustering
    would run single-threaded."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        FaissKMeans()(torch.randn(1, 20, 3, generator=torch.Generator().manual_seed(0)), 2)
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before)
