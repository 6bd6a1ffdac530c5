"""Configuration checks that need two parts of the config (or the machine), run before any work.

Each part checks its own arguments when it is built; what no part can see alone is checked here:
the data's image size against the backbone's patch size (and against whatever else a module's
``check_input_size`` declares, e.g. k-means region counts), ``trainer.devices`` against the GPUs this
machine has, and a model's LR-schedule length against ``trainer.max_epochs``. Otherwise these
surface later and worse: a shape error inside the first forward pass, Lightning's "No supported gpu
backend found!" that names no setting, or epochs trained at learning rate 0. One setting is
completed rather than checked: the data's normalisation, from the backbone's timm tag.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import timm
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.utilities import rank_zero_info

from data_modules.normalization import Normalization
from data_modules.segmentation import SegmentationDataError
from data_modules.species import SpeciesDataError
from tmtcam.backbones.vit import ViTBackbone

GPU_ACCELERATORS = ("gpu", "cuda")
IMAGE_SIZE_KEYS = ("crop_size", "image_size")  # the training input side, by data module


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the config key(s) to change."""


class DataError(ConfigError):
    """Data the configuration points at that cannot be read; the message names the file or folder."""


def requested_devices(devices: Any) -> int | None:
    """How many devices ``trainer.devices`` asks for (``None``: "auto"/"-1", i.e. whatever there is)."""
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices)
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return None
    if "," in text:
        return len([part for part in text.split(",") if part.strip()])
    return int(text)


def check_devices(accelerator: Any, devices: Any, available: int | None = None) -> None:
    """Reject asking a GPU accelerator for more GPUs than the machine has, naming both keys.

    ``accelerator: auto`` (the real-data configs) with several devices on a machine without a GPU
    would quietly start that many CPU processes; that is refused too, unless asked for by
    ``accelerator: cpu``.
    """
    count = torch.cuda.device_count() if available is None else available
    wanted = requested_devices(devices)
    if str(accelerator) == "auto" and count == 0 and wanted is not None and wanted > 1:
        raise ConfigError(
            f"trainer.devices={devices} with trainer.accelerator=auto: this machine has no GPU, so that "
            f"would start {wanted} CPU processes. Use --trainer.devices 1, or say --trainer.accelerator cpu "
            f"--trainer.strategy ddp to run {wanted} CPU processes on purpose"
        )
    if str(accelerator) not in GPU_ACCELERATORS:
        return  # CPU "devices" are processes: any number runs
    if count == 0 or (wanted is not None and wanted > count):
        raise ConfigError(
            f"trainer.devices={devices} with trainer.accelerator={accelerator} needs "
            f"{wanted or 'at least one'} GPU(s), but this machine has {count}. "
            + (f"Use --trainer.devices {count} or fewer." if count else "Use --trainer.accelerator cpu.")
            + " Several processes on CPU: --trainer.accelerator cpu --trainer.devices N --trainer.strategy ddp"
        )


ARCHITECTURE_KEYS = ("patch_size", "embed_dim", "depth", "num_heads")  # a custom shape: no timm tag applies


def backbone_normalization(backbone: Mapping[str, Any]) -> Normalization | None:
    """``(mean, std)`` timm records for the backbone's pretrained tag, when its weights are that tag's.

    ``None`` for a model without pretrained weights or with a custom shape (the embedded demos'
    small ViTs, pre-trained here on ImageNet-normalised inputs), or a name timm has no config for.
    """
    if any(backbone.get(key) is not None for key in ARCHITECTURE_KEYS):
        return None
    if not (backbone.get("weights") or backbone.get("pretrained")):
        return None
    try:
        pretrained = timm.get_pretrained_cfg(str(backbone.get("model_name")))
    except (RuntimeError, ValueError):
        return None
    if pretrained is None or not pretrained.mean or not pretrained.std:
        return None
    return tuple(pretrained.mean), tuple(pretrained.std)


def fill_normalization(data_args: MutableMapping[str, Any], backbone: Mapping[str, Any]) -> None:
    """Set ``data.init_args.mean/std`` from the backbone's tag when the config leaves both unset.

    ImageNet statistics are right for DINO but not for timm's default ViT-B/16 (augreg: 0.5 / 0.5)
    or CLIP; a frozen or fine-tuned backbone fed inputs scaled another way silently loses accuracy.
    Values the config gives are kept.
    """
    if "mean" not in data_args or data_args.get("mean") is not None or data_args.get("std") is not None:
        return
    normalization = backbone_normalization(backbone)
    if normalization is not None:
        data_args["mean"], data_args["std"] = (list(channels) for channels in normalization)
        rank_zero_info(
            f"tmtcam: data.init_args.mean/std from {backbone.get('model_name')}'s timm config: "
            f"mean {normalization[0]}, std {normalization[1]}"
        )


