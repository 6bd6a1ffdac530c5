"""Bad configs are refused before anything runs or is written, by a message that names the key.

Exit codes as for any command line: 2 for a configuration that cannot run. jsonargparse rejects
unknown keys and wrong types while parsing; values it cannot judge (a model name timm lacks, a crop
the patches do not tile, more GPUs than there are) are refused by the CLI's checks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_configs import TINY_BACKBONE, promptcam_config, run_cli, tmt_config, write_config

from tmtcam.training.preflight import ConfigError, check_devices, check_schedule_length, requested_devices


def fit(tmp_path: Path, config: dict, *extra: str) -> list[str]:
    return ["fit", "--config", str(write_config(tmp_path / "config.yaml", config)),
            "--trainer.default_root_dir", str(tmp_path / "run"), *extra]  # fmt: skip


def assert_refused(tmp_path: Path, code: int, err: str, *names: str) -> None:
    assert code == 2, err[-2000:]
    for name in names:
        assert name in err, f"{name!r} not named in:\n{err[-2000:]}"
    assert not (tmp_path / "run").exists(), "a refused config must not write anything"


def test_typo_in_yaml_names_the_key(tmp_path, capsys, monkeypatch):
    config = tmt_config()
    config["model"]["init_args"]["num_clases"] = config["model"]["init_args"].pop("num_classes")
    code, err = run_cli(fit(tmp_path, config), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "num_clases")


def test_typo_on_the_command_line_names_the_key(tmp_path, capsys, monkeypatch):
    code, err = run_cli(fit(tmp_path, tmt_config(), "--trainer.max_stepz", "3"), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "max_stepz")
    assert len(err.strip().splitlines()) < 10, err  # one usage line, not every option of `fit`


def test_typo_inside_a_nested_mapping_names_the_key(tmp_path, capsys, monkeypatch):
    code, err = run_cli(fit(tmp_path, tmt_config(acte={"k_choise": [2]})), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "k_choise")
    code, err = run_cli(
        fit(tmp_path, tmt_config(backbone={**TINY_BACKBONE, "model_nme": "x"})), capsys, monkeypatch
    )
    assert_refused(tmp_path, code, err, "model.init_args.backbone: unknown keys ['model_nme']")


def test_wrong_type_names_the_key_and_value(tmp_path, capsys, monkeypatch):
    code, err = run_cli(fit(tmp_path, tmt_config(num_classes="eight")), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "num_classes", "eight")
    code, err = run_cli(fit(tmp_path, tmt_config(), "--trainer.max_steps", "ten"), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "trainer.max_steps", "ten")


def test_unknown_model_name_is_refused_with_close_names(tmp_path, capsys, monkeypatch):
    backbone = {**TINY_BACKBONE, "model_name": "vit_tinny_patch16_224"}
    code, err = run_cli(fit(tmp_path, tmt_config(backbone=backbone)), capsys, monkeypatch)
    assert_refused(
        tmp_path, code, err, "backbone.model_name='vit_tinny_patch16_224'", "'vit_tiny_patch16_224'"
    )


def test_k_larger_than_the_number_of_patches_names_k_choices_and_crop(tmp_path, capsys, monkeypatch):
    code, err = run_cli(fit(tmp_path, tmt_config(acte={"k_choices": [2, 40]})), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "k_choices", "k=40", "16 patches", "data.init_args.crop_size=32")


def test_tmtcam_traceback_lets_a_refusal_raise_with_its_traceback(tmp_path, capsys, monkeypatch):
    """The one-line refusal is the default; ``TMTCAM_TRACEBACK=1`` raises the same error instead."""
    args = fit(tmp_path, tmt_config(), "--data.init_args.crop_size", "36")
    monkeypatch.setenv("TMTCAM_TRACEBACK", "0")
    code, err = run_cli(args, capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    monkeypatch.setenv("TMTCAM_TRACEBACK", "1")
    with pytest.raises(ConfigError, match="data.init_args.crop_size=36"):
        run_cli(args, capsys, monkeypatch)
    assert not (tmp_path / "run").exists()


def test_crop_not_divisible_by_patch_size_names_crop_size(tmp_path, capsys, monkeypatch):
    code, err = run_cli(fit(tmp_path, tmt_config(), "--data.init_args.crop_size", "36"), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "data.init_args.crop_size=36", "patch size 8", "crop_size=32 or 40")


def test_classifier_image_size_not_divisible_names_image_size(tmp_path, capsys, monkeypatch):
    code, err = run_cli(fit(tmp_path, promptcam_config(image_size=30)), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "data.init_args.image_size=30", "patch size 8")


def test_missing_data_folders_are_refused_before_the_run_dir_is_written(tmp_path, capsys, monkeypatch):
    """Roots and a folder domain's image/mask dirs are checked with the config, not at setup."""
    gta5 = tmt_config(num_classes=19)
    gta5["data"]["init_args"].update(
        source={"dataset": "gta5", "root": str(tmp_path / "gta5")},
        target={"dataset": "cityscapes", "root": str(tmp_path / "cityscapes")},
        target_val=None,
    )
    code, err = run_cli(fit(tmp_path, gta5), capsys, monkeypatch)
    assert_refused(
        tmp_path,
        code,
        err,
        f"data.init_args.source.root: folder not found: {tmp_path / 'gta5'} is not a directory (gta5 data)",
    )
    (tmp_path / "gta5").mkdir()
    code, err = run_cli(fit(tmp_path, gta5), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "data.init_args.target.root: folder not found")
    (tmp_path / "mine" / "images").mkdir(parents=True)
    folder = tmt_config()
    folder["data"]["init_args"]["target_val"] = {
        "dataset": "folder", "root": str(tmp_path / "mine"), "image_dir": "images", "mask_dir": "labels",
        "class_names": ["sky", "building", "road", "sidewalk", "vegetation", "vehicle", "person", "sign"],
    }  # fmt: skip
    code, err = run_cli(fit(tmp_path, folder), capsys, monkeypatch)
    assert_refused(
        tmp_path,
        code,
        err,
        f"data.init_args.target_val.mask_dir: folder not found: {tmp_path / 'mine' / 'labels'}",
    )
    species = tmt_config()
    species["model"] = {
        "class_path": "tmtcam.tasks.PromptCAMClassifier",
        "init_args": {"backbone": TINY_BACKBONE},
    }
    species["data"] = {
        "class_path": "data_modules.species.SpeciesDataModule",
        "init_args": {"dataset": "cub", "root": str(tmp_path / "CUB_200_2011"), "image_size": 32},
    }
    species["trainer"]["max_epochs"] = 1  # Prompt-CAM's schedule needs it (checked before the data)
    code, err = run_cli(fit(tmp_path, species), capsys, monkeypatch)
    assert_refused(
        tmp_path,
        code,
        err,
        f"data.init_args.root: folder not found: {tmp_path / 'CUB_200_2011'} is not a directory (cub data)",
    )


