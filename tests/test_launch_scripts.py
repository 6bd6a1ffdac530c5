"""The launch scripts in experiments/slurm/, run as a user runs them, twice: the second run (a
requeued SLURM job, or torchrun.sh started again with --ckpt_path last) must find the first one's
run dir and resume it.

train.sbatch runs under a stand-in ``srun``; torchrun.sh starts two CPU processes (DDP on gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_configs import tmt_config, write_config

SCRIPTS = Path(__file__).resolve().parents[1] / "experiments" / "slurm"


def _submit(
    work: Path, config: Path, max_steps: int, *extra: str, job_id: str = "4242", run_dir: str | None = None
) -> subprocess.CompletedProcess:
    """One run of the job script: job ``job_id``, one node, one task, `srun` running the command as is."""
    env = dict(
        os.environ,
        PATH=f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}",
        SLURM_JOB_NAME="tmtcam", SLURM_JOB_ID=job_id, SLURM_JOB_NUM_NODES="1", SLURM_NTASKS_PER_NODE="1",
    )  # fmt: skip
    for name in [name for name in env if name.startswith("WANDB_")]:  # a job starts with none of this
        env.pop(name)  # process's W&B state, e.g. WANDB_SERVICE of an earlier test's in-process run
    env.pop("RUN_DIR", None)
    if run_dir is not None:
        env["RUN_DIR"] = run_dir
    overrides = ["--trainer.accelerator", "cpu", "--trainer.max_steps", str(max_steps), *extra]
    return subprocess.run(
        ["bash", str(SCRIPTS / "train.sbatch"), str(config), *overrides],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _stand_in_srun(work: Path) -> None:
    """``srun`` that runs its command as is, first on the scripts' PATH."""
    (work / "bin").mkdir()
    srun = work / "bin" / "srun"
    srun.write_text('#!/bin/sh\nexec "$@"\n')
    srun.chmod(0o755)


def _workdir_config(work: Path, config: dict | None = None) -> Path:
    """A tiny TMT config (or ``config``), and the ``.venv`` the scripts call (this interpreter's environment)."""
    (work / ".venv").symlink_to(Path(sys.prefix))
    return write_config(work / "tmt.yaml", config or tmt_config())


@pytest.mark.slow
def test_a_requeued_job_resumes_its_run_dir(tmp_path):
    _stand_in_srun(tmp_path)
    config = _workdir_config(tmp_path)

    first = _submit(tmp_path, config, max_steps=2)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tmtcam-4242"
    (last,) = run_dir.rglob("last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == 2

    requeued = _submit(tmp_path, config, max_steps=4)  # same job id, more steps: resumes, then goes on
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert (
        "Restoring states from the checkpoint" in requeued.stderr or "Restored all states" in requeued.stderr
    )
    assert list(run_dir.rglob("last.ckpt")) == [last]
    assert torch.load(last, weights_only=False)["global_step"] == 4
    assert (tmp_path / "runs" / "slurm").is_dir()  # where #SBATCH --output puts the job log


@pytest.mark.slow
def test_a_later_job_given_the_same_run_dir_continues_its_wandb_run(tmp_path):
    """``RUN_DIR=runs/tmtcam-4242 sbatch ...`` (a new job id) resumes the run there and keeps its W&B run,
    so the checkpoints stay in one folder; it used to start W&B run tmtcam-<new job> beside the old."""
    pytest.importorskip("wandb")
    _stand_in_srun(tmp_path)
    config = _workdir_config(tmp_path)
    wandb_logger = ("--trainer.logger", "WandbLogger", "--trainer.logger.offline", "true")
    first = _submit(tmp_path, config, 2, *wandb_logger)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tmtcam-4242"
    (last,) = run_dir.rglob("last.ckpt")
    assert last.parent.parent.name == "tmtcam-4242"  # <project>/<W&B run id>/checkpoints

    later = _submit(tmp_path, config, 4, *wandb_logger, job_id="5151", run_dir="runs/tmtcam-4242")
    assert later.returncode == 0, later.stderr[-3000:]
    assert list(run_dir.rglob("last.ckpt")) == [last]  # the same W&B run and folder, not a second one
    assert torch.load(last, weights_only=False)["global_step"] == 4
    assert not (tmp_path / "runs" / "tmtcam-5151").exists()


@pytest.mark.slow
def test_a_csv_logger_first_does_not_lend_its_version_folder_to_wandb(tmp_path):
    """With CSV first, checkpoints sit in lightning_logs/version_N/: that folder is no W&B run id, so a
    later job's W&B run is named after the job, not ``version_0``."""
    pytest.importorskip("wandb")
    _stand_in_srun(tmp_path)
    config = tmt_config()
    config["trainer"]["logger"] = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "."}},
        {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {"offline": True}},
    ]
    path = _workdir_config(tmp_path, config)
    assert _submit(tmp_path, path, 2).returncode == 0
    later = _submit(tmp_path, path, 4, job_id="5151", run_dir="runs/tmtcam-4242")
    assert later.returncode == 0, later.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tmtcam-4242"
    assert (run_dir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))  # offline-run-<time>-<id>
    assert [name.endswith(("-tmtcam-4242", "-tmtcam-5151")) for name in runs] == [True, True], runs
    assert any(name.endswith("-tmtcam-5151") for name in runs), runs


def _torchrun(work: Path, config: Path, max_steps: int, *extra: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if not name.startswith("WANDB_")}
    env.update(NPROC="2", RUN_DIR=str(work / "run"), WANDB_MODE="offline")
    overrides = ["--trainer.accelerator", "cpu", "--trainer.max_steps", str(max_steps), *extra]
    return subprocess.run(
        ["bash", str(SCRIPTS / "torchrun.sh"), str(config), *overrides],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_torchrun_script_trains_on_two_processes_and_resumes_only_when_asked(tmp_path):
    """With W&B first (offline), the resumed run continues the first one's W&B run and checkpoint
    folder; the id is W&B's own, not one fixed by the run dir's name (a run dir deleted and started
    again online would then append to the old W&B run)."""
    pytest.importorskip("wandb")
    config = tmt_config()
    config["trainer"]["logger"] = [{"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {}}]
    config = _workdir_config(tmp_path, config)
    first = _torchrun(tmp_path, config, max_steps=2)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "MEMBER: 2/2" in first.stdout + first.stderr  # Lightning saw both torchrun processes
    (last,) = (tmp_path / "run").rglob("last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == 2
    run_id = last.parent.parent.name
    assert run_id != "tmtcam-run" and last.parent.parent.parent.name == "lightning_logs", last
    unasked = _torchrun(tmp_path, config, max_steps=4)  # e.g. stage 2 of the same config: refused
    assert unasked.returncode != 0 and "Resume that run with --ckpt_path last" in unasked.stderr
    again = _torchrun(tmp_path, config, 4, "--ckpt_path", "last")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Restoring states from the checkpoint" in again.stderr or "Restored all states" in again.stderr
    assert torch.load(last, weights_only=False)["global_step"] == 4
    assert [p.parent.parent.name for p in (tmp_path / "run").rglob("last.ckpt")] == [run_id]
    runs = sorted(p.name for p in (tmp_path / "run").rglob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(f"-{run_id}") for name in runs), runs
