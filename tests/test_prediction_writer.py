"""``tmtcam predict`` writes files: masks at each image's native size, a CSV of classes."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_configs import promptcam_config, run_cli, tmt_config, write_config

from data_modules.segmentation import CITYSCAPES_CLASSES
from tmtcam.training import prediction_writer
from tmtcam.training.config_logging import SaveAndLogConfig
from tmtcam.training.prediction_writer import PredictionFileWriter, cityscapes_label_id_table, mask_name
from tmtcam.training.preflight import ConfigError
from tmtcam.viz.segmentation_images import IGNORE_COLOUR, palette


def _write_photos(folder: Path, size: tuple[int, int]) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = [folder / "street_a" / "0001.jpg", folder / "street_b" / "0001.jpg"]  # same name, two folders
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return paths


def test_tmt_predict_writes_one_palette_png_per_image_at_its_native_size(tmp_path, capsys, monkeypatch):
    """Photos of 44 x 60 (not a multiple of the patch), evaluated at base_size 32, unlabelled."""
    _write_photos(tmp_path / "photos", (44, 60))
    config = tmt_config()
    config["data"]["init_args"].update(
        target_test={
            "dataset": "folder", "root": str(tmp_path / "photos"), "image_dir": ".",
            "image_suffix": ".jpg", "labelled": False,
            "class_names": ["sky", "building", "road", "sidewalk", "vegetation", "vehicle", "person", "sign"],
        },
        base_size=32,
    )  # fmt: skip
    run = ["predict", "--config", str(write_config(tmp_path / "tmt.yaml", config))]
    run += ["--trainer.default_root_dir", str(tmp_path / "run")]
    for extra in (
        [],
        ["--data.init_args.val_batch_size", "1"],
    ):  # a second run: a new folder beside the first
        code, err = run_cli([*run, *extra], capsys, monkeypatch)
        assert code == 0, err
    folders = sorted((tmp_path / "run" / "predictions").iterdir())
    assert len(folders) == 2
    # a run dir's config.yaml stays the training run's; predict writes its own beside it
    assert (tmp_path / "run" / "config-predict.yaml").is_file() and not (
        tmp_path / "run" / "config.yaml"
    ).exists()
    first, second = ((folder / "config.yaml").read_text() for folder in folders)  # each keeps its own
    assert "val_batch_size: null" in first and "val_batch_size: 1" in second
    assert second == (tmp_path / "run" / "config-predict.yaml").read_text()  # the run dir's: the newest
    for folder in folders:
        written = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.png"))
        assert written == ["street_a/0001.png", "street_b/0001.png"]
        with Image.open(folder / "street_a" / "0001.png") as mask:
            assert mask.mode == "P" and mask.size == (60, 44)
            ids = np.asarray(mask)
        assert ids.max() < 8
        assert Image.open(folder / "street_b" / "0001.png").getpalette()[:3] != [0, 0, 0]


def test_predict_reads_no_masks_so_a_bad_one_of_the_validation_set_does_not_stop_it(
    tmp_path, capsys, monkeypatch
):
    """Without target_test, predict runs on target_val, whose masks it never uses; a label id out of
    range in one of them stopped predict midway (LabelIdError), some PNGs already written."""
    names = ["sky", "building", "road", "sidewalk", "vegetation", "vehicle", "person", "sign"]
    photos = _write_photos(tmp_path / "val" / "img", (32, 32))
    for photo in photos:
        mask = tmp_path / "val" / "ann" / photo.relative_to(tmp_path / "val" / "img").with_suffix(".png")
        mask.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32), 50, dtype=np.uint8)).save(mask)  # 50: no class of 8
    domain = {"dataset": "folder", "root": str(tmp_path / "val"), "image_dir": "img", "mask_dir": "ann",
              "image_suffix": ".jpg", "class_names": names}  # fmt: skip
    config = tmt_config()
    config["data"]["init_args"].update(target=domain, target_val=domain)  # no target_test: predict uses val
    run = ["predict", "--config", str(write_config(tmp_path / "tmt.yaml", config)),
           "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    code, err = run_cli(run, capsys, monkeypatch)
    assert code == 0, err[-2000:]
    assert len(list((tmp_path / "run" / "predictions").rglob("*.png"))) == len(photos)
    validate = ["validate", *run[1:], "--trainer.limit_val_batches", "1"]
    code, err = run_cli(validate, capsys, monkeypatch)  # validation does read them, and says so
    assert code == 1 and "LabelIdError" in err, err[-2000:]


def test_promptcam_predict_writes_a_csv_of_classes_and_probabilities(tmp_path, capsys, monkeypatch):
    config = promptcam_config(num_test_images=5, batch_size=2)
    run = ["predict", "--config", str(write_config(tmp_path / "pc.yaml", config))]
    code, err = run_cli([*run, "--trainer.default_root_dir", str(tmp_path / "run")], capsys, monkeypatch)
    assert code == 0, err
    (table,) = (tmp_path / "run" / "predictions").glob("*/predictions.csv")
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 5
    assert rows[0]["path"].startswith("synthetic/")
    for row in rows:
        assert 0 <= int(row["predicted"]) < 16 and row["class_name"]
        assert 1 / 16 <= float(row["probability"]) <= 1


def test_mask_names_keep_sub_folders_relative_to_the_common_folder():
    root = Path("/data/acdc/rgb_anon")
    assert mask_name("/data/acdc/rgb_anon/fog/val/x_rgb_anon.png", root) == Path("fog/val/x_rgb_anon.png")
    assert mask_name("/elsewhere/y.jpg", root) == Path("y.png")
    assert mask_name("synthetic/pair/target/test/000003", None) == Path("000003.png")


def test_cityscapes_mask_ids_write_label_ids_in_the_classes_colours(tmp_path):
    """train 0 road -> 7, 13 car -> 26, 18 bicycle -> 33, 255 none -> 0 unlabeled (cityscapesscripts)."""
    writer = PredictionFileWriter(mask_ids="cityscapes")
    trainer, model = _stand_ins(tmp_path, num_classes=19)
    writer.setup(trainer, model, "predict")
    writer.on_predict_start(trainer, model)
    prediction = {
        "mask": torch.tensor([[[0, 18], [13, 255]]]),
        "path": ["/photos/frankfurt_000000_000294.png"],
    }
    writer.write_on_batch_end(trainer, model, prediction, None, None, 0, 0)
    (written,) = tmp_path.glob("predictions/*/frankfurt_000000_000294.png")
    with Image.open(written) as mask:
        assert np.asarray(mask).tolist() == [[7, 33], [26, 0]]
        colours = np.asarray(mask.getpalette()).reshape(-1, 3)
    assert colours[26].tolist() == palette(19)[13].tolist()  # car keeps its colour under its label id
    assert colours[7].tolist() == palette(19)[0].tolist()


def test_cityscapes_mask_ids_refuse_a_model_of_other_classes_before_writing(tmp_path, capsys, monkeypatch):
    config = tmt_config()  # 8 synthetic classes
    run = ["predict", "--config", str(write_config(tmp_path / "tmt.yaml", config))]
    run += ["--trainer.default_root_dir", str(tmp_path / "run"), "--prediction_writer.mask_ids", "cityscapes"]
    code, err = run_cli(run, capsys, monkeypatch)
    assert code == 2
    assert "prediction_writer.mask_ids=cityscapes" in err and "num_classes=8" in err
    assert not (tmp_path / "run" / "predictions").exists()
    assert not (tmp_path / "run" / "config-predict.yaml").exists()
    with pytest.raises(ConfigError, match=r"prediction_writer\.mask_ids: 'label' is not one of"):
        PredictionFileWriter(mask_ids="label")  # Python callers, whom jsonargparse does not check


def test_cityscapes_mask_ids_refuse_19_classes_that_are_not_the_cityscapes_ones(tmp_path):
    """A 19-class folder dataset's own classes would be written as Cityscapes label ids."""
    with pytest.raises(
        ConfigError, match=r"Cityscapes classes in their train-id order .* this model's are \['c0'"
    ):
        cityscapes_label_id_table(19, [f"c{i}" for i in range(19)])
    with pytest.raises(ConfigError, match="train-id order"):  # the right names in another order
        cityscapes_label_id_table(19, list(CITYSCAPES_CLASSES)[::-1])
    assert cityscapes_label_id_table(19, list(CITYSCAPES_CLASSES))[0] == 7
    writer = PredictionFileWriter(mask_ids="cityscapes")
    trainer, model = _stand_ins(tmp_path, num_classes=19, class_names=[f"c{i}" for i in range(19)])
    with pytest.raises(ConfigError, match="train-id order"):
        writer.setup(trainer, model, "predict")


