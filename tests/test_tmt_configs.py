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


def test_an_id_map_from_the_yaml_is_removed_on_the_command_line_in_the_documented_form(
    tmp_path, capsys, monkeypatch
):
    """jsonargparse 4.53 refuses ``--data.init_args.source.id_map null`` (an Optional dict inside a
    dataclass of a class_path's init_args); docs/datasets.md gives the form that works, which merges
    into the YAML's domain instead of replacing it."""
    config = tmp_path / "mine.yaml"
    config.write_text(
        (CONFIGS[0].parent / "folder_pair.yaml").read_text().replace("root: ???", "root: /data/mine")
        .replace("      mask_suffix: .png\n    target:", "      mask_suffix: .png\n      id_map: {7: 0, 8: 1}\n    target:")
    )  # fmt: skip
    source = printed_config(config, capsys, monkeypatch)["data"]["init_args"]["source"]
    assert {int(raw): train for raw, train in source["id_map"].items()} == {7: 0, 8: 1}
    removed = printed_config(config, capsys, monkeypatch, "--data.init_args.source", '{"id_map": null}')
    source = removed["data"]["init_args"]["source"]
    assert source["id_map"] is None and source["root"] == "/data/mine" and source["image_suffix"] == ".jpg"
