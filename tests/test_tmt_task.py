"""TMTSegmentation end to end on tiny models: every method trains, gradients go where they should."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from tiny_configs import TINY_BACKBONE

from data_modules.segmentation import DomainPairDataModule
from tmtcam.tasks import TMTSegmentation
from tmtcam.tmt import METHODS, normalized_entropy, priority_map
from tmtcam.tmt.segmenter import stretch_per_image
from tmtcam.tmt.transferability import discriminator_loss, region_pool
from tmtcam.training.checkpoint_compat import CheckpointMismatch

TINY = dict(TINY_BACKBONE, depth=4)  # TMA and the cluster layer need a few blocks


def pair_batch(batch: int = 2, size: int = 32, classes: int = 4) -> dict:
    torch.manual_seed(0)
    parts = [
        {"image": torch.randn(batch, 3, size, size), "mask": torch.randint(0, classes, (batch, size, size))}
        for _ in range(2)
    ]
    return {"source": parts[0], "target": parts[1]}


def source_then_target(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A pair batch as the task puts it through the segmenter: source images first, then target."""
    return tuple(torch.cat([batch["source"][key], batch["target"][key]]) for key in ("image", "mask"))


def tiny_data(tmp_crop: int = 32, target_labelled: bool = True) -> DomainPairDataModule:
    return DomainPairDataModule(
        source={"dataset": "synthetic", "pair": "day_to_night", "num_images": 64},
        target={"dataset": "synthetic", "pair": "day_to_night", "num_images": 16, "labelled": target_labelled},
        target_val={"dataset": "synthetic", "pair": "day_to_night", "domain": "target", "split": "val", "num_images": 16},
        crop_size=tmp_crop, batch_size=8,
    )  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_a_step_and_trains_the_backbone(method: str) -> None:
    model = TMTSegmentation(num_classes=4, backbone=TINY, method=method, acte={"k_choices": [2, 4]})
    loss = model.training_step(pair_batch(), 0)
    loss.backward()
    backbone_grad = sum(
        p.grad.abs().sum() for p in model.segmenter.backbone.parameters() if p.grad is not None
    )
    assert torch.isfinite(loss) and backbone_grad > 0
    if method in ("patch", "grid", "tmt"):
        assert model.segmenter.tma.beta.grad.abs().sum() > 0
        assert model.segmenter.discriminator.net[0].weight.grad.abs().sum() > 0


def test_acte_heads_do_not_push_the_backbone() -> None:
    """Discriminator and uncertainty-probe losses alone leave the backbone without gradient."""
    model = TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", acte={"k_choices": [2]})
    batch = pair_batch()
    images, masks = source_then_target(batch)
    out = model.segmenter(images)
    losses, _ = model._losses(out, masks, [2, 2], [1.0, 1.0])
    (losses["discriminator"] + losses["uncertainty_probe"]).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.segmenter.backbone.parameters())
    assert model.segmenter.probe[1].weight.grad.abs().sum() > 0


def test_domain_weights_scale_each_domains_segmentation_loss() -> None:
    model = TMTSegmentation(num_classes=4, backbone=TINY, method="finetune")
    batch = pair_batch()
    images, masks = source_then_target(batch)
    out = model.segmenter(images)
    source, target = (F.cross_entropy(out.logits[part], masks[part]) for part in (slice(0, 2), slice(2, 4)))
    losses, per_domain = model._losses(out, masks, [2, 2], [0.25, 2.0])
    assert losses["segmentation"].item() == pytest.approx((0.25 * source + 2.0 * target).item(), rel=1e-5)
    assert per_domain["seg_source"].item() == pytest.approx(source.item(), rel=1e-5)
    source_only, _ = model._losses(out, masks, [2, 2], [1.0, 0.0])
    assert source_only["segmentation"].item() == pytest.approx(source.item(), rel=1e-5)


