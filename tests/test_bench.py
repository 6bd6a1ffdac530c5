"""Benchmark helpers: timing statistics, interleaving, report sections; and `bench all --quick` end to end."""

import json
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tmtcam.bench import report
from tmtcam.bench.kmeans_speed import naive_numpy_kmeans
from tmtcam.bench.measure import Timing, paired_ratio, ratio, summary, time_call, time_interleaved
from tmtcam.bench.report import HEADER, machine_line, markdown_table, write_json, write_section
from tmtcam.bench.speed_report import load_note, spread
from tmtcam.bench.tmt_profile import KMEANS, REGIONS, _exclusive_components


def test_timing_statistics_and_scaling():
    timing = Timing((0.3, 0.1, 0.2))
    assert (timing.median, timing.low, timing.high, timing.repeats) == (0.2, 0.1, 0.3, 3)
    assert timing.as_ms() == {"median": 200.0, "low": 100.0, "high": 300.0, "repeats": 3}
    assert timing.scaled(0.5).samples == (0.15, 0.05, 0.1)
    with pytest.raises(ValueError, match="at least one sample"):
        Timing(())


def test_timing_keeps_cpu_time_beside_wall_time():
    timing = Timing((0.4, 0.2), cpu_samples=(0.3, 0.1))
    assert timing.cpu().samples == (0.3, 0.1)
    assert timing.scaled(10).cpu().samples == (3.0, 1.0)
    with pytest.raises(ValueError, match="pair one to one"):
        Timing((0.4, 0.2), cpu_samples=(0.3,))
    with pytest.raises(ValueError, match="no CPU time"):
        Timing((0.4,)).cpu()


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # per-round ratios 2, 4, 2: median 2, whereas the ratio of medians would be 4 / 1 = 4
    numerator, denominator = Timing((2.0, 4.0, 6.0)), Timing((1.0, 1.0, 3.0))
    assert paired_ratio(numerator, denominator) == {"median": 2.0, "low": 2.0, "high": 4.0}
    assert ratio(numerator, denominator) == 4.0
    with pytest.raises(ValueError, match="equal repeats"):
        paired_ratio(Timing((1.0,)), denominator)


def test_time_interleaved_alternates_the_order_within_rounds():
    calls = []
    first, second = time_interleaved(
        lambda: calls.append("a"), lambda: calls.append("b"), repeats=3, warmup=1
    )
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert first.repeats == second.repeats == 3 and len(first.cpu_samples) == 3


def test_timers_wait_for_queued_gpu_work_inside_the_timed_region(monkeypatch):
    # CUDA cannot run here; stand-ins record the order of calls and synchronisations.
    import torch

    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: events.append("sync"))
    time_interleaved(lambda: events.append("a"), lambda: events.append("b"), repeats=2, warmup=0)
    assert events == ["a", "sync", "b", "sync", "b", "sync", "a", "sync"]
    events.clear()
    time_call(lambda: events.append("f"), repeats=2, warmup=0, inner=3)
    assert events == ["f", "f", "f", "sync"] * 2


def test_summary_and_spread_formatting():
    values = summary([3.0, 1.0, 2.0, 10.0])
    assert values == {"median": 2.5, "low": 1.0, "high": 10.0}
    assert spread(values, 1) == "2.5 (1.0–10.0)"


def test_load_note_says_busy_only_when_other_jobs_ran_at_the_start():
    idle = load_note({"start": 0.9, "end": 1.9}, busy_at_start=0.1)  # a lagging load average, idle now
    assert "0.9 at the start, 1.9 at the end" in idle and "at the start: 0.10" in idle
    assert "no other job was running" in idle and "inflated" not in idle
    busy = load_note({"start": 0.2, "end": 2.4}, busy_at_start=0.5)
    assert "other jobs were running" in busy and "inflated" in busy
    assert "inflated" in load_note({"start": 1.2, "end": 2.4})  # no sample: the load average decides
    assert load_note({}) == (
        "Load average (1 min) of the machine: ? at the start, ? at the end "
        "(the end includes the benchmark's own threads)."
    )


def test_write_section_replaces_only_its_own_section(tmp_path):
    doc = tmp_path / "docs" / "benchmarks.md"
    write_section(doc, "speed", "old speed")
    write_section(doc, "accuracy", "accuracy table")
    write_section(doc, "speed", "new speed")
    text = doc.read_text()
    assert text.startswith(HEADER)
    assert "new speed" in text and "old speed" not in text and "accuracy table" in text
    assert text.count("<!-- speed:start -->") == 1 and text.count("<!-- speed:end -->") == 1
    assert text.index("<!-- speed:start -->") < text.index("<!-- accuracy:start -->")  # kept in place
    after = "<!-- speed:end -->\n\n## Hand-written notes\n\nkept as written\n"
    doc.write_text(text.split("<!-- speed:end -->")[0] + after)
    write_section(doc, "speed", "newer speed")
    assert doc.read_text().endswith(after)  # what follows a section, byte for byte
    doc.write_text("# B\n\n<!-- speed:start -->\nhalf a section, its end marker deleted by hand\n")
    write_section(doc, "speed", "new")  # appended whole, not an IndexError
    assert doc.read_text().endswith("<!-- speed:start -->\nnew\n<!-- speed:end -->\n")


