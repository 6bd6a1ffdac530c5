"""ACTE and TMA pieces on hand-made inputs: regions, transferability, priority, attention bias, decoders."""

from __future__ import annotations

import math

import pytest
import torch

from tmtcam.tmt import (
    LinearDecoder,
    MaskTransformerDecoder,
    PatchDomainDiscriminator,
    RegionPartitioner,
    Regions,
    TransferableMaskAttention,
    binary_entropy_bits,
    build_decoder,
    grid_regions,
    key_bias,
    normalized_entropy,
    patch_regions,
    priority_map,
    region_coherence_bias,
    region_mean,
    region_pool,
    sliding_window_logits,
)
from tmtcam.tmt.regions import choose_adaptive_k, clustering_points, patch_positions, total_variance
from tmtcam.tmt.sliding_window import window_starts


def test_binary_entropy_is_one_bit_at_half_and_zero_at_certainty() -> None:
    h = binary_entropy_bits(torch.tensor([0.5, 0.0, 1.0, 0.25]))
    expected_quarter = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert torch.allclose(h, torch.tensor([1.0, 0.0, 0.0, expected_quarter]), atol=1e-4)


def test_discriminator_at_half_everywhere_gives_full_transferability_and_zero_priority() -> None:
    discriminator = PatchDomainDiscriminator(embed_dim=4)
    torch.nn.init.zeros_(discriminator.net[-1].weight)
    torch.nn.init.zeros_(discriminator.net[-1].bias)
    logits = discriminator(torch.randn(2, 6, 4))
    transferability = binary_entropy_bits(torch.sigmoid(logits))
    assert torch.allclose(transferability, torch.ones(2, 6))
    regions = Regions(torch.tensor([[0, 0, 1, 1, 2, 2]] * 2), torch.tensor([3, 3]))
    priority = priority_map(transferability, torch.zeros(2, 6), regions, alpha=1.0)
    assert torch.allclose(priority, torch.zeros(2, 6))
    torch.nn.init.constant_(discriminator.net[-1].bias, math.log(3.0))  # sure at 3:1 it is source
    transferability = binary_entropy_bits(torch.sigmoid(discriminator(torch.randn(2, 6, 4))))
    quarter = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert torch.allclose(transferability, torch.full((2, 6), quarter), atol=1e-5)
    uncertainty = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.5, 0.5]] * 2)
    priority = priority_map(transferability, uncertainty, regions, alpha=0.5)
    expected = 0.5 * (1 - quarter) + 0.5 * torch.tensor([1.0, 1.0, 0.0, 0.0, 0.5, 0.5])
    assert torch.allclose(priority, expected.expand(2, 6), atol=1e-5)


def test_normalized_entropy_bounds() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(normalized_entropy(logits), torch.tensor([1.0, 0.0]), atol=1e-5)
    assert torch.equal(
        normalized_entropy(torch.tensor([[3.0], [-1.0]])), torch.zeros(2)
    )  # one class: certain


def test_region_pool_by_hand_leaves_unused_slots_empty() -> None:
    # image 0: regions {0: patches 0, 2}, {1: patches 1, 3}; image 1 has one region, slot 1 unused
    regions = Regions(torch.tensor([[0, 1, 0, 1], [0, 0, 0, 0]]), torch.tensor([2, 1]))
    values = torch.tensor([[[1.0, 0.0], [2.0, 2.0], [3.0, 4.0], [0.0, 2.0]], [[1.0, 1.0]] * 4])
    means, counts = region_pool(values, regions)
    assert torch.allclose(means, torch.tensor([[[2.0, 2.0], [1.0, 2.0]], [[1.0, 1.0], [0.0, 0.0]]]))
    assert counts.tolist() == [[2.0, 2.0], [4.0, 0.0]]


