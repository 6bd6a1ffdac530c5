"""Kill a training process mid-epoch, resume with --ckpt_path last, finish with the same step count."""

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import wandb
from tiny_configs import TINY_BACKBONE, promptcam_config, run_cli, tmt_config, write_config

from tmtcam.backbones import ViTBackbone
from tmtcam.tasks import TMTSegmentation

TESTS = Path(__file__).parent


def fit_command(root: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tmtcam",
        "fit",
        "--model",
        "slow_boring.SlowBoringModel",
        "--data",
        "lightning.pytorch.demos.boring_classes.BoringDataModule",
        "--trainer.max_steps",
        "40",
        "--trainer.limit_val_batches",
        "0",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.callbacks+=ModelCheckpoint",
        "--trainer.callbacks.dirpath",
        str(root / "steps"),
        "--trainer.callbacks.every_n_train_steps",
        "5",
        "--trainer.callbacks.save_last",
        "true",
        *extra,
    ]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_step(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        fit_command(tmp_path, []), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    last = tmp_path / "steps" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if last.is_file() and torch.load(last, weights_only=False)["global_step"] >= 10:
            break
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(last, weights_only=False)["global_step"]
    assert 10 <= killed_at < 40, "the run must be killed mid-way for this test to mean anything"

    resumed = subprocess.run(
        fit_command(tmp_path, ["--ckpt_path", "last"]), env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, weights_only=False)["global_step"] == 40
    assert "Restoring states from the checkpoint" in resumed.stderr or "Restored all states" in resumed.stderr
    # the step checkpoints rotate as configured (save_top_k=1): the newest, at the final step, is there
    assert (tmp_path / "steps" / "epoch=0-step=40.ckpt").is_file()


def test_root_dir_on_the_command_line_moves_logs_and_checkpoints_and_feeds_stage_two(
    tmp_path, capsys, monkeypatch
):
    """A config's loggers pin ``save_dir``; ``--trainer.default_root_dir`` (as the SLURM script passes
    it, or from a second YAML) must still put logs and checkpoints in that run dir, where ``--ckpt_path last`` and
    ``init_checkpoint: <run dir>`` find them."""
    config = tmt_config()
    config_dir = str(tmp_path / "from_config")
    config["trainer"].update(
        default_root_dir=config_dir,
        logger=[{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": config_dir}}],
    )
    path = write_config(tmp_path / "tmt.yaml", config)
    job = tmp_path / "job"
    code, err = run_cli(
        ["fit", "--config", str(path), "--trainer.default_root_dir", str(job)], capsys, monkeypatch
    )
    assert code == 0, err
    assert list(job.rglob("last.ckpt")) and (job / "lightning_logs").is_dir()
    assert not (tmp_path / "from_config").exists()
    # the same when the run dir comes from a second YAML instead of the command line
    override = write_config(
        tmp_path / "run_dir.yaml", {"trainer": {"default_root_dir": str(tmp_path / "yaml")}}
    )
    code, err = run_cli(["fit", "--config", str(path), "--config", str(override)], capsys, monkeypatch)
    assert code == 0, err
    assert list((tmp_path / "yaml").rglob("last.ckpt")) and not (tmp_path / "from_config").exists()
    stage_two = ["fit", "--config", str(path), "--trainer.default_root_dir", str(tmp_path / "stage2")]
    code, err = run_cli([*stage_two, "--model.init_args.init_checkpoint", str(job)], capsys, monkeypatch)
    assert code == 0, err
    # what stage two starts from is stage one's last.ckpt (the run dir resolves to it), weight for weight
    stage_one = torch.load(next(job.rglob("last.ckpt")), weights_only=False)["state_dict"]
    started = TMTSegmentation(**config["model"]["init_args"], init_checkpoint=str(job)).state_dict()
    assert all(
        torch.equal(started[name], value)
        for name, value in stage_one.items()
        if name.startswith("segmenter.")
    )
    missing = tmp_path / "stage2" / "none"
    code, err = run_cli(
        [*stage_two[:3], "--model.init_args.init_checkpoint", str(missing)], capsys, monkeypatch
    )
    assert code == 2 and f"model.init_args.init_checkpoint: checkpoint not found: {missing}" in err, err[
        -2000:
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run_cli(
        [*stage_two[:3], "--model.init_args.init_checkpoint", str(empty)], capsys, monkeypatch
    )
    assert code == 2 and "init_checkpoint" in err and f"no last.ckpt under the folder {empty}" in err, err[
        -2000:
    ]


def test_a_fast_dev_run_smoke_test_leaves_no_checkpoint_to_block_the_real_run(tmp_path, capsys, monkeypatch):
    """Lightning writes ``last.ckpt`` at the end of a ``fast_dev_run``; the run dir then looked like an
    earlier run's, and the real ``fit`` after the smoke test was refused."""
    run = ["fit", "--config", str(write_config(tmp_path / "tmt.yaml", tmt_config())),
           "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    code, err = run_cli([*run, "--trainer.fast_dev_run", "true"], capsys, monkeypatch)
    assert code == 0, err[-2000:]
    assert not list((tmp_path / "run").rglob("*.ckpt"))
    code, err = run_cli([*run, "--trainer.max_steps", "1"], capsys, monkeypatch)
    assert code == 0, err[-2000:]
    assert len(list((tmp_path / "run").rglob("last.ckpt"))) == 1


@pytest.mark.parametrize("task", ["tmt", "promptcam"])
def test_model_settings_the_checkpoint_replaces_are_named_in_a_warning(tmp_path, capsys, monkeypatch, task):
    """LightningCLI rebuilds the model as the checkpoint was trained; a setting given with --ckpt_path
    was dropped without a word."""
    config = tmt_config() if task == "tmt" else promptcam_config(num_test_images=4)
    config["trainer"]["max_epochs"] = 1
    run = ["--config", str(write_config(tmp_path / "c.yaml", config)),
           "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    code, err = run_cli(["fit", *run], capsys, monkeypatch)
    assert code == 0, err[-2000:]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, err = run_cli(["test", *run, "--ckpt_path", "last"], capsys, monkeypatch)
    assert code == 0, err[-2000:]
    assert not [str(w.message) for w in caught if "were replaced by the checkpoint's" in str(w.message)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, err = run_cli(
            ["test", *run, "--ckpt_path", "last", "--model.init_args.lr", "0.5"], capsys, monkeypatch
        )
    assert code == 0, err[-2000:]
    (message,) = [str(w.message) for w in caught if "were replaced by the checkpoint's" in str(w.message)]
    assert "lr: 0.5 -> " in message and message.count(" -> ") == 1, message


def test_resuming_a_wandb_run_keeps_its_run_id_and_checkpoint_folder(tmp_path, capsys, monkeypatch):
    """Without the id read back from the checkpoint's path, the resumed run got a new W&B id, its
    checkpoints a new folder, and ModelCheckpoint forgot its best score ("dirpath has changed")."""
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    boring = "lightning.pytorch.demos.boring_classes"
    args = [
        "fit", "--model", f"{boring}.BoringModel", "--data", f"{boring}.BoringDataModule",
        "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger+=WandbLogger",
        "--trainer.logger.init_args.offline", "true", "--trainer.logger.init_args.project", "proj",
    ]  # fmt: skip
    code, err = run_cli([*args, "--trainer.max_steps", "2"], capsys, monkeypatch)
    assert code == 0, err[-2000:]
    (first,) = tmp_path.glob("proj/*/checkpoints/last.ckpt")
    wandb.finish()  # as when the first run's process ends (the logger would otherwise reuse wandb.run)
    with warnings.catch_warnings(record=True) as caught:  # Lightning warns, it does not print
        warnings.simplefilter("always")
        code, err = run_cli([*args, "--trainer.max_steps", "4", "--ckpt_path", "last"], capsys, monkeypatch)
    wandb.finish()  # or the next test's logger would pick up this run
    assert code == 0, err[-2000:]
    assert list(tmp_path.glob("proj/*/checkpoints")) == [first.parent]
    assert torch.load(first, weights_only=False)["global_step"] == 4
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    validate = ["validate", *args[1:], "--trainer.limit_val_batches", "1", "--ckpt_path", "last"]
    code, err = run_cli(validate, capsys, monkeypatch)  # its metrics join the same W&B run
    wandb.finish()
    assert code == 0, err[-2000:]
    assert [path.name for path in tmp_path.glob("proj/*")] == [first.parent.parent.name]
    names = [path.name for path in (tmp_path / "wandb").glob("offline-run-*")]  # offline-run-<time>-<id>[-n]
    run_ids = {re.match(r"offline-run-\d{8}_\d{6}-([a-z0-9]+)", name).group(1) for name in names}
    assert run_ids == {first.parent.parent.name}


def test_a_checkpoint_whose_files_moved_still_tests_and_takes_the_weights_file_given(
    tmp_path, capsys, monkeypatch
):
    """LightningCLI copies a checkpoint's model arguments over the command line's, file paths
    included: moving the stage-1 run or the weights file made a stage-2 checkpoint unusable."""
    weights = tmp_path / "vit.pth"
    torch.save(ViTBackbone(**TINY_BACKBONE).vit.state_dict(), weights)
    backbone = dict(TINY_BACKBONE, weights=str(weights))
    stage_one = write_config(tmp_path / "one.yaml", tmt_config(backbone=backbone))
    code, err = run_cli(
        ["fit", "--config", str(stage_one), "--trainer.default_root_dir", str(tmp_path / "s1")],
        capsys,
        monkeypatch,
    )
    assert code == 0, err[-2000:]
    stage_two = write_config(
        tmp_path / "two.yaml", tmt_config(backbone=backbone, init_checkpoint=str(tmp_path / "s1"))
    )
    run = ["--config", str(stage_two), "--trainer.default_root_dir", str(tmp_path / "s2")]
    code, err = run_cli(["fit", *run], capsys, monkeypatch)
    assert code == 0, err[-2000:]
    (tmp_path / "s1").rename(tmp_path / "s1_moved")
    weights.rename(tmp_path / "vit_moved.pth")
    code, err = run_cli(["test", *run, "--ckpt_path", "last"], capsys, monkeypatch)
    assert code == 0, err[-2000:]  # TMT's checkpoint holds the backbone: no file needed

    classifier = write_config(tmp_path / "pc.yaml", promptcam_config(num_test_images=4))
    moved = tmp_path / "vit_moved.pth"
    pc_backbone = ["--model.init_args.backbone", yaml_flow(dict(TINY_BACKBONE, weights=str(moved)))]
    pc_run = ["--config", str(classifier), *pc_backbone, "--trainer.default_root_dir", str(tmp_path / "pc")]
    code, err = run_cli(
        ["fit", *pc_run, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"],
        capsys,
        monkeypatch,
    )
    assert code == 0, err[-2000:]
    moved.rename(weights)  # the weights file moves back; the checkpoint remembers vit_moved.pth
    given = ["--model.init_args.backbone.weights", str(weights)]
    code, err = run_cli(
        [
            "test",
            "--config",
            str(classifier),
            "--trainer.default_root_dir",
            str(tmp_path / "pc"),
            *given,
            "--ckpt_path",
            "last",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0, err[-2000:]


def yaml_flow(mapping: dict) -> str:
    return "{" + ", ".join(f"{key}: {value}" for key, value in mapping.items()) + "}"


def test_a_checkpoint_from_before_beta_left_weight_decay_is_refused_in_words(tmp_path, capsys, monkeypatch):
    """TMT's optimiser got a third parameter group (TMA's beta, without weight decay). Resuming a
    checkpoint with two groups failed in torch's optimiser with a traceback; now one line says why
    and what to do, and the checkpoint is left as it was."""
    run = ["fit", "--config", str(write_config(tmp_path / "tmt.yaml", tmt_config(method="tmt"))),
           "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    code, err = run_cli([*run, "--trainer.max_steps", "1"], capsys, monkeypatch)
    assert code == 0, err[-2000:]
    (last,) = (tmp_path / "run").rglob("last.ckpt")
    checkpoint = torch.load(last, weights_only=False)
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    assert len(groups) == 3 and groups[2]["weight_decay"] == 0.0
    groups[1]["params"] += groups.pop()["params"]  # the old layout: beta among the head's parameters
    torch.save(checkpoint, last)
    before = last.read_bytes()
    code, err = run_cli([*run, "--trainer.max_steps", "2", "--ckpt_path", "last"], capsys, monkeypatch)
    assert code == 1, err[-2000:]  # found while fitting starts (as a data error mid-run is)
    assert "optimiser has 2 parameter groups and this version's has 3" in err and "init_checkpoint" in err
    assert "Traceback" not in err and last.read_bytes() == before
    test = ["test", *run[1:], "--ckpt_path", str(last), "--trainer.limit_test_batches", "1"]
    code, err = run_cli(test, capsys, monkeypatch)  # evaluating restores no optimiser: still allowed
    assert code == 0, err[-2000:]
