"""TMTSegmentation's parts that every config relies on: the loss over labelled pixels, the `global`
DANN loss, the learning-rate schedule, and sliding-window evaluation and prediction."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from tiny_configs import TINY_BACKBONE
from torch.utils.data import DataLoader, Dataset

from data_modules.segmentation import IGNORE_INDEX
from tmtcam.tasks import TMTSegmentation
from tmtcam.tasks.tmt_segmentation import masked_cross_entropy
from tmtcam.tmt.segmenter import pixel_priority
from tmtcam.tmt.sliding_window import sliding_window_logits
from tmtcam.training.schedules import warmup_cosine_factor

TINY = dict(TINY_BACKBONE, depth=4)  # TMA and the cluster layer need a few blocks


def test_masked_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]])  # (1, 2 classes, 1, 2 pixels)
    ce_first, ce_second = math.log(2.0), math.log(4.0)  # label 0: p = 1/2 and 1/4
    labels = torch.tensor([[[0, 0]]])
    assert masked_cross_entropy(logits, labels).item() == pytest.approx((ce_first + ce_second) / 2)
    ignored = torch.tensor([[[0, IGNORE_INDEX]]])
    assert masked_cross_entropy(logits, ignored).item() == pytest.approx(ce_first)
    weights = torch.tensor([[[3.0, 1.0]]])  # weighted sum over the *count* of labelled pixels
    assert masked_cross_entropy(logits, labels, weights).item() == pytest.approx(
        (3 * ce_first + ce_second) / 2
    )
    nothing = torch.full((1, 1, 2), IGNORE_INDEX)
    assert masked_cross_entropy(logits, nothing).item() == 0.0  # an unlabelled target batch: 0, not NaN


def test_pixel_priority_spreads_each_patch_over_its_pixels() -> None:
    priority = torch.tensor([[0.0, 1.0, 0.5, 0.25]])  # a 2 x 2 patch grid
    pixels = pixel_priority(priority, (2, 2), (4, 4))
    expected = torch.tensor([[0.0, 1.0], [0.5, 0.25]]).repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(pixels[0], expected)


def test_region_loss_weight_weighs_pixels_by_their_priority() -> None:
    """With ``tma.region_loss_weight`` = omega a pixel's CE weighs 1 + omega * its patch's priority."""
    torch.manual_seed(0)
    model = TMTSegmentation(
        num_classes=4, backbone=TINY, method="tmt", acte={"k_choices": [2]}, tma={"region_loss_weight": 2.0}
    )
    images, masks = torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    out = model.segmenter(images)
    losses, _ = model._losses(out, masks, [2], [1.0])
    weights = 1.0 + 2.0 * pixel_priority(out.priority.detach(), out.grid, (32, 32))
    assert losses["segmentation"].item() == pytest.approx(
        masked_cross_entropy(out.logits, masks, weights).item()
    )
    assert not torch.allclose(weights, torch.ones_like(weights))  # the weighting did something
    assert losses["segmentation"].item() != pytest.approx(masked_cross_entropy(out.logits, masks).item())

    # with both domains, each part is weighted by its own images' priority (not the source's)
    losses, per_domain = model._losses(out, masks, [1, 1], [1.0, 1.0])
    for name, part in (("seg_source", slice(0, 1)), ("seg_target", slice(1, 2))):
        expected = masked_cross_entropy(out.logits[part], masks[part], weights[part])
        assert per_domain[name].item() == pytest.approx(expected.item())


def test_global_dann_loss_and_its_reversed_gradient() -> None:
    """`global`: weight x BCE(domain logit, is-source); the classifier learns to tell the domains
    while the pooled tokens get the reversed gradient; no domain loss without both domains."""
    torch.manual_seed(0)
    model = TMTSegmentation(num_classes=4, backbone=TINY, method="global", adversarial_weight=0.5)
    images, masks = torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4, 32, 32))
    out = model.segmenter(images)
    out.patch_tokens.retain_grad()
    losses, _ = model._losses(out, masks, [2, 2], [1.0, 1.0])
    is_source = torch.tensor([1.0, 1.0, 0.0, 0.0])
    expected = 0.5 * F.binary_cross_entropy_with_logits(out.domain_logit, is_source)
    assert losses["adversarial"].item() == pytest.approx(expected.item())
    losses["adversarial"].backward()
    classifier = model.segmenter.domain_classifier
    assert classifier.net[0].weight.grad.abs().sum() > 0

    tokens = out.patch_tokens.detach().requires_grad_()
    helping = 0.5 * F.binary_cross_entropy_with_logits(classifier.net(tokens.mean(1)).squeeze(-1), is_source)
    (helping_grad,) = torch.autograd.grad(helping, tokens)
    assert torch.allclose(out.patch_tokens.grad, -helping_grad, atol=1e-7)
    assert "adversarial" not in model._losses(model.segmenter(images), masks, [4], [1.0])[0]


class PairBatches(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        return {
            domain: {"image": torch.randn(3, 32, 32, generator=generator), "mask": torch.randint(0, 4, (32, 32), generator=generator)}
            for domain in ("source", "target")
        }  # fmt: skip


class LearningRates(L.Callback):
    def __init__(self) -> None:
        self.seen: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append([group["lr"] for group in trainer.optimizers[0].param_groups])


def test_backbone_gets_its_lr_multiplier_and_the_warmup_cosine_schedule(tmp_path) -> None:
    """Two groups (backbone at lr * backbone_lr_mult, heads at lr), warm-up capped at half the run."""
    model = TMTSegmentation(
        num_classes=4, backbone=TINY, method="finetune", lr=0.01, backbone_lr_mult=0.1, warmup_steps=6
    )
    rates = LearningRates()
    trainer = L.Trainer(
        max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[rates], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, DataLoader(PairBatches(), batch_size=1))
    assert len(rates.seen) == 8
    for step, (backbone_lr, head_lr) in enumerate(rates.seen):
        factor = warmup_cosine_factor(step, 4, 8)  # min(warmup_steps=6, 8 // 2) = 4 warm-up steps
        assert backbone_lr == pytest.approx(0.001 * factor) and head_lr == pytest.approx(0.01 * factor)
    backbone = {id(p) for p in model.segmenter.backbone.parameters()}
    groups = trainer.optimizers[0].param_groups
    assert {id(p) for p in groups[0]["params"]} == backbone
    assert not backbone & {id(p) for p in groups[1]["params"]}


def test_sliding_window_evaluation_and_prediction() -> None:
    """With ``eval_window`` a larger image is predicted window by window (stride default 2/3 of it),
    ``predict_step`` returns the argmax of those logits at the image's native size, and validation
    scores them."""
    torch.manual_seed(0)
    model = TMTSegmentation(
        num_classes=4, backbone=TINY, method="tmt", acte={"k_choices": [2]}, eval_window=32
    ).eval()
    images = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        expected = sliding_window_logits(lambda crop: model.segmenter(crop).logits, images, 32, 21, 4)
        logits = model.segmenter.predict(images, 32)
    assert logits.shape == (1, 4, 48, 64) and torch.allclose(logits, expected, atol=1e-6)
    native = torch.full((1, 96, 128), 255)  # the image as it was on disk, before base_size resized it
    predicted = model.predict_step({"image": images, "mask": native, "path": ["a.png"]}, 0)
    upsampled = F.interpolate(expected, size=(96, 128), mode="bilinear", align_corners=False)
    assert predicted["path"] == ["a.png"] and predicted["mask"].dtype == torch.uint8
    assert torch.equal(predicted["mask"], upsampled.argmax(1).to(torch.uint8))

    masks = expected.argmax(1)
    model._evaluate({"image": images, "mask": masks}, "val", batch_idx=1)
    assert model.val_iou.compute().nanmean().item() == pytest.approx(1.0)  # scored the windowed logits


def test_native_size_images_the_patches_do_not_tile_are_padded_and_cropped_back() -> None:
    """Validation at native size (a user's folder of 500-px-high photos, 8-px patches here): the
    image is padded bottom/right with 0 to the next multiple, and the logits cropped back."""
    torch.manual_seed(0)
    model = TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", acte={"k_choices": [2]}).eval()
    images = torch.randn(1, 3, 44, 60)
    with torch.no_grad():
        logits = model.segmenter.predict(images)
        padded = F.pad(images, (0, 4, 0, 4))  # to 48 x 64
        expected = model.segmenter(padded).logits[..., :44, :60]
        assert logits.shape == (1, 4, 44, 60) and torch.allclose(logits, expected, atol=1e-6)
        windowed = model.segmenter.predict(torch.randn(1, 3, 44, 100), window=64)  # windows 44 high
    assert windowed.shape == (1, 4, 44, 100)
    model._evaluate({"image": images, "mask": logits.argmax(1)}, "val", batch_idx=1)
    assert model.val_iou.compute().nanmean().item() == pytest.approx(1.0)