def test_kmeans_table_puts_each_backends_time_under_its_own_header():
    from tmtcam.bench.speed_report import kmeans_table

    timing = {"median": 1.0, "low": 1.0, "high": 1.0}
    row = {"shape": "1 x 64 x 16", "faiss": timing, "torch": dict(timing, median=2.0), "auto_picks": "faiss",
           "fastest_overall": "faiss"}  # fmt: skip
    header, _, line = kmeans_table({"kmeans": {"per_image": row}}).splitlines()
    cells = dict(zip(header.strip("|").split("|"), line.strip("|").split("|"), strict=True))
    cells = {key.strip(): value.strip() for key, value in cells.items()}
    assert [cells[name].split(" ")[0] for name in ("faiss", "torch", "naive_numpy")] == [
        "1.000",
        "2.000",
        "–",
    ]


def test_markdown_table():
    assert (
        markdown_table(["a", "b"], [[1, "x"], [2.5, "y"]]) == "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | y |"
    )


def test_machine_line_dates_in_utc_and_results_go_to_new_folders(tmp_path, monkeypatch):
    """The line says UTC, so the time must be UTC whatever the machine's zone; a new --json path's
    folders are made."""

    class Clock:
        @staticmethod
        def now(tz=None):
            return datetime(2026, 1, 2, 3, 4) if tz is timezone.utc else datetime(2026, 1, 2, 17, 4)

    monkeypatch.setattr(report, "datetime", Clock)
    assert "date: 2026-01-02 03:04 UTC" in machine_line()
    write_json(tmp_path / "new" / "dir" / "x.json", {"b": 1, "a": 2})
    assert json.loads((tmp_path / "new" / "dir" / "x.json").read_text()) == {"a": 2, "b": 1}


def test_naive_numpy_kmeans_recovers_planted_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32)
    points = np.concatenate([centre + rng.normal(0, 0.1, (20, 2)) for centre in centres]).astype(np.float32)
    labels = naive_numpy_kmeans(points, 3, seed=1)
    groups = labels.reshape(3, 20)
    assert all(len(set(group)) == 1 for group in groups) and len(set(groups[:, 0])) == 3


def test_profile_components_are_made_exclusive():
    ranges = {"forward (all)": 100.0, "ViT block 0": 40.0, REGIONS: 30.0, KMEANS: 25.0, "decoder": 10.0,
              "backward": 200.0, "optimizer step": 20.0}  # fmt: skip
    parts = _exclusive_components(ranges)
    assert parts[REGIONS] == 5.0 and parts[KMEANS] == 25.0  # k-means ran inside the regions range
    assert parts["forward, unlabelled (embedding adds, norms, glue)"] == 20.0  # 100 - (40 + 5 + 25 + 10)
    assert parts["total (profiled)"] == 320.0


@pytest.mark.slow
def test_bench_all_quick_writes_json_and_doc_section(tmp_path):
    from tmtcam.bench.run_all import main

    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- tmt-accuracy:start -->\nkept\n<!-- tmt-accuracy:end -->\n")
    assert main(["--quick", "--out", str(tmp_path / "bench"), "--doc", str(doc)]) == 0
    results = json.loads((tmp_path / "bench" / "bench.json").read_text())
    for key in (
        "tmt_step_ratio",
        "kmeans",
        "headrank_ratio",
        "lightning_ratio",
        "dataloader",
        "peak_rss",
        "profile",
    ):
        assert key in results, key
    assert {"per_image", "large"} <= set(results["kmeans"])
    assert all(isinstance(row["auto_is_fastest"], bool) for row in results["kmeans"].values())
    assert set(results["peak_rss"]) == {"tmt", "finetune", "promptcam"}
    assert all(m["peak_rss_mib"] >= m["rss_built_mib"] > 0 for m in results["peak_rss"].values())
    assert (
        0 < results["headrank_ratio"] < 1 and results["tmt_step_ratio"] > 0 and results["lightning_ratio"] > 0
    )
    assert results["tmt_step_ratio"] == results["steps"]["ratio_to_finetune"]["tmt"]["median"]
    text = doc.read_text()
    assert "<!-- speed:start -->" in text and "<!-- speed:end -->" in text and "kept" in text
    (wall_row,) = [line for line in text.splitlines() if line.startswith("| TMT step / fine-tune step (wall")]
    assert wall_row.endswith("| yes |" if results["tmt_step_ratio"] <= 1.15 else "| **no** |")
    assert "### Where one TMT step goes" in text and "Quick run" in text