def test_region_mean_and_priority_by_hand() -> None:
    regions = Regions(torch.tensor([[0, 0, 1, 1]]), torch.tensor([2]))
    assert torch.allclose(
        region_mean(torch.tensor([[1.0, 3.0, 0.0, 4.0]]), regions), torch.tensor([[2.0, 2.0, 2.0, 2.0]])
    )
    transferability = torch.tensor([[1.0, 0.0, 1.0, 1.0]])  # region 0 mean 0.5, region 1 mean 1.0
    uncertainty = torch.tensor([[0.0, 0.0, 1.0, 0.0]])  # region 0 mean 0, region 1 mean 0.5
    priority = priority_map(transferability, uncertainty, regions, alpha=0.5)
    # region 0: 0.5*(1-0.5) + 0.5*0 = 0.25; region 1: 0.5*0 + 0.5*0.5 = 0.25
    assert torch.allclose(priority, torch.full((1, 4), 0.25))
    priority = priority_map(transferability, uncertainty, regions, alpha=1.0)
    assert torch.allclose(priority, torch.tensor([[0.5, 0.5, 0.0, 0.0]]))
    priority = priority_map(transferability, uncertainty, regions, alpha=0.0)  # uncertainty only
    assert torch.allclose(priority, torch.tensor([[0.0, 0.0, 0.5, 0.5]]))
    with pytest.raises(ValueError, match="alpha"):
        priority_map(transferability, uncertainty, regions, alpha=1.5)


def test_one_hot_region_shifts_attention_mass_by_the_expected_amount() -> None:
    """All logits equal, region of m keys at priority 1: its mass is m e^b / (m e^b + n - m)."""
    n, m, beta, num_prefix = 8, 2, 1.5, 1
    priority = torch.zeros(1, n)
    priority[0, :m] = 1.0
    bias = key_bias(priority, torch.tensor([beta, 0.0]), num_prefix)  # two heads
    assert bias.shape == (1, 2, 1, num_prefix + n)
    logits = torch.zeros(1, 2, num_prefix + n, num_prefix + n) + bias
    attention = logits.softmax(dim=-1)
    s = num_prefix + n  # the CLS key has bias 0 like the low-priority patches
    expected = m * math.exp(beta) / (m * math.exp(beta) + (s - m))
    assert torch.allclose(
        attention[0, 0, :, num_prefix : num_prefix + m].sum(-1), torch.tensor(expected), atol=1e-6
    )
    assert torch.allclose(
        attention[0, 1, :, num_prefix : num_prefix + m].sum(-1), torch.tensor(m / s), atol=1e-6
    )


def test_region_coherence_bias_marks_same_region_pairs() -> None:
    regions = Regions(torch.tensor([[0, 1, 0]]), torch.tensor([2]))
    bias = region_coherence_bias(regions, gamma=2.0, num_prefix=1)
    assert bias.shape == (1, 1, 4, 4)
    assert bias[0, 0, 0].abs().sum() == 0 and bias[0, 0, :, 0].abs().sum() == 0  # prefix untouched
    assert bias[0, 0, 1, 3] == 2.0 and bias[0, 0, 1, 2] == 0.0 and bias[0, 0, 2, 2] == 2.0


def test_tma_beta_learns_and_only_listed_layers_apply() -> None:
    tma = TransferableMaskAttention(num_heads=3, layers=[2, 3], beta_init=0.5)
    assert tma.applies_to(3) and not tma.applies_to(1)
    bias = tma(3, torch.rand(2, 4), None, num_prefix=1)
    bias.sum().backward()
    assert tma.beta.grad[1].abs().sum() > 0 and tma.beta.grad[0].abs().sum() == 0
    coherent = TransferableMaskAttention(num_heads=3, layers=[3], beta_init=0.5, gamma=2.0)
    priority, regions = torch.rand(2, 4), Regions(torch.tensor([[0, 0, 1, 1]] * 2), torch.tensor([2, 2]))
    with torch.no_grad():
        combined = coherent(3, priority, regions, num_prefix=1)
        keys_only = tma(3, priority, None, num_prefix=1)  # same beta for block 3
    assert combined.shape == (2, 3, 5, 5)  # keys and the query-key region term together
    assert torch.allclose(combined, keys_only + region_coherence_bias(regions, 2.0, 1))
    assert torch.equal(coherent(3, priority, None, num_prefix=1), keys_only)  # no regions: keys only
    with pytest.raises(ValueError, match="tma.layers"):
        TransferableMaskAttention(num_heads=3, layers=[])


def test_grid_and_patch_regions() -> None:
    grid = grid_regions(batch=1, grid=(4, 4), cells=2)
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]).reshape(1, 16)
    assert torch.equal(grid.labels, expected) and grid.num_regions.tolist() == [4]
    wide = grid_regions(batch=1, grid=(2, 6), cells=3)  # 2 rows: only 2 cells fit down, 3 across
    assert wide.labels.reshape(2, 6).tolist() == [[0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5]]
    assert wide.num_regions.tolist() == [6]
    patches = patch_regions(batch=2, grid=(2, 3))
    assert patches.labels.tolist() == [[0, 1, 2, 3, 4, 5]] * 2