SYNTHETIC_CLASSES = ["sky", "building", "road", "sidewalk", "vegetation", "vehicle", "person", "sign"]


def _folder_val(root: Path, image_names: list[str], mask_names: list[str]) -> dict:
    """A labelled 'folder' validation domain on disk, with the images and masks named."""
    for folder, names in (("images", image_names), ("labels", mask_names)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(root / folder / name)
    return {"dataset": "folder", "root": str(root), "image_dir": "images", "mask_dir": "labels",
            "class_names": SYNTHETIC_CLASSES}  # fmt: skip


def test_unreadable_data_is_one_message_before_the_run_dir_is_written(tmp_path, capsys, monkeypatch):
    """The data module is set up (files indexed and paired) with the config checks, not after the
    loggers have created the run dir; its error is one line naming the file."""
    config = tmt_config()
    config["data"]["init_args"]["target_val"] = _folder_val(tmp_path / "mine", ["a.png"], ["a.png", "b.png"])
    code, err = run_cli(fit(tmp_path, config), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "invalid data: MissingCounterpartError", "b.png")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (dict(crop_size=0), "data.init_args.crop_size must be >= 1, got 0"),
        (dict(scale_range=[2.0, 1.0]), "data.init_args.scale_range must be [low, high] with 0 < low <= high"),
        (dict(base_size=-1), "data.init_args.base_size must be >= 1 or null, got -1"),
        (dict(batch_size=0), "data.init_args.batch_size must be >= 1, got 0"),
        (dict(num_workers=-1), "data.init_args.num_workers must be >= 0"),
    ],
)
def test_impossible_segmentation_sizes_are_configuration_errors_naming_the_key(
    tmp_path, capsys, monkeypatch, config, named
):
    """Checked when the data module is built: before, they surfaced at setup labelled "invalid data"."""
    full = tmt_config()
    full["data"]["init_args"].update(config)
    code, err = run_cli(fit(tmp_path, full), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, f"invalid configuration: {named}")


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (dict(num_train_images=0), "data.init_args.num_train_images must be >= 1 or null, got 0"),
        (dict(test_fraction=1.0), "data.init_args.test_fraction must be in [0, 1), got 1.0"),
        (dict(image_size=32, resize_size=16), "data.init_args.image_size must be >= 1 and <= resize_size"),
        (dict(val_batch_size=0), "data.init_args.val_batch_size must be >= 1, got 0"),
        (
            dict(image_size=8),
            "data.init_args.image_size (resize_size when set) must be >= 16 for the synthetic",
        ),
    ],
)
def test_impossible_species_settings_are_configuration_errors_naming_the_key(
    tmp_path, capsys, monkeypatch, config, named
):
    code, err = run_cli(fit(tmp_path, promptcam_config(**config)), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, f"invalid configuration: {named}")