def test_step_loss_is_training_steps_loss_and_the_optimiser_has_the_backbone_group() -> None:
    """What the benchmarks' plain loops use: the same loss and the same AdamW groups as training."""
    model = TMTSegmentation(
        num_classes=4, backbone=TINY, method="tmt", acte={"k_choices": [2]}, lr=2e-3, backbone_lr_mult=0.1,
        target_weight=0.3,
    )  # fmt: skip
    batch = pair_batch()
    images, masks = source_then_target(batch)
    torch.manual_seed(3)
    expected = model.training_step(batch, 0).item()
    torch.manual_seed(3)
    assert model.step_loss(images, masks, [2, 2], [1.0, 0.3]).item() == pytest.approx(expected, rel=1e-6)
    torch.manual_seed(3)  # the weights are used: equal weights give another loss
    assert model.step_loss(images, masks, [2, 2], [1.0, 1.0]).item() != pytest.approx(expected, rel=1e-3)
    optimizer = model.build_optimizer()
    backbone, rest, tma = optimizer.param_groups
    assert (backbone["lr"], rest["lr"], tma["lr"]) == (pytest.approx(2e-4), 2e-3, 2e-3)
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.segmenter.backbone.parameters()}
    assert tma["params"] == [model.segmenter.tma.beta] and tma["weight_decay"] == 0.0  # beta = 0 is "off"
    assert backbone["weight_decay"] == rest["weight_decay"] == 0.01
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(model.parameters()))
    plain = TMTSegmentation(num_classes=4, backbone=TINY, method="finetune").build_optimizer()
    assert len(plain.param_groups) == 2  # no TMA, no third group


def test_priority_is_alpha_times_weak_transfer_plus_the_rest_times_uncertainty_per_region() -> None:
    """The forward pass combines its own outputs as DESIGN §4 says: P = stretch(alpha (1 - T_r) +
    (1 - alpha) U_r), T from the discriminator, U from the probe's normalised entropy."""
    torch.manual_seed(0)
    model = TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", acte={"k_choices": [2], "alpha": 0.3})
    out = model.segmenter(torch.randn(2, 3, 32, 32))
    uncertainty = normalized_entropy(out.probe_logits.flatten(2).mT)
    expected = stretch_per_image(priority_map(out.transferability, uncertainty, out.regions, 0.3))
    assert torch.allclose(out.priority, expected, atol=1e-6)
    swapped = stretch_per_image(priority_map(uncertainty, out.transferability, out.regions, 0.3))
    assert not torch.allclose(out.priority, swapped, atol=1e-3)


@pytest.mark.parametrize(("discriminator_layer", "reads"), [(-1, "patch embeddings"), (0, "block 0")])
def test_discriminator_reads_the_configured_layer(monkeypatch, discriminator_layer: int, reads: str) -> None:
    """Default: the patch embeddings (-1); ``acte.discriminator_layer: j``: block j's output tokens."""
    torch.manual_seed(0)
    model = TMTSegmentation(
        num_classes=4, backbone=TINY, method="tmt",
        acte={"k_choices": [2], "discriminator_layer": discriminator_layer},
    ).eval()  # fmt: skip
    images = torch.randn(2, 3, 32, 32)
    seen = []
    monkeypatch.setattr(
        model.segmenter.discriminator, "forward", lambda tokens: seen.append(tokens) or tokens[..., 0]
    )
    with torch.no_grad():
        model.segmenter(images)
        tokens, _ = model.segmenter.backbone.embed(images)
        if discriminator_layer == 0:
            tokens = model.segmenter.backbone.vit.blocks[0](tokens)
    prefix = model.segmenter.backbone.num_prefix_tokens
    assert torch.allclose(seen[0], tokens[:, prefix:], atol=1e-5), reads


def test_default_tma_layers_are_the_last_half_and_regions_come_from_the_block_before() -> None:
    model = TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", acte={"k_choices": [2]})
    assert model.segmenter.tma.layers == [2, 3] and model.segmenter.cluster_layer == 1  # depth 4


def test_segmentation_loss_trains_tma_but_not_the_acte_heads() -> None:
    """The priority map is read from the discriminator and probe, not trained through the segmenter:
    otherwise the segmentation loss would shape the map that is meant to measure transfer."""
    model = TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", acte={"k_choices": [2]})
    batch = pair_batch()
    images, masks = source_then_target(batch)
    losses, _ = model._losses(model.segmenter(images), masks, [2, 2], [1.0, 1.0])
    losses["segmentation"].backward()
    heads = [*model.segmenter.discriminator.parameters(), *model.segmenter.probe.parameters()]
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in heads)
    assert model.segmenter.tma.beta.grad.abs().sum() > 0