def test_a_prediction_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "predictions").write_text("")
    trainer, model = _stand_ins(tmp_path, num_classes=8)
    with pytest.raises(
        ConfigError, match=r"prediction_writer.folder=predictions: .* is a file, not a folder"
    ):
        PredictionFileWriter().setup(trainer, model, "predict")


def _stand_ins(tmp_path, **hparams):
    model = SimpleNamespace(hparams=hparams)
    trainer = SimpleNamespace(
        default_root_dir=str(tmp_path), strategy=SimpleNamespace(broadcast=lambda value: value),
        predict_dataloaders=[], global_rank=0, world_size=1, datamodule=None, log_dir=None, is_global_zero=True,
        callbacks=[], loggers=[],
    )  # fmt: skip
    return trainer, model


def test_each_predictions_folder_keeps_the_config_under_the_name_the_cli_gave_it(tmp_path):
    """A CLI whose save-config callback names its file ``experiment.yaml`` writes
    ``experiment-predict.yaml`` for predict; the writer copies that one, not a ``config-predict.yaml``."""
    trainer, model = _stand_ins(tmp_path, class_names=["sparrow", "finch"])
    saver = SaveAndLogConfig(None, {}, config_filename="experiment.yaml", save_to_log_dir=False)
    trainer.callbacks.append(saver)
    (tmp_path / "experiment-predict.yaml").write_text("model: renamed\n")
    (tmp_path / "config-predict.yaml").write_text("model: stale\n")
    writer = PredictionFileWriter()
    saver.setup(trainer, model, "predict")
    writer.setup(trainer, model, "predict")
    writer.on_predict_start(trainer, model)
    assert (writer.out_dir / "config.yaml").read_text() == "model: renamed\n"
    trainer.log_dir = str(tmp_path / "logs")  # a TensorBoard/CSV first logger: configs go to its folder
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "experiment-predict.yaml").write_text("model: in the log dir\n")
    writer.setup(trainer, model, "predict")
    writer.on_predict_start(trainer, model)
    assert (writer.out_dir / "config.yaml").read_text() == "model: in the log dir\n"
    trainer.callbacks.clear()  # no CLI (a Python caller): no config to copy, whatever lies there
    writer.setup(trainer, model, "predict")
    writer.on_predict_start(trainer, model)
    assert not (writer.out_dir / "config.yaml").exists()


