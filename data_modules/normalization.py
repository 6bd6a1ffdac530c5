"""Per-channel input normalisation, which must be the one the backbone's weights were trained with.

timm records it per pretrained tag (``pretrained_cfg.mean/std``): ImageNet statistics for DINO and
DINOv2, 0.5 / 0.5 for the default (augreg) ViT-B/16, CLIP's own for CLIP and BioCLIP. A frozen
backbone cannot adapt to inputs scaled another way, so both data modules take ``mean``/``std`` and
the CLI fills them from the backbone's tag when a config leaves them unset
(:func:`tmtcam.training.preflight.fill_normalization`).
"""

from __future__ import annotations

from collections.abc import Sequence

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

Channels = tuple[float, float, float]
Normalization = tuple[Channels, Channels]  # (mean, std)


def resolve_normalization(
    mean: Sequence[float] | None, std: Sequence[float] | None, owner: str = "data.init_args"
) -> Normalization:
    """``(mean, std)`` as 3-tuples; ``None`` is ImageNet's. Refuses a wrong length or a std <= 0."""
    resolved = []
    for name, value, default in (("mean", mean, IMAGENET_DEFAULT_MEAN), ("std", std, IMAGENET_DEFAULT_STD)):
        channels = tuple(float(v) for v in (default if value is None else value))
        if len(channels) != 3:
            raise ValueError(f"{owner}.{name} needs 3 values (R, G, B), got {list(channels)}")
        if name == "std" and min(channels) <= 0:
            raise ValueError(f"{owner}.std must be positive, got {list(channels)}")
        resolved.append(channels)
    return resolved[0], resolved[1]