def test_patch_positions_row_major_in_unit_square() -> None:
    positions = patch_positions((2, 3))
    assert positions.tolist() == [[0, 0], [0, 0.5], [0, 1], [1, 0], [1, 0.5], [1, 1]]


def test_kmeans_regions_follow_planted_feature_halves() -> None:
    """Left and right halves of an 4x4 grid carry different features: k=2 splits them."""
    features = torch.zeros(1, 16, 8)
    features[0, :, 0] = 1.0
    right = torch.tensor([c >= 2 for r in range(4) for c in range(4)])
    features[0, right, 0] = 0.0
    features[0, right, 1] = 1.0
    regions = RegionPartitioner("kmeans", k_choices=[2], spatial_weight=0.1, backend="torch")(
        features, (4, 4)
    )
    labels = regions.labels[0]
    assert len(set(labels[right].tolist())) == 1 and len(set(labels[~right].tolist())) == 1
    assert labels[right][0] != labels[~right][0]


def test_adaptive_k_picks_smallest_k_below_threshold() -> None:
    inertias = torch.tensor([[10.0, 10.0], [4.0, 9.0], [1.0, 8.0]])  # k choices x images
    pick = choose_adaptive_k(inertias, variance=torch.tensor([10.0, 10.0]), ratio=0.5)
    assert pick.tolist() == [1, 2]  # image 0: first k with inertia <= 5; image 1: none, fall back to largest
    at_threshold = choose_adaptive_k(torch.tensor([[10.0], [5.0], [1.0]]), torch.tensor([10.0]), ratio=0.5)
    assert at_threshold.tolist() == [1]  # inertia exactly ratio x variance counts as good enough


def test_adaptive_k_gives_plain_images_fewer_regions() -> None:
    torch.manual_seed(0)
    plain = torch.zeros(1, 64, 16)
    plain[0, :32, 0] = 1.0
    plain[0, 32:, 1] = 1.0
    cluttered = torch.randn(1, 64, 16)
    partitioner = RegionPartitioner(
        "kmeans", k_choices=[2, 4, 8], distortion_ratio=0.3, spatial_weight=0.0, backend="torch"
    )
    regions = partitioner(torch.cat([plain, cluttered]), (8, 8))
    assert regions.num_regions.tolist() == [2, 8]
    # the labels are those of the chosen k, not of another candidate's clustering
    assert [regions.labels[b].unique().numel() for b in range(2)] == [2, 8]
    halves = regions.labels[0]
    assert halves[:32].unique().numel() == 1 and halves[32:].unique().numel() == 1 and halves[0] != halves[32]


def test_k_larger_than_patches_is_rejected_naming_the_key() -> None:
    partitioner = RegionPartitioner("kmeans", k_choices=[4, 32])
    with pytest.raises(ValueError, match="acte.k_choices.*16 patches"):
        partitioner(torch.randn(1, 16, 8), (4, 4))
    with pytest.raises(ValueError, match="regions.mode"):
        RegionPartitioner("superpixels")


@pytest.mark.parametrize("name", ["linear", "mask_transformer"])
def test_decoders_give_full_resolution_logits_and_gradients(name: str) -> None:
    decoder = build_decoder(name, embed_dim=24, num_classes=5, num_heads=3)
    tokens = torch.randn(2, 12, 24, requires_grad=True)
    logits = decoder(tokens, (3, 4), (24, 32))
    assert logits.shape == (2, 5, 24, 32)
    logits.sum().backward()
    assert tokens.grad.abs().sum() > 0
    assert isinstance(decoder, LinearDecoder if name == "linear" else MaskTransformerDecoder)
    with pytest.raises(ValueError, match="decoder must be one of"):
        build_decoder("fcn", 24, 5)


