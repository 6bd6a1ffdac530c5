"""The TMT demo and accuracy benchmark: argument handling, aggregation maths, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_configs import die_while_recording_cache_settings

from tmtcam.pipelines import tmt_benchmark, tmt_demo, tmt_runs
from tmtcam.pipelines.settings_cache import SettingsCache
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
    tie = {"a": {"finetune": [50.0, 50.0], "tmt": [50.0, 51.0]}}
    assert tmt_benchmark.paired_gain(tie, "tmt", "finetune") == "+0.50 ± 0.71 (wins 1/2)"  # a tie is no win


def test_variants_parse_json_and_reject_unknown_methods() -> None:
    variants = tmt_benchmark.parse_variants(['tmt_a1={"method": "tmt", "acte": {"alpha": 1.0}}', "grid"])
    assert variants == {"tmt_a1": {"method": "tmt", "acte": {"alpha": 1.0}}, "grid": {"method": "grid"}}
    with pytest.raises(ValueError, match="not valid JSON"):
        tmt_benchmark.parse_variants(["x={alpha: 1}"])
    with pytest.raises(ValueError, match="method must be one of"):
        tmt_benchmark.parse_variants(['x={"method": "dann"}'])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--pairs", "no_such_pair"], "--pairs: unknown ['no_such_pair']"),
        (["--variant", "x={alpha: 1}"], "--variant x: not valid JSON"),
        (["--variant", 'x={"method": "dann"}'], "--variant x: method must be one of"),
        (["--crop-size", "100"], "--crop-size 100: must be a multiple of the patch size 8"),
        (["--decoder", "segformer"], "argument --decoder: invalid choice: 'segformer'"),
        (
            ["--backbone", "vit-s", "--crop-size", "36"],
            "--crop-size 36: must be a multiple of the patch size 8",
        ),
    ],
)
def test_bad_options_are_usage_errors_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    """Like argparse's own refusals: exit 2, usage line, the option named, nothing written."""
    with pytest.raises(SystemExit) as stopped:
        tmt_benchmark.main(["--out", str(tmp_path / "out"), "--doc", str(tmp_path / "b.md"), *options])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tmtcam bench tmt") and message in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "b.md").exists()


# target mIoU of each (pair, variant) run, by seed: per-pair tmt - finetune gains +1.5, 0, +6 (mean 2.5,
# median 1.5); the variant tmt_alpha1 (method tmt, other options) scores 1 below tmt everywhere
KNOWN_RUNS = {
    "city_a_to_city_b": {"finetune": [50.0, 52.0], "tmt": [53.0, 52.0]},
    "clear_to_fog": {"finetune": [40.0, 40.0], "tmt": [38.0, 42.0]},
    "day_to_night": {"finetune": [30.0, 30.0], "tmt": [36.0, 36.0]},
}


def test_benchmark_aggregates_known_runs_into_its_json_and_table(tmp_path: Path, monkeypatch) -> None:
    """The run loop and the report, with training replaced by known results: every number is checkable."""
    monkeypatch.setattr(
        tmt_benchmark, "pretrain_source", lambda pair, seed, cache, budget: f"{pair}/seed{seed}"
    )
    monkeypatch.setattr(tmt_benchmark, "test_source_model", lambda pair, seed, init, budget: 10.0 + seed)

    def adapt_and_test(pair, method, seed, init, out, budget, model_options=None):
        assert init == f"{pair}/seed{seed}"  # each seed adapts its own source model
        offset = -1.0 if model_options else 0.0
        return {"miou": KNOWN_RUNS[pair][method][seed] + offset, "seconds": 1.0}

    monkeypatch.setattr(tmt_benchmark, "adapt_and_test", adapt_and_test)
    doc, result = tmp_path / "bench.md", tmp_path / "bench.json"
    args = ["--pairs", "all", "--seeds", "2", "--methods", "finetune", "tmt", "--out", str(tmp_path), "--doc",
            str(doc), "--json", str(result), "--section", "my-runs",
            "--variant", 'tmt_alpha1={"method": "tmt", "acte": {"alpha": 1.0}}']  # fmt: skip
    monkeypatch.setattr(tmt_benchmark, "SYNTHETIC_PAIRS", dict.fromkeys(KNOWN_RUNS))
    assert tmt_benchmark.main(args) == 0
    payload = json.loads(result.read_text())
    for pair, runs in KNOWN_RUNS.items():
        assert payload["pairs"][pair] == {**runs, "tmt_alpha1": [value - 1.0 for value in runs["tmt"]]}
    assert payload["source_only"]["clear_to_fog"] == [10.0, 11.0]
    assert payload["mean_gain_tmt_vs_finetune"] == pytest.approx(2.5)  # mean of the per-pair gains
    assert payload["mean_gain_vs_finetune"]["tmt_alpha1"] == pytest.approx(1.5)
    text = doc.read_text()
    assert "<!-- my-runs:start -->" in text and "<!-- tmt-accuracy:start -->" not in text
    assert "| city_a_to_city_b | 10.50 ± 0.71 | 51.00 ± 1.41 | 52.50 ± 0.71 | 51.50 ± 0.71 |" in text
    assert "| **mean** | 10.50 | 40.33 | 42.83 | 41.83 |" in text
    assert "Mean gain over `finetune` (mIoU points): tmt +2.50, tmt_alpha1 +1.50." in text


