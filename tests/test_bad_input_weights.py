"""Pretrained weights that cannot be had are refused at start-up, naming the file and what to do.

Through the CLI (exit code 2, like any unusable config value) for a missing, truncated or foreign
local file, and as a real ``python -m tmtcam`` process for ``pretrained: true`` without network,
which must fail fast (the entry point sets ``HF_HUB_OFFLINE=1``) rather than wait on the hub.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_configs import TINY_BACKBONE, run_cli, tmt_config, write_config

from tmtcam.backbones import ViTBackbone, WeightsError


def fit_with_backbone(tmp_path: Path, **backbone: object) -> list[str]:
    config = write_config(tmp_path / "config.yaml", tmt_config(backbone={**TINY_BACKBONE, **backbone}))
    return ["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "run")]


@pytest.fixture
def good_weights(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_vit.pth"
    torch.save(ViTBackbone(**TINY_BACKBONE).vit.state_dict(), path)
    return path


def assert_refused(tmp_path: Path, code: int, err: str, *names: str) -> None:
    assert code == 2, err[-2000:]
    for name in names:
        assert name in err, f"{name!r} not named in:\n{err[-2000:]}"
    assert not (tmp_path / "run").exists()


def test_local_weights_file_loads(tmp_path, good_weights):
    backbone = ViTBackbone(**TINY_BACKBONE, weights=str(good_weights))
    saved = torch.load(good_weights, weights_only=True)
    assert all(torch.equal(saved[name], value) for name, value in backbone.vit.state_dict().items())


def test_a_state_dict_with_its_classifier_head_loads_into_a_head_less_tag(tmp_path):
    """timm/HF files often keep their ImageNet head; a ``.dino`` tag (0 classes) must drop it too."""
    import timm

    size = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)
    with_head = timm.create_model("vit_small_patch16_224", num_classes=10, **size)
    path = tmp_path / "with_head.pth"
    torch.save(with_head.state_dict(), path)
    backbone = ViTBackbone("vit_small_patch16_224.dino", weights=str(path), **size)
    saved = with_head.state_dict()
    assert "head.weight" in saved and "head.weight" not in backbone.vit.state_dict()
    assert all(torch.equal(saved[name], value) for name, value in backbone.vit.state_dict().items())


def test_missing_weights_file_names_the_path(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere" / "dino_vitb16.pth"
    code, err = run_cli(fit_with_backbone(tmp_path, weights=str(missing)), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "WeightsError", f"backbone.weights: file not found: {missing}")


def test_truncated_weights_file_names_the_path_and_the_likely_cause(
    tmp_path, capsys, monkeypatch, good_weights
):
    data = good_weights.read_bytes()
    good_weights.write_bytes(data[: len(data) // 2])
    code, err = run_cli(fit_with_backbone(tmp_path, weights=str(good_weights)), capsys, monkeypatch)
    assert_refused(tmp_path, code, err, f"could not load {good_weights}", "truncated")


def test_weights_of_another_model_are_refused_not_silently_ignored(
    tmp_path, capsys, monkeypatch, good_weights
):
    """A whole training checkpoint (prefixed keys) would otherwise load nothing and train from random."""
    state = torch.load(good_weights, weights_only=True)
    torch.save({f"segmenter.backbone.vit.{name}": value for name, value in state.items()}, good_weights)
    code, err = run_cli(fit_with_backbone(tmp_path, weights=str(good_weights)), capsys, monkeypatch)
    assert_refused(
        tmp_path,
        code,
        err,
        f"backbone.weights: {good_weights} has none or few of the weights",
        "another model",
    )


def test_weights_file_lacking_half_of_the_models_weights_is_refused(tmp_path, good_weights):
    """Half a model loaded and half left random is not a pretrained backbone; only a few gaps are a warning."""
    state = torch.load(good_weights, weights_only=True)
    names = list(state)  # the head-less tiny ViT's own keys, as the model has them
    assert len(names) % 2 == 0  # so that dropping half sits exactly on the refusal's boundary
    torch.save({name: state[name] for name in names[: len(names) // 2]}, good_weights)
    with pytest.raises(
        WeightsError,
        match=re.escape(
            f"backbone.weights: {good_weights} has none or few of the weights of 'vit_tiny_patch16_224' "
            f"({len(names) // 2} of {len(names)} missing, e.g. "
        ),
    ) as refused:
        ViTBackbone(**TINY_BACKBONE, weights=str(good_weights))
    assert "another model" in str(refused.value)
    torch.save({name: state[name] for name in names[1:]}, good_weights)
    with pytest.warns(
        UserWarning, match=re.escape(f"lacks 1 weights of 'vit_tiny_patch16_224': {names[:1]}")
    ):
        ViTBackbone(**TINY_BACKBONE, weights=str(good_weights))


def test_weights_of_a_deeper_model_warn_that_their_extra_blocks_are_left_unused(tmp_path):
    """Depth 4 into depth 2 loads the first two blocks; the other half of the file was dropped silently."""
    deeper = tmp_path / "deeper.pth"
    torch.save(ViTBackbone(**{**TINY_BACKBONE, "depth": 4}).vit.state_dict(), deeper)
    with pytest.warns(
        UserWarning, match=r"holds \d+ weights 'vit_tiny_patch16_224' has no place for"
    ) as caught:
        ViTBackbone(**TINY_BACKBONE, weights=str(deeper))
    (message,) = [str(w.message) for w in caught if "no place for" in str(w.message)]
    assert "blocks.2." in message and "deeper or another model" in message


@pytest.mark.slow
def test_pretrained_without_network_fails_fast_and_says_how_to_give_a_file(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}  # the entry point must set offline
    env["HF_HOME"] = str(tmp_path / "empty_hf_cache")  # nothing cached: only the network could help
    run = subprocess.run(  # a wait on the network would run into the timeout
        [sys.executable, "-m", "tmtcam", *fit_with_backbone(tmp_path, pretrained=True)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert (
        "backbone.pretrained=true but the weights of 'vit_tiny_patch16_224' could not be fetched"
        in run.stderr
    )
    assert "`backbone.weights: /path/to/file`" in run.stderr
    assert "Traceback" not in run.stderr


def test_promptcam_reading_its_class_count_from_the_data_still_checks_weights_first(
    tmp_path, capsys, monkeypatch
):
    """With ``num_classes: null`` the classifier is finished at setup; its weights file is not."""
    missing = tmp_path / "nowhere.pth"
    run = tmp_path / "run"
    config = Path(__file__).parents[1] / "experiments" / "promptcam" / "synthetic.yaml"
    args = ["fit", "--config", str(config), "--trainer.default_root_dir", str(run),
            "--model.init_args.backbone.weights", str(missing)]  # fmt: skip
    code, err = run_cli(args, capsys, monkeypatch)
    assert_refused(tmp_path, code, err, "WeightsError", f"backbone.weights: file not found: {missing}")
