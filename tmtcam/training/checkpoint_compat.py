"""Refuse a checkpoint written by another task or for another label set, in words, not a shape dump.

Loading a 19-class segmentation checkpoint into a 200-class classifier otherwise fails deep inside
``load_state_dict`` with dozens of "size mismatch" lines. Tasks call :func:`stamp_checkpoint` in
``on_save_checkpoint`` and :func:`check_checkpoint` in ``on_load_checkpoint`` (which Lightning runs
before restoring the weights). The CLI also calls :func:`check_checkpoint_file` as soon as the
arguments are parsed: LightningCLI copies a checkpoint's hyper-parameters over the config, so a
6-class checkpoint would otherwise turn an 8-class run into a 6-class one before any check runs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

STAMP_KEY = "tmtcam"
BACKBONE_WEIGHTS_KEY = "tmtcam_backbone_weights"


class CheckpointMismatch(RuntimeError):
    """The checkpoint belongs to a different task or configuration."""


def stamp_checkpoint(checkpoint: dict[str, Any], module: nn.Module, num_classes: int) -> None:
    checkpoint[STAMP_KEY] = {"task": type(module).__name__, "num_classes": int(num_classes)}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 16 MiB chunks (a ViT-B state dict, 350 MB, takes ~0.5 s)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def stamp_backbone_weights(checkpoint: dict[str, Any], weights: str | None, sha256: str | None) -> None:
    """Record which backbone weights file (path and content) a checkpoint's prompts were trained on.

    Checkpoints of a frozen backbone with a weights file keep only the prompts and head and rebuild
    the backbone from ``weights``; if that file is later replaced (the demo rewrites its pre-trained backbone when its
    settings change), the prompts would be run and explained on another backbone without a word.
    """
    if weights is not None and sha256 is not None:
        checkpoint[BACKBONE_WEIGHTS_KEY] = {"weights": weights, "sha256": sha256}


def check_backbone_weights(
    checkpoint: dict[str, Any], sha256: str | None, source: str = "checkpoint"
) -> None:
    """Refuse a checkpoint whose backbone weights file now holds other weights than it was trained on."""
    saved = checkpoint.get(BACKBONE_WEIGHTS_KEY)
    if saved is None or sha256 is None or saved["sha256"] == sha256:
        return
    raise CheckpointMismatch(
        f"{source} was trained on the backbone weights in {saved['weights']} (sha256 {saved['sha256'][:12]}), "
        f"but the weights file given now has sha256 {sha256[:12]}: the file was replaced or is another one. "
        f"Give the original weights file (model.init_args.backbone.weights) or train the prompts again"
    )


def check_checkpoint(
    checkpoint: dict[str, Any], module: nn.Module, num_classes: int, source: str = "checkpoint"
) -> None:
    """Compare the stamp (and, for foreign checkpoints, the weight shapes) with ``module``."""
    stamp = checkpoint.get(STAMP_KEY)
    task = type(module).__name__
    if stamp is not None:
        if stamp.get("task") != task:
            raise CheckpointMismatch(
                f"{source} was written by task {stamp.get('task')!r}, not {task!r}; "
                f"use a checkpoint of a {task} run"
            )
        if stamp.get("num_classes") != num_classes:
            raise CheckpointMismatch(
                f"{source} has {stamp.get('num_classes')} classes but this run has {num_classes}; "
                f"the class set (dataset / num_classes) must match"
            )
    mismatched = shape_mismatches(checkpoint.get("state_dict", {}), module.state_dict())
    if mismatched:
        listed = ", ".join(f"{name} {got} vs {want}" for name, got, want in mismatched[:3])
        raise CheckpointMismatch(
            f"{source} does not fit this {task}: {len(mismatched)} weight shapes differ (e.g. {listed}); "
            f"was it trained with another backbone or number of classes?"
        )


def mapped_checkpoint(path: str | Path) -> Any:
    """A checkpoint file's contents, memory-mapped: reading its metadata (stamp, hyper-parameters,
    state-dict keys) reads no weights, which stay on disk until a tensor is touched."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def check_checkpoint_file(
    path: str | Path, class_path: str | None, num_classes: int | None, source: str = "--ckpt_path"
) -> None:
    """Refuse, before anything is built, a checkpoint file of another task or number of classes.

    ``class_path`` and ``num_classes`` are the run's configured model (``None``: not known, not
    checked). Unstamped checkpoints pass: they are checked by shape when the weights are loaded.
    """
    try:
        checkpoint = mapped_checkpoint(path)
    except Exception as err:  # zip / pickle errors of a truncated or foreign file
        reason = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointMismatch(
            f"{source} {path}: cannot be read as a checkpoint ({type(err).__name__}: {reason}); "
            f"is it truncated (an interrupted save or copy) or not a Lightning .ckpt file?"
        ) from err
    if not isinstance(checkpoint, dict) or "pytorch-lightning_version" not in checkpoint:
        raise CheckpointMismatch(
            f"{source} {path} is not a Lightning checkpoint (a bare state dict or weights file?). "
            f"A run's .ckpt resumes or is evaluated; weights start a run: model.init_args.backbone.weights "
            f"(a backbone's) or, for TMT, model.init_args.init_checkpoint (a segmenter's)"
        )
    stamp = checkpoint.get(STAMP_KEY)
    if stamp is None:
        return
    task = class_path.rsplit(".", 1)[-1] if class_path else None
    if task is not None and stamp.get("task") != task:
        raise CheckpointMismatch(
            f"{source} {path} was written by task {stamp.get('task')!r}, but this run's model is {class_path}; "
            f"give a checkpoint of a {task} run"
            + (" (or start without --ckpt_path)" if source == "--ckpt_path" else "")
        )
    if num_classes is not None and stamp.get("num_classes") != num_classes:
        raise CheckpointMismatch(
            f"{source} {path} has {stamp.get('num_classes')} classes but this run has {num_classes} "
            f"(model.init_args.num_classes); the class set must match to resume or evaluate. To start "
            f"a new class set from its weights, use a fresh run (e.g. the task's init_checkpoint)"
        )