def test_default_acte_stretches_each_images_priority_to_the_unit_range() -> None:
    """A sure discriminator gives a map of small differences; stretched (the default), TMA sees them."""
    model = TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", acte={"k_choices": [4]})
    assert torch.all(model.segmenter.tma.beta == 1.0)  # beta_init 1: the bias is on from the first step
    with torch.no_grad():
        priority = model.segmenter(pair_batch()["source"]["image"]).priority
    assert torch.allclose(priority.amin(1), torch.zeros(2)) and torch.allclose(
        priority.amax(1), torch.ones(2)
    )


def test_regions_are_clustered_from_the_cluster_layers_output(monkeypatch) -> None:
    model = TMTSegmentation(
        num_classes=4,
        backbone=TINY,
        method="tmt",
        acte={"k_choices": [2], "cluster_layer": 1},
        tma={"layers": [3]},
    )
    seen = []
    cluster = type(model.segmenter.partitioner).__call__
    monkeypatch.setattr(
        type(model.segmenter.partitioner),
        "__call__",
        lambda self, x, grid: seen.append(x) or cluster(self, x, grid),
    )
    images = pair_batch()["source"]["image"]
    with torch.no_grad():
        model.segmenter(images)
        block_outputs = model.segmenter.backbone(images, return_layers=[0, 1, 2])
    (features,) = seen
    assert torch.allclose(features, block_outputs.features[1], atol=1e-6)
    assert not torch.allclose(features, block_outputs.features[0], atol=1e-3)


@pytest.mark.parametrize("unit", ["patch", "region", "image"])
def test_alignment_pushes_the_backbone_against_its_own_discriminator(unit: str) -> None:
    """With ``acte.align`` the alignment loss trains the aligner and reaches the patch tokens with
    the reversed gradient (so the backbone learns to confuse it); without it there is no such loss."""
    model = TMTSegmentation(
        num_classes=4, backbone=TINY, method="tmt", acte={"k_choices": [2], "align": unit}
    )
    batch = pair_batch()
    images, masks = source_then_target(batch)
    out = model.segmenter(images)
    out.patch_tokens.retain_grad()
    losses, _ = model._losses(out, masks, [2, 2], [1.0, 1.0])
    losses["alignment"].backward()
    assert model.segmenter.aligner.net[0].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.segmenter.backbone.parameters())
    tokens = out.patch_tokens.detach().requires_grad_()
    inputs, weights = tokens, 1.0 + out.priority
    if unit == "region":  # two regions per image: their mean tokens, weighted by the region's priority
        assert out.alignment_logits.shape == (4, 2)
        inputs, _ = region_pool(tokens, out.regions)
        weights, _ = region_pool(weights[..., None], out.regions)
        weights = weights[..., 0]
    if unit == "image":  # one token per image: the priority-weighted mean, every image weighted alike
        assert out.alignment_logits.shape == (4, 1)
        inputs = (tokens * weights[..., None]).sum(1, keepdim=True) / weights.sum(1)[:, None, None]
        weights = torch.ones(4, 1)
    helping = model.hparams.adversarial_weight * discriminator_loss(
        model.segmenter.aligner(inputs), torch.tensor([True, True, False, False]), weights
    )
    (helping_grad,) = torch.autograd.grad(helping, tokens)
    assert torch.allclose(out.patch_tokens.grad, -helping_grad, atol=1e-6)

    plain = TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", acte={"k_choices": [2]})
    assert plain.segmenter.aligner is None
    assert "alignment" not in plain._losses(plain.segmenter(images), masks, [2, 2], [1.0, 1.0])[0]
    with pytest.raises(ValueError, match="acte.align must be one of"):
        TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", acte={"align": "regions"})


