"""The two TMT stages on an embedded synthetic pair, shared by ``demo tmt`` and ``bench tmt``.

Stage 1 trains a small from-scratch ViT segmenter on the pair's *source* domain (the stand-in for
an ImageNet/source-pretrained segmenter, since nothing may be downloaded); its checkpoint is cached
under the run dir and reused. Stage 2 starts every method from that checkpoint and adapts it with
``few_target_images`` target images (labelled, or not for unsupervised adaptation) while source
batches keep flowing, with the same seed,
steps and batch size for every method, then reports mIoU on the target test split.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from data_modules.segmentation import DomainPairDataModule, DomainSpec, build_segmentation_dataset
from data_modules.segmentation.transforms import build_eval_transform, build_train_transform
from tmtcam.pipelines.settings_cache import SettingsCache
from tmtcam.tasks.tmt_segmentation import TMTSegmentation

# Backbones of the embedded pipelines, trained from scratch (nothing may be downloaded). ``small`` is
# the 2-core CPU default; ``vit-s`` is ViT-S/8's shape (timm's ViT-S/16 with 8-px patches) for GPU runs
# that ask whether TMT's effect grows with width, depth and patch count.
BACKBONES: dict[str, dict[str, Any]] = {
    "small": {"model_name": "vit_tiny_patch16_224", "patch_size": 8, "embed_dim": 192, "depth": 6, "num_heads": 3},
    "vit-s": {"model_name": "vit_small_patch16_224", "patch_size": 8, "embed_dim": 384, "depth": 12, "num_heads": 6},
}  # fmt: skip


@dataclass
class Budget:
    """How much compute each stage gets (identical for every stage-2 method)."""

    source_steps: int = 600
    adapt_steps: int = 400
    batch_size: int = 16
    crop_size: int = 64
    source_images: int = 2000
    few_target_images: int = 100
    target_labelled: bool = True  # False: unsupervised adaptation, target images without masks
    test_images: int = 200
    lr: float = 1e-3
    backbone_lr_mult: float = 1.0  # measured: 0.1 leaves the backbone almost still in 400 steps (-3.8 mIoU)
    accelerator: str = "cpu"  # Lightning accelerator of every stage: "gpu" runs them on one GPU
    backbone: str = "small"  # a key of BACKBONES
    decoder: str = "linear"  # of every stage (the source model's decoder is the one adapted)

    def vit(self) -> dict[str, Any]:
        """The backbone setting of every stage: the named shape at this budget's crop size."""
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {self.backbone!r}")
        return {**BACKBONES[self.backbone], "img_size": self.crop_size}

    def architecture(self) -> dict[str, Any]:
        """The segmenter's shape, the same in every stage (a source model only loads into its own
        shape): ``TMTSegmentation``'s ``backbone`` and ``decoder`` arguments."""
        return {"backbone": self.vit(), "decoder": self.decoder}

    def describe(self) -> str:
        """One line for reports, e.g. ``ViT small (width 192, depth 6, patch 8, 64 px), linear decoder``."""
        vit = self.vit()
        return (f"ViT {self.backbone} (width {vit['embed_dim']}, depth {vit['depth']}, "
                f"patch {vit['patch_size']}, {self.crop_size} px), {self.decoder} decoder")  # fmt: skip


SMALL_VIT: dict[str, Any] = Budget().vit()  # the default budget's backbone: what `make bench` times


def _trainer(out: Path, steps: int, accelerator: str) -> L.Trainer:
    return L.Trainer(
        max_steps=steps, accelerator=accelerator, devices=1, logger=CSVLogger(out, name="", version=""),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, deterministic=False,
    )  # fmt: skip


