"""`make train-promptcam` pipeline, shrunk: every stage runs, summary.json is complete, the cache is reused."""

import json
from pathlib import Path

import pytest
import torch
from tiny_configs import die_while_recording_cache_settings

from tmtcam.pipelines import promptcam_demo
from tmtcam.pipelines.promptcam_demo import _data, build_parser, main
from tmtcam.promptcam.evaluation import accuracy, gather_batches
from tmtcam.promptcam.explain import main as explain_main
from tmtcam.tasks import PromptCAMClassifier

TINY_RUN = [
    "--pretrain-images",
    "128",
    "--pretrain-epochs",
    "1",
    "--train-images",
    "120",
    "--prompt-epochs",
    "1",
    "--probe-epochs",
    "1",
    "--test-images",
    "32",
    "--eval-images",
    "8",
    "--heatmap-images",
    "2",
    "--steps",
    "4",
]


@pytest.mark.slow
def test_demo_writes_summary_heatmaps_and_a_checkpoint_explain_can_read(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    ranked_images = []
    rank = promptcam_demo.rank_every_head
    monkeypatch.setattr(
        promptcam_demo,
        "rank_every_head",
        lambda model, x, y: ranked_images.append(x.cpu()) or rank(model, x, y),
    )
    assert main(["--out", str(out), *TINY_RUN]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["accuracy"] <= 1 and 0 <= summary["linear_probe_accuracy"] <= 1
    for metric in ("pointing_game", "insertion", "deletion", "mass_in_trait", "peak_on_object"):
        assert {"promptcam", "gradcam"} <= set(summary[metric]), metric
        assert all(0 <= value <= 1 for value in summary[metric].values()), (metric, summary[metric])
    # each accuracy is its own saved model's, on the test split
    args = build_parser().parse_args(["--out", str(out), *TINY_RUN])
    data = _data("synthetic", args, args.train_images, batch_size=args.batch_size)
    data.setup("test")
    for method, key in (("promptcam", "accuracy"), ("linear_probe", "linear_probe_accuracy")):
        saved = PromptCAMClassifier.load_from_checkpoint(out / method / "checkpoints" / "last.ckpt")
        assert accuracy(saved.model, data.test_dataloader()) == pytest.approx(summary[key]), method
    # the number of heads is chosen on validation images, the scores are measured on test images
    data.setup("validate")
    validation = gather_batches(data.val_dataloader(), 8, ("image",))["image"]
    test_images = gather_batches(data.test_dataloader(), 8, ("image",))["image"]
    assert torch.equal(ranked_images[0], validation) and torch.equal(ranked_images[1], test_images)
    # Grad-CAM explains the probe (the usual classifier), its twin the Prompt-CAM model: two models' scores
    assert summary["insertion"]["gradcam"] != summary["insertion"]["gradcam_on_promptcam"]
    chance = summary["chance_on_creature"]
    assert 0 < chance["mass_in_trait"] <= chance["pointing_game"] < 1  # dilation only adds pixels
    assert len(summary["heatmaps"]) == 2 and all(Path(path).is_file() for path in summary["heatmaps"])
    ranking = summary["head_ranking"]  # timings only: their ratio is for make bench, not a unit test
    assert ranking["batched_ms"] > 0 and ranking["naive_ms"] > 0 and summary["seconds"] > 0
    assert list(summary["promptcam_by_head_count"]) == [str(k) for k in range(1, 7)]
    assert summary["top_k"]["chosen_by"] == "validation pointing game" and 1 <= summary["top_k"]["heads"] <= 6
    chosen = summary["promptcam_by_head_count"][str(summary["top_k"]["heads"])]  # same test images, same k
    assert summary["pointing_game"]["promptcam"] == chosen["pointing_game"]
    assert summary["mass_in_trait"]["promptcam"] == chosen["mass_in_trait"]
    assert "head ranking per image" in capsys.readouterr().out

    assert main(["--out", str(out), *TINY_RUN]) == 0  # second run: the pre-trained backbone is reused
    assert "[pretrain] reusing" in capsys.readouterr().out
    rerun = json.loads((out / "summary.json").read_text())
    timings = ("seconds", "head_ranking")
    # every stage seeds itself, so skipping pre-training leaves the prompts' and probe's results unchanged
    assert {k: v for k, v in rerun.items() if k not in timings} == {
        k: v for k, v in summary.items() if k not in timings
    }

    images = tmp_path / "images"
    images.mkdir()
    for index, path in enumerate(summary["heatmaps"]):
        (images / f"{index}.png").write_bytes(Path(path).read_bytes())
    assert (
        explain_main(
            ["--ckpt", summary["checkpoint"], "--images", str(images), "--out", str(tmp_path / "explained")]
        )
        == 0
    )
    assert (tmp_path / "explained" / "index.html").is_file()


def test_thread_count_follows_cores_busy_now_not_the_lagging_load_average(monkeypatch):
    from tmtcam import environment

    samples = iter([(1000, 800), (1100, 850)])  # 100 jiffies, 50 idle: half of all cores busy
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 4)
    assert environment.busy_cores(0.0, lambda: next(samples)) == pytest.approx(2.0)
    assert environment.idle_cores(busy=2.0) == 2
    assert environment.idle_cores(busy=3.9) == 1  # never fewer than one thread
    assert environment.idle_cores(busy=1.6) == 2  # 1.6 busy cores take 2 of the 4, not 1
    assert environment.busy_cores(0.0, lambda: (1000, 800)) == 0.0  # no time passed: unknown, not 0/0

    def no_proc_stat() -> tuple[int, int]:
        raise OSError("no /proc/stat")

    assert environment.busy_cores(0.0, no_proc_stat) == 0.0


def test_cpu_times_counts_waiting_for_disk_as_idle(monkeypatch):
    """/proc/stat's cpu line: user nice system idle iowait irq softirq ...; a core waiting for the disk
    can run a thread, so iowait counts as idle (a demo started during heavy I/O keeps its threads)."""
    import io

    from tmtcam import environment

    stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n"
    monkeypatch.setattr(environment, "open", lambda path: io.StringIO(stat), raising=False)
    assert environment.cpu_times() == (1000, 840)


@pytest.mark.slow
def test_a_backbone_retrain_killed_before_its_record_is_written_is_not_reused(tmp_path, monkeypatch):
    """The retrain overwrites the weights before it records their settings: if it dies in between,
    the old record must be gone already, or the next run with the old settings reuses new weights."""
    args = build_parser().parse_args(["--out", str(tmp_path), *TINY_RUN])
    promptcam_demo.pretrained_backbone(args)
    weights, record = tmp_path / "pretrained_backbone.pth", tmp_path / "pretrained_backbone.json"
    assert record.is_file()
    die_while_recording_cache_settings(monkeypatch)
    args.pretrain_lr *= 2  # other settings: the cache is stale and the backbone is trained again
    with pytest.raises(KeyboardInterrupt):
        promptcam_demo.pretrained_backbone(args)
    assert weights.is_file() and not record.exists()


@pytest.mark.parametrize(
    ("option", "value", "key"),
    [
        ("--pretrain-epochs", "7", "epochs"),
        ("--pretrain-images", "50", "images"),
        ("--pretrain-lr", "0.002", "lr"),
        ("--seed", "1", "seed"),
        ("--image-size", "32", "backbone"),
    ],
)
def test_the_backbone_cache_is_keyed_by_every_pretraining_setting(tmp_path, monkeypatch, option, value, key):
    """A run with another pre-training setting must not reuse a backbone made with the old one: each
    setting is part of the record the cache compares (recorded here without training anything)."""
    recorded = []

    class RecordingCache:
        def __init__(self, path: Path, settings: dict) -> None:
            self.path = path
            recorded.append(settings)

        def is_current(self) -> bool:
            return True

    monkeypatch.setattr(promptcam_demo, "SettingsCache", RecordingCache)
    base = ["--out", str(tmp_path)]
    for argv in (base, [*base, option, value]):
        promptcam_demo.pretrained_backbone(build_parser().parse_args(argv))
    default, changed = recorded
    assert default[key] != changed[key]
    assert {k for k in default if default[k] != changed[k]} == {key}
