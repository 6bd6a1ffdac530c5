"""Faults during a run, through the command line: a clear message, and nothing already written is lost.

``test_training_guards.py`` tests the guards on a bare Trainer; here they run as users meet them:
``tmtcam fit`` in a run dir that already holds a good run (checkpoints, config, CSV and W&B
offline logs), which must come out of the failed run byte for byte unchanged.
"""

from __future__ import annotations

import errno
import os
import pathlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from PIL import Image
from tiny_configs import TINY_BACKBONE, assert_nothing_lost, run_cli, snapshot, tmt_config, write_config
from torch.utils.data import DataLoader

from tmtcam.tasks import PromptCAMClassifier, TMTSegmentation
from tmtcam.training.checked_cli import check_fresh_run_dir
from tmtcam.training.checkpoint_compat import CheckpointMismatch
from tmtcam.training.config_logging import keep_earlier_config
from tmtcam.training.guards import earlier_checkpoints_problem
from tmtcam.training.preflight import ConfigError

BORING_DATA = "lightning.pytorch.demos.boring_classes.BoringDataModule"


class LossAtStep(BoringModel):
    """BoringModel whose loss becomes ``bad_value`` from global step ``bad_step`` on."""

    def __init__(self, bad_step: int = -1, bad_value: float = float("inf")) -> None:
        super().__init__()
        self.bad_step, self.bad_value = bad_step, bad_value

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)["loss"]
        self.log("train/loss", loss)
        return loss * self.bad_value if 0 <= self.bad_step <= self.global_step else loss


def boring_fit(root: Path, *extra: str, loggers: bool = True) -> list[str]:
    logger_args = [  # W&B first, as in experiments/: its log dir (config.yaml) is the shared save_dir
        "--trainer.logger+=WandbLogger", "--trainer.logger.save_dir", str(root), "--trainer.logger.offline", "true",
        "--trainer.logger+=CSVLogger", "--trainer.logger.save_dir", str(root),
    ] if loggers else ["--trainer.logger", "false"]  # fmt: skip
    return [
        "fit", "--model", f"{__name__}.LossAtStep", "--data", BORING_DATA,
        "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0", "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root), *logger_args, *extra,
    ]  # fmt: skip


def test_inf_loss_after_resume_names_the_step_and_leaves_the_earlier_run_untouched(
    tmp_path, capsys, monkeypatch
):
    wandb = pytest.importorskip("wandb")
    code, err = run_cli(boring_fit(tmp_path), capsys, monkeypatch)
    wandb.finish()  # a new process in real use; here the W&B run must be closed by hand
    assert code == 0, err[-3000:]
    before = snapshot(tmp_path)
    [last] = tmp_path.glob("lightning_logs/*/checkpoints/last.ckpt")  # the CLI's ModelCheckpoint, W&B run id
    assert {str(last.relative_to(tmp_path)), "config.yaml"} <= set(before)
    assert any(name.endswith("metrics.csv") for name in before) and any(
        "offline-run" in name for name in before
    )

    resumed = boring_fit(tmp_path, "--ckpt_path", "last", "--trainer.max_steps", "8", "--model.bad_step", "4")
    code, err = run_cli(resumed, capsys, monkeypatch)
    wandb.finish()

    assert code == 1, err[-3000:]
    assert "TrainingFault: training loss is inf at global step 4" in err
    kept = Path(re.search(r"last good checkpoint is kept at (\S+\.ckpt)", err).group(1))
    assert str(kept.relative_to(tmp_path)) in before, "the kept checkpoint must be one of the good run's"
    assert "--trainer.gradient_clip_val" in err and "model.init_args.lr" in err  # what to try
    assert_nothing_lost(tmp_path, before)
    assert torch.load(kept, weights_only=False)["global_step"] == 4


