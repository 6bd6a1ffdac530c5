"""``PromptCAMClassifier``: Prompt-CAM (or a baseline, ``method:``) as a LightningModule.

The module is thin: models live in :mod:`tmtcam.promptcam`, maths in pure functions there and in
:mod:`tmtcam.metrics.interpretability`. What it adds is the training recipe (SGD as in the paper, or
AdamW; linear warm-up then cosine, per step), top-1 accuracy via torchmetrics, heatmap grids logged
every few epochs, checkpoints that hold only what was learned, and at test time the localisation of
the true class's map wherever the data knows where traits or parts are (``test/pointing_game``,
``test/mass_in_trait`` on the synthetic species, ``test/part_hit`` on CUB's part keypoints).

Checkpoints: the frozen backbone is *not* stored (for DINO ViT-B that is 330 MB per checkpoint
for 0.1 MB of prompts). The backbone is rebuilt from its reference, the ``backbone`` init argument
(``model_name`` + local ``weights`` file, or timm's ``pretrained`` weights) saved with the
hyper-parameters, so the weights file must still exist where it was when the checkpoint is loaded.
A backbone with neither is random, and nothing could rebuild it: then it *is* stored. ``num_classes`` may be left out of the
config: it is read from the data module at ``setup`` and then saved with the hyper-parameters.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from tmtcam.backbones import BackboneSetting, ViTBackbone, backbone_mapping, build_backbone
from tmtcam.metrics.interpretability import (
    box_mask,
    keypoint_mask,
    mass_inside_mask,
    object_chance,
    pointing_game,
)
from tmtcam.promptcam.baselines import LinearProbe, VPTClassifier
from tmtcam.promptcam.evaluation import pointing_tolerance
from tmtcam.promptcam.model import FrozenBackboneModel, PromptCAM
from tmtcam.promptcam.prompts import parse_prompt_variant
from tmtcam.promptcam.rendering import explanation_rows
from tmtcam.promptcam.saliency_baselines import grad_cam_maps
from tmtcam.promptcam.trait_maps import explain_batch
from tmtcam.training.checkpoint_compat import (
    check_backbone_weights,
    check_checkpoint,
    file_sha256,
    stamp_backbone_weights,
    stamp_checkpoint,
)
from tmtcam.training.schedules import check_optimisation_settings, warmup_cosine
from tmtcam.viz.heatmaps import denormalize, heatmap_row, stack_rows
from tmtcam.viz.image_logging import data_normalization, log_images

Method = Literal["promptcam", "linear_probe", "vpt"]
Optimizer = Literal["sgd", "adamw"]
BACKBONE_PREFIX = "model.backbone."
LOCALISATION_METRICS = ("pointing_game", "mass_in_trait", "part_hit", "part_hit_chance")


def build_classifier(
    method: Method,
    backbone: ViTBackbone,
    num_classes: int,
    prompt_variant: str,
    prompt_dropout: float,
    vpt_num_prompts: int,
) -> FrozenBackboneModel:
    if method == "promptcam":
        return PromptCAM(backbone, num_classes, variant=prompt_variant, prompt_dropout=prompt_dropout)
    if method == "linear_probe":
        return LinearProbe(backbone, num_classes)
    if method == "vpt":
        return VPTClassifier(
            backbone, num_classes, num_prompts=vpt_num_prompts, prompt_dropout=prompt_dropout
        )
    raise ValueError(f"model.init_args.method must be 'promptcam', 'linear_probe' or 'vpt', got {method!r}")


def check_prompt_settings(
    method: str, prompt_variant: str, prompt_dropout: float, vpt_num_prompts: int, depth: int
) -> None:
    """Refuse impossible prompt settings when the task is built, naming the key: with ``num_classes``
    left to the data the classifier itself is only built at ``setup``, after the run dir is written."""
    if method == "promptcam":
        try:
            parse_prompt_variant(prompt_variant, depth)
        except ValueError as error:
            raise ValueError(f"model.init_args.{error}") from None
    if not 0.0 <= prompt_dropout <= 1.0:
        raise ValueError(f"model.init_args.prompt_dropout must be in [0, 1], got {prompt_dropout}")
    if method == "vpt" and vpt_num_prompts < 1:
        raise ValueError(f"model.init_args.vpt_num_prompts must be >= 1, got {vpt_num_prompts}")


class PromptCAMClassifier(LightningModule):
    """Frozen ViT + Prompt-CAM class prompts (or ``linear_probe`` / ``vpt``), trained with cross-entropy.

    Its warm-up + cosine LR schedule is counted in epochs, as the paper's recipe is, so ``fit`` needs
    ``trainer.max_epochs`` (``lr_schedule_in_epochs``: the CLI checks it before anything is written).

    Args:
        backbone: :class:`ViTBackbone` arguments, e.g. ``{model_name: vit_base_patch16_224.dino, weights: /path}``.
        num_classes: number of classes; ``None`` reads ``datamodule.num_classes`` at setup.
        method: ``promptcam`` | ``linear_probe`` | ``vpt``.
        prompt_variant: ``deep`` | ``shallow`` | ``intermediate(i)`` (Prompt-CAM only).
        prompt_dropout: dropout on the prompt tokens (Prompt-CAM and VPT).
        vpt_num_prompts: prompts per block for ``vpt``.
        optimizer: ``sgd`` (the paper's recipe, with ``momentum``) or ``adamw``. On a small backbone
            trained from scratch (the embedded demo) prompts converge faster with AdamW.
        lr, weight_decay, momentum: optimiser settings (``momentum``: SGD only).
        warmup_epochs, max_epochs: schedule length (``max_epochs=None``: the trainer's).
        top_k_heads: heads shown per image in the logged heatmap grids, and averaged into the map
            that test-time localisation scores.
        test_localisation: at test time, score the true class's map where the data has trait masks
            or part keypoints (one head ranking, or one Grad-CAM pass, per batch).
        heatmap_images: validation images in each grid (0 disables logging).
        heatmap_every_n_epochs: grid logging period.
        class_names: captions; ``None`` reads ``datamodule.class_names`` when present.
    """

    lr_schedule_in_epochs = True

    def __init__(
        self,
        backbone: BackboneSetting,
        num_classes: int | None = None,
        method: Method = "promptcam",
        prompt_variant: str = "deep",
        prompt_dropout: float = 0.1,
        vpt_num_prompts: int = 10,
        optimizer: Optimizer = "sgd",
        lr: float = 0.005,
        weight_decay: float = 1e-3,
        momentum: float = 0.9,
        warmup_epochs: int = 20,
        max_epochs: int | None = None,
        top_k_heads: int = 3,
        heatmap_images: int = 4,
        heatmap_every_n_epochs: int = 10,
        class_names: list[str] | None = None,
        test_localisation: bool = True,
    ) -> None:
        super().__init__()
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"model.init_args.optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        check_optimisation_settings(
            lr, weight_decay=weight_decay, momentum=momentum, warmup_epochs=warmup_epochs
        )
        self.save_hyperparameters()
        backbone = self.hparams["backbone"] = backbone_mapping(backbone)  # plain YAML in checkpoints
        self.model: FrozenBackboneModel | None = None
        self._heatmap_batch: dict[str, torch.Tensor] | None = None
        # image-weighted over all ranks (a logged float would be a mean of the ranks' means)
        self.eval_losses = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})
        self.localisation_metrics = nn.ModuleDict(
            {name: MeanMetric(nan_strategy="ignore") for name in LOCALISATION_METRICS}
        )
        # the backbone (and its weights file) is built now even when the class count waits for the
        # data: a missing or corrupt weights file is then refused before the trainer writes anything
        self._pending_backbone: ViTBackbone | None = None
        built = build_backbone(backbone)  # refuses a missing or corrupt weights file
        check_prompt_settings(method, prompt_variant, prompt_dropout, vpt_num_prompts, built.depth)
        weights = backbone.get("weights")
        self._weights_sha256 = file_sha256(weights) if weights else None  # checked against checkpoints
        # nothing outside the checkpoint can rebuild a randomly initialised backbone, so it is kept
        self._backbone_in_checkpoint = not weights and not backbone.get("pretrained", False)
        if self._backbone_in_checkpoint:
            rank_zero_warn(
                "model.init_args.backbone has no weights file and pretrained is false: the prompts learn on "
                "a frozen *random* ViT (checkpoints keep it). Give backbone.weights for a pre-trained one."
            )
        if num_classes is None:
            self._pending_backbone = built  # finished at setup
        else:
            self._build(num_classes, built)

    # ------------------------------------------------------------------ construction
    def _build(self, num_classes: int, backbone: ViTBackbone) -> None:
        hp = self.hparams
        self.model = build_classifier(
            hp.method,
            backbone,
            num_classes,
            hp.prompt_variant,
            hp.prompt_dropout,
            hp.vpt_num_prompts,
        )
        # top-1 ("micro"), the accuracy papers report; torchmetrics' default is the class-balanced mean
        self.train_acc, self.val_acc, self.test_acc = (
            MulticlassAccuracy(num_classes, average="micro") for _ in range(3)
        )

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if self.hparams.class_names is None and getattr(datamodule, "class_names", None) is not None:
            self.hparams.class_names = list(datamodule.class_names)
        if self.model is None:
            if data_classes is None:
                raise ValueError(
                    "model.init_args.num_classes is not set and the data module has no `num_classes`; set one of them"
                )
            self.hparams.num_classes = int(data_classes)
            self._build(int(data_classes), self._pending_backbone)
            self._pending_backbone = None
        elif data_classes is not None and int(data_classes) != self.hparams.num_classes:
            raise ValueError(
                f"model.init_args.num_classes={self.hparams.num_classes} but the data module has {data_classes} classes"
            )

    def _require_model(self) -> FrozenBackboneModel:
        if self.model is None:
            raise RuntimeError(
                "PromptCAMClassifier has no model yet: give num_classes or run it with a data module"
            )
        return self.model

    # ------------------------------------------------------------------ steps
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._require_model()(images)

    def _step(self, batch: dict[str, torch.Tensor], accuracy: MulticlassAccuracy, stage: str) -> torch.Tensor:
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        accuracy(logits, batch["label"])
        size = len(batch["label"])
        if stage == "train":
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        else:
            self.eval_losses[stage].update(loss, weight=size)
            self.log(f"{stage}/loss", self.eval_losses[stage], on_step=False, on_epoch=True, batch_size=size)
        self.log(
            f"{stage}/acc", accuracy, prog_bar=stage != "train", on_step=False, on_epoch=True, batch_size=size
        )
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.train_acc, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, self.val_acc, "val")
        if batch_idx == 0 and self._heatmaps_due():
            keep = self.hparams.heatmap_images
            self._heatmap_batch = {"image": batch["image"][:keep], "label": batch["label"][:keep]}

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, self.test_acc, "test")
        if self.hparams.test_localisation and ("trait_mask" in batch or "parts" in batch):
            self._log_localisation(batch)

    def explanation_maps(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, h, w) map each method is judged by: Prompt-CAM's top heads of ``labels``, else Grad-CAM."""
        model = self._require_model()
        if isinstance(model, PromptCAM):
            top_k = min(self.hparams.top_k_heads, model.backbone.num_heads)
            return explain_batch(model, images, labels, top_k=top_k).saliency(top_k)
        with torch.inference_mode(False), torch.enable_grad():  # test runs in inference mode
            return grad_cam_maps(model, images.clone(), labels.clone())

    def _log_localisation(self, batch: dict[str, torch.Tensor]) -> None:
        """Test-time localisation of the true class's map (see :mod:`tmtcam.promptcam.evaluation`).

        ``test/pointing_game`` and ``test/mass_in_trait`` where trait masks exist (synthetic
        species); ``test/part_hit`` where part keypoints do (CUB): the map's peak within the pointing
        tolerance (15 px at 224 px) of a visible part, next to ``test/part_hit_chance``, the share of
        the bounding box that lies that close to a part (a peak anywhere on the bird scores about
        that). Images without a trait or visible part are left out of the means (NaN ignored), not
        counted as misses; every rank updates every metric, so DDP's end-of-epoch sync stays aligned.
        """
        images, labels = batch["image"], batch["label"]
        maps = self.explanation_maps(images, labels)
        tolerance = pointing_tolerance(images.shape[-1])
        scores = {}
        if "trait_mask" in batch:
            scores["pointing_game"] = pointing_game(maps, batch["trait_mask"], tolerance)
            scores["mass_in_trait"] = mass_inside_mask(maps, batch["trait_mask"])
        if "parts" in batch:
            near_parts = keypoint_mask(batch["parts"], tuple(images.shape[-2:]), radius=tolerance)
            scores["part_hit"] = pointing_game(maps, near_parts)
            if "bbox" in batch:
                scores["part_hit_chance"] = object_chance(
                    box_mask(batch["bbox"], images.shape[-2:]), near_parts
                )
        for name, values in scores.items():
            metric = self.localisation_metrics[name]
            metric.update(values)
            self.log(f"test/{name}", metric, on_epoch=True, batch_size=len(values))

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self(batch["image"])
        return {"logits": logits, "predicted": logits.argmax(-1), "path": batch["path"]}

    # ------------------------------------------------------------------ heatmaps
    def _heatmaps_due(self) -> bool:
        every = self.hparams.heatmap_every_n_epochs
        return (
            self.hparams.heatmap_images > 0
            and not self.trainer.sanity_checking
            and (self.current_epoch + 1) % max(1, every) == 0
        )

    def on_validation_epoch_end(self) -> None:
        if self._heatmap_batch is None:
            return
        batch, self._heatmap_batch = self._heatmap_batch, None
        with torch.inference_mode(False):  # Grad-CAM needs autograd; validation runs in inference mode
            images, labels = batch["image"].clone(), batch["label"].clone()
            rows = self.heatmap_rows(images, labels)
        log_images(self, f"val/heatmaps_{self.hparams.method}", [stack_rows(rows)])

    def heatmap_rows(self, images: torch.Tensor, labels: torch.Tensor) -> list[np.ndarray]:
        """Prompt-CAM: the true class's top heads; baselines: Grad-CAM of the true class."""
        model = self._require_model()
        names = self.hparams.class_names
        if isinstance(model, PromptCAM):
            explanation = explain_batch(
                model, images, labels, top_k=min(self.hparams.top_k_heads, model.backbone.num_heads)
            )
            return explanation_rows(
                images, explanation, names, self.hparams.top_k_heads, normalization=data_normalization(self)
            )
        maps = grad_cam_maps(model, images, labels)
        titles = [names[int(c)] if names else str(int(c)) for c in labels]
        return [
            heatmap_row(denormalize(image, data_normalization(self)), [heat], ["grad-cam"], title)
            for image, heat, title in zip(images, maps, titles, strict=True)
        ]

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = self.trainable_parameters()
        if hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        total = self.trainer.estimated_stepping_batches
        trainer_epochs = self.trainer.max_epochs
        if not math.isfinite(total) or not trainer_epochs or trainer_epochs < 1:
            raise ValueError("Prompt-CAM's LR schedule is counted in epochs: set trainer.max_epochs")
        steps_per_epoch = total / trainer_epochs
        schedule_steps = int(steps_per_epoch * (hp.max_epochs or trainer_epochs))
        warmup_steps = int(steps_per_epoch * hp.warmup_epochs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": warmup_cosine(optimizer, warmup_steps, schedule_steps),
        }

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        if not self._backbone_in_checkpoint:  # rebuilt from its weights file (SHA-256 stamped below)
            for name in [name for name in state if name.startswith(BACKBONE_PREFIX)]:
                del state[name]
        stamp_checkpoint(checkpoint, self, self.hparams.num_classes)
        stamp_backbone_weights(checkpoint, self.hparams.backbone.get("weights"), self._weights_sha256)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put back the rebuilt backbone's weights (unless the checkpoint holds them) so the strict
        state-dict load sees every key."""
        model = self._require_model()
        saved_method = checkpoint.get("hyper_parameters", {}).get("method", self.hparams.method)
        if saved_method != self.hparams.method:
            raise ValueError(
                f"checkpoint was trained with method={saved_method!r}, this model is method={self.hparams.method!r}"
            )
        check_checkpoint(checkpoint, self, self.hparams.num_classes)
        check_backbone_weights(checkpoint, self._weights_sha256)
        state = checkpoint["state_dict"]
        for name, value in model.backbone.state_dict().items():
            state.setdefault(f"{BACKBONE_PREFIX}{name}", value)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Prompts and heads; the backbone's parameters have ``requires_grad=False``."""
        return [p for p in self._require_model().parameters() if p.requires_grad]
