"""PromptCAMClassifier: training recipe, lazy num_classes, backbone-free checkpoints, heatmap logging."""

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningDataModule, Trainer
from torch.utils.data import DataLoader, Dataset

from tmtcam.backbones import ViTBackbone
from tmtcam.metrics.interpretability import keypoint_mask, mass_inside_mask, pointing_game
from tmtcam.promptcam.evaluation import pointing_tolerance
from tmtcam.promptcam.saliency_baselines import grad_cam_maps
from tmtcam.promptcam.trait_maps import explain_batch
from tmtcam.tasks import promptcam_classifier
from tmtcam.tasks.promptcam_classifier import PromptCAMClassifier, build_backbone
from tmtcam.training.checkpoint_compat import CheckpointMismatch
from tmtcam.training.schedules import check_optimisation_settings, warmup_cosine_factor

TINY = dict(model_name="vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4)


class ColourCasts(Dataset):
    """Class k = a colour cast on a noisy 32x32 image: +1 on channel k (k < 3) or -1 on channel 0 (k = 3).

    A global cue, so even the tiny *random* backbone of these tests passes it to the prompts.
    """

    def __init__(self, count: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 4, (count,), generator=generator)
        self.images = 0.3 * torch.randn(count, 3, 32, 32, generator=generator)
        for image, label in zip(self.images, self.labels.tolist(), strict=True):
            image[label % 3] += 1.0 if label < 3 else -1.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": self.labels[index]}


class ColourData(LightningDataModule):
    num_classes = 4
    class_names = ["red", "green", "blue", "cyan"]

    def train_dataloader(self):
        return DataLoader(ColourCasts(64, 0), batch_size=16, shuffle=True)

    def val_dataloader(self):
        return DataLoader(ColourCasts(32, 1), batch_size=16)


@pytest.fixture
def backbone_config(tmp_path):
    """A tiny random ViT saved to a file: the 'pre-trained weights' the checkpoints refer to."""
    torch.manual_seed(0)
    path = tmp_path / "backbone.pth"
    torch.save(ViTBackbone(**TINY).vit.state_dict(), path)
    return dict(TINY, weights=str(path))


def _trainer(tmp_path, epochs=2, **kwargs):
    defaults = dict(
        max_epochs=epochs,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    return Trainer(**{**defaults, **kwargs})


def test_warmup_cosine_factor_hand_values():
    assert warmup_cosine_factor(0, 4, 12) == pytest.approx(0.25)
    assert warmup_cosine_factor(3, 4, 12) == pytest.approx(1.0)
    assert warmup_cosine_factor(4, 4, 12) == pytest.approx(1.0)
    assert warmup_cosine_factor(8, 4, 12) == pytest.approx(0.5)
    assert warmup_cosine_factor(12, 4, 12) == pytest.approx(0.0)
    assert warmup_cosine_factor(20, 4, 12) == pytest.approx(
        0.0
    )  # past the schedule: stays at 0, no second cycle
    assert warmup_cosine_factor(0, 0, 10) == pytest.approx(1.0)
    assert warmup_cosine_factor(5, 0, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


def test_zero_is_a_valid_weight_decay_momentum_and_warm_up():
    check_optimisation_settings(0.01, weight_decay=0, momentum=0, warmup_epochs=0)  # plain SGD, no warm-up
    with pytest.raises(ValueError, match=r"model\.init_args\.momentum must be >= 0, got -1"):
        check_optimisation_settings(0.01, momentum=-1)


def test_heat_maps_are_logged_after_every_nth_epoch_not_before_training():
    """Epochs count from 0: with every 10, maps come after epochs 9 and 19 (the 10th and 20th)."""
    task = SimpleNamespace(
        hparams=SimpleNamespace(heatmap_every_n_epochs=10, heatmap_images=4),
        trainer=SimpleNamespace(sanity_checking=False),
    )
    due = []
    for epoch in (0, 9, 10, 19):
        task.current_epoch = epoch
        due.append(PromptCAMClassifier._heatmaps_due(task))
    assert due == [False, True, False, True]


class LearningRates(Callback):
    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_schedule_counts_warmup_in_epochs_and_may_run_past_the_trainer(tmp_path, backbone_config):
    """warmup_epochs and the model's max_epochs become steps (4 batches per epoch here), so a run
    stopped after 2 of a 4-epoch schedule ends mid-cosine; without trainer.max_epochs it refuses."""
    module = PromptCAMClassifier(backbone_config, lr=0.02, warmup_epochs=1, max_epochs=4, heatmap_images=0)
    rates = LearningRates()
    _trainer(tmp_path, epochs=2, limit_val_batches=0, callbacks=[rates]).fit(module, datamodule=ColourData())
    assert len(rates.seen) == 8
    assert rates.seen == pytest.approx([0.02 * warmup_cosine_factor(step, 4, 16) for step in range(8)])
    assert rates.seen[-1] > 0.01  # a 2-epoch schedule would have decayed to ~0.001 by now
    unbounded = PromptCAMClassifier(backbone_config, heatmap_images=0)
    with pytest.raises(ValueError, match="set trainer.max_epochs"):
        _trainer(tmp_path, epochs=None, max_steps=2, limit_val_batches=0).fit(
            unbounded, datamodule=ColourData()
        )


def test_logged_accuracy_is_top1_not_the_class_balanced_mean():
    module = PromptCAMClassifier(dict(TINY), num_classes=3)
    module.val_acc.update(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 2]))
    assert float(module.val_acc.compute()) == pytest.approx(0.75)  # the class-balanced mean is 1/3


def test_backbone_config_errors_name_the_key():
    with pytest.raises(
        ValueError, match=r"^model\.init_args\.backbone: unknown keys \['weigths'\]; allowed: \[.*'weights'"
    ):
        build_backbone({"model_name": "vit_tiny_patch16_224", "weigths": "x.pth"})
    with pytest.raises(ValueError, match="backbone.weights is '\\?\\?\\?'"):
        build_backbone({"model_name": "vit_base_patch16_224.dino", "weights": "???"})
    with pytest.raises(ValueError, match="method must be"):
        PromptCAMClassifier(dict(TINY), num_classes=3, method="finetune")
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adamw'"):
        PromptCAMClassifier(dict(TINY), num_classes=3, optimizer="adam")


def test_num_classes_comes_from_the_data_module_and_must_agree(tmp_path, backbone_config):
    module = PromptCAMClassifier(backbone_config, heatmap_images=0)
    assert module.model is None
    trainer = _trainer(tmp_path, epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, datamodule=ColourData())
    assert module.hparams.num_classes == 4 and module.hparams.class_names == ColourData.class_names
    wrong = PromptCAMClassifier(backbone_config, num_classes=7)
    with pytest.raises(ValueError, match="num_classes=7 but the data module has 4"):
        _trainer(tmp_path, epochs=1).fit(wrong, datamodule=ColourData())


@pytest.mark.parametrize("method", ["promptcam", "linear_probe", "vpt"])
def test_checkpoint_holds_no_backbone_and_reloads_to_identical_logits(tmp_path, backbone_config, method):
    module = PromptCAMClassifier(
        backbone_config, method=method, vpt_num_prompts=2, warmup_epochs=1, heatmap_images=0
    )
    trainer = _trainer(tmp_path, epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=ColourData())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    assert not [name for name in saved["state_dict"] if name.startswith("model.backbone.")]
    assert saved["hyper_parameters"]["backbone"]["weights"] == backbone_config["weights"]
    restored = PromptCAMClassifier.load_from_checkpoint(path).eval()
    module.eval()
    images = ColourCasts(4, 5).images
    with torch.no_grad():
        assert torch.equal(module(images), restored(images))
    assert not restored.model.backbone.training


def test_a_random_backbone_without_weights_file_is_kept_in_the_checkpoint(tmp_path):
    """Nothing else could rebuild it: reloaded under another seed, the logits are the same."""
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="no weights file and pretrained is false"):
        module = PromptCAMClassifier(dict(TINY), num_classes=4, warmup_epochs=1, heatmap_images=0)
    trainer = _trainer(tmp_path, epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, datamodule=ColourData())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    assert [name for name in torch.load(path, weights_only=True)["state_dict"] if "backbone" in name]
    torch.manual_seed(1)  # a different random backbone is built first, then replaced by the saved one
    restored = PromptCAMClassifier.load_from_checkpoint(path).eval()
    images = ColourCasts(4, 5).images
    with torch.no_grad():
        assert torch.equal(module.eval()(images), restored(images))


