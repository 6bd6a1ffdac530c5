"""Stage 1 of the embedded demo: pre-train a small ViT on the parts of *other* species.

Prompt-CAM assumes a backbone whose patch features already describe parts (DINO on ImageNet). With
no downloads, the demo makes one: a from-scratch ViT learns, on ``synthetic_random`` creatures
(every image a new random species, all far from the fine-grained species), *which part each patch
shows and what that part looks like*. Three cross-entropy terms, summed:

* part segmentation: every patch token classifies its patch as background or one of the P parts
  (the part covering most of it, from ``part_masks``);
* dense attributes: every patch that part p covers by at least ``min_coverage`` predicts the value
  of each of p's attribute slots (colour, pattern, shape), one softmax per slot. A low threshold,
  not the majority label: thin parts (legs are 2 px wide at 64 px) never cover most of a patch,
  yet their colour and shape tell species apart;
* global attributes: the CLS token predicts every slot of the whole creature.

Why softmax per slot rather than one sigmoid per attribute value: a slot has exactly one value, and
with 60+ sparse binary targets a from-scratch ViT sits on the constant "base rate" prediction for
hundreds of steps (measured: no progress in 200 steps at lr 1e-3), while the per-slot and per-patch
cross-entropies give every patch a dense, balanced signal from the first step. Why random species
rather than a fixed set: with 40 fixed species the ViT learned to recognise the species and recite
its attributes (target-species head colour right 3 % of the time); a new combination per image
forces it to read the attributes off the parts (77 %).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from tmtcam.backbones import ViTBackbone


def attribute_slots(attribute_names: Sequence[str], part_names: Sequence[str]) -> tuple[list[int], list[int]]:
    """From names like ``wing.pattern=stripes``: the slot index of every attribute, the part of every slot.

    Slots are numbered in order of first appearance; a slot's values must be contiguous.
    """
    slot_of_attribute: list[int] = []
    slot_names: list[str] = []
    slot_parts: list[int] = []
    for name in attribute_names:
        slot, sep, _value = name.partition("=")
        part = slot.split(".", 1)[0]
        if not sep or part not in part_names:
            raise ValueError(
                f"attribute {name!r} is not '<part>.<kind>=<value>' with a part in {list(part_names)}"
            )
        if not slot_names or slot_names[-1] != slot:
            if slot in slot_names:
                raise ValueError(
                    f"the values of attribute slot {slot!r} are not contiguous in the attribute list"
                )
            slot_names.append(slot)
            slot_parts.append(list(part_names).index(part))
        slot_of_attribute.append(len(slot_names) - 1)
    return slot_of_attribute, slot_parts


def patch_coverage(part_masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, P, H, W) part masks -> (B, P, N): the share of every patch each part covers."""
    return F.avg_pool2d(part_masks.float(), patch_size).flatten(2)


def patch_part_labels(coverage: torch.Tensor) -> torch.Tensor:
    """(B, P, N) coverage -> (B, N) labels: 0 = background, p + 1 = part p, whichever covers most."""
    background = 1.0 - coverage.sum(1, keepdim=True)
    return torch.cat([background, coverage], dim=1).argmax(1)


def slot_values(attributes: torch.Tensor, slot_of_attribute: torch.Tensor, num_slots: int) -> torch.Tensor:
    """(B, A) multi-hot (one hot value per slot) -> (B, S) value index within each slot."""
    values = []
    for slot in range(num_slots):
        columns = (slot_of_attribute == slot).nonzero().squeeze(1)
        values.append(attributes[:, columns].argmax(1))
    return torch.stack(values, dim=1)