@pytest.mark.parametrize(
    ("model_args", "named"),
    [
        (dict(prompt_variant="foo"), "model.init_args.prompt_variant='foo': expected 'deep', 'shallow'"),
        (
            dict(prompt_variant="intermediate(9)"),
            "model.init_args.prompt_variant='intermediate(9)': block index",
        ),
        (dict(prompt_dropout=1.5), "model.init_args.prompt_dropout must be in [0, 1], got 1.5"),
        (dict(lr=0.0), "model.init_args.lr must be > 0, got 0.0"),
    ],
)
def test_prompt_settings_are_refused_when_the_classes_come_from_the_data(
    tmp_path, capsys, monkeypatch, model_args, named
):
    """Without num_classes the classifier is built at setup; its settings are checked with the config."""
    config = promptcam_config()
    config["trainer"]["max_epochs"] = 1
    del config["model"]["init_args"]["num_classes"]
    config["model"]["init_args"].update(model_args)
    code, err = run_cli(fit(tmp_path, config), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, f"invalid configuration: {named}")


@pytest.mark.parametrize(
    ("model_args", "named"),
    [
        (
            dict(acte={"k_choices": [2, 4], "alpha": 1.5}),
            "model.init_args.acte.alpha must be in [0, 1], got 1.5",
        ),
        (
            dict(acte={"k_choices": [2, 4], "spatial_weight": -1.0}),
            "model.init_args.acte.spatial_weight must be >= 0",
        ),
        (dict(lr=-1.0), "model.init_args.lr must be > 0, got -1.0"),
        (dict(warmup_steps=-5), "model.init_args.warmup_steps must be >= 0, got -5"),
    ],
)
def test_tmt_settings_out_of_range_are_refused_with_the_config(
    tmp_path, capsys, monkeypatch, model_args, named
):
    """Before: alpha failed at the first step with a traceback; the others trained."""
    code, err = run_cli(fit(tmp_path, tmt_config(**model_args)), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, named)