def test_decoder_logits_at_patch_resolution_by_hand() -> None:
    """linear: token (row 1, col 2) of a 3 x 4 grid is classified by W x + b; mask transformer: each
    patch's class scores are LayerNorm'd over classes (zero mean, unit variance), as in Segmenter."""
    torch.manual_seed(0)
    tokens = torch.randn(2, 12, 24)
    linear = build_decoder("linear", embed_dim=24, num_classes=5)
    logits = linear(tokens, (3, 4), (3, 4))
    expected = tokens[:, 1 * 4 + 2] @ linear.classifier.weight.T + linear.classifier.bias
    assert torch.allclose(logits[:, :, 1, 2], expected, atol=1e-6)
    masks = build_decoder("mask_transformer", embed_dim=24, num_classes=5, num_heads=3)(
        tokens, (3, 4), (3, 4)
    )
    assert torch.allclose(masks.mean(1), torch.zeros(2, 3, 4), atol=1e-5)
    variance = masks.var(1, unbiased=False)  # just under 1: LayerNorm's eps against small cosine spreads
    assert torch.all((variance > 0.9) & (variance <= 1.0))


def test_sliding_window_covers_every_pixel_and_averages_overlaps() -> None:
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(4, 8, 2) == [0]
    images = torch.zeros(1, 3, 10, 7)
    logits = sliding_window_logits(
        lambda crop: torch.ones(crop.shape[0], 2, *crop.shape[-2:]), images, 4, 3, 2
    )
    assert logits.shape == (1, 2, 10, 7) and torch.allclose(logits, torch.ones_like(logits))
    # position-dependent predictions: averaging must reproduce a function of the absolute position
    ramp = torch.arange(10.0).view(1, 1, 10, 1).expand(1, 3, 10, 7)
    logits = sliding_window_logits(lambda crop: crop[:, :2], ramp, 4, 2, 2)
    assert torch.allclose(logits, ramp[:, :2])
    with pytest.raises(ValueError, match="stride"):
        sliding_window_logits(lambda crop: crop, images, 4, 5, 2)
    # stride = window: windows side by side, no overlap, a valid setting
    assert window_starts(8, 4, 4) == [0, 4]
    tiles = sliding_window_logits(
        lambda crop: torch.ones(1, 2, *crop.shape[-2:]), torch.zeros(1, 3, 8, 8), 4, 4, 2
    )
    assert torch.equal(tiles, torch.ones(1, 2, 8, 8))
    # a tall, narrow image is windowed along its long side, though its width fits one window
    shapes = []

    def crop_height(crop: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(crop.shape[-2:]))
        return torch.full((1, 2, *crop.shape[-2:]), float(crop.shape[-2]))

    tall = sliding_window_logits(crop_height, torch.zeros(1, 3, 10, 3), 4, 3, 2)
    assert shapes == [(4, 3)] * 3 and torch.equal(tall, torch.full((1, 2, 10, 3), 4.0))


def test_stretch_per_image_spans_unit_range_and_flattens_constant_maps() -> None:
    from tmtcam.tmt.segmenter import stretch_per_image

    stretched = stretch_per_image(torch.tensor([[0.9, 0.95, 1.0], [0.5, 0.5, 0.5]]))
    assert torch.allclose(stretched, torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]]))


def test_clustering_points_are_unit_features_per_patch_beside_weighted_positions() -> None:
    """Each patch's feature vector is normalised on its own: scaling one patch's features (a brighter
    patch) must not move it to another region."""
    features = torch.randn(2, 12, 5, generator=torch.Generator().manual_seed(0))
    points = clustering_points(features, (3, 4), spatial_weight=2.0)
    assert torch.allclose(points[..., :5].norm(dim=-1), torch.ones(2, 12))
    assert torch.allclose(points[0, :, 5:], 2.0 * patch_positions((3, 4)))
    scale = torch.rand(2, 12, 1, generator=torch.Generator().manual_seed(1)) * 10 + 0.1
    assert torch.allclose(clustering_points(features * scale, (3, 4), 2.0), points, atol=1e-6)


def test_total_variance_by_hand() -> None:
    points = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [1.0, 3.0]]])
    assert total_variance(points).tolist() == [2.0, 2.0]  # two points 2 apart: 1 + 1 around their mean


def test_adaptive_k_can_pick_a_middle_choice() -> None:
    """Four planted blobs: k = 2 leaves much distortion, k = 4 explains it, so 4 (not 8) is chosen."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(4, 8) * 10
    features = centres.repeat_interleave(16, dim=0)[None] + 0.01 * torch.randn(1, 64, 8, generator=generator)
    partitioner = RegionPartitioner(
        "kmeans", k_choices=[2, 4, 8], distortion_ratio=0.1, spatial_weight=0.0, backend="torch"
    )
    assert partitioner(features, (8, 8)).num_regions.tolist() == [4]
