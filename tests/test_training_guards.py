"""Training faults: NaN loss stops before the update and keeps the last good checkpoint; bad run dirs
and foreign checkpoints are rejected with messages that name the problem."""

import os
import time
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from torch import nn

from tmtcam.training.checkpoint_compat import (
    CheckpointMismatch,
    check_checkpoint,
    last_checkpoints,
    newest_last_checkpoint,
    stamp_checkpoint,
)
from tmtcam.training.guards import (
    LastCheckpoint,
    NonFiniteLossGuard,
    RunDirGuard,
    TrainingFault,
    check_writable_dir,
    earlier_checkpoints_problem,
)
from tmtcam.training.preflight import ConfigError, check_devices, check_schedule_length, fill_normalization


class NaNAtStep(BoringModel):
    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.bad_step = bad_step

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)["loss"]
        if self.global_step == self.bad_step:
            loss = loss * float("nan")
        return loss


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_steps=10,
        logger=False,
        enable_progress_bar=False,
        callbacks=[NonFiniteLossGuard(), checkpoints],
        limit_val_batches=0,
    )
    with pytest.raises(
        TrainingFault, match=r"loss is nan at global step 3 .*last good checkpoint is kept at .*last\.ckpt"
    ):
        trainer.fit(NaNAtStep(bad_step=3))
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 3
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())


def test_nan_loss_message_names_only_checkpoints_that_exist(tmp_path):
    """A checkpoint path Lightning remembers but that is gone (deleted, moved) must not be offered as kept."""
    gone = tmp_path / "ckpt" / "last.ckpt"  # never written
    resumed = tmp_path / "resumed.ckpt"
    resumed.write_bytes(b"checkpoint")
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, **_: decision),
        checkpoint_callbacks=[SimpleNamespace(last_model_path=str(gone), best_model_path="")],
        ckpt_path=str(resumed),
        global_step=4,
        current_epoch=1,
    )
    with pytest.raises(TrainingFault, match="last good checkpoint is kept at ") as caught:
        NonFiniteLossGuard().on_before_backward(trainer, None, torch.tensor(float("nan")))
    assert f"kept at {resumed}. Try" in str(caught.value) and str(gone) not in str(caught.value)
    gone.parent.mkdir()
    gone.write_bytes(b"newer checkpoint")  # written by this run after resuming: that one is offered
    with pytest.raises(TrainingFault, match="last good checkpoint is kept at ") as caught:
        NonFiniteLossGuard().on_before_backward(trainer, None, torch.tensor(float("nan")))
    assert f"kept at {gone}. Try" in str(caught.value)
    gone.unlink()
    trainer.ckpt_path = None
    with pytest.raises(TrainingFault, match="no checkpoint had been written yet") as caught:
        NonFiniteLossGuard().on_before_backward(trainer, None, torch.tensor(float("inf")))
    assert str(gone) not in str(caught.value)


def test_unwritable_run_dir_is_rejected_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    trainer = Trainer(default_root_dir=blocker / "run", max_steps=1, logger=False, callbacks=[RunDirGuard()])
    model = BoringModel()
    with pytest.raises(TrainingFault, match=r"a-file/run is not writable"):
        trainer.fit(model)
    assert trainer.global_step == 0


def test_too_little_free_space_names_the_dir(tmp_path):
    with pytest.raises(TrainingFault, match=rf"{tmp_path} has only .* MiB free"):
        check_writable_dir(tmp_path, min_free_mib=10**12)