def test_promptcam_fit_with_max_steps_but_no_max_epochs_names_trainer_max_epochs(
    tmp_path, capsys, monkeypatch
):
    """Its LR schedule is counted in epochs; the error came from configure_optimizers, as a traceback
    after the run dir was written."""
    config = promptcam_config()
    assert "max_epochs" not in config["trainer"] and config["trainer"]["max_steps"] == 2
    code, err = run_cli(fit(tmp_path, config), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "trainer.max_epochs is not set", "--trainer.max_epochs N")
    # checked before the data is indexed (which takes minutes on a large dataset): a missing
    # dataset folder is not what stops this run
    config = promptcam_config(dataset="imagefolder", root=str(tmp_path / "no_such_folder"))
    code, err = run_cli(fit(tmp_path, config), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "trainer.max_epochs is not set")


@pytest.mark.parametrize("command", ["fit", "predict"])
def test_a_run_dir_that_is_a_file_is_refused_naming_the_key(tmp_path, capsys, monkeypatch, command):
    """A CSVLogger raised NotADirectoryError with a traceback."""
    (tmp_path / "run").write_text("notes")
    args = [command, "--config", str(write_config(tmp_path / "tmt.yaml", tmt_config())),
            "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    code, err = run_cli(args, capsys, monkeypatch)
    assert code == 2 and f"trainer.default_root_dir={tmp_path / 'run'} is a file, not a folder" in err, err
    assert (tmp_path / "run").read_text() == "notes"


def test_a_bug_in_data_setup_keeps_its_traceback_and_is_not_called_invalid_data(
    tmp_path, capsys, monkeypatch
):
    """Only the data modules' own error classes are the user's data; another exception is a bug."""
    from data_modules.segmentation import DomainPairDataModule

    def broken_build(*args, **kwargs):
        raise ValueError("an index off by one")

    monkeypatch.setattr(DomainPairDataModule, "_build", broken_build)
    with pytest.raises(ValueError, match="an index off by one"):
        run_cli(fit(tmp_path, tmt_config()), capsys, monkeypatch)


def test_model_classes_other_than_the_datas_are_refused_naming_the_key(tmp_path, capsys, monkeypatch):
    code, err = run_cli(fit(tmp_path, tmt_config(num_classes=19)), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "model.init_args.num_classes=19 but the data has 8 classes")


@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
@pytest.mark.skipif(torch.cuda.device_count() >= 4, reason="this machine has 4 GPUs")
def test_more_devices_than_the_machine_has_names_both_settings(tmp_path, capsys, monkeypatch, accelerator):
    extra = ["--trainer.accelerator", accelerator, "--trainer.devices", "4"]
    code, err = run_cli(fit(tmp_path, tmt_config(), *extra), capsys, monkeypatch)
    assert_refused(
        tmp_path,
        code,
        err,
        "trainer.devices=4",
        f"trainer.accelerator={accelerator}",
        f"has {torch.cuda.device_count()}",
    )


@pytest.mark.slow
def test_the_command_exits_2_with_one_message_and_no_traceback(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "tmtcam", *fit(tmp_path, tmt_config(), "--data.init_args.crop_size", "36")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert "tmtcam: error: invalid configuration: data.init_args.crop_size=36" in run.stderr
    assert "Traceback" not in run.stderr


def test_device_requests_are_counted_like_lightning_counts_them():
    assert [requested_devices(d) for d in (2, "2", "0,1", [0, 1, 2], "auto", -1)] == [2, 2, 2, 3, None, None]
    check_devices("gpu", 2, available=2)
    check_devices("cpu", 8, available=0)  # CPU "devices" are processes
    with pytest.raises(
        ConfigError, match=r"trainer.devices=\[0, 1, 2\] .* needs 3 GPU\(s\), but this machine has 2"
    ):
        check_devices("cuda", [0, 1, 2], available=2)
    with pytest.raises(ConfigError, match="Use --trainer.accelerator cpu"):
        check_devices("gpu", "auto", available=0)
    with pytest.raises(
        ConfigError, match="trainer.devices=8 with trainer.accelerator=auto: this machine has no GPU"
    ):
        check_devices("auto", 8, available=0)  # a GPU config on a laptop: not 8 CPU processes by surprise
    check_devices("auto", 1, available=0)
    check_devices("auto", "auto", available=0)
    check_devices("auto", 8, available=8)


def test_ckpt_path_last_with_nothing_to_resume_is_an_error_not_a_fresh_start(tmp_path, capsys, monkeypatch):
    code, err = run_cli(fit(tmp_path, tmt_config(), "--ckpt_path", "last"), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "--ckpt_path last: no last.ckpt under trainer.default_root_dir=")


@pytest.mark.parametrize(
    "command", [["demo", "tmt"], ["demo", "promptcam"], ["bench", "tmt", "--pairs", "day_to_night"]]
)
def test_accelerator_gpu_without_a_gpu_is_refused_before_any_work(tmp_path, monkeypatch, capsys, command):
    from tmtcam.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--accelerator", "gpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "--accelerator gpu: no CUDA GPU is visible" in err and "--accelerator cpu" in err
    assert not out.exists(), "a refused run must not write anything"


@pytest.mark.parametrize(
    ("command", "named"),
    [
        (["demo", "tmt", "--source-steps", "-1"], "argument --source-steps: must be >= 1, got -1"),
        (["demo", "promptcam", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
        (["demo", "promptcam", "--top-k", "0"], "argument --top-k: must be >= 1, got 0"),
        (
            ["demo", "promptcam", "--image-size", "30"],
            "--image-size 30: must be a multiple of the patch size 8",
        ),
        (["demo", "promptcam", "--prompt-variant", "foo"], "--prompt-variant: prompt_variant='foo'"),
        (["bench", "tmt", "--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
        (["bench", "tmt", "--first-seed", "-1"], "argument --first-seed: must be >= 0, got -1"),
    ],
)
def test_demo_and_bench_options_that_cannot_run_are_refused_before_any_work(tmp_path, capsys, command, named):
    """Before: a negative step count trained without end, the others stopped with a traceback."""
    from tmtcam.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--out", str(out)])
    assert exit_info.value.code == 2 and named in capsys.readouterr().err
    assert not out.exists()
    out.write_text("")  # --out naming a file
    with pytest.raises(SystemExit):
        main([command[0], command[1], "--out", str(out)])
    assert f"argument --out: {out} exists and is not a folder" in capsys.readouterr().err


def test_a_model_lr_schedule_shorter_than_the_run_is_refused(tmp_path, capsys, monkeypatch):
    # the paper's 130 epochs by `--trainer.max_epochs 130` on a 100-epoch schedule: 30 epochs at LR 0
    config = Path(__file__).parents[1] / "experiments" / "promptcam" / "synthetic.yaml"
    args = ["fit", "--config", str(config), "--model.init_args.max_epochs", "3", "--trainer.max_epochs", "5",
            "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    code, err = run_cli(args, capsys, monkeypatch)
    assert_refused(
        tmp_path, code, err, "model.init_args.max_epochs=3", "trainer.max_epochs=5", "last 2 epochs"
    )
    check_schedule_length(5, 5)
    check_schedule_length(8, 5)  # a longer schedule: the run stops mid-cosine, on purpose
    check_schedule_length(None, 5)  # the schedule follows the trainer


def test_a_nested_value_error_names_the_key_without_pages_of_config_dump(tmp_path, capsys, monkeypatch):
    """jsonargparse ends each level of a nested error with the whole parsed section on one line
    (1,300 characters for the data module here): cut, so the key and the reason stay readable."""
    config = tmt_config()
    config["data"]["init_args"]["target_test"] = {"root": str(tmp_path / "x")}  # no dataset
    code, err = run_cli(fit(tmp_path, config), capsys, monkeypatch)
    assert_refused(
        tmp_path, code, err, 'Parser key "target_test"', "the following arguments are required: dataset"
    )
    assert max(len(line) for line in err.splitlines()) < 300
    assert "(cut; --print_config shows the whole config)" in err
