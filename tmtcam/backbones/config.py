"""Build a :class:`ViTBackbone` from a plain YAML mapping, with errors that name the config key.

Tasks take their backbone as a mapping (``backbone: {model_name: ..., weights: ...}``) rather than a
``class_path`` object: configs stay short, and the mapping is saved with the hyper-parameters, so a
checkpoint knows which backbone (and which local weights file) it was made from.
"""

from __future__ import annotations

import inspect
from typing import Any

from tmtcam.backbones.vit import ViTBackbone


def build_backbone(config: dict[str, Any], key: str = "model.init_args.backbone") -> ViTBackbone:
    """``ViTBackbone(**config)``; unknown keys and unfilled ``weights: ???`` are rejected by name."""
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