def test_a_single_image_keeps_its_name(tmp_path):
    """One image: its own folder is the common folder, and the mask is named after the image."""
    trainer, model = _stand_ins(tmp_path, num_classes=3)
    record = SimpleNamespace(image="/photos/a/x.jpg")
    trainer.predict_dataloaders = [SimpleNamespace(dataset=SimpleNamespace(records=[record]))]
    writer = PredictionFileWriter()
    writer.setup(trainer, model, "predict")
    writer.on_predict_start(trainer, model)
    writer.write_on_batch_end(
        trainer,
        model,
        {"mask": torch.zeros(1, 2, 2, dtype=torch.uint8), "path": [record.image]},
        None,
        None,
        0,
        0,
    )
    assert [path.name for path in tmp_path.glob("predictions/*/*.png")] == ["x.png"]


def test_csv_rows_name_the_predicted_class_and_its_probability(tmp_path):
    trainer, model = _stand_ins(tmp_path, class_names=["sparrow", "finch", "wren"])
    writer = PredictionFileWriter()
    writer.setup(trainer, model, "predict")
    writer.on_predict_start(trainer, model)
    logits = torch.tensor([[0.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    writer.write_on_batch_end(
        trainer, model, {"logits": logits, "path": ["a.jpg", "b.jpg"]}, None, None, 0, 0
    )
    (table,) = tmp_path.glob("predictions/*/predictions.csv")
    rows = list(csv.DictReader(table.open()))
    assert [(r["path"], r["predicted"], r["class_name"]) for r in rows] == [
        ("a.jpg", "2", "wren"),
        ("b.jpg", "0", "sparrow"),
    ]
    assert float(rows[0]["probability"]) == pytest.approx(np.exp(2) / (np.exp(2) + 2), abs=1e-6)


def test_two_predict_runs_in_the_same_second_write_two_folders(tmp_path, monkeypatch):
    class FrozenClock:
        @staticmethod
        def now(tz=None):
            assert tz is timezone.utc  # folder names in UTC, whatever the machine's zone
            return datetime(2026, 11, 27, 5, 0, 0, tzinfo=tz)

    monkeypatch.setattr(prediction_writer, "datetime", FrozenClock)
    first = prediction_writer._new_folder(tmp_path)
    first.mkdir()
    second = prediction_writer._new_folder(tmp_path)
    assert (first.name, second.name) == ("20261127-050000", "20261127-050000-2")
    second.mkdir()
    assert prediction_writer._new_folder(tmp_path).name == "20261127-050000-3"  # not -2 again


def test_mask_palette_colours_the_classes_and_leaves_other_ids_the_ignore_colour(tmp_path):
    trainer, model = _stand_ins(tmp_path, num_classes=3)
    writer = PredictionFileWriter()
    writer.setup(trainer, model, "predict")
    colours = np.asarray(writer._palette).reshape(256, 3)
    assert colours[:3].tolist() == palette(3).tolist()
    assert (colours[3:] == IGNORE_COLOUR).all()