def test_a_diverging_tmt_run_stops_at_the_nan_loss_not_inside_k_means(tmp_path, capsys, monkeypatch):
    """With lr = 1e38 the weights become NaN after the first update; the next step's patch features
    are NaN before any loss. k-means used to raise on them (a traceback); now the loss guard names the step."""
    config = tmt_config(lr=1e38)
    config["trainer"]["max_steps"] = 6
    args = ["fit", "--config", str(write_config(tmp_path / "tmt.yaml", config)),
            "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    code, err = run_cli(args, capsys, monkeypatch)
    assert code == 1, err[-3000:]
    assert re.search(r"TrainingFault: training loss is nan at global step [1-5]\b", err), err[-3000:]
    assert "Traceback" not in err and "k-means" not in err


@pytest.mark.slow
def test_ddp_a_corrupt_image_on_one_process_is_the_one_error_shown(tmp_path):
    """The process that read the file names it; the other failed in its next all-reduce with gloo's
    "Connection closed by peer" and a 110-line traceback printed after (and burying) that line."""
    names = ["sky", "building", "road", "sidewalk", "vegetation", "vehicle", "person", "sign"]
    rng = np.random.default_rng(0)
    for folder in ("img", "ann"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for index in range(8):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / "data" / "img" / f"{index}.png"
        )
        Image.fromarray(rng.integers(0, 8, (32, 32), dtype=np.uint8)).save(
            tmp_path / "data" / "ann" / f"{index}.png"
        )
    broken = tmp_path / "data" / "img" / "3.png"
    broken.write_bytes(broken.read_bytes()[:60])
    domain = {"dataset": "folder", "root": str(tmp_path / "data"), "image_dir": "img", "mask_dir": "ann",
              "class_names": names}  # fmt: skip
    config = tmt_config()
    config["data"]["init_args"].update(target=domain, target_val=domain)
    config["trainer"]["max_steps"] = 4
    command = [sys.executable, "-m", "tmtcam", "fit", "--config", str(write_config(tmp_path / "c.yaml", config)),
               "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("tmtcam: error:")]
    assert errors == [
        f"tmtcam: error: CorruptImageError: cannot decode image {broken}: image file is truncated",
        "tmtcam: error: another DDP process stopped, so this one stopped too; that process's error above names the cause",
    ], result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_a_connection_error_outside_ddp_is_not_taken_for_a_lost_peer():
    """Only a DDP process (an initialised process group) can lose a peer; elsewhere the error is its own."""
    from tmtcam.cli import lost_a_peer

    assert not torch.distributed.is_initialized()
    assert not lost_a_peer(RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:41604"))


@pytest.mark.parametrize("loggers", [False, True], ids=["no_logger", "wandb_and_csv"])
def test_a_fresh_run_in_a_run_dir_with_an_earlier_run_is_refused(tmp_path, capsys, monkeypatch, loggers):
    """Also when W&B would give the new run its own folder: --ckpt_path last would then resume the
    wrong run. Refused before anything is written: the earlier run's config.yaml stays in place."""
    if loggers:
        wandb = pytest.importorskip("wandb")
    code, err = run_cli(
        boring_fit(tmp_path, "--trainer.max_steps", "1", loggers=loggers), capsys, monkeypatch
    )
    if loggers:
        wandb.finish()
    assert code == 0, err[-3000:]
    before = snapshot(tmp_path)
    code, err = run_cli(
        boring_fit(tmp_path, "--trainer.max_steps", "1", loggers=loggers), capsys, monkeypatch
    )
    assert code == 2, err[-3000:]
    [last] = tmp_path.rglob("last.ckpt")
    assert f"trainer.default_root_dir={tmp_path} already holds an earlier run ({last})" in err
    assert "--ckpt_path last" in err and "--trainer.default_root_dir" in err
    assert_nothing_lost(tmp_path, before)
    assert set(snapshot(tmp_path)) == set(before)  # not even a new log folder or a moved config


def test_run_guard_refuses_a_new_run_over_its_own_checkpoint_folder(tmp_path):
    """Without a run dir to search (trainer.default_root_dir unset) the new run's own checkpoint
    folder is still checked before its first save."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert earlier_checkpoints_problem([folder]) is None
    (folder / "last.ckpt").write_bytes(b"x")
    problem = earlier_checkpoints_problem([tmp_path / "elsewhere", folder])
    assert problem.startswith(
        f"checkpoint folder {folder} already holds checkpoints of an earlier run (last.ckpt)"
    )


def test_a_slurm_requeue_restoring_hpc_ckpt_is_not_a_fresh_run(tmp_path):
    (tmp_path / "lightning_logs").mkdir()
    (tmp_path / "lightning_logs" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="already holds an earlier run"):
        check_fresh_run_dir(str(tmp_path), None)
    check_fresh_run_dir(str(tmp_path), str(tmp_path / "lightning_logs" / "last.ckpt"))  # resuming
    check_fresh_run_dir(None, None)  # the working directory is not searched
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"x")  # Lightning restores this by itself
    check_fresh_run_dir(str(tmp_path), None)


@pytest.mark.parametrize("fault", ["file_in_the_way", "disk_full_on_write", "too_little_free_space"])
def test_unusable_run_dir_is_refused_before_training(tmp_path, capsys, monkeypatch, fault):
    root = tmp_path / "run"
    if fault == "file_in_the_way":
        tmp_path.joinpath("blocker").write_text("a file, not a folder")
        root = tmp_path / "blocker" / "run"
        expected = "is not writable (Not a directory)"
    elif fault == "disk_full_on_write":

        def no_space(self, data):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))

        monkeypatch.setattr(pathlib.Path, "write_bytes", no_space)
        expected = "is not writable (No space left on device)"
    else:
        usage = shutil.disk_usage(tmp_path)
        monkeypatch.setattr(
            "tmtcam.training.guards.shutil.disk_usage", lambda _: usage._replace(free=10 * 2**20)
        )
        expected = "has only 10 MiB free"
    code, err = run_cli(boring_fit(root, loggers=False), capsys, monkeypatch)
    assert code == 1, err[-3000:]
    assert f"TrainingFault: run directory {root} {expected}" in err and "--trainer.default_root_dir" in err
    assert not (root / "checkpoints").exists() and not (root / "config.yaml").exists()


def _save_checkpoint(model: L.LightningModule, batches: list[dict], path: Path) -> Path:
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=path.parent,
    )  # fmt: skip
    trainer.fit(model, DataLoader(batches, batch_size=None))
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def foreign_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A Prompt-CAM checkpoint, a 6-class TMT checkpoint and a truncated copy of the latter."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    classifier = PromptCAMClassifier(TINY_BACKBONE, num_classes=4, heatmap_images=0, warmup_epochs=0)
    promptcam = _save_checkpoint(
        classifier, [{"image": images, "label": torch.tensor([0, 1])}], folder / "promptcam.ckpt"
    )
    segmenter = TMTSegmentation(num_classes=6, backbone=TINY_BACKBONE, method="finetune")
    tmt6 = _save_checkpoint(
        segmenter, [{"image": images, "mask": torch.zeros(2, 32, 32).long()}], folder / "tmt6.ckpt"
    )
    truncated = folder / "truncated.ckpt"
    truncated.write_bytes(tmt6.read_bytes()[: tmt6.stat().st_size // 2])
    weights = folder / "weights.pth"
    torch.save(segmenter.state_dict(), weights)
    return {"promptcam": promptcam, "tmt6": tmt6, "truncated": truncated, "weights": weights}


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [
        (
            "promptcam",
            "was written by task 'PromptCAMClassifier', but this run's model is tmtcam.tasks.TMTSegmentation",
        ),
        ("tmt6", "has 6 classes but this run has 8 (model.init_args.num_classes)"),
        ("truncated", "cannot be read as a checkpoint"),
        ("weights", "is not a Lightning checkpoint (a bare state dict or weights file?)"),
    ],
    ids=["promptcam_into_tmt", "6_into_8_classes", "truncated", "state_dict"],
)
@pytest.mark.parametrize("command", ["fit", "validate"])
def test_checkpoint_of_another_task_or_class_count_is_refused_in_words(
    tmp_path, capsys, monkeypatch, foreign_checkpoints, checkpoint, expected, command
):
    path = foreign_checkpoints[checkpoint]
    config = write_config(tmp_path / "tmt.yaml", tmt_config())
    args = [
        command,
        "--config",
        str(config),
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--ckpt_path",
        str(path),
    ]
    code, err = run_cli(args, capsys, monkeypatch)
    assert code == 1, err[-3000:]
    assert f"CheckpointMismatch: --ckpt_path {path}" in err and expected in err
    assert "size mismatch" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["fit", "test", "predict"])
def test_a_ckpt_path_that_is_no_file_is_refused_before_the_run_dir_is_written(
    tmp_path, capsys, monkeypatch, command
):
    config = write_config(tmp_path / "tmt.yaml", tmt_config())
    run = [command, "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "run")]
    missing = tmp_path / "nope.ckpt"
    code, err = run_cli([*run, "--ckpt_path", str(missing)], capsys, monkeypatch)
    assert code == 2 and f"--ckpt_path {missing}: no such checkpoint file" in err, err[-3000:]
    folder = tmp_path / "old_run"
    folder.mkdir()
    code, err = run_cli([*run, "--ckpt_path", str(folder)], capsys, monkeypatch)
    assert code == 2 and f"--ckpt_path last --trainer.default_root_dir {folder}" in err, err[-3000:]
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_ckpt_path_values_lightning_resolves_itself_are_passed_on_unchecked():
    from tmtcam.training.checked_cli import lightning_resolves

    for value in (
        "last",
        "best",
        "hpc",
        "registry:my-model:latest",
        "s3://bucket/run/last.ckpt",
        "https://x/y.ckpt",
    ):
        assert lightning_resolves(value), value
    for value in ("runs/x/last.ckpt", "last.ckpt", "/abs/best.ckpt"):
        assert not lightning_resolves(value), value


def test_a_mismatched_checkpoint_is_refused_by_the_task_without_the_cli(tmp_path, foreign_checkpoints):
    """Python users (``trainer.fit(ckpt_path=...)``) get the same words from the task's own check."""
    model = TMTSegmentation(num_classes=8, backbone=TINY_BACKBONE, method="finetune")
    trainer = L.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    batches = [{"image": torch.randn(2, 3, 32, 32), "mask": torch.zeros(2, 32, 32).long()}]
    with pytest.raises(CheckpointMismatch, match="has 6 classes but this run has 8"):
        trainer.fit(model, DataLoader(batches, batch_size=None), ckpt_path=foreign_checkpoints["tmt6"])


def test_a_differing_earlier_config_is_moved_aside_not_overwritten(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model: a\n")
    assert keep_earlier_config(path, "model: a\n") is None and path.read_text() == "model: a\n"
    moved = keep_earlier_config(path, "model: b\n")
    assert moved is not None and moved.name.startswith("config-") and moved.read_text() == "model: a\n"
    assert not path.exists()
    # a second differing config in the same second keeps the first one moved aside, too
    path.write_text("model: b\n")
    os.utime(path, (moved.stat().st_mtime, moved.stat().st_mtime))  # same timestamp as the first
    again = keep_earlier_config(path, "model: c\n")
    assert again is not None and again != moved and again.read_text() == "model: b\n"
    assert moved.read_text() == "model: a\n"
    path.write_text("model: c\n")  # and a third: both earlier ones stay
    os.utime(path, (moved.stat().st_mtime, moved.stat().st_mtime))
    third = keep_earlier_config(path, "model: d\n")
    assert len({moved, again, third}) == 3 and third.read_text() == "model: c\n"
    assert (moved.read_text(), again.read_text()) == ("model: a\n", "model: b\n")


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_that_breaks_mid_run_stops_with_one_line_naming_it(tmp_path, capsys, monkeypatch, workers):
    """Decoding is per item (indexing 25k files must stay cheap), so a corrupt image surfaces in
    training; it is a message naming the file (exit 1), not a DataLoader traceback."""
    root = tmp_path / "mine"
    for folder in ("images", "labels"):
        (root / folder).mkdir(parents=True)
    for name in ("a", "b"):
        Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(root / "labels" / f"{name}.png")
    broken = root / "images" / "b.png"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated: the header survives, the pixels do not
    config = tmt_config()
    config["data"]["init_args"]["num_workers"] = workers  # in a worker PyTorch wraps it in its traceback
    config["data"]["init_args"]["target"] = {
        "dataset": "folder", "root": str(root), "image_dir": "images", "mask_dir": "labels",
        "class_names": ["sky", "building", "road", "sidewalk", "vegetation", "vehicle", "person", "sign"],
    }  # fmt: skip
    args = ["fit", "--config", str(write_config(tmp_path / "c.yaml", config))]
    code, err = run_cli([*args, "--trainer.default_root_dir", str(tmp_path / "run")], capsys, monkeypatch)
    assert code == 1, err[-2000:]
    (line,) = [line for line in err.splitlines() if line.startswith("tmtcam: error:")]
    assert re.match(r"tmtcam: error: CorruptImageError: cannot decode image .*b\.png", line), err[-2000:]
    assert "Traceback" not in err
