"""The TMT demo and accuracy benchmark: argument handling, aggregation maths, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tmtcam.pipelines import tmt_benchmark, tmt_demo
from tmtcam.pipelines.tmt_runs import Budget, pretrain_source


def test_mean_gain_averages_per_pair_means() -> None:
    results = {"a": {"finetune": [50.0, 52.0], "tmt": [53.0, 55.0]}, "b": {"finetune": [40.0], "tmt": [39.0]}}
    assert tmt_benchmark.mean_gain(results, "tmt", "finetune") == pytest.approx((3.0 - 1.0) / 2)
    assert tmt_benchmark.mean_std([1.0, 3.0]) == "2.00 ± 1.41"


def test_paired_gain_compares_runs_that_share_pair_and_seed() -> None:
    results = {"a": {"finetune": [50.0, 52.0], "tmt": [53.0, 51.0]}, "b": {"finetune": [40.0], "tmt": [42.0]}}
    # per-run differences +3, -1, +2: mean 1.33, sample std 2.08, tmt ahead in 2 of 3 runs
    assert tmt_benchmark.paired_gain(results, "tmt", "finetune") == "+1.33 ± 2.08 (wins 2/3)"
    assert tmt_benchmark.paired_gain(results, "grid", "finetune") == "n/a"


def test_variants_parse_json_and_reject_unknown_methods() -> None:
    variants = tmt_benchmark.parse_variants(['tmt_a1={"method": "tmt", "acte": {"alpha": 1.0}}', "grid"])
    assert variants == {"tmt_a1": {"method": "tmt", "acte": {"alpha": 1.0}}, "grid": {"method": "grid"}}
    with pytest.raises(SystemExit, match="not valid JSON"):
        tmt_benchmark.parse_variants(["x={alpha: 1}"])
    with pytest.raises(SystemExit, match="method must be one of"):
        tmt_benchmark.parse_variants(['x={"method": "dann"}'])


def test_unknown_pair_is_rejected_by_name(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown.*no_such_pair"):
        tmt_benchmark.main(["--pairs", "no_such_pair", "--out", str(tmp_path)])


@pytest.mark.slow
def test_demo_and_benchmark_write_their_summaries(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert tmt_demo.main(["--out", str(out), "--source-steps", "4", "--adapt-steps", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pair"] == "day_to_night" and set(summary["miou"]) == {"finetune", "tmt"}
    assert all(0.0 <= value <= 100.0 for value in summary["miou"].values()) and summary["seconds"] > 0
    for method, per_class in summary["per_class_iou"].items():  # mIoU: the mean over scored classes
        scored = [value for value in per_class.values() if not math.isnan(value)]
        assert len(per_class) == 8 and summary["miou"][method] == pytest.approx(
            sum(scored) / len(scored), abs=0.01
        )
    doc, result = tmp_path / "bench.md", tmp_path / "bench.json"
    args = ["--pairs", "clear_to_fog", "--seeds", "1", "--methods", "finetune", "tmt", "--source-steps", "4",
            "--adapt-steps", "3", "--out", str(tmp_path / "bench"), "--doc", str(doc), "--json", str(result),
            "--target-images", "8", "--unlabelled-target"]  # fmt: skip
    assert tmt_benchmark.main(args) == 0
    payload = json.loads(result.read_text())
    assert set(payload["pairs"]["clear_to_fog"]) == {"finetune", "tmt"}
    assert isinstance(payload["mean_gain_tmt_vs_finetune"], float)
    assert "<!-- tmt-accuracy:start -->" in doc.read_text() and "clear_to_fog" in doc.read_text()
    assert "8 unlabelled target images" in doc.read_text() and "Per run (pair × seed" in doc.read_text()
    assert (
        "Command: `python -m tmtcam bench tmt --pairs clear_to_fog --seeds 1 --methods finetune tmt"
        in doc.read_text()
    )
    assert payload["command"].endswith("--unlabelled-target")
    assert payload["budget"]["few_target_images"] == 8 and payload["budget"]["target_labelled"] is False


def test_source_model_does_not_depend_on_what_ran_before(tmp_path: Path) -> None:
    """A pair's source model is the same whether it is trained first or after other work (it used to
    take its initial weights from whatever the global random state was)."""
    budget = Budget(source_steps=2, batch_size=4, source_images=8)
    first = pretrain_source("day_to_night", 0, tmp_path / "a", budget)
    torch.manual_seed(123)
    torch.rand(1000)  # other work in the same process moves the global random state
    again = pretrain_source("day_to_night", 0, tmp_path / "b", budget)
    weights_a = torch.load(first)["state_dict"]
    weights_b = torch.load(again)["state_dict"]
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)


def test_cached_source_model_is_reused_only_for_the_same_budget(tmp_path: Path) -> None:
    budget = Budget(source_steps=2, batch_size=4, source_images=8)
    path = pretrain_source("day_to_night", 0, tmp_path, budget)
    trained = path.stat().st_mtime_ns
    assert pretrain_source("day_to_night", 0, tmp_path, budget) == path
    assert path.stat().st_mtime_ns == trained  # same settings: reused
    longer = Budget(source_steps=3, batch_size=4, source_images=8)
    assert pretrain_source("day_to_night", 0, tmp_path, longer) == path
    assert path.stat().st_mtime_ns != trained  # another budget: trained again, not silently reused
    assert json.loads(path.with_suffix(".json").read_text())["steps"] == 3
