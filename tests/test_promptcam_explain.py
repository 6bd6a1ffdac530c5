"""``tmtcam explain``: heatmap grids and a gallery for a folder of images, with clear input errors."""

import re

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image

from data_modules.species.transforms import build_eval_transform
from tmtcam.backbones import ViTBackbone
from tmtcam.promptcam import explain
from tmtcam.promptcam.explain import evaluation_resize, load_image, main, saved_data_hparams
from tmtcam.tasks import TMTSegmentation
from tmtcam.tasks.promptcam_classifier import PromptCAMClassifier
from tmtcam.viz.heatmaps import PADDING

TINY = dict(model_name="vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4)


def _checkpoint(tmp_path, method="promptcam"):
    """Save an (untrained) classifier the way Lightning does, backbone referenced by file."""
    torch.manual_seed(0)
    weights = tmp_path / "backbone.pth"
    torch.save(ViTBackbone(**TINY).vit.state_dict(), weights)
    module = PromptCAMClassifier(
        dict(TINY, weights=str(weights)), num_classes=3, method=method, class_names=["ant", "bee", "cow"]
    )
    trainer = Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path
    )
    trainer.strategy.connect(module)
    path = tmp_path / f"{method}.ckpt"
    trainer.save_checkpoint(path)
    return path


def _write_images(folder):
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)).save(folder / "sub" / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "._a.png").write_bytes(b"macOS resource fork")  # hidden: not an image, not "skipped"


def test_explain_writes_a_grid_per_image_and_a_gallery(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    _write_images(tmp_path / "photos")
    out = tmp_path / "maps"
    assert (
        main(["--ckpt", str(ckpt), "--images", str(tmp_path / "photos"), "--out", str(out), "--top-k", "2"])
        == 0
    )
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "sub__b.png"]
    grid = np.asarray(Image.open(out / "a.png"))
    assert grid.shape[1] == 4 * (128 + PADDING)  # 128-px tiles: image, the 2 top heads, their mean
    page = (out / "index.html").read_text()
    assert "sub/b.jpg" in page and "top heads" in page and "pred " in page
    (tmp_path / "photos" / "broken.png").write_bytes(b"not a png")
    capsys.readouterr()
    main(["--ckpt", str(ckpt), "--images", str(tmp_path / "photos"), "--out", str(out), "--class-index", "2"])
    assert "explained cow" in (out / "index.html").read_text()
    err = capsys.readouterr().err
    assert "broken.png" not in (out / "index.html").read_text() and "explained 2 images (1 skipped)" in err


def test_the_gallery_does_not_depend_on_the_batch_size(tmp_path):
    """Every image gets its own grid and caption whatever the batching; camera-style .JPG files count,
    a too-large --top-k shows every head, and file names are escaped in the page."""
    ckpt = _checkpoint(tmp_path)
    photos = tmp_path / "photos"
    _write_images(photos)
    rng = np.random.default_rng(1)
    for name in ("C.JPG", "d&e.png"):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(photos / name)
    pages = []
    for batch_size in ("8", "1"):
        out = tmp_path / f"maps{batch_size}"
        run = ["--ckpt", str(ckpt), "--images", str(photos), "--out", str(out), "--top-k", "99"]
        assert main([*run, "--batch-size", batch_size]) == 0
        assert sorted(p.name for p in out.glob("*.png")) == ["C.png", "a.png", "d&e.png", "sub__b.png"]
        assert np.asarray(Image.open(out / "a.png")).shape[1] == 6 * (128 + PADDING)  # image, 4 heads, mean
        pages.append((out / "index.html").read_text())
    assert pages[0] == pages[1].replace("maps1", "maps8")
    assert pages[0].count("<figure>") == 4 and "<b>d&amp;e.png</b>" in pages[0]
    captions = re.findall(r"<br>(.*?)</figcaption>", pages[0])
    assert len(set(captions)) > 1  # the images' own captions (they differ here), not the first one's


def test_until_misclassified_reaches_the_head_ranking(tmp_path, monkeypatch):
    ckpt = _checkpoint(tmp_path)
    _write_images(tmp_path / "photos")
    asked = []
    explain_batch = explain.explain_batch

    def spy(model, images, class_index, top_k, until_misclassified):
        asked.append(until_misclassified)
        return explain_batch(model, images, class_index, top_k=top_k, until_misclassified=until_misclassified)

    monkeypatch.setattr(explain, "explain_batch", spy)
    run = ["--ckpt", str(ckpt), "--images", str(tmp_path / "photos"), "--out", str(tmp_path / "maps")]
    assert main(run) == 0 and main([*run, "--until-misclassified"]) == 0
    assert asked == [False, True]


def refused(capsys, *args: str) -> str:
    """Run ``tmtcam explain`` expecting a refusal: exit 2, one line on stderr, no traceback."""
    capsys.readouterr()
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("tmtcam explain: error: ") and "Traceback" not in err and err.count("\n") == 1
    return err


