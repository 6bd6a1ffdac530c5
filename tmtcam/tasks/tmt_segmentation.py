"""``TMTSegmentation``: cross-domain segmentation (TMT or a baseline, by ``method:``) as a LightningModule.

The module is thin: the network and ACTE/TMA live in :mod:`tmtcam.tmt`, this file adds the losses,
the optimiser, metrics and image logging.

Training batches come from :class:`~data_modules.segmentation.DomainPairDataModule` as
``{"source": batch, "target": batch}``; both halves go through the network in one forward (so the
discriminators see both domains). A plain batch (``{"image", "mask"}``) trains on that data alone,
which is how the source model is pre-trained. Losses:

* segmentation: pixel cross-entropy (ignore 255) averaged per domain, ``source_weight`` and
  ``target_weight`` apart; with ``tma.region_loss_weight`` = omega each pixel weighs 1 + omega * priority;
* ACTE (``patch``/``grid``/``tmt``): discriminator BCE and the uncertainty probe's CE, both on
  detached features (they only train their own heads);
* ``global``: DANN loss through gradient reversal, weighted by ``adversarial_weight``.

Evaluation is on target batches: torchmetrics ``MulticlassJaccardIndex(ignore_index=255)``, synced
across DDP ranks, logged as ``val/mIoU`` and ``val/IoU/<class>``. A class that is neither in the
labels nor predicted has no IoU (NaN) and is left out of the mean, as in mmseg; torchmetrics would
count it as 0 by default and pull mIoU down on any split that lacks a class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassJaccardIndex

from data_modules.segmentation.label_maps import IGNORE_INDEX  # masks' "not labelled" id
from tmtcam.backbones import BackboneSetting, build_backbone
from tmtcam.tmt.segmenter import ACTEOptions, SegmenterOutput, TMAOptions, TMTSegmenter, pixel_priority
from tmtcam.tmt.transferability import discriminator_loss
from tmtcam.training.checkpoint_compat import (
    check_checkpoint,
    check_optimizer_groups,
    load_initial_weights,
    stamp_checkpoint,
)
from tmtcam.training.schedules import check_optimisation_settings, warmup_cosine
from tmtcam.viz.segmentation_images import log_segmentation_examples


def masked_cross_entropy(
    logits: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean pixel CE over non-ignored pixels (0, not NaN, when every pixel is ignored)."""
    loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (masks != IGNORE_INDEX).float()
    if weights is not None:
        loss = loss * weights
    return (loss * valid).sum() / valid.sum().clamp_min(1.0)


