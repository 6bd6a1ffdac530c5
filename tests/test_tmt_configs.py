"""Every experiments/tmt/*.yaml parses through the real CLI: a key typo in a shipped config fails here."""

from pathlib import Path

import pytest
from tiny_configs import printed_config

from tmtcam.tmt import METHODS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "tmt").glob("*.yaml"))
REAL_PAIRS = {
    "gta5_to_cityscapes", "synthia_to_cityscapes", "cityscapes_to_acdc", "cityscapes_to_darkzurich",
    "cityscapes_to_bdd100k", "cityscapes_to_mapillary",
}  # fmt: skip


def test_every_pair_and_the_generic_configs_exist():
    assert {path.stem for path in CONFIGS} == REAL_PAIRS | {"synthetic", "folder_pair"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_config_prints_through_lightning_cli(config, capsys, monkeypatch):
    printed = printed_config(config, capsys, monkeypatch)
    assert printed["model"]["class_path"] == "tmtcam.tasks.TMTSegmentation"
    assert printed["data"]["class_path"] == "data_modules.segmentation.DomainPairDataModule"
    assert printed["model"]["init_args"]["method"] in METHODS
    assert printed["trainer"]["default_root_dir"].startswith("runs/tmt/")