def test_demo_summary_reports_the_chosen_pair_and_each_stages_own_result(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tmt_demo, "pretrain_source", lambda pair, seed, cache, budget: f"{pair}/seed{seed}")
    monkeypatch.setattr(tmt_demo, "test_source_model", lambda pair, seed, init, budget: 12.5)
    runs = {"finetune": 50.0, "tmt": 51.0}

    def adapt_and_test(pair, method, seed, init, out, budget):
        assert (pair, init) == ("clear_to_fog", "clear_to_fog/seed3")
        return {"miou": runs[method], "per_class": {"sky": runs[method]}, "seconds": 1.0}

    monkeypatch.setattr(tmt_demo, "adapt_and_test", adapt_and_test)
    assert tmt_demo.main(["--out", str(tmp_path), "--pair", "clear_to_fog", "--seed", "3"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["pair"], summary["seed"], summary["source_only_miou"]) == ("clear_to_fog", 3, 12.5)
    assert summary["miou"] == runs and summary["per_class_iou"]["tmt"] == {"sky": 51.0}


def test_adaptation_runs_on_the_budgets_target_images_and_labels(tmp_path: Path, monkeypatch) -> None:
    """What stage 2 is given, without training: the target's image count and labels follow the budget
    (``--target-images``, ``--unlabelled-target``), and a variant's options override the defaults."""
    built = {}

    class StandInData:
        num_classes, class_names = 2, ["a", "b"]

        def __init__(self, **kwargs):
            built["data"] = kwargs

    class StandInTrainer:
        def fit(self, model, datamodule):
            pass

        def test(self, model, datamodule, verbose):
            return [{"test/mIoU": 42.0, "test/IoU/a": 40.0, "test/IoU/b": 44.0}]

    monkeypatch.setattr(tmt_runs, "DomainPairDataModule", StandInData)
    monkeypatch.setattr(tmt_runs, "TMTSegmentation", lambda **kwargs: built.setdefault("model", kwargs))
    monkeypatch.setattr(tmt_runs, "_trainer", lambda out, steps, accelerator: StandInTrainer())
    budget = Budget(few_target_images=7, target_labelled=False)
    options = {"lr": 0.5, "warmup_steps": 5}
    run = tmt_runs.adapt_and_test("day_to_night", "tmt", 1, tmp_path / "init.pt", tmp_path, budget, options)
    assert run["miou"] == 42.0 and run["per_class"] == {"a": 40.0, "b": 44.0}
    target = built["data"]["target"]
    assert (target["num_images"], target["labelled"], target["seed"]) == (7, False, 1)
    assert built["data"]["target_test"]["split"] == "test"
    assert (built["model"]["lr"], built["model"]["warmup_steps"]) == (0.5, 5)  # the variant's options win


def test_source_only_is_scored_on_the_target_domains_test_split(tmp_path: Path, monkeypatch) -> None:
    specs = []

    def stop_at_the_dataset(spec, transform):
        specs.append(spec)
        raise InterruptedError

    monkeypatch.setattr(tmt_runs, "build_segmentation_dataset", stop_at_the_dataset)
    with pytest.raises(InterruptedError):
        tmt_runs.test_source_model("day_to_night", 2, tmp_path / "init.pt", Budget(test_images=9))
    assert (specs[0].domain, specs[0].split, specs[0].num_images, specs[0].seed) == ("target", "test", 9, 2)


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
    retrained = path.stat().st_mtime_ns
    more_images = Budget(source_steps=3, batch_size=4, source_images=12)
    assert pretrain_source("day_to_night", 0, tmp_path, more_images) == path
    assert path.stat().st_mtime_ns != retrained  # other source images: trained again too
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["images"] == 12
    # every stage-1 setting is part of the key (each of these changes the model trained)
    assert (record["lr"], record["crop_size"], record["batch_size"]) == (
        more_images.lr,
        more_images.crop_size,
        4,
    )
    assert record["backbone"] == more_images.vit() and record["accelerator"] == more_images.accelerator


def test_benchmark_trains_the_chosen_backbone_at_the_chosen_size(tmp_path: Path, monkeypatch) -> None:
    """``--backbone vit-s --crop-size 96 --decoder mask_transformer`` reaches every stage's budget and
    the report names them."""
    budgets = []

    def pretrain(pair, seed, cache, budget):
        budgets.append(budget)
        return "init"

    monkeypatch.setattr(tmt_benchmark, "pretrain_source", pretrain)
    monkeypatch.setattr(tmt_benchmark, "test_source_model", lambda pair, seed, init, budget: 1.0)

    def adapt(pair, method, seed, init, out, budget, model_options=None):
        budgets.append(budget)
        return {"miou": 2.0, "seconds": 1.0}

    monkeypatch.setattr(tmt_benchmark, "adapt_and_test", adapt)
    doc = tmp_path / "bench.md"
    args = ["--pairs", "day_to_night", "--seeds", "1", "--methods", "finetune", "--backbone", "vit-s",
            "--crop-size", "96", "--decoder", "mask_transformer", "--out", str(tmp_path), "--doc", str(doc),
            "--json", str(tmp_path / "b.json")]  # fmt: skip
    assert tmt_benchmark.main(args) == 0
    assert len(budgets) == 2 and budgets[1] == budgets[0]  # stage 2 adapts the same shape
    assert budgets[0].vit() == {
        "model_name": "vit_small_patch16_224", "patch_size": 8, "embed_dim": 384, "depth": 12, "num_heads": 6,
        "img_size": 96,
    }  # fmt: skip
    assert budgets[0].decoder == "mask_transformer"
    assert "ViT vit-s (width 384, depth 12, patch 8, 96 px), mask_transformer decoder" in doc.read_text()
    recorded = json.loads((tmp_path / "b.json").read_text())["budget"]
    assert (recorded["backbone"], recorded["decoder"]) == ("vit-s", "mask_transformer")


def test_first_seed_runs_the_later_seeds_alone(tmp_path: Path, monkeypatch) -> None:
    """``--seeds 2 --first-seed 3`` trains and adapts seeds 3 and 4 only, so that seeds can be split
    over processes; the results and the report say which seeds they hold."""
    seeds = []
    monkeypatch.setattr(
        tmt_benchmark, "pretrain_source", lambda pair, seed, cache, budget: seeds.append(seed)
    )
    monkeypatch.setattr(tmt_benchmark, "test_source_model", lambda pair, seed, init, budget: 1.0)
    monkeypatch.setattr(
        tmt_benchmark, "adapt_and_test", lambda *args, **kwargs: {"miou": float(args[2]), "seconds": 1.0}
    )
    doc, result = tmp_path / "bench.md", tmp_path / "b.json"
    args = ["--pairs", "day_to_night", "--seeds", "2", "--first-seed", "3", "--methods", "finetune",
            "--out", str(tmp_path), "--doc", str(doc), "--json", str(result)]  # fmt: skip
    assert tmt_benchmark.main(args) == 0
    assert seeds == [3, 4]
    payload = json.loads(result.read_text())
    assert payload["seeds"] == [3, 4] and payload["pairs"]["day_to_night"]["finetune"] == [3.0, 4.0]
    assert "mean ± std over 2 seed(s) from 3;" in doc.read_text()


def test_unknown_backbone_is_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"backbone must be one of \['small', 'vit-s'\], got 'vit-b'"):
        Budget(backbone="vit-b").vit()


