"""Two-process DDP on CPU (gloo) gives the metrics of one process, keeps ranks in step, logs images once.

Each test launches ``tests/ddp_worker.py`` (Lightning's own DDP launcher re-runs it for rank 1) and
compares with a one-process ``validate`` of the same weights here. Evaluation sets divide evenly by
the 2 ranks, so DistributedSampler adds no duplicate samples and the metrics must agree exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from ddp_worker import promptcam_setup, tmt_odd_val_setup, tmt_setup

WORKER = Path(__file__).with_name("ddp_worker.py")


def launch(tmp_path: Path, task: str, weights: Path, fit_steps: int = 0, **extra: object) -> list[dict]:
    """Run the worker on 2 ranks; returns the per-rank records (rank 0 first)."""
    out = tmp_path / "ddp"
    out.mkdir()
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {"task": task, "weights": str(weights), "out": str(out), "devices": 2, "fit_steps": fit_steps}
            | extra
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("MASTER_PORT", None)  # Lightning picks a free port
    # own session: a hung collective is killed with rank 1 (which Lightning started) instead of leaking it
    process = subprocess.Popen(
        [sys.executable, str(WORKER), str(spec)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        pytest.fail(f"2-rank {task} run hung (a collective called on one rank only?):\n{stderr[-3000:]}")
    assert process.returncode == 0, stderr[-4000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def initial_tmt_weights(tmp_path: Path) -> Path:
    """The tiny TMT model's seeded initial weights, saved for the worker to start from."""
    L.seed_everything(0, verbose=False)
    model, _ = tmt_setup()
    initial = tmp_path / "initial.pt"
    torch.save(model.state_dict(), initial)
    return initial


def validate_in_one_process(setup, state: dict, root: Path) -> dict[str, float]:
    L.seed_everything(0, verbose=False)
    model, data = setup()
    model.load_state_dict(state)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, default_root_dir=root, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    return trainer.validate(model, datamodule=data, verbose=False)[0]


def assert_same_metrics(ddp: dict[str, float], single: dict[str, float], keys: list[str]) -> None:
    assert set(keys) <= set(single), f"expected {keys} among {sorted(single)}"
    for key in keys:
        assert ddp[key] == pytest.approx(single[key], abs=1e-4), (key, ddp[key], single[key])


@pytest.mark.slow
def test_tmt_ddp_fit_keeps_ranks_in_step_and_validates_like_one_process(tmp_path: Path) -> None:
    initial = initial_tmt_weights(tmp_path)

    rank0, rank1 = launch(tmp_path, "tmt", initial, fit_steps=4)

    assert (rank0["world_size"], rank0["global_step"], rank1["global_step"]) == (2, 4, 4)
    # per-rank k-means, 2 k values per forward: each rank clusters only its own 2 source + 2 target
    # training images, then (validation in fit, then validate) its own half of the 8 val images
    for record in (rank0, rank1):
        assert record["kmeans_batches"] == [4] * 4 * 2 + [1] * 4 * 2 + [1] * 4 * 2
    # DDP averages gradients, so every weight (the patch discriminator included) is identical on both ranks
    states = [torch.load(tmp_path / "ddp" / f"rank{rank}_state.pt", weights_only=True) for rank in (0, 1)]
    start = torch.load(initial, weights_only=True)
    discriminator = [name for name in start if name.startswith("segmenter.discriminator.")]
    assert discriminator and any(not torch.equal(states[0][n], start[n]) for n in discriminator), (
        "did not train"
    )
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), f"{name} differs between ranks"
    # images: written by rank 0 only, each file once
    assert rank0["logged_images"] and not rank1["logged_images"]
    on_disk = sorted(str(p) for p in (tmp_path / "ddp" / "logs").rglob("*.png"))
    assert on_disk == sorted(set(rank0["logged_images"]))

    single = validate_in_one_process(tmt_setup, states[0], tmp_path / "single")
    keys = ["val/mIoU", "val/loss"] + [key for key in single if key.startswith("val/IoU/")]
    assert len(keys) == 2 + 8
    for record in (rank0, rank1):
        assert_same_metrics(record["metrics"], single, keys)


@pytest.mark.slow
def test_ddp_validation_scores_each_image_once_when_ranks_cannot_split_evenly(tmp_path: Path) -> None:
    """7 val images on 2 ranks: Lightning's sampler would score one twice (4 + 4)."""
    initial = initial_tmt_weights(tmp_path)
    rank0, rank1 = launch(tmp_path, "tmt_odd_val", initial)
    images_per_rank = [len(record["kmeans_batches"]) // 2 for record in (rank0, rank1)]  # 2 k values each
    assert sorted(images_per_rank) == [3, 4]
    single = validate_in_one_process(
        tmt_odd_val_setup, torch.load(initial, weights_only=True), tmp_path / "one"
    )
    keys = ["val/mIoU", "val/loss"] + [key for key in single if key.startswith("val/IoU/")]
    for record in (rank0, rank1):
        assert_same_metrics(record["metrics"], single, keys)


@pytest.mark.slow
def test_promptcam_ddp_validation_accuracy_equals_one_process(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    model, _ = promptcam_setup()
    with torch.no_grad():  # a random head with an opinion: predictions spread over the classes
        for parameter in model.model.parameters():
            if parameter.requires_grad:
                parameter.normal_(0.0, 1.0)
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)

    rank0, rank1 = launch(tmp_path, "promptcam", weights)

    single = validate_in_one_process(
        promptcam_setup, torch.load(weights, weights_only=True), tmp_path / "single"
    )
    assert 0.0 < single["val/acc"] < 1.0
    for record in (rank0, rank1):
        assert_same_metrics(record["metrics"], single, ["val/acc", "val/loss"])


@pytest.mark.slow
def test_a_nan_loss_on_one_rank_stops_every_rank_with_the_message(tmp_path: Path) -> None:
    # rank 1 alone sees NaN: had only it stopped, rank 0 would wait forever in the gradient all-reduce
    initial = initial_tmt_weights(tmp_path)

    rank0, rank1 = launch(tmp_path, "tmt", initial, fit_steps=4, nan_on_rank=1)

    assert "training loss is nan at global step 1" in rank1["fault"]
    assert "training loss is not finite on another rank at global step 1" in rank0["fault"]