def test_explain_input_errors_name_the_problem(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    empty, out = tmp_path / "empty", str(tmp_path / "o")
    empty.mkdir()
    err = refused(capsys, "--ckpt", str(ckpt), "--images", str(empty), "--out", out)
    assert re.search(rf"--images: no images .* under {re.escape(str(empty))}", err)
    err = refused(capsys, "--ckpt", str(ckpt), "--images", str(tmp_path / "nowhere"), "--out", out)
    assert f"--images: folder not found: {tmp_path / 'nowhere'}" in err
    missing = tmp_path / "missing.ckpt"
    err = refused(capsys, "--ckpt", str(missing), "--images", str(empty), "--out", out)
    assert f"--ckpt: checkpoint not found: {missing}" in err
    assert not (tmp_path / "o").exists()  # refused before any output
    (empty / "broken.png").write_bytes(b"not a png")  # one bad file is skipped, naming it; all bad: refused
    assert main(["--ckpt", str(ckpt), "--images", str(empty), "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"tmtcam explain: skipped: cannot decode image {empty / 'broken.png'}" in err
    assert err.count("cannot decode image") == 1 and "none of its 1 images could be decoded" in err
    err = refused(capsys, "--ckpt", str(ckpt), "--images", str(empty), "--out", out, "--class-index", "5")
    assert "--class-index 5 outside [0, 3)" in err
    err = refused(capsys, "--ckpt", str(ckpt), "--images", str(empty), "--out", out, "--class-index", "-1")
    assert "--class-index -1 outside [0, 3)" in err  # not Python's "last class"
    probe = _checkpoint(tmp_path, method="linear_probe")
    err = refused(capsys, "--ckpt", str(probe), "--images", str(empty), "--out", out)
    assert f"--ckpt {probe} is a method='linear_probe' model; trait maps" in err


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--top-k", "0", "argument --top-k: must be >= 1, got 0"),
        ("--batch-size", "-2", "argument --batch-size: must be >= 1, got -2"),
        ("--image-size", "0", "argument --image-size: must be >= 1, got 0"),
        ("--device", "gpu0", "argument --device: 'gpu0' is not a torch device"),
        ("--out", "FILE", "argument --out: FILE exists and is not a folder"),
    ],
)
def test_explain_refuses_unusable_options_as_argparse_does(tmp_path, capsys, option, value, named):
    """These went on to a traceback (or, for a negative batch, a misleading "could not be decoded")."""
    ckpt = _checkpoint(tmp_path)
    _write_images(tmp_path / "photos")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    value, named = value.replace("FILE", str(a_file)), named.replace("FILE", str(a_file))
    out = str(tmp_path / "maps") if option != "--out" else value
    args = ["--ckpt", str(ckpt), "--images", str(tmp_path / "photos"), "--out", out, option, value]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "maps").exists()


def test_explain_refuses_an_image_size_off_the_patch_grid_and_checkpoints_it_cannot_use(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    _write_images(tmp_path / "photos")
    run = ["--images", str(tmp_path / "photos"), "--out", str(tmp_path / "maps")]
    err = refused(capsys, "--ckpt", str(ckpt), *run, "--image-size", "30")
    assert "--image-size 30: must be a multiple of the backbone's patch size 8" in err
    weights = tmp_path / "backbone.pth"  # a bare state dict, not a run's checkpoint
    err = refused(capsys, "--ckpt", str(weights), *run)
    assert f"--ckpt {weights} is not a Lightning checkpoint" in err
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:5000])
    err = refused(capsys, "--ckpt", str(truncated), *run)
    assert f"--ckpt {truncated}: cannot be read as a checkpoint" in err
    segmenter = TMTSegmentation(num_classes=3, backbone=TINY, method="finetune")
    trainer = Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path
    )
    trainer.strategy.connect(segmenter)
    trainer.save_checkpoint(tmp_path / "tmt.ckpt")
    err = refused(capsys, "--ckpt", str(tmp_path / "tmt.ckpt"), *run)
    assert "was written by task 'TMTSegmentation'" in err
    assert not (tmp_path / "maps").exists()


def test_a_run_dir_gives_its_newest_promptcam_checkpoint_not_a_newer_baseline(tmp_path, capsys):
    """The demo's folder holds promptcam/ and, written later, linear_probe/ checkpoints."""
    run = tmp_path / "demo"
    for method in ("promptcam", "linear_probe"):
        folder = run / method / "checkpoints"
        folder.mkdir(parents=True)
        _checkpoint(tmp_path, method=method).rename(folder / "last.ckpt")
    assert explain.promptcam_checkpoint(run) == run / "promptcam" / "checkpoints" / "last.ckpt"
    (run / "promptcam" / "checkpoints" / "last.ckpt").unlink()
    _write_images(tmp_path / "photos")
    err = refused(
        capsys, "--ckpt", str(run), "--images", str(tmp_path / "photos"), "--out", str(tmp_path / "o")
    )
    assert f"no method=promptcam checkpoint under the folder {run}; found" in err
    assert "linear_probe/checkpoints/last.ckpt (linear_probe)" in err


