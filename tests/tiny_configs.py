"""Tiny CLI configs, file snapshots and a print-config helper shared by the CLI and bad-input tests."""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tmtcam.cli import main
from tmtcam.pipelines import settings_cache

TINY_BACKBONE = {
    "model_name": "vit_tiny_patch16_224",
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 48,
    "depth": 2,
    "num_heads": 3,
}

TMT_CONFIG: dict[str, Any] = {
    "seed_everything": 0,
    "trainer": {
        "max_steps": 2,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
    },
    "model": {
        "class_path": "tmtcam.tasks.TMTSegmentation",
        "init_args": {
            "num_classes": 8,
            "method": "tmt",
            "backbone": TINY_BACKBONE,
            "acte": {"k_choices": [2, 4], "hidden_dim": 16},
            "tma": {"layers": [1]},
        },
    },
    "data": {
        "class_path": "data_modules.segmentation.DomainPairDataModule",
        "init_args": {
            "source": {"dataset": "synthetic", "pair": "day_to_night", "num_images": 4},
            "target": {"dataset": "synthetic", "pair": "day_to_night", "num_images": 4},
            "target_val": {
                "dataset": "synthetic",
                "pair": "day_to_night",
                "domain": "target",
                "split": "val",
                "num_images": 2,
            },
            "crop_size": 32,
            "batch_size": 2,
        },
    },
}


def tmt_config(**model_args: Any) -> dict[str, Any]:
    """A deep copy of :data:`TMT_CONFIG` with ``model.init_args`` entries replaced."""
    config = copy.deepcopy(TMT_CONFIG)
    config["model"]["init_args"].update(model_args)
    return config


def promptcam_config(**data_args: Any) -> dict[str, Any]:
    """:data:`TMT_CONFIG`'s trainer with a tiny Prompt-CAM model (16 classes) on the synthetic
    species at 32 px; ``data.init_args`` entries replaced by ``data_args``."""
    config = copy.deepcopy(TMT_CONFIG)
    config["model"] = {
        "class_path": "tmtcam.tasks.PromptCAMClassifier",
        "init_args": {"backbone": TINY_BACKBONE, "num_classes": 16},
    }
    config["data"] = {
        "class_path": "data_modules.species.SpeciesDataModule",
        "init_args": {"dataset": "synthetic", "image_size": 32, **data_args},
    }
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cli(
    args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    """``tmtcam.cli.main`` in this process: (exit code, stderr). A parser error's SystemExit counts as its code."""
    monkeypatch.setattr(sys, "argv", ["tmtcam"])
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 1
    return code, capsys.readouterr().err


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every regular file under ``root``: relative path -> (size, mtime_ns, sha256)."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            files[str(path.relative_to(root))] = (
                stat.st_size,
                stat.st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return files


def assert_nothing_lost(root: Path, before: dict[str, tuple[int, int, str]]) -> None:
    """Every file of ``before`` is still there: checkpoints untouched (bytes, size, mtime), logs at most
    appended to, and ``config.yaml`` with its content (rewritten only if identical, else moved aside)."""
    for name, (size, mtime, digest) in before.items():
        path = root / name
        if path.name == "config.yaml":
            kept = [p for p in [path, *path.parent.glob("config-*.yaml")] if _digest(p) == digest]
            assert kept, f"{name} of the earlier run was overwritten"
            continue
        assert path.is_file(), f"{name} was deleted"
        if name.endswith(".ckpt"):
            assert (path.stat().st_size, path.stat().st_mtime_ns, _digest(path)) == (size, mtime, digest), (
                name
            )
        else:
            assert hashlib.sha256(path.read_bytes()[:size]).hexdigest() == digest, (
                f"{name} was truncated or rewritten"
            )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def printed_config(
    config: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *overrides: str
) -> dict[str, Any]:
    """``fit --config CONFIG [overrides] --print_config`` through the real CLI, parsed back from YAML."""
    monkeypatch.setattr(sys, "argv", ["tmtcam"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), *overrides, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def die_while_recording_cache_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make :class:`~tmtcam.pipelines.settings_cache.SettingsCache` raise ``KeyboardInterrupt`` as it
    writes a settings record: a run killed between writing a cached file and recording its settings."""

    class KilledWhileWritingTheRecord:
        loads = staticmethod(json.loads)

        @staticmethod
        def dumps(settings: object) -> str:
            raise KeyboardInterrupt

    monkeypatch.setattr(settings_cache, "json", KilledWhileWritingTheRecord)
