"""Every experiments/promptcam/*.yaml parses through the real CLI and names the Prompt-CAM task."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_configs import printed_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "promptcam").glob("*.yaml"))
EXPECTED = {"cub", "dogs", "cars", "flowers", "inat", "synthetic", "imagefolder"}


def test_every_dataset_has_a_config():
    assert {path.stem for path in CONFIGS} == EXPECTED


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_config_prints_through_lightning_cli(config, capsys, monkeypatch):
    printed = printed_config(config, capsys, monkeypatch)
    assert printed["model"]["class_path"] == "tmtcam.tasks.PromptCAMClassifier"
    assert printed["data"]["class_path"] == "data_modules.species.SpeciesDataModule"
    assert printed["model"]["init_args"]["method"] == "promptcam"
    assert "seed_everything" in printed


def test_dino_recipe_in_cub_config_and_weights_override_from_the_command_line():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tmtcam",
            "fit",
            "--config",
            str(CONFIGS[0].with_name("cub.yaml")),
            "--model.init_args.backbone.weights",
            "/weights/dino_vitb16.pth",
            "--print_config",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    printed = yaml.safe_load(run.stdout)
    model, data = printed["model"]["init_args"], printed["data"]["init_args"]
    assert {key: model["backbone"][key] for key in ("model_name", "weights", "img_size")} == {
        "model_name": "vit_base_patch16_224.dino",
        "weights": "/weights/dino_vitb16.pth",
        "img_size": 224,
    }
    assert (
        model["lr"],
        model["momentum"],
        model["weight_decay"],
        model["warmup_epochs"],
        model["max_epochs"],  # unset: the cosine follows trainer.max_epochs, also when overridden
    ) == (0.005, 0.9, 0.001, 20, None)
    assert (data["batch_size"], data["image_size"], data["resize_size"]) == (16, 224, 240)
    assert printed["trainer"]["max_epochs"] == 100


def test_imagefolder_root_comes_from_the_command_line(capsys, monkeypatch):
    config = CONFIGS[0].with_name("imagefolder.yaml")
    data = printed_config(config, capsys, monkeypatch, "--data.root", "/my/photos")["data"]["init_args"]
    assert (data["dataset"], data["root"]) == ("imagefolder", "/my/photos")


def test_a_second_yaml_setting_one_backbone_key_keeps_the_others(tmp_path, capsys, monkeypatch):
    """jsonargparse replaces a ``dict`` whole; the backbone is a dataclass so that it merges."""
    partial = tmp_path / "bigger.yaml"
    partial.write_text("model:\n  init_args:\n    backbone: {img_size: 448}\n")
    cub = CONFIGS[0].with_name("cub.yaml")
    backbone = printed_config(cub, capsys, monkeypatch, "--config", str(partial))["model"]["init_args"][
        "backbone"
    ]
    assert (backbone["model_name"], backbone["weights"], backbone["img_size"]) == (
        "vit_base_patch16_224.dino",
        "???",
        448,
    )
