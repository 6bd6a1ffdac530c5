"""Run a task under 2-process DDP on CPU (gloo) and record what each rank did, for ``test_ddp.py``.

Launched as a script, ``python tests/ddp_worker.py SPEC.json``: Lightning's ``strategy="ddp"`` then
starts rank 1 by re-running this same command line, as it does for ``python -m tmtcam fit``, so the
test exercises the launcher users get (a pytest process cannot be re-run that way).

SPEC keys: ``task`` (``tmt`` | ``promptcam``), ``weights`` (a state dict to start from), ``out``
(a folder), ``devices``, ``fit_steps`` (0 = validate only), optionally ``nan_on_rank`` (that rank's
training loss becomes NaN at step 1; the record then holds the ``TrainingFault`` each rank raised, and
no validation runs). Every rank writes ``rank<r>.json``
(metrics, k-means calls, PNG paths it logged) and ``rank<r>_state.pt`` (its weights after the run).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from tmtcam.training.guards import NonFiniteLossGuard, TrainingFault
from tmtcam.viz import segmentation_images

TINY_VIT = {
    "model_name": "vit_tiny_patch16_224",
    "patch_size": 8,
    "embed_dim": 48,
    "depth": 4,
    "num_heads": 3,
    "img_size": 32,
}


def tmt_setup(val_images: int = 8) -> tuple[L.LightningModule, L.LightningDataModule]:
    """TMT (k-means regions) on ``val_images`` synthetic target val images, one image per batch.

    Batch size 1 in evaluation: k-means is seeded per call, so an image's regions (and therefore the
    prediction) do not depend on which other images share its batch, i.e. on the rank it lands on.
    """
    from data_modules.segmentation import DomainPairDataModule
    from tmtcam.tasks import TMTSegmentation

    data = DomainPairDataModule(
        source={"dataset": "synthetic", "pair": "day_to_night", "num_images": 16},
        target={"dataset": "synthetic", "pair": "day_to_night", "num_images": 8},
        target_val={"dataset": "synthetic", "pair": "day_to_night", "domain": "target", "split": "val", "num_images": val_images},
        crop_size=32, batch_size=2, val_batch_size=1,
    )  # fmt: skip
    model = TMTSegmentation(
        num_classes=8, backbone=TINY_VIT, method="tmt", acte={"k_choices": [2, 4], "hidden_dim": 32},
        lr=3e-3, warmup_steps=1, num_logged_images=1,
    )  # fmt: skip
    return model, data


def promptcam_setup() -> tuple[L.LightningModule, L.LightningDataModule]:
    """Prompt-CAM on the synthetic species: 16 classes, 128 images, a quarter (32, even) held out for validation."""
    from data_modules.species import SpeciesDataModule
    from tmtcam.tasks import PromptCAMClassifier

    data = SpeciesDataModule(
        dataset="synthetic",
        image_size=32,
        batch_size=8,
        val_batch_size=4,
        num_train_images=128,
        val_fraction=0.25,
    )
    model = PromptCAMClassifier(dict(TINY_VIT), num_classes=16, heatmap_images=0, prompt_dropout=0.0)
    return model, data


def tmt_odd_val_setup() -> tuple[L.LightningModule, L.LightningDataModule]:
    """:func:`tmt_setup` with 7 val images: 2 ranks cannot split them evenly."""
    return tmt_setup(val_images=7)


SETUPS = {"tmt": tmt_setup, "promptcam": promptcam_setup, "tmt_odd_val": tmt_odd_val_setup}


def run(spec: dict[str, Any]) -> None:
    torch.set_num_threads(1)  # two ranks on two cores
    L.seed_everything(0, verbose=False)
    model, data = SETUPS[spec["task"]]()
    model.load_state_dict(torch.load(spec["weights"], weights_only=True))
    out = Path(spec["out"])
    record: dict[str, Any] = {"kmeans_batches": [], "logged_images": []}
    _record_side_effects(model, record)
    trainer = L.Trainer(
        accelerator="cpu", devices=spec["devices"], strategy="ddp" if spec["devices"] > 1 else "auto",
        max_steps=spec["fit_steps"], num_sanity_val_steps=0, logger=CSVLogger(out / "logs", name="run"),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[NonFiniteLossGuard()],
    )  # fmt: skip
    if spec.get("nan_on_rank") is not None:
        _poison_loss(model, spec["nan_on_rank"], step=1)
        try:
            trainer.fit(model, datamodule=data)
        except TrainingFault as fault:
            record["fault"] = str(fault)
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
        return
    if spec["fit_steps"]:
        trainer.fit(model, datamodule=data)
        record["global_step"] = trainer.global_step
    metrics = trainer.validate(model, datamodule=data, verbose=False)[0]
    rank = trainer.global_rank
    record.update(rank=rank, world_size=trainer.world_size, metrics=metrics)
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    torch.save(model.state_dict(), out / f"rank{rank}_state.pt")


def _poison_loss(model: L.LightningModule, rank: int, step: int) -> None:
    """Make ``rank``'s training loss NaN at global step ``step`` (the other rank's stays finite)."""
    training_step = model.training_step

    def poisoned(*args, **kwargs):
        loss = training_step(*args, **kwargs)
        if model.trainer.global_rank == rank and model.trainer.global_step == step:
            loss = loss * float("nan")
        return loss

    model.training_step = poisoned


def _record_side_effects(model: L.LightningModule, record: dict[str, Any]) -> None:
    """Count this rank's k-means calls (batch size, once per k) and the PNG files it wrote."""
    segmenter = getattr(model, "segmenter", None)
    if segmenter is not None and segmenter.uses_acte:
        kmeans = segmenter.partitioner.kmeans
        cluster_many = kmeans.cluster_many

        def counting_kmeans(points: torch.Tensor, ks: list[int]):
            record["kmeans_batches"].extend([int(points.shape[0])] * len(ks))
            return cluster_many(points, ks)

        kmeans.cluster_many = counting_kmeans
    # where each task's pictures call log_images from: the task module itself, or TMT's example strips
    for module in (sys.modules[type(model).__module__], segmentation_images):
        if hasattr(module, "log_images"):
            module.log_images = _recording(module.log_images, record)


def _recording(log_images: Callable[..., list[Path]], record: dict[str, Any]) -> Callable[..., list[Path]]:
    def recording_log_images(*args, **kwargs):
        paths = log_images(*args, **kwargs)
        record["logged_images"].extend(str(path) for path in paths)
        return paths

    return recording_log_images


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()))