def check_schedule_length(model_max_epochs: Any, trainer_max_epochs: Any) -> None:
    """A model's own LR-schedule length (``model.init_args.max_epochs``) must cover the trainer's run.

    A longer schedule is allowed (a run stopped early ends mid-cosine), a shorter one is not: the
    cosine would reach 0 there and the remaining epochs would train at learning rate 0, silently.
    """
    if not isinstance(model_max_epochs, int) or not isinstance(trainer_max_epochs, int):
        return
    if trainer_max_epochs > model_max_epochs:
        raise ConfigError(
            f"model.init_args.max_epochs={model_max_epochs} is shorter than trainer.max_epochs="
            f"{trainer_max_epochs}: the learning rate would be 0 for the last "
            f"{trainer_max_epochs - model_max_epochs} epochs. Leave model.init_args.max_epochs unset "
            f"(the schedule then follows trainer.max_epochs) or set it to {trainer_max_epochs}"
        )


def check_epoch_schedule(model: LightningModule, max_epochs: int | None) -> None:
    """A model whose LR schedule is counted in epochs (``lr_schedule_in_epochs``) needs
    ``trainer.max_epochs``: with ``trainer.max_steps`` alone Lightning sets it to -1 (unbounded)."""
    if getattr(model, "lr_schedule_in_epochs", False) and (max_epochs is None or max_epochs < 1):
        raise ConfigError(
            f"trainer.max_epochs is not set ({max_epochs}): {type(model).__name__}'s warm-up + cosine LR "
            f"schedule is counted in epochs, so trainer.max_steps alone cannot size it. Set "
            f"--trainer.max_epochs N (trainer.max_steps may stay, as a cap)"
        )


def check_input_geometry(model: LightningModule, datamodule: LightningDataModule | None) -> None:
    """The data's training image side must tile into patches, and the model must accept that size.

    Any module of the model may declare ``check_input_size(height, width)``, raising ``ValueError``
    with a message that names its own config key (e.g. k-means region counts larger than the number
    of patches); it is called here with the training crop. Models built lazily (at ``setup``, e.g. a
    classifier reading ``num_classes`` from the data) have no backbone yet; their input size is
    checked by the backbone at the first forward pass.
    """
    key, side = training_image_side(datamodule)
    if side is None:
        return
    for backbone in (module for module in model.modules() if isinstance(module, ViTBackbone)):
        patch = backbone.patch_size
        if side % patch:
            lower, upper = side // patch * patch, (side // patch + 1) * patch
            suggestion = f"{key}={lower} or {upper}" if lower else f"{key}={upper}"
            raise ConfigError(
                f"{key}={side} is not a multiple of the backbone patch size {patch} "
                f"(model.init_args.backbone: {backbone.model_name}, patch_size {patch}); use {suggestion}"
            )
    for module in model.modules():
        check_input_size = getattr(module, "check_input_size", None)
        if callable(check_input_size):
            try:
                check_input_size(side, side)
            except ValueError as error:
                raise ConfigError(f"{key}={side} does not suit the model: {error}") from error


def training_image_side(datamodule: LightningDataModule | None) -> tuple[str, int | None]:
    """``("data.init_args.<key>", side)`` of the data module's training crop, when it declares one."""
    hparams = getattr(datamodule, "hparams", None) or {}
    for name in IMAGE_SIZE_KEYS:
        value = hparams.get(name)
        if isinstance(value, int):
            return f"data.init_args.{name}", value
    return "", None


def check_data(
    model: LightningModule | None, datamodule: LightningDataModule | None, stage: str | None
) -> None:
    """The data the config names for ``stage`` is there and readable, before loggers write anything.

    A data module that declares ``check_folders(stage)`` (tmtcam's two do; it raises
    ``FileNotFoundError`` naming the config key and path) is then set up here: files indexed and
    paired, split lists read, ``verify`` run. A wrong suffix, an image without its mask or a split
    list naming a missing file is then one message, not a traceback after the run dir was created;
    Lightning's own ``setup`` call later finds the work done. Only the data modules' own error
    classes (and a missing file) count as bad data: any other exception from ``setup`` is a bug and
    keeps its traceback, instead of reading as "invalid data". Other data modules are left to
    Lightning (their ``setup`` may need ``prepare_data`` first). Last, a ``num_classes`` the model
    was given must be the data's.
    """
    check_folders = getattr(datamodule, "check_folders", None)
    if stage is None or not callable(check_folders):
        return
    try:
        check_folders(stage)
        datamodule.setup(stage)
    except (FileNotFoundError, SegmentationDataError, SpeciesDataError) as error:
        raise DataError(f"{type(error).__name__}: {error}") from error
    model_classes = (getattr(model, "hparams", None) or {}).get("num_classes")
    data_classes = getattr(datamodule, "num_classes", None)
    if model_classes is not None and data_classes is not None and int(model_classes) != int(data_classes):
        raise ConfigError(
            f"model.init_args.num_classes={model_classes} but the data has {data_classes} classes "
            f"({getattr(datamodule, 'class_names', None)}); make them agree"
        )