def test_another_backbone_trains_a_new_source_model_of_that_shape(tmp_path: Path) -> None:
    small = Budget(source_steps=1, batch_size=2, source_images=2, crop_size=32)
    path = pretrain_source("day_to_night", 0, tmp_path, small)
    assert torch.load(path)["state_dict"]["segmenter.backbone.vit.cls_token"].shape[-1] == 192
    wider = Budget(source_steps=1, batch_size=2, source_images=2, crop_size=32, backbone="vit-s")
    assert pretrain_source("day_to_night", 0, tmp_path, wider) == path
    weights = torch.load(path)["state_dict"]
    assert weights["segmenter.backbone.vit.cls_token"].shape[-1] == 384
    assert "segmenter.backbone.vit.blocks.11.attn.qkv.weight" in weights
    assert json.loads(path.with_suffix(".json").read_text())["backbone"]["img_size"] == 32


def test_another_decoder_trains_a_new_source_model_that_every_stage_loads(tmp_path: Path) -> None:
    """The source model is adapted with its own head, so the decoder is part of the cache key and
    stage 2 and the "source only" test build the same decoder (a linear model's weights would not load)."""
    linear = Budget(source_steps=1, adapt_steps=1, batch_size=2, source_images=2, few_target_images=2,
                    test_images=2, crop_size=32)  # fmt: skip
    path = pretrain_source("day_to_night", 0, tmp_path, linear)
    assert "segmenter.decoder.classifier.weight" in torch.load(path)["state_dict"]
    masks = Budget(**{**tmt_runs.budget_dict(linear), "decoder": "mask_transformer"})
    assert pretrain_source("day_to_night", 0, tmp_path, masks) == path
    weights = torch.load(path)["state_dict"]
    assert (
        "segmenter.decoder.class_embeddings" in weights
        and "segmenter.decoder.classifier.weight" not in weights
    )
    assert json.loads(path.with_suffix(".json").read_text())["decoder"] == "mask_transformer"
    assert 0.0 <= tmt_runs.test_source_model("day_to_night", 0, path, masks) <= 100.0
    run = tmt_runs.adapt_and_test("day_to_night", "tmt", 0, path, tmp_path / "tmt", masks)
    assert 0.0 <= run["miou"] <= 100.0