def shape_mismatches(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, tuple, tuple]]:
    """(name, saved shape, current shape) for every weight present in both with different shapes."""
    out = []
    for name, tensor in saved.items():
        if name in current and hasattr(tensor, "shape") and tuple(tensor.shape) != tuple(current[name].shape):
            out.append((name, tuple(tensor.shape), tuple(current[name].shape)))
    return out


def last_checkpoints(root: str | Path) -> list[Path]:
    """Every ``last*.ckpt`` anywhere under the run dir ``root``, newest first.

    Loggers put checkpoints in per-run folders (``<root>/<project>/<wandb id>/checkpoints``,
    ``<root>/lightning_logs/version_N/checkpoints``), so a run dir is searched, not one folder.
    """
    return sorted(Path(root).rglob("last*.ckpt"), key=lambda path: path.stat().st_mtime, reverse=True)


def newest_last_checkpoint(root: str | Path) -> Path | None:
    """The newest ``last*.ckpt`` anywhere under the run dir ``root`` (None if there is none)."""
    found = last_checkpoints(root)
    return found[0] if found else None


def checkpoint_in(path: str | Path, key: str) -> Path:
    """``path`` itself, or for a run directory its newest ``last*.ckpt``; an error naming ``key`` if neither."""
    path = Path(path)
    if not path.is_dir():
        if not path.is_file():
            raise FileNotFoundError(f"{key}: checkpoint not found: {path}")
        return path
    found = newest_last_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{key}: no last.ckpt under the folder {path}")
    return found


def check_optimizer_groups(checkpoint: dict[str, Any], groups: int) -> None:
    """Before a resume restores the optimiser: a checkpoint whose optimiser has another number of
    parameter groups (TMT's, from before TMA's beta got a group of its own without weight decay)
    is refused in words instead of torch's "different number of parameter groups" traceback."""
    states = checkpoint.get("optimizer_states") or []
    if states and len(states[0].get("param_groups", ())) != groups:
        raise CheckpointMismatch(
            f"this checkpoint's optimiser has {len(states[0]['param_groups'])} parameter groups and this "
            f"version's has {groups} (TMT: TMA's beta has had its own since it left weight decay), so the "
            f"run cannot resume from it; start a new run from its weights with model.init_args.init_checkpoint"
        )


def load_initial_weights(
    module: nn.Module, path: str | Path, num_classes: int, required_prefixes: tuple[str, ...], key: str
) -> None:
    """Start ``module`` from another run's weights: a Lightning checkpoint, a ``{"state_dict": ...}``
    file, a bare state dict, or a run dir (its newest ``last*.ckpt``: loggers put checkpoints in
    per-run folders whose names, a W&B id, are not known in advance).

    The weights under ``required_prefixes`` must all be there (e.g. a source model's backbone and
    decoder); others are taken where the file has them (a finetune model has no TMA parts). Read
    with ``weights_only``: a checkpoint from elsewhere cannot run code. ``key`` is the config key
    that named the file, for the messages.
    """
    path = checkpoint_in(path, key)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle/zip errors from a truncated or foreign file
        raise CheckpointMismatch(f"{key}: cannot read {path}: {error}") from error
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatch(f"{key}: {path} holds no state dict")
    checkpoint = saved if "state_dict" in saved else {"state_dict": state}
    check_checkpoint(checkpoint, module, num_classes, f"{key} {path}")
    own = module.state_dict()
    missing = [name for name in own if name.startswith(required_prefixes) and name not in state]
    if missing:
        raise CheckpointMismatch(
            f"{key} {path} lacks {len(missing)} weights under {', '.join(required_prefixes)} (e.g. {missing[0]}); "
            f"is it a checkpoint of a {type(module).__name__} run?"
        )
    module.load_state_dict({name: value for name, value in state.items() if name in own}, strict=False)