class TaskA(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(4, classes)


class TaskB(TaskA):
    pass


def test_checkpoint_from_other_task_or_class_count_is_rejected_in_words():
    checkpoint = {"state_dict": TaskA(3).state_dict()}
    stamp_checkpoint(checkpoint, TaskA(3), num_classes=3)
    check_checkpoint(checkpoint, TaskA(3), num_classes=3)
    with pytest.raises(CheckpointMismatch, match="written by task 'TaskA', not 'TaskB'"):
        check_checkpoint(checkpoint, TaskB(3), num_classes=3)
    with pytest.raises(CheckpointMismatch, match="has 3 classes but this run has 5"):
        check_checkpoint(checkpoint, TaskA(5), num_classes=5)
    unstamped = {"state_dict": TaskA(3).state_dict()}
    with pytest.raises(CheckpointMismatch, match=r"head.weight \(3, 4\) vs \(5, 4\)"):
        check_checkpoint(unstamped, TaskA(5), num_classes=5)
    # a stamp that agrees (same task, same classes) does not excuse other shapes: another backbone
    wider = {"state_dict": nn.Linear(6, 3).state_dict()}
    wider["state_dict"] = {f"head.{name}": value for name, value in wider["state_dict"].items()}
    stamp_checkpoint(wider, TaskA(3), num_classes=3)
    with pytest.raises(
        CheckpointMismatch, match=r"1 weight shapes differ \(e\.g\. head.weight \(3, 6\) vs \(3, 4\)\)"
    ):
        check_checkpoint(wider, TaskA(3), num_classes=3)


def test_given_std_without_mean_is_not_replaced_by_the_backbones_statistics():
    """Only a config that leaves both unset is filled; a user's std alone must survive (and mean stay unset)."""
    backbone = {"model_name": "vit_base_patch16_224", "weights": "/w.pth"}  # augreg tag: 0.5 / 0.5
    given = {"mean": None, "std": [0.2, 0.3, 0.4]}
    fill_normalization(given, backbone)
    assert given == {"mean": None, "std": [0.2, 0.3, 0.4]}
    unset = {"mean": None, "std": None}
    fill_normalization(unset, backbone)
    assert unset == {"mean": [0.5] * 3, "std": [0.5] * 3}  # the same backbone does fill an unset pair


def test_a_schedule_one_epoch_shorter_than_the_run_is_refused():
    """The boundary: 4 scheduled epochs in a 5-epoch run leave the last epoch at learning rate 0."""
    with pytest.raises(
        ConfigError, match=r"max_epochs=4 is shorter than trainer.max_epochs=5.*last 1 epochs"
    ):
        check_schedule_length(4, 5)
    check_schedule_length(5, 5)


@pytest.mark.parametrize(
    ("accelerator", "available", "message"),
    [
        ("auto", 0, "trainer.devices=2 with trainer.accelerator=auto: this machine has no GPU"),
        ("gpu", 0, r"needs 2 GPU\(s\), but this machine has 0"),
        ("gpu", 1, r"needs 2 GPU\(s\), but this machine has 1"),
    ],
    ids=["auto-no-gpu", "gpu-no-gpu", "gpu-one-gpu"],
)
def test_two_devices_without_two_gpus_are_refused(accelerator, available, message):
    """Two devices is the smallest request that can exceed the machine; it must not slip through."""
    with pytest.raises(ConfigError, match=message):
        check_devices(accelerator, 2, available=available)


def test_the_newest_last_checkpoint_anywhere_under_the_run_dir_is_found(tmp_path):
    """--ckpt_path last must resume the latest run, whichever logger folder holds it."""
    paths = [
        tmp_path / "tmtcam" / "run-a" / "checkpoints" / "last.ckpt",
        tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last-v1.ckpt",
        tmp_path / "tmtcam" / "run-b" / "checkpoints" / "last.ckpt",
    ]
    for age, path in zip((300, 100, 200), paths, strict=True):  # seconds before now
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (time.time() - age, time.time() - age))
    assert newest_last_checkpoint(tmp_path) == paths[1]
    assert last_checkpoints(tmp_path) == [paths[1], paths[2], paths[0]]
    assert newest_last_checkpoint(tmp_path / "tmtcam" / "run-a" / "checkpoints") == paths[0]
    assert newest_last_checkpoint(tmp_path / "lightning_logs" / "missing") is None


def test_any_earlier_checkpoint_in_the_folder_is_named_and_the_write_probe_leaves_nothing(tmp_path):
    """A best-{step}.ckpt of an earlier run would be overwritten as surely as its last.ckpt."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert earlier_checkpoints_problem([folder, tmp_path / "missing"]) is None
    (folder / "best-step=000400.ckpt").write_bytes(b"x")
    assert (
        "already holds checkpoints of an earlier run (best-step=000400.ckpt)"
        in earlier_checkpoints_problem([folder])
    )
    check_writable_dir(tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == []  # the probe file is removed again


def test_the_cli_last_checkpoint_keeps_model_checkpoints_state_key():
    """Checkpoints written by the plain ModelCheckpoint (before LastCheckpoint existed, or a SLURM
    hpc_ckpt) restore its state under this key; a new class name would orphan it."""
    assert LastCheckpoint().state_key == ModelCheckpoint(save_last=True, save_top_k=0).state_key
    assert LastCheckpoint().state_key.startswith("ModelCheckpoint{")