def _interrupt(*args, **kwargs) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("killed", ["while recording its settings", "while saving the model"])
def test_a_killed_retrain_leaves_no_record_vouching_for_the_replaced_model(
    tmp_path: Path, monkeypatch, killed: str
) -> None:
    """The old settings record is removed before the model file is replaced, and the new one is
    written only once the file is whole: a run killed in between (after ``torch.save``, or inside it
    with a half-written file) leaves no record, or a later run with the old settings would take the
    new budget's model for its own."""
    budget = Budget(source_steps=1, batch_size=2, source_images=2, crop_size=32)
    path = pretrain_source("day_to_night", 0, tmp_path, budget)
    if killed == "while saving the model":
        monkeypatch.setattr(torch, "save", _interrupt)  # stage 1 saves nothing else (no checkpoints)
    else:
        die_while_recording_cache_settings(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        pretrain_source(
            "day_to_night", 0, tmp_path, Budget(source_steps=2, batch_size=2, source_images=2, crop_size=32)
        )
    assert not path.with_suffix(".json").exists()
    if killed == "while recording its settings":
        assert path.exists()  # the new model, with no record claiming the old budget


def test_settings_cache_vouches_only_for_a_file_made_with_the_same_settings(tmp_path: Path) -> None:
    """Shared by the TMT source models and the Prompt-CAM demo's backbone (which used to keep the
    old record while its retrain overwrote the weights)."""
    old = SettingsCache(tmp_path / "cache" / "m.pt", {"steps": 3})
    assert not old.is_current()
    old.begin_remake()
    old.path.write_bytes(b"weights of 3 steps")
    old.finish_remake()
    assert old.is_current() and not SettingsCache(old.path, {"steps": 4}).is_current()
    new = SettingsCache(old.path, {"steps": 4})
    new.begin_remake()  # then killed before finish_remake: the file may be half replaced
    old.path.write_bytes(b"weights of 4 steps")
    assert not old.is_current() and not new.is_current()
    new.finish_remake()
    assert new.is_current()
    new.path.unlink()  # the weights deleted by hand, the record left: nothing to reuse
    assert not new.is_current()