def test_a_checkpoint_refuses_a_replaced_backbone_weights_file(tmp_path, backbone_config):
    # the prompts are only meaningful on the backbone they were trained on; the file is rebuilt from
    # its path on load, so a file rewritten since (another pre-training) must be refused, not used
    module = PromptCAMClassifier(backbone_config, num_classes=4, warmup_epochs=1, heatmap_images=0)
    trainer = _trainer(tmp_path, epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, datamodule=ColourData())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    PromptCAMClassifier.load_from_checkpoint(path)  # same file: loads
    torch.manual_seed(1)
    torch.save(ViTBackbone(**TINY).vit.state_dict(), backbone_config["weights"])  # same shapes, new values
    with pytest.raises(CheckpointMismatch, match=r"backbone weights in .*backbone.pth .* was replaced"):
        PromptCAMClassifier.load_from_checkpoint(path)


@pytest.mark.parametrize("optimizer,kind", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_optimizer_choice_trains_only_prompts_and_head(tmp_path, backbone_config, optimizer, kind):
    module = PromptCAMClassifier(backbone_config, num_classes=4, optimizer=optimizer, heatmap_images=0)
    trainer = _trainer(tmp_path, epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, datamodule=ColourData())
    (optim,) = trainer.optimizers
    assert isinstance(optim, kind)
    assert sum(p.numel() for group in optim.param_groups for p in group["params"]) == 4 * 4 * 64 + 64 + 1


def test_checkpoint_of_another_method_is_refused(tmp_path, backbone_config):
    probe = PromptCAMClassifier(backbone_config, num_classes=4, method="linear_probe")
    trainer = _trainer(tmp_path, epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(probe, datamodule=ColourData())
    trainer.save_checkpoint(tmp_path / "probe.ckpt")
    with pytest.raises(ValueError, match="method='linear_probe'"):
        prompt = PromptCAMClassifier(backbone_config, num_classes=4, method="promptcam")
        _trainer(tmp_path, epochs=2, limit_train_batches=1, limit_val_batches=0).fit(
            prompt, datamodule=ColourData(), ckpt_path=tmp_path / "probe.ckpt"
        )


def test_prompt_training_learns_and_logs_heatmap_grids(tmp_path, backbone_config):
    torch.manual_seed(0)
    module = PromptCAMClassifier(
        backbone_config,
        lr=0.05,
        warmup_epochs=1,
        prompt_dropout=0.0,
        heatmap_images=2,
        heatmap_every_n_epochs=15,
        top_k_heads=2,
    )
    trainer = _trainer(tmp_path, epochs=15)
    trainer.fit(module, datamodule=ColourData())
    metrics = trainer.callback_metrics
    assert metrics["val/acc"] > 0.5, f"chance is 0.25, got {float(metrics['val/acc']):.2f}"
    assert metrics["train/loss_epoch"] < math.log(4) - 0.2
    grids = sorted((tmp_path / "images").rglob("*.png"))
    assert len(grids) == 1 and "heatmaps_promptcam" in str(grids[0])


def test_baseline_heatmaps_use_grad_cam(tmp_path, backbone_config, monkeypatch):
    module = PromptCAMClassifier(
        backbone_config, num_classes=4, method="linear_probe", heatmap_images=2, heatmap_every_n_epochs=1
    )
    explained = []

    def spy(model, images, labels):
        explained.append(labels.clone())
        return grad_cam_maps(model, images, labels)

    monkeypatch.setattr(promptcam_classifier, "grad_cam_maps", spy)
    trainer = _trainer(tmp_path, epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, datamodule=ColourData())
    assert len(list((tmp_path / "images").rglob("*.png"))) == 1
    first_val_labels = next(iter(ColourData().val_dataloader()))["label"][:2]
    assert len(explained) == 1 and torch.equal(explained[0], first_val_labels)


class MarkedColourCasts(ColourCasts):
    """ColourCasts with a trait mask (top-left quarter) and CUB-style part keypoints (one visible)."""

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        trait = torch.zeros(32, 32)
        trait[:16, :16] = 1
        parts = torch.tensor([[4.0, 4.0, 1.0], [30.0, 30.0, 0.0]])  # (x, y, visible)
        return dict(item, trait_mask=trait, parts=parts)


class MarkedColourData(ColourData):
    def test_dataloader(self):
        return DataLoader(MarkedColourCasts(8, 2), batch_size=4)


@pytest.mark.parametrize("method", ["promptcam", "linear_probe"])
def test_test_step_scores_the_true_class_map_where_traits_or_parts_are_known(
    tmp_path, backbone_config, method, monkeypatch
):
    module = PromptCAMClassifier(backbone_config, num_classes=4, method=method, heatmap_images=0)
    explained = []
    explanation_maps = module.explanation_maps

    def spy(images, labels):
        maps = explanation_maps(images, labels)
        explained.append((labels.clone(), maps.detach().clone()))
        return maps

    monkeypatch.setattr(module, "explanation_maps", spy)
    results = _trainer(tmp_path, epochs=1).test(module, datamodule=MarkedColourData())[0]
    for key in ("test/pointing_game", "test/mass_in_trait", "test/part_hit"):
        assert 0 <= results[key] <= 1, (key, results)
    # the maps scored are the true class's, and the logged figure is their mean over the 8 images
    test_set = MarkedColourData().test_dataloader().dataset
    assert torch.equal(torch.cat([labels for labels, _ in explained]), test_set.labels)
    maps = torch.cat([maps for _, maps in explained])
    trait = torch.stack([test_set[i]["trait_mask"] for i in range(len(test_set))])
    expected = pointing_game(maps, trait, pointing_tolerance(32)).mean()
    assert results["test/pointing_game"] == pytest.approx(float(expected))
    assert results["test/mass_in_trait"] == pytest.approx(float(mass_inside_mask(maps, trait).mean()))
    parts = torch.stack([test_set[i]["parts"] for i in range(len(test_set))])
    near_parts = keypoint_mask(parts, (32, 32), radius=pointing_tolerance(32))
    assert results["test/part_hit"] == pytest.approx(float(pointing_game(maps, near_parts).nanmean()))


def test_explanation_maps_are_the_given_classes_not_the_predicted_ones(backbone_config):
    """Test-time localisation explains the *true* class, which for a misclassified image is not the
    predicted one: its maps must be that class prompt's top heads."""
    torch.manual_seed(0)
    module = PromptCAMClassifier(backbone_config, num_classes=4, top_k_heads=2)
    model, images = module._require_model(), torch.randn(3, 3, 32, 32)
    predicted = explain_batch(model, images).class_index
    other = (predicted + 1) % 4
    maps = module.explanation_maps(images, other)
    assert torch.allclose(maps, explain_batch(model, images, other, top_k=2).saliency(2))
    assert not torch.allclose(maps, explain_batch(model, images, predicted, top_k=2).saliency(2))


def test_a_batch_with_part_keypoints_only_is_scored_for_localisation(backbone_config, monkeypatch):
    """CUB batches carry parts and boxes but no trait masks: their part hits must still be measured."""
    module = PromptCAMClassifier(backbone_config, num_classes=4)
    peak_top_left = torch.zeros(2, 4, 4)
    peak_top_left[:, 0, 0] = 1.0
    monkeypatch.setattr(module, "explanation_maps", lambda images, labels: peak_top_left)
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    parts = torch.tensor([[[1.0, 1.0, 1.0]], [[28.0, 28.0, 1.0]]])  # near the peak; far from it
    batch = {"image": torch.zeros(2, 3, 32, 32), "label": torch.tensor([0, 1]), "parts": parts}
    module.test_step(batch, 0)
    assert float(module.localisation_metrics["part_hit"].compute()) == 0.5


def test_test_loss_is_the_mean_over_images_not_over_batches(tmp_path, backbone_config):
    """5 images in batches of 2, 2, 1: a mean of batch means would weigh the last image double."""

    class FiveImages(LightningDataModule):
        def test_dataloader(self):
            return DataLoader(ColourCasts(5, 2), batch_size=2)

    torch.manual_seed(0)
    module = PromptCAMClassifier(backbone_config, num_classes=4, heatmap_images=0, test_localisation=False)
    results = _trainer(tmp_path).test(module, datamodule=FiveImages())[0]
    data = ColourCasts(5, 2)
    with torch.no_grad():
        per_image = F.cross_entropy(module.eval()(data.images), data.labels, reduction="none")
    assert results["test/loss"] == pytest.approx(float(per_image.mean()), rel=1e-5)
    by_batch = torch.stack([per_image[:2].mean(), per_image[2:4].mean(), per_image[4:].mean()]).mean()
    assert abs(float(per_image.mean()) - float(by_batch)) > 1e-4  # the two weightings differ here


def test_localisation_scores_by_hand(backbone_config, monkeypatch):
    module = PromptCAMClassifier(backbone_config, num_classes=4)
    peak_top_left = torch.zeros(2, 4, 4)
    peak_top_left[:, 0, 0] = 1.0  # the map's maximum on the first patch (pixels 0..7)
    monkeypatch.setattr(module, "explanation_maps", lambda images, labels: peak_top_left)
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    trait = torch.zeros(2, 32, 32)
    trait[0, :8, :8] = 1  # image 0: trait under the peak; image 1: no trait -> left out, not a miss
    parts = torch.tensor(
        [[[1.0, 1.0, 1.0]], [[28.0, 28.0, 1.0]]]
    )  # within 2 px (15 px at 224) of the peak pixel; far
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 32.0, 32.0]])
    batch = {"image": torch.zeros(2, 3, 32, 32), "label": torch.tensor([0, 1]), "trait_mask": trait,
             "parts": parts, "bbox": boxes}  # fmt: skip
    module._log_localisation(batch)
    scores = {name: float(metric.compute()) for name, metric in module.localisation_metrics.items()}
    assert scores["pointing_game"] == 1.0 and scores["part_hit"] == 0.5
    # the map is bilinear from patches: 0.9375^2-weighted mass in the 8x8 corner of image 0's 32x32
    upsampled = torch.nn.functional.interpolate(peak_top_left[:1, None], size=(32, 32), mode="bilinear")[0, 0]
    assert scores["mass_in_trait"] == pytest.approx(float(upsampled[:8, :8].sum() / upsampled.sum()))
    # chance: 11 of image 0's 4x4 box pixels lie within 2 px of (1, 1) (all but (0,3), (2,3), (3,0),
    # (3,2), (3,3) as (x, y)); image 1: the 13-pixel disc around (28, 28) out of the whole 32x32 image
    assert scores["part_hit_chance"] == pytest.approx((11 / 16 + 13 / 1024) / 2)


def test_a_pretrained_timm_backbone_is_not_called_random_and_stays_out_of_checkpoints(monkeypatch):
    """``pretrained: true`` gets its weights from timm, which rebuilds them: no "random ViT" warning,
    and checkpoints hold prompts and head only (a ViT-B backbone would add ~330 MB to each)."""
    built = []

    def offline_build(setting):  # timm would download; the tiny ViT stands in for its weights
        built.append(setting)
        return build_backbone({k: v for k, v in setting.items() if k != "pretrained"})

    monkeypatch.setattr(promptcam_classifier, "build_backbone", offline_build)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = PromptCAMClassifier(dict(TINY, pretrained=True), num_classes=3, heatmap_images=0)
    assert built[0]["pretrained"] is True
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not [k for k in checkpoint["state_dict"] if "backbone" in k]