def pretrain_source(pair: str, seed: int, out: Path, budget: Budget) -> Path:
    """Stage 1 (cached): a segmenter trained on the source domain only; returns its weights file.

    The cache is reused only if ``<file>.json`` records the same stage-1 settings (architecture,
    steps, images, batch, crop, lr, accelerator); otherwise the model is trained again and the file
    replaced, so a run with another ``--source-steps`` never reports on a model trained with a
    different budget. The file name stays ``source_<pair>_seed<seed>.pt`` because configs point at it.
    Seeded before the model is built, so its initial weights do not depend on what ran earlier in
    the process (they did: a pair's source model changed with its place in ``--pairs``).
    """
    cache = SettingsCache(out / f"source_{pair}_seed{seed}.pt", {
        **budget.architecture(), "pair": pair, "seed": seed,
        "steps": budget.source_steps, "images": budget.source_images, "batch_size": budget.batch_size,
        "crop_size": budget.crop_size, "lr": budget.lr,
        "accelerator": budget.accelerator,  # a GPU-trained model differs numerically
    })  # fmt: skip
    if cache.is_current():
        return cache.path
    cache.begin_remake()
    L.seed_everything(seed, workers=True, verbose=False)
    spec = DomainSpec(dataset="synthetic", pair=pair, domain="source", num_images=budget.source_images,
                      seed=seed, image_size=budget.crop_size)  # fmt: skip
    dataset = build_segmentation_dataset(
        spec, build_train_transform(budget.crop_size, (1.0, 1.5), None, False, seed)
    )
    loader = DataLoader(dataset, batch_size=budget.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    model = TMTSegmentation(num_classes=8, **budget.architecture(), method="finetune", lr=budget.lr,
                            backbone_lr_mult=1.0, warmup_steps=50, seed=seed)  # fmt: skip
    _trainer(out / "logs" / cache.path.stem, budget.source_steps, budget.accelerator).fit(model, loader)
    torch.save({"state_dict": model.state_dict()}, cache.path)
    cache.finish_remake()
    return cache.path


def adapt_and_test(
    pair: str,
    method: str,
    seed: int,
    init: Path,
    out: Path,
    budget: Budget,
    model_options: dict | None = None,
) -> dict[str, Any]:
    """Stage 2 for one method; returns ``{"miou", "per_class", "seconds"}`` on the target test split.

    Seeded first, so the new heads (discriminator, probe, aligner) start alike whatever ran before.
    """
    start = time.perf_counter()
    L.seed_everything(seed, workers=True, verbose=False)
    data = DomainPairDataModule(
        source={"dataset": "synthetic", "pair": pair, "num_images": budget.source_images, "seed": seed},
        target={"dataset": "synthetic", "pair": pair, "num_images": budget.few_target_images, "seed": seed,
                "labelled": budget.target_labelled},
        target_test={"dataset": "synthetic", "pair": pair, "split": "test", "num_images": budget.test_images, "seed": seed},
        crop_size=budget.crop_size, batch_size=budget.batch_size // 2, seed=seed,
    )  # fmt: skip
    options = {
        "lr": budget.lr, "backbone_lr_mult": budget.backbone_lr_mult, "warmup_steps": 20,
        "log_images_every_n_epochs": 0, "seed": seed, **(model_options or {}),
    }  # fmt: skip
    model = TMTSegmentation(num_classes=data.num_classes, **budget.architecture(), method=method,
                            class_names=data.class_names, init_checkpoint=str(init), **options)  # fmt: skip
    trainer = _trainer(out / "logs" / f"{pair}_{method}_seed{seed}", budget.adapt_steps, budget.accelerator)
    trainer.fit(model, datamodule=data)
    metrics = trainer.test(model, datamodule=data, verbose=False)[0]
    per_class = {name: round(metrics[f"test/IoU/{name}"], 2) for name in data.class_names}
    return {
        "miou": float(metrics["test/mIoU"]),
        "per_class": per_class,
        "seconds": time.perf_counter() - start,
    }


def test_source_model(pair: str, seed: int, init: Path, budget: Budget) -> float:
    """Target test mIoU of the stage-1 model before any adaptation (the "source only" row)."""
    spec = DomainSpec(dataset="synthetic", pair=pair, domain="target", split="test",
                      num_images=budget.test_images, seed=seed, image_size=budget.crop_size)  # fmt: skip
    loader = DataLoader(build_segmentation_dataset(spec, build_eval_transform(None)), batch_size=32)
    model = TMTSegmentation(
        num_classes=8, **budget.architecture(), method="finetune", init_checkpoint=str(init)
    )
    trainer = L.Trainer(
        accelerator=budget.accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return float(trainer.test(model, loader, verbose=False)[0]["test/mIoU"])


def budget_dict(budget: Budget) -> dict[str, Any]:
    return asdict(budget)
