"""Build a timm ViT offline: by name, from scratch or from a local weights file.

timm would otherwise reach for the Hugging Face hub whenever ``pretrained=True``. A researcher on a
cluster node (or this project's CI) has no network, so weights come from a local file through timm's
own ``pretrained_cfg_overlay=dict(file=...)`` mechanism, which still runs timm's checkpoint filter
(position-embedding resampling, head removal) exactly as a hub download would.

timm loads such a file non-strictly (the classifier head is dropped), so a file whose keys do not
match the model at all (another model's weights, a whole training checkpoint with prefixed keys)
would load *nothing* and leave a random backbone behind a log line. timm reports the missing keys
on its logger; they are collected here and a mostly-missing load is refused.
"""

from __future__ import annotations

import difflib
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
from torch import nn

VIT_PREFIXES = ("vit_", "deit", "eva")
TIMM_BUILDER_LOGGER = "timm.models._builder"
_MISSING_KEYS = re.compile(r"Missing keys \((.*)\) discovered")
_UNEXPECTED_KEYS = re.compile(r"Unexpected keys \((.*)\) found")
ANY_HEAD = -1  # "the file's classifier head, if any, has an unknown class count" (see _from_local_file)


class WeightsError(RuntimeError):
    """A pretrained-weights request that cannot be satisfied offline (missing/corrupt file, no network)."""


def check_model_name(model_name: str) -> None:
    """Accept timm ViT names, with or without a pretrained tag (``vit_base_patch16_224.dino``)."""
    architecture, _, tag = model_name.partition(".")
    known = architecture.startswith(VIT_PREFIXES) and architecture in timm.list_models()
    if known and (not tag or model_name in timm.list_pretrained(f"{architecture}.*")):
        return
    candidates = [
        n
        for prefix in VIT_PREFIXES
        for n in timm.list_models(f"{prefix}*") + timm.list_pretrained(f"{prefix}*")
    ]
    close = difflib.get_close_matches(model_name, candidates, n=5, cutoff=0.6)
    raise ValueError(
        f"backbone.model_name={model_name!r} is not a timm ViT model (expected a name from "
        f"timm.list_models('vit_*'), optionally with a tag from timm.list_pretrained(); close: {close})"
    )


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
    check_model_name(model_name)
    kwargs: dict[str, Any] = dict(num_classes=0, dynamic_img_size=True, **(model_overrides or {}))
    if img_size is not None:
        kwargs["img_size"] = img_size
    if weights is not None:
        return _from_local_file(model_name, Path(weights).expanduser(), kwargs)
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


def _from_local_file(model_name: str, path: Path, kwargs: dict[str, Any]) -> nn.Module:
    if not path.is_file():
        raise WeightsError(f"backbone.weights: file not found: {path}")
    # The registry's ``custom_load`` describes *its* file (JAX .npz for the augreg ViTs); timm < 1.0.31
    # kept it for an overlaid file too and refused a .pth. The file's own format decides here.
    # A file may carry a classifier head whatever the tag says: timm drops the head (and loads
    # non-strictly) only when the tag's class count differs from the model's 0, so a timm/HF state
    # dict with its ImageNet head failed strict loading into a head-less tag (``.dino``: 0 classes).
    # A class count no file has makes timm always drop the head; missing keys are checked below.
    overlay = dict(file=str(path), custom_load=path.suffix == ".npz", num_classes=ANY_HEAD)
    with _keys_reported() as (missing, unexpected):
        try:
            model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        except Exception as err:  # torch/safetensors raise many types for a bad file
            raise WeightsError(
                f"backbone.weights: could not load {path} ({path.stat().st_size} bytes) into {model_name!r}: is it "
                f"truncated (an interrupted download or copy), or not a .pth/.safetensors state dict of this "
                f"model? ({type(err).__name__}: {_short(err)})"
            ) from err
    total = len(model.state_dict())
    if missing and len(missing) * 2 >= total:
        raise WeightsError(
            f"backbone.weights: {path} has none or few of the weights of {model_name!r} ({len(missing)} of "
            f"{total} missing, e.g. {missing[:3]}); is it the weights file of another model, or a whole "
            f"training checkpoint (give the backbone's own state dict)?"
        )
    if missing:
        warnings.warn(
            f"backbone.weights: {path} lacks {len(missing)} weights of {model_name!r}: {missing[:5]}",
            stacklevel=3,
        )
    if unexpected:  # e.g. a deeper model's file: its extra blocks are dropped
        warnings.warn(
            f"backbone.weights: {path} holds {len(unexpected)} weights {model_name!r} has no place for, "
            f"left unused: {unexpected[:5]}; is it the file of a deeper or another model?",
            stacklevel=3,
        )
    return model


@contextmanager
def _keys_reported() -> Iterator[tuple[list[str], list[str]]]:
    """Collect the keys timm says a pretrained file lacked and held beyond the model (logged at INFO)."""
    missing: list[str] = []
    unexpected: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            for pattern, keys in ((_MISSING_KEYS, missing), (_UNEXPECTED_KEYS, unexpected)):
                found = pattern.search(record.getMessage())
                if found:
                    keys.extend(key.strip() for key in found.group(1).split(","))

    logger = logging.getLogger(TIMM_BUILDER_LOGGER)
    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield missing, unexpected
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _short(error: BaseException, limit: int = 400) -> str:
    """The error's text on one line, cut at ``limit`` characters: a state-dict mismatch puts the
    keys that matter on its second line, after "Error(s) in loading state_dict for ..."."""
    text = " ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."
