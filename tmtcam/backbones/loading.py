"""Build a timm ViT offline: by name, from scratch or from a local weights file.

timm would otherwise reach for the Hugging Face hub whenever ``pretrained=True``. A researcher on a
cluster node (or this project's CI) has no network, so weights come from a local file through timm's
own ``pretrained_cfg_overlay=dict(file=...)`` mechanism, which still runs timm's checkpoint filter
(position-embedding resampling, head removal) exactly as a hub download would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from torch import nn


class WeightsError(RuntimeError):
    """A pretrained-weights request that cannot be satisfied offline (missing/corrupt file, no network)."""


def build_timm_vit(
    model_name: str,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    img_size: int | tuple[int, int] | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> nn.Module:
    """Create ``model_name`` with no classifier head and ``dynamic_img_size=True``.

    ``weights`` implies ``pretrained``: the file is loaded instead of a download. ``pretrained=True``
    without ``weights`` tries timm's normal source and, when that fails (typically: no network), raises
    a :class:`WeightsError` that says how to give a local file.
    """
    if not model_name.startswith(("vit_", "deit", "eva")) or model_name not in timm.list_models():
        close = timm.list_models(f"*{model_name.split('_')[0]}*")[:5] if "_" in model_name else []
        raise ValueError(
            f"backbone.model_name={model_name!r} is not a timm ViT model "
            f"(expected a name from timm.list_models('vit_*'); similar: {close})"
        )
    kwargs: dict[str, Any] = dict(num_classes=0, dynamic_img_size=True, **(model_overrides or {}))
    if img_size is not None:
        kwargs["img_size"] = img_size
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"backbone.weights: file not found: {path}")
        try:
            return timm.create_model(
                model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs
            )
        except Exception as err:  # torch/safetensors raise many types for a bad file
            raise WeightsError(
                f"backbone.weights: could not load {path} into {model_name!r}: {type(err).__name__}: {err}"
            ) from err
    if pretrained:
        try:
            return timm.create_model(model_name, pretrained=True, **kwargs)
        except Exception as err:
            raise WeightsError(
                f"backbone.pretrained=true but the weights of {model_name!r} could not be fetched "
                f"({type(err).__name__}: {err}). Offline? Download the weights file elsewhere "
                f"(e.g. the model's pytorch_model.bin / model.safetensors) and pass "
                f"`backbone.weights: /path/to/file`."
            ) from err
    return timm.create_model(model_name, pretrained=False, **kwargs)