def test_region_weighted_discriminator_loss_by_hand() -> None:
    logits = torch.tensor([[0.0, 2.0]])  # one source image, two patches
    priority = torch.tensor([[1.0, 0.0]])
    bce = [math.log(2.0), math.log(1.0 + math.exp(-2.0))]
    expected = (2.0 * bce[0] + 1.0 * bce[1]) / 3.0
    weights = (1.0 + priority).requires_grad_()
    loss = discriminator_loss(logits.requires_grad_(), torch.tensor([True]), weights)
    assert loss.item() == pytest.approx(expected)
    loss.backward()  # the weights say how much a patch counts; the loss must not learn to shrink them
    assert weights.grad is None and logits.grad.abs().sum() > 0


def test_tma_bias_changes_the_prediction_and_zero_beta_does_not() -> None:
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    finetune = TMTSegmentation(num_classes=4, backbone=TINY, method="finetune")
    tmt = TMTSegmentation(
        num_classes=4, backbone=TINY, method="tmt", tma={"beta_init": 0.0}, acte={"k_choices": [2]}
    )
    tmt.load_state_dict(finetune.state_dict(), strict=False)
    finetune.eval(), tmt.eval()
    with torch.no_grad():
        assert torch.allclose(finetune(images).logits, tmt(images).logits, atol=1e-5)
        tmt.segmenter.tma.beta.fill_(3.0)
        tmt.segmenter.discriminator.net[-1].weight.normal_(0.0, 5.0)  # a discriminator with an opinion
        assert not torch.allclose(finetune(images).logits, tmt(images).logits, atol=1e-3)


def test_miou_leaves_out_classes_neither_labelled_nor_predicted(monkeypatch) -> None:
    model = TMTSegmentation(num_classes=4, backbone=TINY, method="finetune")
    model.val_iou.update(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 0, 1, 255]]))  # no 2 or 3 at all
    logged: dict[str, torch.Tensor] = {}
    monkeypatch.setattr(model, "log_dict", lambda values, **_: logged.update(values))
    model._log_iou(model.val_iou, "val")
    assert float(logged["val/mIoU"]) == pytest.approx(100.0)  # torchmetrics' default would give 50
    assert math.isnan(logged["val/IoU/class_2"]) and math.isnan(logged["val/IoU/class_3"])


def test_evaluation_scores_labels_at_their_own_resolution(monkeypatch) -> None:
    # base_size shrinks the image, not the labels (mmseg's protocol): the logits are upsampled to the
    # 64 x 64 annotation, here a left/right split that a prediction at 32 x 32 also makes exactly
    model = TMTSegmentation(num_classes=4, backbone=TINY, method="finetune")
    half = torch.zeros(1, 4, 32, 32)
    half[:, 0, :, :16], half[:, 1, :, 16:] = 1.0, 1.0  # class 0 left, class 1 right
    monkeypatch.setattr(model.segmenter, "predict", lambda images, *_: half)
    monkeypatch.setattr(model.segmenter, "needs_padding", lambda images: True)
    monkeypatch.setattr(model, "log", lambda *args, **kwargs: None)
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[:, :, 32:] = 1
    model._evaluate({"image": torch.zeros(1, 3, 32, 32), "mask": labels}, "val", 1)
    confusion = model.val_iou.confmat
    assert int(confusion.sum()) == 64 * 64 and int(confusion.trace()) == 64 * 64


def test_synthia_pairs_also_log_miou16_and_miou13(monkeypatch) -> None:
    data = DomainPairDataModule(
        {"dataset": "synthia", "root": "/data/synthia"}, {"dataset": "cityscapes", "root": "/data/cs"}
    )
    assert len(data.miou_subsets["mIoU16"]) == 16 and len(data.miou_subsets["mIoU13"]) == 13
    model = TMTSegmentation(num_classes=19, backbone=TINY, method="finetune")
    model.miou_subsets = data.miou_subsets  # what setup() reads from the data module
    perfect = torch.arange(19)[None].repeat(2, 1)
    predictions = perfect.clone()
    predictions[:, 3] = 0  # wall (3) always wrong: in mIoU16, not in mIoU13
    model.val_iou.update(predictions, perfect)
    logged: dict[str, torch.Tensor] = {}
    monkeypatch.setattr(model, "log_dict", lambda values, **_: logged.update(values))
    model._log_iou(model.val_iou, "val")
    # road (0) IoU 2/4 (the wall pixels are false positives); wall 0; every other class 100
    assert float(logged["val/mIoU13"]) == pytest.approx((12 * 100 + 50) / 13)
    assert float(logged["val/mIoU16"]) == pytest.approx((14 * 100 + 50 + 0) / 16)


