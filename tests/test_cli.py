"""The command line: LightningCLI in subclass mode plus the extra sub-commands."""

import os
import subprocess
import sys
from types import SimpleNamespace

import yaml
from jsonargparse import Namespace

from tmtcam import cli
from tmtcam.cli import EXTRA_COMMANDS, main
from tmtcam.environment import apply_offline_defaults
from tmtcam.training import checked_cli
from tmtcam.training.checked_cli import continue_wandb_run, place_loggers_in_run_dir, use_rich_progress_bar
from tmtcam.training.progress_bar import RunProgressBar

BORING = "lightning.pytorch.demos.boring_classes"


def test_module_help_and_print_config_run_as_a_user_would():
    help_run = subprocess.run(
        [sys.executable, "-m", "tmtcam", "--help"], capture_output=True, text=True, timeout=120
    )
    assert help_run.returncode == 0, help_run.stderr
    assert "fit" in help_run.stdout and "demo" in help_run.stdout and "explain" in help_run.stdout
    printed = subprocess.run(
        [sys.executable, "-m", "tmtcam", "fit", "--print_config"], capture_output=True, text=True, timeout=120
    )
    assert printed.returncode == 0, printed.stderr
    assert "seed_everything" in printed.stdout and "trainer:" in printed.stdout


def test_fit_any_lightning_module_by_class_path(tmp_path):
    main(
        [
            "fit",
            "--model",
            f"{BORING}.BoringModel",
            "--data",
            f"{BORING}.BoringDataModule",
            "--trainer.max_steps",
            "3",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_runs_get_a_rich_progress_bar_unless_bars_are_off_or_their_own(tmp_path, monkeypatch):
    monkeypatch.setattr(checked_cli, "output_is_terminal", lambda: True)
    main(
        ["fit", "--model", f"{BORING}.BoringModel", "--data", f"{BORING}.BoringDataModule"]
        + ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.logger", "false"]
        + ["--trainer.default_root_dir", str(tmp_path)]
    )
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())["trainer"]["callbacks"]
    assert [c["class_path"] for c in saved] == ["tmtcam.training.progress_bar.RunProgressBar"]
    off = Namespace(enable_progress_bar=False, callbacks=None)
    use_rich_progress_bar(off)
    assert off.callbacks is None
    tqdm = Namespace(class_path="lightning.pytorch.callbacks.TQDMProgressBar", init_args=Namespace())
    own = Namespace(enable_progress_bar=None, callbacks=[tqdm])
    use_rich_progress_bar(own)
    assert own.callbacks == [tqdm]
    monkeypatch.setattr(checked_cli, "output_is_terminal", lambda: False)  # a SLURM log: Lightning's bar
    logged = Namespace(enable_progress_bar=None, callbacks=None)
    use_rich_progress_bar(logged)
    assert logged.callbacks is None


def test_progress_bar_names_an_epoch_bound_only_when_the_run_has_one():
    """A max_steps run has max_epochs -1: Lightning's own label would read "Epoch 0/-2"."""
    bar = RunProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(0).strip() == "Epoch 0"
    bar._trainer = SimpleNamespace(max_epochs=10)
    assert bar._get_train_description(3).strip() == "Epoch 3/9"


def test_extra_commands_are_dispatched_and_unknown_target_is_usage_error(capsys):
    assert set(EXTRA_COMMANDS) == {"demo", "bench", "explain"}
    assert main(["demo", "nonsense"]) == 2
    assert "tmtcam demo {tmt, promptcam}" in capsys.readouterr().err


def test_help_on_a_command_group_lists_its_targets_and_succeeds(capsys):
    assert main(["bench", "--help"]) == 0
    assert "tmtcam bench {" in capsys.readouterr().out


def _logger(kind: str, **init_args) -> Namespace:
    return Namespace(class_path=f"lightning.pytorch.loggers.{kind}", init_args=Namespace(**init_args))


def test_every_loggers_folder_follows_the_run_dir():
    trainer = Namespace(
        default_root_dir="runs/b",
        logger=[_logger("WandbLogger", save_dir="runs/a"), _logger("CSVLogger", save_dir="x")],
    )
    place_loggers_in_run_dir(trainer)
    assert [logger.init_args.save_dir for logger in trainer.logger] == ["runs/b", "runs/b"]


def test_a_wandb_checkpoint_continues_its_run_unless_an_id_is_given(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    checkpoint = str(tmp_path / "tmtcam" / "abc123" / "checkpoints" / "last.ckpt")
    trainer = Namespace(logger=[_logger("WandbLogger", project="tmtcam")])
    continue_wandb_run(trainer, checkpoint)
    assert (trainer.logger[0].init_args.id, trainer.logger[0].init_args.resume) == ("abc123", "allow")
    monkeypatch.setenv("WANDB_RUN_ID", "slurm-42")  # the SLURM script's id wins
    trainer = Namespace(logger=[_logger("WandbLogger", project="tmtcam")])
    continue_wandb_run(trainer, checkpoint)
    assert trainer.logger[0].init_args.get("id") is None
    monkeypatch.delenv("WANDB_RUN_ID")
    other_project = str(tmp_path / "elsewhere" / "abc123" / "checkpoints" / "last.ckpt")  # not this logger's
    trainer = Namespace(logger=[_logger("WandbLogger", project="tmtcam")])
    continue_wandb_run(trainer, other_project)
    assert trainer.logger[0].init_args.get("id") is None
    copied = str(tmp_path / "tmtcam" / "abc123" / "copies" / "last.ckpt")  # a file put there by hand
    trainer = Namespace(logger=[_logger("WandbLogger", project="tmtcam")])
    continue_wandb_run(trainer, copied)
    assert trainer.logger[0].init_args.get("id") is None


def test_offline_defaults_keep_downloads_off_and_wandb_offline_without_a_key(tmp_path, monkeypatch):
    names = ("HF_HUB_OFFLINE", "WANDB_MODE", "WANDB_API_KEY", "NO_ALBUMENTATIONS_UPDATE", "OMP_WAIT_POLICY")
    for name in names:  # conftest.py sets the last two for the whole suite: unset, they must be set here
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    apply_offline_defaults()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["WANDB_MODE"] == "offline"
    assert os.environ["NO_ALBUMENTATIONS_UPDATE"] == "1"  # its update check at import hangs offline
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "a-key")  # a configured key: W&B runs as W&B decides
    apply_offline_defaults()
    assert "WANDB_MODE" not in os.environ
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a user's own choice is kept
    apply_offline_defaults()
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_a_wandb_login_in_netrc_counts_as_a_configured_key(tmp_path, monkeypatch):
    """``wandb login`` writes ~/.netrc: such a user is not forced offline."""
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password a-key\n")
    apply_offline_defaults()
    assert "WANDB_MODE" not in os.environ


def test_a_sub_command_target_receives_only_its_own_arguments(monkeypatch):
    received = []
    monkeypatch.setitem(EXTRA_COMMANDS, "demo", {"tmt": "tmtcam.tests_stand_in:main"})
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: SimpleNamespace(main=received.append))
    assert main(["demo", "tmt", "--out", "x"]) == 0
    assert received == [["--out", "x"]]