def test_explain_takes_a_run_dir_and_the_data_modules_evaluation_view(tmp_path):
    ckpt = _checkpoint(tmp_path)
    nested = tmp_path / "run" / "tmtcam" / "abc123" / "checkpoints"
    nested.mkdir(parents=True)
    (nested / "last.ckpt").write_bytes(ckpt.read_bytes())
    _write_images(tmp_path / "photos")
    out = tmp_path / "maps"
    assert (
        main(["--ckpt", str(tmp_path / "run"), "--images", str(tmp_path / "photos"), "--out", str(out)]) == 0
    )
    assert (out / "a.png").is_file()
    with pytest.raises(
        FileNotFoundError,
        match=f"--ckpt: no last.ckpt under the folder {re.escape(str(tmp_path / 'photos'))}",
    ):
        explain.promptcam_checkpoint(tmp_path / "photos")

    assert evaluation_resize(saved_data_hparams(ckpt), 32) is None  # saved without a data module: crop size
    recorded = tmp_path / "with_data.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    saved["datamodule_hyper_parameters"] = {"resize_size": 40, "image_size": 32}
    torch.save(saved, recorded)
    data = saved_data_hparams(recorded)
    assert evaluation_resize(data, 32) == 40 and evaluation_resize(data, 64) == 80


def test_explain_prepares_images_as_the_checkpoints_data_module_evaluated_them(tmp_path, monkeypatch):
    saved = torch.load(_checkpoint(tmp_path), weights_only=True)
    half = [0.5, 0.5, 0.5]  # trained on a backbone that wants 0.5 / 0.5 (timm's augreg ViTs)
    saved["datamodule_hyper_parameters"] = {"resize_size": 40, "image_size": 32, "mean": half, "std": half}
    ckpt = tmp_path / "with_data.ckpt"
    torch.save(saved, ckpt)
    _write_images(tmp_path / "photos")
    seen = []
    monkeypatch.setattr(
        explain, "load_image", lambda path, transform: seen.append(load_image(path, transform)) or seen[-1]
    )
    assert (
        main(["--ckpt", str(ckpt), "--images", str(tmp_path / "photos"), "--out", str(tmp_path / "maps")])
        == 0
    )
    pixels = np.asarray(Image.open(tmp_path / "photos" / "a.png").convert("RGB"))
    expected = build_eval_transform(32, 40, (tuple(half), tuple(half)))(pixels).image  # 40 x 40, centre 32
    assert torch.equal(seen[0], expected)


def test_weights_gives_the_backbone_file_at_its_new_place_and_checks_it_is_the_same(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    _write_images(tmp_path / "photos")
    moved = tmp_path / "elsewhere.pth"
    (tmp_path / "backbone.pth").rename(moved)
    run = ["--ckpt", str(ckpt), "--images", str(tmp_path / "photos"), "--out", str(tmp_path / "o")]
    assert "backbone.pth" in refused(capsys, *run)  # the saved path is gone
    assert main([*run, "--weights", str(moved)]) == 0
    torch.manual_seed(1)
    torch.save(ViTBackbone(**TINY).vit.state_dict(), moved)  # another file at that place: refused
    assert "was replaced" in refused(capsys, *run, "--weights", str(moved))


def test_explain_shows_each_image_in_its_own_colours_under_the_checkpoints_normalisation(tmp_path):
    """The gallery un-normalises with the statistics the images were normalised with: a flat colour
    comes back as that colour (ImageNet's statistics on 0.5 / 0.5 data would shift it by tens of levels)."""
    saved = torch.load(_checkpoint(tmp_path), weights_only=True)
    half = [0.5, 0.5, 0.5]
    saved["datamodule_hyper_parameters"] = {"image_size": 32, "mean": half, "std": half}
    ckpt = tmp_path / "with_data.ckpt"
    torch.save(saved, ckpt)
    colour = (200, 40, 90)
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.full((32, 32, 3), colour, dtype=np.uint8)).save(tmp_path / "flat" / "c.png")
    out = tmp_path / "maps"
    assert main(["--ckpt", str(ckpt), "--images", str(tmp_path / "flat"), "--out", str(out)]) == 0
    grid = np.asarray(Image.open(out / "c.png").convert("RGB")).astype(int)
    tile_centre = grid[grid.shape[0] - 64, 64]  # the first tile (the image) is the bottom-left 128 x 128
    assert np.abs(tile_centre - colour).max() <= 2, tile_centre


def test_tmtcam_traceback_lets_an_explain_refusal_raise(tmp_path, monkeypatch):
    monkeypatch.setenv("TMTCAM_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError, match="--images: folder not found"):
        main(
            [
                "--ckpt",
                str(_checkpoint(tmp_path)),
                "--images",
                str(tmp_path / "nowhere"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