def test_a_subset_with_no_scored_class_logs_zero_like_miou(monkeypatch) -> None:
    model = TMTSegmentation(num_classes=4, backbone=TINY, method="finetune")
    model.miou_subsets = {"mIoU_rare": (2, 3)}
    model.val_iou.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))  # classes 2, 3 never occur
    logged: dict[str, torch.Tensor] = {}
    monkeypatch.setattr(model, "log_dict", lambda values, **_: logged.update(values))
    model._log_iou(model.val_iou, "val")
    assert float(logged["val/mIoU"]) == pytest.approx(100.0)
    assert float(logged["val/mIoU_rare"]) == 0.0  # not NaN, which a checkpoint monitor cannot rank


def test_bad_layer_choices_are_rejected_by_key() -> None:
    with pytest.raises(ValueError, match="tma.layers"):
        TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", tma={"layers": [9]})
    with pytest.raises(ValueError, match="acte.cluster_layer"):
        TMTSegmentation(
            num_classes=4, backbone=TINY, method="tmt", tma={"layers": [2, 3]}, acte={"cluster_layer": 2}
        )
    with pytest.raises(ValueError, match="acte.discriminator_layer"):
        TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", acte={"discriminator_layer": 3})
    with pytest.raises(ValueError, match="acte: unknown keys"):
        TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", acte={"k_choice": [2]})
    with pytest.raises(ValueError, match="method must be one of"):
        TMTSegmentation(num_classes=4, backbone=TINY, method="dann")


@pytest.mark.slow
def test_short_tmt_run_learns_logs_images_and_checkpoints(tmp_path: Path) -> None:
    L.seed_everything(0)
    data = tiny_data()
    model = TMTSegmentation(
        num_classes=data.num_classes,
        backbone=TINY,
        method="tmt",
        acte={"k_choices": [2, 4]},
        lr=3e-3,
        backbone_lr_mult=1.0,
    )
    trainer = L.Trainer(
        max_steps=40, accelerator="cpu", logger=CSVLogger(tmp_path, name="run"), enable_progress_bar=False,
        check_val_every_n_epoch=2, num_sanity_val_steps=0, default_root_dir=tmp_path,
    )  # fmt: skip
    before = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        inference_mode=False,
        default_root_dir=tmp_path,
    )
    before = before.validate(model, datamodule=data, verbose=False)[0]
    trainer.fit(model, datamodule=data)
    after = trainer.validate(model, datamodule=data, verbose=False)[0]
    assert after["val/loss"] < before["val/loss"] - 0.3, (before, after)
    assert after["val/mIoU"] > before["val/mIoU"] + 10, (before, after)  # points of mIoU, not noise
    strips = sorted((tmp_path / "run").rglob("images/val_examples/*.png"))
    assert strips, "validation images must be written as PNG without W&B"
    checkpoint = tmp_path / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    reloaded = TMTSegmentation.load_from_checkpoint(checkpoint)
    model.eval(), reloaded.eval()
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        assert torch.allclose(model(batch["image"]).logits, reloaded(batch["image"]).logits, atol=1e-5)