class AttributePretraining(LightningModule):
    """Trainable ViT + part and attribute heads; AdamW with one-cycle decay.

    Args:
        backbone: :class:`ViTBackbone` arguments (from scratch: no ``weights``).
        attribute_names: the data module's ``attribute_names`` (``<part>.<kind>=<value>``).
        part_names: the data module's ``part_names`` (order of the ``part_masks`` channels).
        min_coverage: share of a patch a part must cover for the patch to predict its attributes.
    """

    def __init__(
        self,
        backbone: dict[str, Any],
        attribute_names: list[str],
        part_names: list[str],
        min_coverage: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = ViTBackbone(**backbone)
        slot_of_attribute, slot_parts = attribute_slots(attribute_names, part_names)
        self.register_buffer("slot_of_attribute", torch.tensor(slot_of_attribute), persistent=False)
        self.slot_parts = slot_parts
        self.slot_sizes = [slot_of_attribute.count(slot) for slot in range(len(slot_parts))]
        dim = self.backbone.embed_dim
        self.part_head = nn.Linear(dim, len(part_names) + 1)
        self.dense_head = nn.Linear(dim, len(attribute_names))
        self.global_head = nn.Linear(dim, len(attribute_names))
        self.val_part_acc = MulticlassAccuracy(len(part_names) + 1, average="micro")

    def _slot_losses(self, logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Mean over slots of the softmax CE within each slot: (M, A) logits, (M, S) value indices."""
        chunks = logits.split(self.slot_sizes, dim=-1)
        return torch.stack(
            [F.cross_entropy(chunk, values[:, slot]) for slot, chunk in enumerate(chunks)]
        ).mean()

    def losses(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The loss terms, and part logits/targets and the global attribute accuracy (for logging)."""
        missing = [key for key in ("attributes", "part_masks") if key not in batch]
        if missing:
            raise KeyError(
                f"batch lacks {missing}: pre-training needs synthetic species data (synthetic_random)"
            )
        out = self.backbone(batch["image"])
        cls, patches = out.prefix_tokens[:, 0], out.patch_tokens
        values = slot_values(batch["attributes"], self.slot_of_attribute, len(self.slot_sizes))
        coverage = patch_coverage(batch["part_masks"], self.backbone.patch_size)
        parts = patch_part_labels(coverage)
        part_logits = self.part_head(patches)
        global_logits = self.global_head(cls)
        terms = {
            "part": F.cross_entropy(part_logits.transpose(1, 2), parts),
            "global": self._slot_losses(global_logits, values),
        }
        dense_logits = self.dense_head(patches).split(self.slot_sizes, dim=-1)
        dense = []
        for slot, part in enumerate(self.slot_parts):
            covered = coverage[:, part] >= self.hparams.min_coverage  # (B, N)
            if covered.any():
                targets = values[:, slot, None].expand_as(covered)[covered]
                dense.append(F.cross_entropy(dense_logits[slot][covered], targets))
        if dense:
            terms["dense"] = torch.stack(dense).mean()
        chunks = global_logits.split(self.slot_sizes, dim=-1)
        slot_hits = torch.stack([chunk.argmax(-1) == values[:, slot] for slot, chunk in enumerate(chunks)])
        outputs = {
            "part_logits": part_logits.flatten(0, 1),
            "parts": parts.flatten(),
            "attribute_acc": slot_hits.float().mean(),
        }
        return terms, outputs

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms, _ = self.losses(batch)
        loss = sum(terms.values())
        size = len(batch["image"])
        self.log("pretrain_train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        for name, value in terms.items():
            self.log(f"pretrain_train/{name}", value, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        terms, outputs = self.losses(batch)
        size = len(batch["image"])
        self.log("pretrain_val/loss", sum(terms.values()), on_epoch=True, batch_size=size)
        self.val_part_acc(outputs["part_logits"], outputs["parts"])
        self.log("pretrain_val/part_acc", self.val_part_acc, on_epoch=True, batch_size=size)
        self.log("pretrain_val/attribute_acc", outputs["attribute_acc"], on_epoch=True, batch_size=size)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.hparams.lr,
            total_steps=max(total, 1),
            pct_start=self.hparams.warmup_fraction,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def save_backbone(self, path: Path) -> Path:
        """Write the timm ViT's weights where ``ViTBackbone(weights=path)`` can load them."""
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.backbone.vit.state_dict(), path)
        return path
