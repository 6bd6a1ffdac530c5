"""The TMT segmenter: ViT encoder + decoder, with ACTE and TMA wired into one forward pass.

One pass does everything. The backbone calls :meth:`TMTSegmenter._attention_bias` before each
block with the tokens entering it. When the tokens leaving ``cluster_layer`` arrive, ACTE runs on
their patch part: regions (k-means / grid / patch), the patch discriminator's transferability, and
the semantic uncertainty of a small probe classifier on the same features. The resulting priority
map then biases attention in every TMA block of the *same* pass, so TMT costs one extra k-means and
two tiny MLPs per step, not a second forward.

Design choice (DESIGN §4 leaves it open): semantic uncertainty comes from the probe at the cluster
layer, not from the final prediction, because the final prediction does not exist yet when the
later blocks need the map. The probe and the discriminator read *detached* features: they measure,
they do not train the backbone. Their losses are returned for the task to add.

Design choice: the priority map is computed, and TMA applied, for *every* image, source batches
included. Regions are per image, so a target image's T_r is the mean over its own (target)
patches as DESIGN §4.3 says; a source image gets a map the same way. At test time the model cannot
know an image's domain, so TMA has to act on any image, and training it on both domains keeps the
attention the segmenter learns with the one it is evaluated with.

Methods (``method``): ``finetune`` (no ACTE/TMA), ``global`` (DANN on pooled tokens),
``patch`` / ``grid`` / ``tmt`` (TMA with regions = patches / equal cells / adaptive k-means).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from tmtcam.backbones import ViTBackbone
from tmtcam.tmt.attention_bias import TransferableMaskAttention
from tmtcam.tmt.decoders import build_decoder
from tmtcam.tmt.domain_adversarial import GlobalDomainClassifier, GradientReversal
from tmtcam.tmt.regions import RegionPartitioner, Regions
from tmtcam.tmt.sliding_window import sliding_window_logits
from tmtcam.tmt.transferability import (
    PatchDomainDiscriminator,
    binary_entropy_bits,
    normalized_entropy,
    priority_map,
    region_pool,
)

METHODS: tuple[str, ...] = ("finetune", "global", "patch", "grid", "tmt")
ALIGN_UNITS: tuple[str | None, ...] = (None, "patch", "region", "image")
REGION_MODE_OF_METHOD = {"patch": "patch", "grid": "grid", "tmt": "kmeans"}


@dataclass
class ACTEOptions:
    """ACTE settings (YAML mapping ``acte:``).

    cluster_layer: block whose output patch tokens are clustered and scored (``None``: the block
        just before the first TMA block, i.e. the middle of the network by default).
    k_choices: candidate region counts; adaptive k picks per image (one value = fixed k).
    distortion_ratio: adaptive-k threshold (within-region distortion / total variance).
    spatial_weight: weight of patch position against unit-norm features in clustering.
    grid_cells: cells per side for ``method: grid`` (``None``: sqrt of the largest k).
    alpha: priority = alpha * (1 - transferability) + (1 - alpha) * uncertainty.
    backend: k-means backend, ``auto`` | ``faiss`` | ``torch``.
    hidden_dim: width of the discriminator MLP.
    discriminator_layer: the discriminator reads the output of this block (-1: the patch
        embeddings). Must be <= ``cluster_layer``.
    stretch: min-max stretch the priority map per image to [0, 1]. Under softmax only the
        differences between keys matter; a discriminator that is sure of the domain everywhere
        (T close to 0 on every patch) would otherwise give a flat map and TMA would do nothing.
    align: also *align* the domains, steered by the priority map (weight: the task's
        ``adversarial_weight``, as for ``global``): a second discriminator reads final tokens through
        gradient reversal. ``patch``: every patch token, its loss weighted by ``1 + priority``;
        ``region``: the mean token of each ACTE region, weighted by ``1 + priority``; ``image``: one
        token per image, the mean of its patch tokens weighted by ``1 + priority`` (DANN's input
        with the hard regions counting up to twice). ``None`` (default) keeps DESIGN §4's
        measuring-only estimator. Measured without target labels (docs/benchmarks.md): ``image``
        helps most of the three and ties plain DANN (``method: global``) within noise.
    """

    cluster_layer: int | None = None
    k_choices: list[int] = field(default_factory=lambda: [4, 6, 8])
    distortion_ratio: float = 0.5
    spatial_weight: float = 1.0
    grid_cells: int | None = None
    alpha: float = 0.5
    backend: str = "auto"
    hidden_dim: int = 256
    discriminator_layer: int = -1
    stretch: bool = True
    align: str | None = None


@dataclass
class TMAOptions:
    """TMA settings (YAML mapping ``tma:``).

    layers: blocks whose attention gets the priority bias (``None``: the last half).
    beta_init: initial per-head bias scale.
    gamma: same-region bias between query and key (0 = off).
    region_loss_weight: omega in the pixel loss weight 1 + omega * priority (0 = plain CE).
    """

    layers: list[int] | None = None
    beta_init: float = 1.0
    gamma: float = 0.0
    region_loss_weight: float = 0.0


@dataclass
class SegmenterOutput:
    """What one forward pass produced; the ACTE fields are ``None`` for methods without ACTE."""

    logits: torch.Tensor  # (B, C, H, W)
    patch_tokens: torch.Tensor  # (B, N, D) final, normalised
    grid: tuple[int, int]
    regions: Regions | None = None
    priority: torch.Tensor | None = None  # (B, N) in [0, 1]
    transferability: torch.Tensor | None = None  # (B, N) per-patch H(d) in bits
    discriminator_logits: torch.Tensor | None = None  # (B, N)
    probe_logits: torch.Tensor | None = None  # (B, C, h, w) uncertainty probe at the cluster layer
    domain_logit: torch.Tensor | None = None  # (B,) global baseline
    alignment_logits: torch.Tensor | None = None  # (B, N) or (B, R) per patch / region (acte.align)
    alignment_weights: torch.Tensor | None = None  # same shape: 1 + priority, 0 for empty region slots


class TMTSegmenter(nn.Module):
    """Backbone + decoder + (per ``method``) ACTE/TMA or the global domain classifier."""

    def __init__(
        self,
        backbone: ViTBackbone,
        num_classes: int,
        method: str = "tmt",
        decoder: str = "linear",
        acte: ACTEOptions | None = None,
        tma: TMAOptions | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"model.init_args.method must be one of {METHODS}, got {method!r}")
        self.method = method
        self.num_classes = num_classes
        self.backbone = backbone
        self.decoder = build_decoder(decoder, backbone.embed_dim, num_classes, num_heads=backbone.num_heads)
        self.acte_options = _options(ACTEOptions, acte, "acte")
        self.tma_options = _options(TMAOptions, tma, "tma")
        self.domain_classifier = GlobalDomainClassifier(backbone.embed_dim) if method == "global" else None
        self.uses_acte = method in REGION_MODE_OF_METHOD
        if self.uses_acte:
            layers = self.tma_options.layers or list(range(backbone.depth // 2, backbone.depth))
            self.cluster_layer = self._check_layers(layers, self.acte_options.cluster_layer)
            self.tma = TransferableMaskAttention(
                backbone.num_heads, layers, self.tma_options.beta_init, self.tma_options.gamma
            )
            a = self.acte_options
            self.partitioner = RegionPartitioner(
                REGION_MODE_OF_METHOD[method], a.k_choices, a.distortion_ratio, a.spatial_weight,
                a.grid_cells, a.backend, seed=seed,
            )  # fmt: skip
            self.discriminator = PatchDomainDiscriminator(backbone.embed_dim, a.hidden_dim)
            self.probe = nn.Sequential(
                nn.LayerNorm(backbone.embed_dim), nn.Linear(backbone.embed_dim, num_classes)
            )
        if not 0.0 <= self.acte_options.alpha <= 1.0:  # here, not at the first step
            raise ValueError(f"model.init_args.acte.alpha must be in [0, 1], got {self.acte_options.alpha}")
        if self.acte_options.spatial_weight < 0:
            raise ValueError(
                f"model.init_args.acte.spatial_weight must be >= 0, got {self.acte_options.spatial_weight}"
            )
        if self.acte_options.align not in ALIGN_UNITS:
            raise ValueError(
                f"model.init_args.acte.align must be one of {ALIGN_UNITS}, got {self.acte_options.align!r}"
            )
        self.aligner = (
            PatchDomainDiscriminator(backbone.embed_dim, self.acte_options.hidden_dim)
            if self.uses_acte and self.acte_options.align
            else None
        )

    def _check_layers(self, layers: list[int], cluster_layer: int | None) -> int:
        depth = self.backbone.depth
        bad = [layer for layer in layers if not 0 < layer < depth]
        if bad:
            raise ValueError(
                f"model.init_args.tma.layers: blocks {bad} outside 1..{depth - 1} (backbone depth {depth})"
            )
        cluster = min(layers) - 1 if cluster_layer is None else cluster_layer
        if not 0 <= cluster < min(layers):
            raise ValueError(
                f"model.init_args.acte.cluster_layer={cluster} must be in [0, {min(layers) - 1}]: regions are "
                f"computed from its output before the first TMA block ({min(layers)}) in the same pass"
            )
        if not -1 <= self.acte_options.discriminator_layer <= cluster:
            raise ValueError(
                f"model.init_args.acte.discriminator_layer={self.acte_options.discriminator_layer} must be in "
                f"[-1, cluster_layer={cluster}]"
            )
        return cluster

    def check_input_size(self, height: int, width: int) -> None:
        """Refuse an input size before training (the CLI calls this on any model that has it)."""
        grid = self.backbone.grid_size(height, width)
        if self.uses_acte:
            self.partitioner.check_grid(grid)

    def forward(self, images: torch.Tensor) -> SegmenterOutput:
        grid = self.backbone.grid_size(images.shape[-2], images.shape[-1])
        if self.uses_acte:
            self.partitioner.check_grid(grid)
        state: dict[str, torch.Tensor | Regions] = {}
        bias = (
            (lambda block, tokens: self._attention_bias(block, tokens, grid, state))
            if self.uses_acte
            else None
        )
        out = self.backbone(images, attn_bias=bias)
        logits = self.decoder(out.patch_tokens, out.grid, tuple(images.shape[-2:]))
        result = SegmenterOutput(logits=logits, patch_tokens=out.patch_tokens, grid=out.grid)
        if self.uses_acte:
            result.regions = state["regions"]
            result.priority = state["priority"]
            result.transferability = state["transferability"]
            result.discriminator_logits = state["discriminator_logits"]
            result.probe_logits = state["probe_logits"]
        if self.domain_classifier is not None:
            result.domain_logit = self.domain_classifier(out.patch_tokens)
        if self.aligner is not None:
            self._align(result)
        return result

    def _align(self, result: SegmenterOutput) -> None:
        """Aligner logits and loss weights on the gradient-reversed final tokens, per patch or region."""
        tokens = GradientReversal.apply(result.patch_tokens, 1.0)
        weights = 1.0 + result.priority.detach()
        if self.acte_options.align == "region":
            tokens, counts = region_pool(tokens, result.regions)
            region_priority, _ = region_pool(weights[..., None], result.regions)
            weights = region_priority[..., 0] * (counts > 0)
        elif self.acte_options.align == "image":
            tokens = (tokens * weights[..., None]).sum(1, keepdim=True) / weights.sum(1)[:, None, None]
            weights = torch.ones_like(weights[:, :1])
        result.alignment_logits = self.aligner(tokens)
        result.alignment_weights = weights

    def _attention_bias(
        self, block: int, tokens: torch.Tensor, grid: tuple[int, int], state: dict
    ) -> torch.Tensor | None:
        num_prefix = self.backbone.num_prefix_tokens
        if block == self.acte_options.discriminator_layer + 1:
            state["discriminator_input"] = tokens[:, num_prefix:].detach()
        if block == self.cluster_layer + 1:
            self._estimate(tokens[:, num_prefix:], grid, state)
        if not self.tma.applies_to(block):
            return None
        return self.tma(block, state["priority"], state["regions"], num_prefix)

    def _estimate(self, features: torch.Tensor, grid: tuple[int, int], state: dict) -> None:
        """ACTE on the cluster layer's patch tokens: regions, transferability, uncertainty, priority."""
        detached = features.detach()
        regions = self.partitioner(detached, grid)
        discriminator_logits = self.discriminator(state.pop("discriminator_input"))
        probe_patch_logits = self.probe(detached)
        transferability = binary_entropy_bits(torch.sigmoid(discriminator_logits.detach().float()))
        uncertainty = normalized_entropy(probe_patch_logits.detach())
        priority = priority_map(transferability, uncertainty, regions, self.acte_options.alpha)
        if self.acte_options.stretch:
            priority = stretch_per_image(priority)
        state.update(
            regions=regions,
            discriminator_logits=discriminator_logits,
            probe_logits=rearrange(probe_patch_logits, "b (h w) c -> b c h w", h=grid[0], w=grid[1]),
            transferability=transferability,
            priority=priority.to(features.dtype),
        )

    @torch.no_grad()
    def predict(
        self, images: torch.Tensor, window: int | None = None, stride: int | None = None
    ) -> torch.Tensor:
        """Logits for evaluation; sliding window when ``window`` is set and the image is larger.

        Images (or windows) of any size: validation images at their native size need not be
        multiples of the patch size, so each input is padded as :meth:`padded_logits` does.
        """
        if window is None:
            return self.padded_logits(images)
        return sliding_window_logits(
            self.padded_logits,
            images,
            window,
            stride or max(1, window * 2 // 3),
            self.num_classes,
        )

    def needs_padding(self, images: torch.Tensor) -> bool:
        return any(side % self.backbone.patch_size for side in images.shape[-2:])

    def padded_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits at the input size, for sides the patches do not tile: the image is padded at the
        bottom and right with 0 (the mean colour after normalisation) up to the next multiple of the
        patch size, and the logits are cropped back (mmseg's ``size_divisor`` padding)."""
        if not self.needs_padding(images):
            return self(images).logits
        height, width = images.shape[-2:]
        patch = self.backbone.patch_size
        padded = F.pad(images, (0, -width % patch, 0, -height % patch))
        return self(padded).logits[..., :height, :width]


def _options(kind: type, value: object, key: str) -> ACTEOptions | TMAOptions:
    """Accept the dataclass, a plain mapping (Python callers, hparams) or ``None`` (defaults)."""
    if value is None:
        return kind()
    if isinstance(value, dict):
        known = {f.name for f in fields(kind)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"model.init_args.{key}: unknown keys {unknown}; allowed: {sorted(known)}")
        return kind(**value)
    return value


def stretch_per_image(priority: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Min-max scale each image's (N,) map to [0, 1]; a flat map becomes all zeros."""
    low = priority.amin(dim=1, keepdim=True)
    span = priority.amax(dim=1, keepdim=True) - low
    return torch.where(span > eps, (priority - low) / span.clamp_min(eps), torch.zeros_like(priority))


def pixel_priority(priority: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(B, N) patch priority -> (B, H, W) by nearest upsampling (for loss weights and display)."""
    maps = rearrange(priority, "b (h w) -> b 1 h w", h=grid[0], w=grid[1])
    return F.interpolate(maps.float(), size=size, mode="nearest")[:, 0]