def test_init_checkpoint_of_another_class_count_or_task_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(
        {"state_dict": TMTSegmentation(num_classes=6, backbone=TINY, method="finetune").state_dict()}, path
    )
    with pytest.raises(
        CheckpointMismatch,
        match=rf"init_checkpoint {re.escape(str(path))} does not fit this TMTSegmentation: \d+ weight shapes differ",
    ):
        TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", init_checkpoint=str(path))
    with pytest.raises(FileNotFoundError, match=r"init_checkpoint: checkpoint not found: .*missing\.pt"):
        TMTSegmentation(num_classes=4, backbone=TINY, init_checkpoint=str(tmp_path / "missing.pt"))
    source = TMTSegmentation(num_classes=4, backbone=TINY, method="finetune")
    foreign = tmp_path / "classifier.ckpt"  # another task's stamp is named before any shape talk
    torch.save({"state_dict": {}, "tmtcam": {"task": "PromptCAMClassifier", "num_classes": 4}}, foreign)
    with pytest.raises(
        CheckpointMismatch, match="written by task 'PromptCAMClassifier', not 'TMTSegmentation'"
    ):
        TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", init_checkpoint=str(foreign))
    decoder_only = {k: v for k, v in source.state_dict().items() if not k.startswith("segmenter.backbone.")}
    torch.save({"state_dict": decoder_only}, path)  # would silently start from a random backbone
    with pytest.raises(
        CheckpointMismatch,
        match=r"lacks \d+ weights under segmenter\.backbone\., segmenter\.decoder\. \(e\.g\. segmenter\.backbone\.",
    ):
        TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", init_checkpoint=str(path))
    weight = "segmenter.backbone.vit.blocks.0.attn.qkv.weight"
    one_short = {k: v for k, v in source.state_dict().items() if k != weight}  # one weight would stay random
    torch.save({"state_dict": one_short}, path)
    with pytest.raises(CheckpointMismatch, match=rf"lacks 1 weights under .* \(e\.g\. {re.escape(weight)}\)"):
        TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", init_checkpoint=str(path))
    torch.save({"state_dict": source.state_dict()}, path)
    adapted = TMTSegmentation(num_classes=4, backbone=TINY, method="tmt", init_checkpoint=str(path))
    assert torch.equal(adapted.state_dict()[weight], source.state_dict()[weight])


def test_class_count_must_match_the_data() -> None:
    data = tiny_data()
    model = TMTSegmentation(num_classes=5, backbone=TINY, method="finetune")
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="num_classes=5 but the data has 8"):
        trainer.fit(model, datamodule=data)


@pytest.mark.parametrize(
    ("method", "labelled", "align", "warns"),
    [("tmt", False, None, True), ("patch", False, None, True), ("tmt", False, "image", False),
     ("tmt", True, None, False), ("global", False, None, False)],
)  # fmt: skip
def test_an_unlabelled_target_without_alignment_is_warned_about(
    method: str, labelled: bool, align: str | None, warns: bool
) -> None:
    """Unlabelled target images only feed a region method's map unless ``acte.align`` is set."""
    data = tiny_data(target_labelled=labelled)
    model = TMTSegmentation(num_classes=8, backbone=TINY, method=method, acte={"align": align})
    trainer = L.Trainer(
        max_steps=1, limit_val_batches=0, accelerator="cpu", logger=False, enable_progress_bar=False
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=data)
    about_align = [str(w.message) for w in caught if "acte.align" in str(w.message)]
    assert len(about_align) == int(warns), about_align
    if warns:
        assert f"method is {method} without model.init_args.acte.align" in about_align[0]
        assert "data.init_args.target has no labels" in about_align[0]


def test_a_source_only_stage_puts_no_target_image_through_the_network():
    """finetune with target_weight 0 (stage 1): the target batch reaches no loss, so it is skipped."""
    torch.manual_seed(0)
    model = TMTSegmentation(num_classes=4, backbone=TINY, method="finetune", target_weight=0.0)
    batch = pair_batch()
    seen = []
    model.segmenter.register_forward_hook(lambda _module, inputs, _out: seen.append(inputs[0].shape[0]))
    model.log = lambda *args, **kwargs: None  # no trainer attached
    loss = model.training_step(batch, 0)
    assert seen == [batch["source"]["image"].shape[0]]
    source_only = model.segmenter(batch["source"]["image"]).logits
    expected = torch.nn.functional.cross_entropy(source_only, batch["source"]["mask"], ignore_index=255)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    model.hparams.target_weight = 0.5  # any target weight: both domains go through
    seen.clear()
    model.training_step(batch, 0)
    assert seen == [2 * batch["source"]["image"].shape[0]]
