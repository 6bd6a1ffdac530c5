"""Refuse a checkpoint written by another task or for another label set, in words, not a shape dump.

Loading a 19-class segmentation checkpoint into a 200-class classifier otherwise fails deep inside
``load_state_dict`` with dozens of "size mismatch" lines. Tasks call :func:`stamp_checkpoint` in
``on_save_checkpoint`` and :func:`check_checkpoint` in ``on_load_checkpoint`` (which Lightning runs
before restoring the weights).
"""

from __future__ import annotations

from typing import Any

from torch import nn

STAMP_KEY = "tmtcam"


class CheckpointMismatch(RuntimeError):
    """The checkpoint belongs to a different task or configuration."""


def stamp_checkpoint(checkpoint: dict[str, Any], module: nn.Module, num_classes: int) -> None:
    checkpoint[STAMP_KEY] = {"task": type(module).__name__, "num_classes": int(num_classes)}


def check_checkpoint(checkpoint: dict[str, Any], module: nn.Module, num_classes: int, source: str = "checkpoint") -> None:
    """Compare the stamp (and, for foreign checkpoints, the weight shapes) with ``module``."""
    stamp = checkpoint.get(STAMP_KEY)
    task = type(module).__name__
    if stamp is not None:
        if stamp.get("task") != task:
            raise CheckpointMismatch(
                f"{source} was written by task {stamp.get('task')!r}, not {task!r}; "
                f"use a checkpoint of a {task} run (or start without --ckpt_path)"
            )
        if stamp.get("num_classes") != num_classes:
            raise CheckpointMismatch(
                f"{source} has {stamp.get('num_classes')} classes but this run has {num_classes}; "
                f"the class set (dataset / num_classes) must match to resume or evaluate"
            )
    mismatched = shape_mismatches(checkpoint.get("state_dict", {}), module.state_dict())
    if mismatched:
        listed = ", ".join(f"{name} {got} vs {want}" for name, got, want in mismatched[:3])
        raise CheckpointMismatch(
            f"{source} does not fit this {task}: {len(mismatched)} weight shapes differ (e.g. {listed}); "
            f"was it trained with another backbone or number of classes?"
        )


def shape_mismatches(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, tuple, tuple]]:
    """(name, saved shape, current shape) for every weight present in both with different shapes."""
    out = []
    for name, tensor in saved.items():
        if name in current and hasattr(tensor, "shape") and tuple(tensor.shape) != tuple(current[name].shape):
            out.append((name, tuple(tensor.shape), tuple(current[name].shape)))
    return out