def test_bench_all_with_accuracy_writes_the_accuracy_json_beside_the_speed_json(tmp_path, monkeypatch):
    from tmtcam.bench import run_all

    calls = []
    monkeypatch.setattr(run_all.importlib, "import_module", lambda name: SimpleNamespace(main=calls.append))
    args = SimpleNamespace(doc=tmp_path / "b.md", out=tmp_path / "bench", quick=True)
    assert run_all.run_accuracy(args) == 0
    (argv,) = calls
    options = dict(zip(argv[::2], argv[1::2], strict=False))
    assert options["--json"] == str(tmp_path / "bench" / "tmt_accuracy.json")  # not bench.json: kept apart
    assert options["--doc"] == str(tmp_path / "b.md") and options["--out"] == str(tmp_path / "bench" / "tmt")


def test_gpu_step_ratios_divide_each_method_by_fine_tuning_at_its_own_precision(monkeypatch):
    from tmtcam.bench import gpu_speed

    seconds = {"finetune/bf16": 1.0, "tmt/bf16": 1.5, "global/bf16": 1.2, "patch/bf16": 1.3, "grid/bf16": 1.4,
               "finetune/fp32": 2.0, "tmt/fp32": 2.2}  # fmt: skip

    def measured(builders, images, repeats, device):
        assert set(builders) == set(seconds)
        return {name: Timing((value,) * 3) for name, value in seconds.items()}, {name: {} for name in seconds}

    monkeypatch.setattr(gpu_speed, "_measure_steps", measured)
    steps = gpu_speed.compare_segmentation(torch.device("cpu"), quick=True)["steps"]
    assert steps["tmt/bf16"]["ratio_to_finetune"]["median"] == pytest.approx(1.5)
    assert steps["tmt/fp32"]["ratio_to_finetune"]["median"] == pytest.approx(1.1)  # against fp32 fine-tuning
    assert "ratio_to_finetune" not in steps["finetune/bf16"]


def test_bench_gpu_refuses_full_shapes_without_a_gpu(tmp_path):
    from tmtcam.bench.gpu_speed import main

    with pytest.raises(SystemExit, match="full shapes need a CUDA GPU; use --quick"):
        main(["--device", "cpu", "--out", str(tmp_path), "--doc", str(tmp_path / "b.md")])


@pytest.mark.slow
def test_bench_gpu_quick_on_cpu_writes_every_measurement(tmp_path):
    # The GPU benchmark's whole path at tiny shapes (its numbers come from a GPU: docs/benchmarks.md).
    from tmtcam.bench.gpu_speed import main

    doc = tmp_path / "benchmarks.md"
    assert main(["--quick", "--device", "cpu", "--out", str(tmp_path), "--doc", str(doc)]) == 0
    results = json.loads((tmp_path / "bench_gpu.json").read_text())
    steps = results["segmentation"]["steps"]
    assert set(steps) == {"finetune/bf16", "tmt/bf16", "global/bf16", "patch/bf16", "grid/bf16",
                          "finetune/fp32", "tmt/fp32"}  # fmt: skip
    assert all(row["img_per_s"] > 0 for row in steps.values())
    assert steps["tmt/bf16"]["ratio_to_finetune"]["median"] > 0
    assert (
        0 < results["bf16_error"]["tmt_logits"] < 0.2 and 0 < results["bf16_error"]["promptcam_logits"] < 0.2
    )
    assert results["head_ranking"]["same_ranking"] and results["head_ranking"]["ratio"]["median"] < 1
    assert {"torch", "auto_picks", "fastest_backend"} <= set(results["kmeans"]["large"])
    text = doc.read_text()
    assert "<!-- gpu:start -->" in text and "### TMT training step" in text and "### Head ranking" in text


def test_each_peak_memory_step_builds_the_method_it_is_named_after(monkeypatch):
    """The children of ``measure_peak_rss`` build ``MEMORY_STEPS[name]``; a fine-tune row measured on
    a TMT step would report TMT's memory twice."""
    import importlib

    from tmtcam.bench import speed, training_steps

    monkeypatch.setattr(training_steps, "segmentation_batch", lambda batch_size, seed: None)
    monkeypatch.setattr(training_steps, "segmentation_step", lambda task, batch: task)
    for name in ("tmt", "finetune"):
        factory, kwargs = speed.MEMORY_STEPS[name]
        module, function = factory.split(":")
        task = getattr(importlib.import_module(module), function)(**kwargs)
        assert task.segmenter.method == name
