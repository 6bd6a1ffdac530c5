"""A task's ``backbone:`` setting and building a :class:`ViTBackbone` from it, with errors that name
the config key.

Tasks take their backbone as a plain mapping (``backbone: {model_name: ..., weights: ...}``) rather
than a ``class_path`` object: configs stay short, and the mapping is saved with the
hyper-parameters, so a checkpoint knows which backbone (and which local weights file) it was made
from. For the command line the type is :class:`BackboneConfig`, a dataclass, because jsonargparse
*merges* dataclasses across config files and ``--model.init_args.backbone.<key>`` flags, whereas a
``dict`` is replaced whole: a second YAML setting only ``img_size`` would silently drop the first
one's ``model_name`` and ``weights``. A mapping with a key the dataclass lacks still parses (as a
``dict``) and is then refused by :func:`build_backbone` with the allowed keys.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from tmtcam.backbones.vit import ViTBackbone


@dataclass
class BackboneConfig:
    """The arguments of :class:`ViTBackbone` (see there), with its defaults."""

    model_name: str = "vit_tiny_patch16_224"
    pretrained: bool = False
    weights: str | None = None
    img_size: int = 224
    patch_size: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    drop_path_rate: float = 0.0
    grad_checkpointing: bool = False
    compile_blocks: bool = False


BackboneSetting = BackboneConfig | dict[str, Any]


def backbone_mapping(config: BackboneConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict of the setting, as saved in ``hparams.yaml`` and checkpoints."""
    return asdict(config) if is_dataclass(config) else dict(config)


def build_backbone(
    config: BackboneConfig | Mapping[str, Any], key: str = "model.init_args.backbone"
) -> ViTBackbone:
    """``ViTBackbone(**config)``; unknown keys and unfilled ``weights: ???`` are rejected by name."""
    config = backbone_mapping(config)
    known = set(inspect.signature(ViTBackbone.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{key}: unknown keys {unknown}; allowed: {sorted(known)}")
    if config.get("weights") == "???":
        raise ValueError(
            f"{key}.weights is '???': give the local weights file of {config.get('model_name')!r} "
            f"(e.g. --{key}.weights /path/to/weights.pth)"
        )
    return ViTBackbone(**config)