class TMTSegmentation(LightningModule):
    """Cross-domain semantic segmentation with TMT or a baseline.

    Args:
        num_classes: label-space size (must equal the data module's; checked at ``setup``).
        backbone: :class:`~tmtcam.backbones.ViTBackbone` arguments (a mapping or ``BackboneConfig``).
        method: ``finetune`` | ``global`` | ``patch`` | ``grid`` | ``tmt`` (DESIGN §4.5).
        decoder: ``linear`` | ``mask_transformer``.
        acte, tma: :class:`ACTEOptions`, :class:`TMAOptions` (mappings in YAML).
        class_names: for per-class IoU keys and W&B mask labels (``None``: from the data module).
        lr, weight_decay: AdamW; the backbone uses ``lr * backbone_lr_mult``.
        warmup_steps: linear warm-up, then cosine decay to 0 over the run.
        source_weight, target_weight: weights of the two domains' segmentation losses.
        adversarial_weight: DANN loss weight (``global``), and of the alignment loss with ``acte.align``.
        init_checkpoint: start from the weights of another run (e.g. the source-trained model);
            backbone and decoder must match, ACTE/TMA parts may be absent.
        eval_window, eval_stride: sliding-window evaluation for images larger than the crop.
        log_images_every_n_epochs, num_logged_images: validation picture logging (rank 0 only).
        seed: k-means seed.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: BackboneSetting | None = None,
        method: str = "tmt",
        decoder: str = "linear",
        acte: ACTEOptions | None = None,
        tma: TMAOptions | None = None,
        class_names: list[str] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        backbone_lr_mult: float = 0.1,
        warmup_steps: int = 50,
        source_weight: float = 1.0,
        target_weight: float = 1.0,
        adversarial_weight: float = 0.1,
        init_checkpoint: str | None = None,
        eval_window: int | None = None,
        eval_stride: int | None = None,
        log_images_every_n_epochs: int = 1,
        num_logged_images: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for key in ("acte", "tma", "backbone"):  # plain YAML in hparams.yaml and checkpoints
            if is_dataclass(self.hparams[key]):
                self.hparams[key] = asdict(self.hparams[key])
        if num_classes < 2:
            raise ValueError(f"model.init_args.num_classes must be >= 2, got {num_classes}")
        check_optimisation_settings(lr, weight_decay=weight_decay, backbone_lr_mult=backbone_lr_mult,
                                    warmup_steps=warmup_steps)  # fmt: skip
        self.segmenter = TMTSegmenter(
            build_backbone(backbone or {}), num_classes, method, decoder, acte, tma, seed=seed
        )
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
        self.miou_subsets: dict[str, tuple[int, ...]] = {}  # from the data module at setup
        if len(self.class_names) != num_classes:
            raise ValueError(
                f"model.init_args.class_names has {len(self.class_names)} names for {num_classes} classes"
            )
        self.val_iou, self.test_iou = (
            MulticlassJaccardIndex(
                num_classes, ignore_index=IGNORE_INDEX, average="none", zero_division=float("nan")
            )
            for _ in range(2)
        )
        # image-weighted over all ranks (a logged float would be a mean of the ranks' means)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        if init_checkpoint:  # backbone + decoder must be there; ACTE/TMA parts may be missing
            key, required = "model.init_args.init_checkpoint", ("segmenter.backbone.", "segmenter.decoder.")
            load_initial_weights(self, init_checkpoint, num_classes, required, key)

    # ------------------------------------------------------------------ setup and checkpoints
    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_classes = getattr(data, "num_classes", None)
        if data_classes is not None and data_classes != self.hparams.num_classes:
            raise ValueError(
                f"model.init_args.num_classes={self.hparams.num_classes} but the data has {data_classes} "
                f"classes; set them equal"
            )
        if self.hparams.class_names is None and getattr(data, "class_names", None):
            self.class_names = list(data.class_names)
        self.miou_subsets = dict(getattr(data, "miou_subsets", None) or {})
        if stage == "fit":
            self._warn_if_unlabelled_target_is_not_aligned(getattr(data, "target", None))

    def _warn_if_unlabelled_target_is_not_aligned(self, target: Any) -> None:
        """Without target labels, a region method's map only steers attention, and that measured no
        gain over fine-tuning on the source alone, while ``acte.align: image`` gained several points
        (docs/benchmarks.md, "TMT in other settings"). A user adapting to an unlabelled domain most
        likely wants the alignment, so say so rather than let the run quietly do nothing."""
        labelled = getattr(target, "labelled", True)
        if labelled or not self.segmenter.uses_acte or self.segmenter.acte_options.align:
            return
        rank_zero_warn(
            f"data.init_args.target has no labels (labelled: false) and model.init_args.method is "
            f"{self.hparams.method} without model.init_args.acte.align, so the target images only feed "
            "the transferability map, whose attention bias alone gave no gain over source-only "
            "training (docs/benchmarks.md, 'TMT in other settings'); set model.init_args.acte.align: "
            "image to also align the domains"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stamp_checkpoint(checkpoint, self, self.hparams.num_classes)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint(checkpoint, self, self.hparams.num_classes)
        if self._trainer is not None and self.trainer.state.fn == "fit":  # resuming: optimiser restored
            check_optimizer_groups(checkpoint, len(self.optimizer_groups()))

    # ------------------------------------------------------------------ training
    def forward(self, images: torch.Tensor) -> SegmenterOutput:
        return self.segmenter(images)

    @property
    def source_only(self) -> bool:
        """``finetune`` with ``target_weight: 0`` (the source model of stage 1): target images would
        reach no loss and no discriminator, so they are not put through the network (half the
        compute of a step)."""
        return self.hparams.method == "finetune" and self.hparams.target_weight == 0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if "source" in batch and self.source_only:  # stage 1: the target batch would add no loss
            parts, weights = [batch["source"]], [self.hparams.source_weight]
        elif "source" in batch:
            parts = [batch["source"], batch["target"]]
            weights = [self.hparams.source_weight, self.hparams.target_weight]
        else:
            parts, weights = [batch], [1.0]
        sizes = [part["image"].shape[0] for part in parts]
        images = torch.cat([part["image"] for part in parts])
        masks = torch.cat([part["mask"] for part in parts])
        out = self.segmenter(images)
        losses, per_domain = self._losses(out, masks, sizes, weights)
        total = sum(losses.values())
        for name, value in {**losses, **per_domain}.items():
            self.log(f"train/{name}", value, batch_size=images.shape[0])
        self.log("train/loss", total, prog_bar=True, batch_size=images.shape[0])
        if out.transferability is not None:
            self.log("train/transferability", out.transferability.mean(), batch_size=images.shape[0])
            self.log("train/tma_beta", self.segmenter.tma.beta.mean(), batch_size=images.shape[0])
        return total

    def step_loss(
        self, images: torch.Tensor, masks: torch.Tensor, sizes: Sequence[int], weights: Sequence[float]
    ) -> torch.Tensor:
        """The summed loss ``training_step`` optimises, for a batch of ``sizes`` images per domain
        (source first) with per-domain segmentation ``weights``: the benchmarks' loops outside
        Lightning call this, not a copy of it."""
        losses, _ = self._losses(self.segmenter(images), masks, sizes, weights)
        return sum(losses.values())

    def _losses(
        self, out: SegmenterOutput, masks: torch.Tensor, sizes: Sequence[int], weights: Sequence[float]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The losses to sum, and the per-domain segmentation losses (detached, for logging)."""
        pixel_weights = None
        omega = self.segmenter.tma_options.region_loss_weight
        if omega and out.priority is not None:
            pixel_weights = 1.0 + omega * pixel_priority(
                out.priority.detach(), out.grid, tuple(masks.shape[-2:])
            )
        per_domain: dict[str, torch.Tensor] = {}
        seg = out.logits.new_zeros(())
        for start, size, weight, name in zip(
            _offsets(sizes), sizes, weights, ("source", "target"), strict=False
        ):
            part = slice(start, start + size)
            part_weights = None if pixel_weights is None else pixel_weights[part]
            value = masked_cross_entropy(out.logits[part], masks[part], part_weights)
            per_domain[f"seg_{name}"] = value.detach()
            seg = seg + weight * value
        result = {"segmentation": seg}
        if len(sizes) == 2:
            is_source = torch.cat([torch.ones(sizes[0]), torch.zeros(sizes[1])]).bool().to(masks.device)
            if out.discriminator_logits is not None:
                result["discriminator"] = discriminator_loss(out.discriminator_logits, is_source)
            if out.domain_logit is not None:
                adversarial = F.binary_cross_entropy_with_logits(out.domain_logit, is_source.float())
                result["adversarial"] = self.hparams.adversarial_weight * adversarial
            if out.alignment_logits is not None:
                alignment = discriminator_loss(out.alignment_logits, is_source, out.alignment_weights)
                result["alignment"] = self.hparams.adversarial_weight * alignment
        if out.probe_logits is not None:
            probe = F.interpolate(
                out.probe_logits, size=masks.shape[-2:], mode="bilinear", align_corners=False
            )
            result["uncertainty_probe"] = masked_cross_entropy(probe, masks)
        return result, per_domain

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch: dict[str, Any], stage: str, batch_idx: int) -> None:
        images, masks = batch["image"], batch["mask"]
        iou, loss = (self.val_iou, self.val_loss) if stage == "val" else (self.test_iou, self.test_loss)
        if self.hparams.eval_window is None and not self.segmenter.needs_padding(images):
            out = self.segmenter(images)
            logits = out.logits
        else:  # windows, or a native-size image the patches do not tile (no ACTE maps to show then)
            out, logits = (
                None,
                self.segmenter.predict(images, self.hparams.eval_window, self.hparams.eval_stride),
            )
        if logits.shape[-2:] != masks.shape[-2:]:  # labels kept as annotated (data base_size resize)
            logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        loss.update(masked_cross_entropy(logits, masks), weight=images.shape[0])
        self.log(f"{stage}/loss", loss, batch_size=images.shape[0])
        predictions = logits.argmax(dim=1)
        iou.update(predictions, masks)
        if stage == "val" and batch_idx == 0 and self._should_log_images():
            shown = images.shape[-2:]  # the pictures are drawn at the network's input size
            log_segmentation_examples(
                self,
                images,
                _nearest(masks, shown),
                _nearest(predictions, shown),
                class_names=self.class_names,
                num_classes=self.hparams.num_classes,
                count=min(self.hparams.num_logged_images, images.shape[0]),
                out=out,
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val", batch_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test", batch_idx)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Train ids (uint8) at each image's native size (the data keeps it in ``mask``, labelled or
        not, when ``base_size`` resized the input), with the image paths: what
        :class:`~tmtcam.training.prediction_writer.PredictionFileWriter` writes."""
        logits = self.segmenter.predict(batch["image"], self.hparams.eval_window, self.hparams.eval_stride)
        native = batch["mask"].shape[-2:]
        if logits.shape[-2:] != native:
            logits = F.interpolate(logits, size=native, mode="bilinear", align_corners=False)
        return {"mask": logits.argmax(1).to(torch.uint8), "path": batch["path"]}

    def on_validation_epoch_end(self) -> None:
        self._log_iou(self.val_iou, "val")

    def on_test_epoch_end(self) -> None:
        self._log_iou(self.test_iou, "test")

    def _log_iou(self, metric: MulticlassJaccardIndex, stage: str) -> None:
        """mIoU and per-class IoU in %. ``compute()`` already gathers every rank's counts, so the
        values are equal on all ranks and ``sync_dist`` (a mean of equal values) only tells Lightning
        they are safe to use for epoch-level checkpoint monitoring under DDP."""
        per_class = metric.compute()
        metric.reset()
        values = {f"{stage}/mIoU": _mean_over_scored(per_class) * 100}
        for name, classes in self.miou_subsets.items():  # e.g. SYNTHIA's mIoU16 / mIoU13
            values[f"{stage}/{name}"] = _mean_over_scored(per_class[list(classes)]) * 100
        values.update(
            {
                f"{stage}/IoU/{name}": value * 100
                for name, value in zip(self.class_names, per_class, strict=True)
            }
        )
        self.log_dict(values, sync_dist=True)

    def _should_log_images(self) -> bool:
        every = self.hparams.log_images_every_n_epochs
        return bool(every) and not self.trainer.sanity_checking and self.current_epoch % every == 0

    # ------------------------------------------------------------------ optimisation
    def optimizer_groups(self) -> list[dict[str, Any]]:
        """AdamW's parameter groups: the backbone at ``lr * backbone_lr_mult``, everything else at
        ``lr``. TMA's per-head scales β get no weight decay: β = 0 is plain attention, so decay would
        pull the bias off whatever the loss says (about 4 % over the real configs' 40k steps at 0.01).
        """
        h = self.hparams
        backbone_params = list(self.segmenter.backbone.parameters())
        tma_params = list(self.segmenter.tma.parameters()) if self.segmenter.uses_acte else []
        grouped = {id(p) for p in backbone_params + tma_params}
        head_params = [p for p in self.parameters() if id(p) not in grouped]
        groups = [
            {"params": backbone_params, "lr": h.lr * h.backbone_lr_mult},
            {"params": head_params, "lr": h.lr},
        ]
        if tma_params:
            groups.append({"params": tma_params, "lr": h.lr, "weight_decay": 0.0})
        return groups

    def build_optimizer(self) -> torch.optim.AdamW:
        """AdamW over :meth:`optimizer_groups`; the benchmarks' plain-PyTorch loops use it too, so
        that they step the same optimiser."""
        return torch.optim.AdamW(
            self.optimizer_groups(),
            weight_decay=self.hparams.weight_decay,
            fused=self.device.type in ("cpu", "cuda"),  # measured on CPU: optimizer step 14.0 -> 4.2 ms
        )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.build_optimizer()
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return {
            "optimizer": optimizer,
            "lr_scheduler": warmup_cosine(optimizer, min(self.hparams.warmup_steps, total // 2), total),
        }


def _offsets(sizes: Sequence[int]) -> list[int]:
    starts, position = [], 0
    for size in sizes:
        starts.append(position)
        position += size
    return starts


def _mean_over_scored(per_class_iou: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the classes that were labelled or predicted (NaN = neither); 0 when there are
    none, so that a checkpoint monitor never compares against NaN."""
    scored = per_class_iou[~torch.isnan(per_class_iou)]
    return scored.mean() if scored.numel() else per_class_iou.new_zeros(())


def _nearest(labels: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """(B, H, W) integer labels resized to ``size`` by nearest neighbour (no-op at that size)."""
    if labels.shape[-2:] == size:
        return labels
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")[:, 0].long()
