"""Fail early and clearly, and never lose what a run already wrote.

* :class:`RunDirGuard` checks, before any training step, that the run directory can be written and
  has room for checkpoints: a full disk found after an hour of training would cost that hour. It can
  also refuse a fresh run whose checkpoint folder already holds an earlier run's checkpoints, which
  the new run's ``last.ckpt`` would silently replace (resuming with ``--ckpt_path`` is allowed).
* :class:`NonFiniteLossGuard` stops at the first NaN/inf loss *before* backward, so the weights are
  never overwritten with NaN and the last good checkpoint stays the newest one on disk.
* :class:`LastCheckpoint` keeps ``last.ckpt``, except from a ``fast_dev_run`` smoke test.
"""

from __future__ import annotations

import math
import shutil
import uuid
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class TrainingFault(RuntimeError):
    """A run stopped on purpose because continuing would produce garbage or lose data."""


class NonFiniteLossGuard(Callback):
    """Raise :class:`TrainingFault` when the training loss is NaN or inf, naming the step.

    Under DDP every rank learns whether *any* rank's loss is not finite (one boolean all-reduce per
    step) and all stop together: a rank stopping alone would leave the others waiting forever in the
    gradient all-reduce of that step's backward.
    """

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        value = float(loss.detach().float().item())
        anywhere = trainer.strategy.reduce_boolean_decision(not math.isfinite(value), all=False)
        if not anywhere:
            return
        where = (
            f"training loss is {value}"
            if not math.isfinite(value)
            else "training loss is not finite on another rank"
        )
        checkpoint = _newest_checkpoint(trainer)
        kept = (
            f"the last good checkpoint is kept at {checkpoint}"
            if checkpoint
            else "no checkpoint had been written yet"
        )
        raise TrainingFault(
            f"{where} at global step {trainer.global_step} (epoch {trainer.current_epoch}); "
            f"stopped before the weights were updated, {kept}. Try: a lower learning rate "
            f"(model.init_args.lr), gradient clipping (--trainer.gradient_clip_val 1.0), precision 32 "
            f"(--trainer.precision 32-true), and check the batch for corrupt inputs/labels."
        )


class RunDirGuard(Callback):
    """Reject an unwritable or nearly full run directory at setup, before any work is done.

    Rank 0 checks and every rank raises the same error: one rank stopping alone would leave the
    others waiting forever in their next collective.

    Args:
        min_free_mib: free space the run directory must have.
        refuse_existing_checkpoints: stop a run that does not resume (no ``ckpt_path``) when its
            checkpoint folder already holds ``*.ckpt`` files of an earlier run.
    """

    def __init__(self, min_free_mib: int = 256, refuse_existing_checkpoints: bool = False) -> None:
        self.min_free_mib = min_free_mib
        self.refuse_existing_checkpoints = refuse_existing_checkpoints

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        problem = None
        if trainer.global_rank == 0:
            try:
                check_writable_dir(Path(trainer.default_root_dir), self.min_free_mib)
            except TrainingFault as fault:
                problem = str(fault)
        _raise_on_every_rank(trainer, problem)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Checkpoint folders are known here (``ModelCheckpoint.setup`` has run) and nothing is saved yet."""
        if not self.refuse_existing_checkpoints or trainer.ckpt_path:
            return
        problem = None
        if trainer.global_rank == 0:
            problem = earlier_checkpoints_problem(
                [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
            )
        _raise_on_every_rank(trainer, problem)


def earlier_checkpoints_problem(folders: list[Path]) -> str | None:
    """A message naming the first folder that already holds ``*.ckpt`` files, else ``None``."""
    for folder in folders:
        existing = sorted(path.name for path in folder.glob("*.ckpt")) if folder.is_dir() else []
        if existing:
            shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
            return (
                f"checkpoint folder {folder} already holds checkpoints of an earlier run ({shown}) that this "
                f"new run would overwrite. Resume that run with --ckpt_path last, or start the new one in "
                f"another folder with --trainer.default_root_dir"
            )
    return None


def _raise_on_every_rank(trainer: Trainer, problem: str | None) -> None:
    problem = trainer.strategy.broadcast(problem) if trainer.world_size > 1 else problem
    if problem:
        raise TrainingFault(problem)


def check_writable_dir(directory: Path, min_free_mib: int = 256) -> None:
    """Raise :class:`TrainingFault` naming ``directory`` if it cannot hold a run's outputs."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise TrainingFault(
            f"run directory {directory} is not writable ({err.strerror or err}); "
            f"choose another with --trainer.default_root_dir"
        ) from err
    free_mib = shutil.disk_usage(directory).free / 2**20
    if free_mib < min_free_mib:
        raise TrainingFault(
            f"run directory {directory} has only {free_mib:.0f} MiB free (< {min_free_mib} MiB needed for "
            f"checkpoints and logs); free space or choose another --trainer.default_root_dir"
        )


def _newest_checkpoint(trainer: Trainer) -> str | None:
    """This run's newest checkpoint, else the one it resumed from (its log dir may be a new one)."""
    paths = [cb.last_model_path or cb.best_model_path for cb in trainer.checkpoint_callbacks]
    paths.append(str(trainer.ckpt_path) if trainer.ckpt_path else "")
    existing = [p for p in paths if p and Path(p).is_file()]
    return existing[0] if existing else None


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` only (no second, monitored copy), and none from a ``fast_dev_run`` smoke test.

    Lightning skips every checkpoint under ``fast_dev_run`` except the one ``on_train_end`` writes for
    ``save_last`` (Lightning 2.6). That file made the run dir look like an earlier run's, so the real
    ``fit`` that follows a smoke test in the same run dir was refused (:func:`tmtcam.training.checked_cli.check_fresh_run_dir`).
    """

    def __init__(self) -> None:
        super().__init__(save_last=True, save_top_k=0)

    @property
    def state_key(self) -> str:
        """``ModelCheckpoint``'s key: checkpoints written before this class existed (a run resumed, a
        SLURM ``hpc_ckpt``) restore its state, and older code can read the new ones."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)
