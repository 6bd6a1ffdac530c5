"""Learning-rate schedules stepped per optimizer step (Lightning ``interval: step``), and the check of
the optimisation settings both tasks take."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear 1/warmup_steps -> 1 over ``warmup_steps`` (step 0 already learns), then
    cosine 1 -> 0 until ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> dict:
    """A Lightning ``lr_scheduler`` config for :func:`warmup_cosine_factor`, stepped every batch."""
    scheduler = LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps))
    return {"scheduler": scheduler, "interval": "step"}


def check_optimisation_settings(lr: float, **non_negative: float | None) -> None:
    """Refuse a learning rate <= 0 or a negative weight decay / warm-up / multiplier when the task is
    built, naming the key: the optimisers take them and train backwards, or not at all."""
    if not lr > 0:
        raise ValueError(f"model.init_args.lr must be > 0, got {lr}")
    for key, value in non_negative.items():
        if value is not None and value < 0:
            raise ValueError(f"model.init_args.{key} must be >= 0, got {value}")
